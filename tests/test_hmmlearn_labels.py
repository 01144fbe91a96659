"""hmmop.hmmlearn's ``labels=`` (hmmop's addition to hmmlearn's signatures): known states of some samples.

Every class on small data: labels=None is the call without the keyword exactly; with labels, score,
posteriors and decode equal a brute-force enumeration of the state paths that agree with the labels
(log-emissions computed here with scipy); fit on fully labelled data with n_iter=1 gives the normalised
counts computed here with numpy; bad labels raise ValueError naming the problem."""
import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from hmmop import hmmlearn as hmm

N = 2
LENGTHS = [5, 4]
n = sum(LENGTHS)


def _distribution(rng, *shape):
    x = rng.random(shape) + 0.2
    return x / x.sum(axis=-1, keepdims=True)


def _data(family, rng):
    """X (n, D) of the family, small values."""
    if family == "categorical":
        return rng.integers(0, 3, size=(n, 1))
    if family in ("gaussian", "gmm"):
        return rng.normal(size=(n, 2)) * 2.0
    if family == "poisson":
        return rng.integers(0, 5, size=(n, 2))
    trials = 4
    first = rng.integers(0, trials + 1, size=n)
    second = rng.integers(0, trials + 1 - first)
    return np.stack([first, second, trials - first - second], axis=1)


def _model(family, rng, **kwargs):
    """A model of N states with random parameters set by hand (init_params="": fit keeps them)."""
    if family == "categorical":
        m = hmm.CategoricalHMM(N, init_params="", **kwargs)
        m.emissionprob_ = _distribution(rng, N, 3)
        m.n_features = 3
    elif family == "gaussian":
        m = hmm.GaussianHMM(N, covariance_type="diag", init_params="", **kwargs)
        m.means_ = rng.normal(size=(N, 2)) * 2.0
        m.covars_ = rng.random((N, 2)) + 0.5
    elif family == "gmm":
        m = hmm.GMMHMM(N, n_mix=2, covariance_type="diag", init_params="", **kwargs)
        m.weights_ = _distribution(rng, N, 2)
        m.means_ = rng.normal(size=(N, 2, 2)) * 2.0
        m.covars_ = rng.random((N, 2, 2)) + 0.5
    elif family == "poisson":
        m = hmm.PoissonHMM(N, init_params="", **kwargs)
        m.lambdas_ = rng.random((N, 2)) * 4 + 0.5
    else:
        m = hmm.MultinomialHMM(N, n_trials=4, init_params="", **kwargs)
        m.emissionprob_ = _distribution(rng, N, 3)
    m.startprob_ = _distribution(rng, N)
    m.transmat_ = _distribution(rng, N, N)
    return m


def _log_emission(m, family, X):
    """(n, N) log-densities of each row in each state, by scipy (independent of hmmop)."""
    out = np.empty((len(X), N))
    for i in range(N):
        if family == "categorical":
            out[:, i] = np.log(m.emissionprob_[i, X[:, 0]])
        elif family == "gaussian":
            out[:, i] = stats.multivariate_normal(m.means_[i], np.diag(m._covars_[i])).logpdf(X)
        elif family == "gmm":
            parts = [np.log(m.weights_[i, k]) + stats.multivariate_normal(m.means_[i, k], np.diag(m.covars_[i, k]))
                     .logpdf(X) for k in range(m.n_mix)]
            out[:, i] = logsumexp(parts, axis=0)
        elif family == "poisson":
            out[:, i] = stats.poisson(m.lambdas_[i]).logpmf(X).sum(axis=1)
        else:
            out[:, i] = [stats.multinomial(4, m.emissionprob_[i]).logpmf(x) for x in X]
    return out


def _brute_force(m, family, X, labels):
    """(log P(X, labels), best path, its log-probability, posteriors (n, N)) by enumerating every state path
    of each sequence that agrees with ``labels`` (n,) (-1 unknown)."""
    le = _log_emission(m, family, X)
    logA, logpi = np.log(m.transmat_), np.log(m.startprob_)
    total, best_total, best_path, posteriors = 0.0, 0.0, [], []
    start = 0
    for T in LENGTHS:
        lab = labels[start:start + T]
        paths, scores = [], []
        for path in itertools.product(range(N), repeat=T):
            if any(k >= 0 and s != k for s, k in zip(path, lab)):
                continue
            paths.append(path)
            scores.append(logpi[path[0]] + sum(logA[a, b] for a, b in zip(path, path[1:]))
                          + sum(le[start + t, s] for t, s in enumerate(path)))
        scores = np.array(scores)
        ll = logsumexp(scores)
        total += ll
        best = int(np.argmax(scores))
        best_total += scores[best]
        best_path.extend(paths[best])
        gamma = np.zeros((T, N))
        for path, sc in zip(paths, scores):
            gamma[np.arange(T), list(path)] += np.exp(sc - ll)
        posteriors.append(gamma)
        start += T
    return total, np.array(best_path), best_total, np.concatenate(posteriors)


FAMILIES = ("categorical", "gaussian", "gmm", "poisson", "multinomial")


def _labels(rng):
    labels = np.full(n, -1)
    known = rng.choice(n, size=4, replace=False)
    labels[known] = rng.integers(0, N, size=4)
    return labels


@pytest.mark.parametrize("family", FAMILIES)
def test_inference_with_labels_is_brute_force_over_agreeing_paths(family):
    rng = np.random.default_rng(FAMILIES.index(family))
    m, X = _model(family, rng), _data(family, rng)
    labels = _labels(rng)
    ll, path, best, gamma = _brute_force(m, family, X, labels)
    assert m.score(X, LENGTHS, labels=labels) == pytest.approx(ll, rel=1e-10)
    assert m.score(X, LENGTHS) > ll                          # the labels cost probability
    log_prob, states = m.decode(X, LENGTHS, labels=labels)
    assert log_prob == pytest.approx(best, rel=1e-10)
    np.testing.assert_array_equal(states, path)
    known = labels >= 0
    np.testing.assert_array_equal(states[known], labels[known])
    np.testing.assert_array_equal(m.predict(X, LENGTHS, labels=labels), path)
    total, posteriors = m.score_samples(X, LENGTHS, labels=labels)
    assert total == pytest.approx(ll, rel=1e-10)
    np.testing.assert_allclose(posteriors, gamma, atol=1e-10)
    np.testing.assert_allclose(m.predict_proba(X, LENGTHS, labels=labels), gamma, atol=1e-10)
    np.testing.assert_allclose(posteriors[known, labels[known]], 1, atol=1e-12)
    _, map_states = m.decode(X, LENGTHS, algorithm="map", labels=labels)
    np.testing.assert_array_equal(map_states, gamma.argmax(axis=1))
    # the core's own call gives the same number (the facade passes the labels through)
    assert m.score(X, LENGTHS, labels=labels) == pytest.approx(
        m._core().score(m._prepare_X(X, fit=False), np.array(LENGTHS), labels=labels), rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_none_is_the_call_without_the_keyword(family):
    rng = np.random.default_rng(10 + FAMILIES.index(family))
    X = _data(family, rng)
    fits = []
    for kwargs in ({}, {"labels": None}):
        m = _model(family, np.random.default_rng(5), n_iter=3, tol=0)
        fits.append(m.fit(X, LENGTHS, **kwargs))
    a, b = fits
    np.testing.assert_array_equal(list(a.monitor_.history), list(b.monitor_.history))
    np.testing.assert_array_equal(a.transmat_, b.transmat_)
    assert a.score(X, LENGTHS) == a.score(X, LENGTHS, labels=None)
    for x, y in zip(a.score_samples(X, LENGTHS), a.score_samples(X, LENGTHS, labels=None)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.predict_proba(X, LENGTHS), a.predict_proba(X, LENGTHS, labels=None))
    for algorithm in ("viterbi", "map"):
        x, y = a.decode(X, LENGTHS, algorithm=algorithm), a.decode(X, LENGTHS, algorithm=algorithm, labels=None)
        assert x[0] == y[0]
        np.testing.assert_array_equal(x[1], y[1])
    np.testing.assert_array_equal(a.predict(X, LENGTHS), a.predict(X, LENGTHS, labels=None))


def test_every_form_of_labels_gives_the_same_score():
    rng = np.random.default_rng(3)
    m, X = _model("categorical", rng), _data("categorical", rng)
    labels = _labels(rng)
    expected = m.score(X, LENGTHS, labels=labels)
    per_sequence = [labels[:5], labels[5:]]
    mask = np.ones((n, N), dtype=bool)
    mask[labels >= 0] = False
    mask[np.flatnonzero(labels >= 0), labels[labels >= 0]] = True
    for form in (per_sequence, mask, labels.tolist()):
        assert m.score(X, LENGTHS, labels=form) == pytest.approx(expected, rel=1e-12)


def _counts(states, symbols_or_rows, family):
    """Supervised estimate by counting: startprob, transmat, and the emission's parameter."""
    starts = np.cumsum(LENGTHS) - LENGTHS
    startprob = np.bincount(states[starts], minlength=N) / len(LENGTHS)
    trans = np.zeros((N, N))
    for s, T in zip(starts, LENGTHS):
        for t in range(s + 1, s + T):
            trans[states[t - 1], states[t]] += 1
    transmat = trans / trans.sum(axis=1, keepdims=True)
    X = symbols_or_rows
    if family == "categorical":
        B = np.zeros((N, 3))
        np.add.at(B, (states, X[:, 0]), 1)
        return startprob, transmat, B / B.sum(axis=1, keepdims=True)
    if family == "multinomial":
        B = np.array([X[states == i].sum(axis=0) for i in range(N)], dtype=float)
        return startprob, transmat, B / B.sum(axis=1, keepdims=True)
    return startprob, transmat, np.array([X[states == i].mean(axis=0) for i in range(N)])


@pytest.mark.parametrize("family", ("categorical", "gaussian", "poisson", "multinomial", "gmm1"))
def test_one_em_iteration_on_fully_labelled_data_gives_the_counts(family):
    rng = np.random.default_rng(20)
    base = "gmm" if family == "gmm1" else family
    X = _data(base, rng)
    states = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1])             # every state starts, every transition seen
    if family == "gmm1":
        m = hmm.GMMHMM(N, n_mix=1, covariance_type="diag", init_params="", n_iter=1)
        m.weights_ = np.ones((N, 1))
        m.means_ = rng.normal(size=(N, 1, 2))
        m.covars_ = rng.random((N, 1, 2)) + 0.5
        m.startprob_, m.transmat_ = _distribution(rng, N), _distribution(rng, N, N)
    else:
        m = _model(family, rng, n_iter=1)
    m.fit(X, LENGTHS, labels=states)
    startprob, transmat, emission = _counts(states, X, base)
    np.testing.assert_allclose(m.startprob_, startprob, atol=1e-12)
    np.testing.assert_allclose(m.transmat_, transmat, atol=1e-12)
    fitted = {"categorical": "emissionprob_", "multinomial": "emissionprob_", "gaussian": "means_",
              "poisson": "lambdas_", "gmm": "means_"}[base]
    value = getattr(m, fitted)
    np.testing.assert_allclose(value.reshape(emission.shape), emission, atol=1e-12)


@pytest.mark.parametrize("family", ("categorical", "gaussian"))
def test_em_with_partial_labels_climbs_log_p_of_x_and_labels(family):
    rng = np.random.default_rng(30)
    m, X = _model(family, rng, n_iter=6, tol=0), _data(family, rng)
    labels = _labels(rng)
    start = _brute_force(m, family, X, labels)[0]
    m.fit(X, LENGTHS, labels=labels)
    history = np.array(m.monitor_.history)
    assert len(history) == 6
    assert history[0] == pytest.approx(start, rel=1e-10)
    assert (np.diff(history) > -1e-9).all()
    assert m.score(X, LENGTHS, labels=labels) >= history[-1] - 1e-9
    # the Python loop (a monitor_ subclass is asked after each iteration) runs the same EM on the labels
    python = _model(family, np.random.default_rng(30), n_iter=6, tol=0)
    python.monitor_ = type("Monitor", (hmm.ConvergenceMonitor,), {})(0, 6, False)
    python.fit(X, LENGTHS, labels=labels)
    np.testing.assert_allclose(list(python.monitor_.history), history, rtol=1e-12)
    np.testing.assert_allclose(python.transmat_, m.transmat_, atol=1e-12)


def test_bad_labels_raise_value_errors_naming_the_problem():
    rng = np.random.default_rng(4)
    m, X = _model("categorical", rng), _data("categorical", rng)
    labels = _labels(rng)
    out_of_range = labels.copy()
    out_of_range[6] = N
    with pytest.raises(ValueError, match=r"sequence 1, step 1 has label 2, not a state in \[0, 2\)"):
        m.score(X, LENGTHS, labels=out_of_range)
    with pytest.raises(ValueError, match="labels has 8 steps but the data has 9"):
        m.decode(X, LENGTHS, labels=labels[:-1])
    with pytest.raises(ValueError, match="labels has 8 steps"):
        m.fit(X, LENGTHS, labels=labels[:-1])
    with pytest.raises(ValueError, match="expected integer states"):
        m.predict_proba(X, LENGTHS, labels=np.full(n, 0.5))
    # labels no state path can follow: a structural zero of transmat_
    m.transmat_ = np.array([[1.0, 0.0], [0.5, 0.5]])
    impossible = np.full(n, -1)
    impossible[[1, 2]] = [0, 1]
    assert m.score(X, LENGTHS, labels=impossible) == -np.inf
    assert np.isnan(m.predict_proba(X, LENGTHS, labels=impossible)[:5]).all()
    with pytest.raises(ValueError, match="sequence 0, step 2: no transition"):
        m.decode(X, LENGTHS, labels=impossible)
    with pytest.raises(ValueError, match="sequence 0, step 2: no transition"):
        m.decode(X, LENGTHS, algorithm="map", labels=impossible)
    m.n_iter = 2
    with pytest.raises(ValueError, match="sequence 0, step 2: no transition"):
        m.fit(X, LENGTHS, labels=impossible)
