"""examples/semi_supervised.py and examples/forced_alignment.py at a small size, and what they claim.

Semi-supervised (1200 steps, 5% labelled, three seeds; the unsupervised fit of seed 1 lands in a poor
optimum): the fit with labels keeps the true states' identities (its best permutation is the identity),
recovers them nearly as well as the supervised fit, and at least as well as the unsupervised fit followed by
the best permutation chosen on the true states: on average strictly, per seed within ACCURACY_MARGIN
(why a margin: see the constant), and strictly per seed once its Viterbi path may use the labels.
Forced alignment: boundaries within a few frames, the path through every unit in order, the labels
changing the path where the plain Viterbi path stops early, score(X, labels) - score(X) equal to the
posterior of the last unit at the last frame, -inf and ValueError for a recording shorter than the word;
and, independently of hmmop, the example's constrained decoding and score on tiny cases (3 units, 6 frames)
against brute-force enumeration of all 3^6 state paths with scipy's densities.
"""
import importlib.util
import itertools
import os

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEMI_SEEDS = (0, 1, 2)
# When the unsupervised fit finds the same optimum as the semi-supervised one, which of the two paths agrees
# more with the truth is a matter of noise: the semi-supervised fit maximises log P(X, labels), not log P(X),
# and the unsupervised row's permutation is chosen on the true states.  Over 100 runs of the example (seeds
# 0-39 at 3000 steps, 0-59 at 1200) the semi-supervised accuracy fell short of the unsupervised one by up to
# 0.024 (in 23 runs), while it was ahead by 0.09-0.44 wherever the unsupervised fit landed in a poor optimum.
ACCURACY_MARGIN = 0.03


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def semi():
    return load("semi_supervised")


@pytest.fixture(scope="module")
def semi_runs(semi):
    out = semi.main(["--quick", "--seed", str(SEMI_SEEDS[0]), "--seeds", str(len(SEMI_SEEDS))])
    assert sorted(out["runs"]) == list(SEMI_SEEDS)
    assert out["mean"]["(a)"] == pytest.approx(np.mean([r["semi"]["accuracy"] for r in out["runs"].values()]))
    return out["runs"]


@pytest.fixture(scope="module")
def fa():
    return load("forced_alignment")


@pytest.fixture(scope="module")
def fa_run(fa):
    return fa.main(["--seed", "3"])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import hmmop
    import hmmop.ops.threads
    previous = hmmop.ops.threads._override
    hmmop.set_num_threads(1)
    try:
        yield
    finally:
        hmmop.set_num_threads(previous)


# -- semi-supervised ------------------------------------------------------------------------------------
def test_semi_supervised_data(semi):
    rng = np.random.default_rng(5)
    X, states = semi.sample(rng, [300, 200])
    labels = semi.partial_labels(rng, states, 0.05)
    assert X.shape == (500, 2) and set(np.unique(states)) == {0, 1, 2}
    known = labels >= 0
    assert known.sum() == 25 and (labels[known] == states[known]).all() and (labels[~known] == -1).all()
    assert semi.best_permutation(np.array([1, 2, 0, 1]), np.array([0, 1, 2, 0])) == (1.0, (2, 0, 1))


@pytest.mark.parametrize("seed", SEMI_SEEDS)
def test_semi_supervised_keeps_identities(semi_runs, seed):
    r = semi_runs[seed]
    assert r["n_steps"] == 1200 and r["n_labelled"] == 60
    a, b, c = r["semi"], r["unsupervised"], r["supervised"]
    assert a["permutation"] == (0, 1, 2) and a["accuracy"] == a["best_accuracy"]      # no permutation to guess
    assert a["accuracy"] > 0.8                                                         # chance: 1/3
    assert a["accuracy"] >= c["accuracy"] - 0.05
    assert a["accuracy"] >= b["best_accuracy"] - ACCURACY_MARGIN
    assert a["accuracy_labels"] >= b["best_accuracy"]
    # log P(X, labels) < log P(X): the labels are an event of probability < 1 under the fitted model
    assert np.isfinite(a["loglik_labels"]) and a["loglik_labels"] < a["loglik"] - 0.005
    # what EM maximised is log P(X, labels) (its last value, before the last update; tol 1e-4 per step)
    assert a["objective"] == pytest.approx(a["loglik_labels"], abs=1e-3)


def test_semi_supervised_at_least_as_well_on_average(semi_runs):
    a = np.mean([r["semi"]["accuracy"] for r in semi_runs.values()])
    b = np.mean([r["unsupervised"]["best_accuracy"] for r in semi_runs.values()])
    assert a >= b
    assert min(r["unsupervised"]["best_accuracy"] for r in semi_runs.values()) < 0.7    # seed 1: a poor optimum


# -- forced alignment -----------------------------------------------------------------------------------
def test_forced_alignment_boundaries(fa_run):
    n = len(fa_run["word"])
    assert len(fa_run["utterances"]) == 3
    for u in fa_run["utterances"]:
        assert u["monotone"]
        assert [s[0] for s in u["segments"]] == list(range(n)) and all(s[1] >= 0 for s in u["segments"])
        assert u["boundary_error"] <= 4 and u["mean_boundary_error"] <= 1.0
        assert u["accuracy"] >= 0.9
        assert u["score_labels"] <= u["score"] + 1e-9
    # seed 3's first utterance: the plain Viterbi path stops before the last unit, the forced one does not
    first = fa_run["utterances"][0]
    assert first["plain_last_unit"] < n - 1 and first["segments"][-1][2] == fa_run["n_frames"][0] - 1
    assert fa_run["short_score"] == -np.inf
    assert fa_run["short_error"] is not None and "sequence 0" in fa_run["short_error"]


def test_forced_alignment_score_is_the_posterior_of_the_end(fa):
    rng = np.random.default_rng(3)
    x, _ = fa.speak(rng, "alignment", 1.5)
    model = fa.word_model("alignment", 1.5)
    labels = fa.alignment_labels(len(x), 9)
    p_end = model.predict_proba(x)[0][-1, -1]
    assert np.exp(model.score(x, labels=labels) - model.score(x)) == pytest.approx(p_end, rel=1e-9)


def brute_force(model, x, labels):
    """(best path, its log-probability, log-sum over the paths) among the state paths agreeing with the labels
    and with the model's zeros of A and pi, from the model's parameters and scipy's densities alone; None
    where no path agrees."""
    N, T = model.n_states, len(x)
    A, pi = model.A, model.pi
    dens = np.array([multivariate_normal(model.means[k], model.covars[k]).logpdf(x) for k in range(N)]).T
    with np.errstate(divide="ignore"):
        logA, logpi = np.log(A), np.log(pi)
    scores = {}
    for path in itertools.product(range(N), repeat=T):
        if any(lab >= 0 and lab != s for lab, s in zip(labels, path)):
            continue
        value = logpi[path[0]] + sum(logA[a, b] for a, b in zip(path, path[1:])) + dens[np.arange(T), path].sum()
        if np.isfinite(value):
            scores[path] = value
    if not scores:
        return None
    best = max(scores, key=scores.get)
    return np.array(best), scores[best], logsumexp(list(scores.values()))


def test_forced_alignment_against_brute_force(fa):
    model = fa.word_model("cat", 1.5)
    rng = np.random.default_rng(11)
    differs = impossible = 0
    for case in range(12):
        T = 6
        x = model.means[np.sort(rng.integers(0, 3, T))] + 2.0 * rng.standard_normal((T, 3))
        known = {} if case % 2 == 0 else {int(rng.integers(1, T - 1)): int(rng.integers(0, 3))}
        labels = fa.alignment_labels(T, 3, known)
        found = brute_force(model, x, labels)
        if found is None:               # no agreeing path (an extra label out of reach): decode must say so
            impossible += 1
            with pytest.raises(ValueError, match="sequence 0"):
                fa.align(model, [x], [known])
            assert model.score(x, labels=labels) == -np.inf
            continue
        best, best_lp, total = found
        log_prob, paths = fa.align(model, [x], [known])
        np.testing.assert_array_equal(paths[0], best)
        assert log_prob == pytest.approx(best_lp, rel=1e-9)
        assert model.score(x, labels=labels) == pytest.approx(total, rel=1e-9)
        assert fa.monotone(paths[0], 3)
        free, _, _ = brute_force(model, x, np.full(T, -1))
        differs += not np.array_equal(free, best)
    # the labels changed the best path in some cases and ruled every path out in others: the check is not vacuous
    assert differs >= 2 and impossible >= 1
