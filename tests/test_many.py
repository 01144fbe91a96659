"""Many categorical EM fits in one C call: _kernel.em_categorical_many, HMM.fit(n_init=k) with its
starts together, hmmop.fit_many and hmmop.select - each against the same fits run one at a time
(bit for bit: a task runs exactly the loop a single fit runs)."""
import numpy as np
import pytest

import hmmop
from hmmop import _kernel


def data(seed=0, n=30, M=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, M, rng.integers(5, 60)) for _ in range(n)]


def flat(X):
    rows = np.concatenate(X).astype(np.int32)
    lengths = np.array([len(x) for x in X], dtype=np.int64)
    return rows, lengths, np.cumsum(lengths) - lengths


def task(seed, n, m, starts, lengths, **extra):
    rng = np.random.default_rng(seed)
    return dict(A=rng.dirichlet(np.ones(n), n), B=rng.dirichlet(np.ones(m), n), pi=rng.dirichlet(np.ones(n)),
                starts=starts, lengths=lengths, **extra)


@pytest.mark.parametrize("threads", [1, 2])
def test_em_categorical_many_equals_each_task_alone(threads):
    rows, lengths, starts = flat(data())
    rows[5] = -2                                             # a missing symbol
    mask = np.ones((4, 4), dtype=bool)
    mask[0, 3] = False
    kinds = [dict(n_iter=25), dict(n_iter=40, tol=0.5, tol_rule="abs"),
             dict(n_iter=20, prior={"A": 1.5, "B": 2.0}, objective_prior=("A", "B")),
             dict(n_iter=15, learn=("A",), mask={"A": mask}), dict(n_iter=0)]
    tasks = []
    for k, extra in enumerate(kinds * 3):
        n = 4 if "mask" in extra else 2 + k % 4
        part = slice(k % 5, None, 1 + k % 3)                 # each task its own subset of the sequences
        tasks.append(task(k, n, 3, starts[part], lengths[part], **extra))
        if "mask" in extra:
            tasks[-1]["A"] = np.where(mask, tasks[-1]["A"], 0.0)
            tasks[-1]["A"] /= tasks[-1]["A"].sum(1, keepdims=True)
    alone = []
    for t in tasks:
        A, B, pi = t["A"].copy(), t["B"].copy(), t["pi"].copy()
        options = {k: v for k, v in t.items() if k not in ("A", "B", "pi", "starts", "lengths", "n_iter")}
        out = _kernel.em_categorical(A, B, pi, rows, t["starts"], t["lengths"], t["n_iter"], num_threads=1,
                                     **options)
        alone.append((A, B, pi, out))
    together = _kernel.em_categorical_many(tasks, rows, threads)
    for t, (A, B, pi, out), got in zip(tasks, alone, together):
        np.testing.assert_array_equal(t["A"], A)
        np.testing.assert_array_equal(t["B"], B)
        np.testing.assert_array_equal(t["pi"], pi)
        np.testing.assert_array_equal(got[0], out[0])
        assert got[1:] == out[1:]
    assert {o[1] for o in together} >= {"ran out", "converged"}


def test_em_categorical_many_errors_name_the_task():
    rows, lengths, starts = flat(data(n=4))
    good = task(0, 2, 3, starts, lengths, n_iter=3)
    with pytest.raises(ValueError, match="task 1: A \\(N, N\\), B \\(N, M\\), pi \\(N,\\) do not fit"):
        _kernel.em_categorical_many([good, dict(task(1, 2, 3, starts, lengths, n_iter=3), pi=np.ones(3) / 3)],
                                    rows)
    bad = rows.copy()
    bad[3] = 7
    with pytest.raises(ValueError, match=r"rows\[3\] = 7 is not a symbol"):
        _kernel.em_categorical_many([good], bad)
    with pytest.raises(ValueError, match="task 0: sequence 0 is not inside rows"):
        _kernel.em_categorical_many([task(0, 2, 3, starts + 1000, lengths, n_iter=2)], rows)
    assert _kernel.em_categorical_many([], rows) == []


@pytest.mark.parametrize("options", [dict(), dict(prior={"A": 1.5, "B": 1.2, "pi": 2.0}, tol=1e-4),
                                     dict(learn=("A", "pi")), dict(mask={"A": np.eye(3, dtype=bool) | np.eye(3, k=1,
                                                                                                        dtype=bool)})])
def test_fit_n_init_runs_the_starts_together_as_one_after_the_other(options):
    X = data(1)
    options = dict(options)
    mask = options.pop("mask", None)
    fits = []
    for together in (True, False):
        model = hmmop.HMM(3, 3, seed=4, mask=mask)
        model._starts_together = together
        model.fit(X, method="em", epochs=30, n_init=5, seed=9, **options)
        fits.append(model)
    a, b = fits
    for x, y in zip(a.probabilities(), b.probabilities()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.inits_, b.inits_)
    np.testing.assert_array_equal(a.history_, b.history_)
    for x, y in zip(a.histories_, b.histories_):
        np.testing.assert_array_equal(x, y)
    assert len(a.inits_) == 5 and a.inits_.max() == pytest.approx(a.score(X), rel=1e-12)


def test_fit_many_equals_one_fit_per_group():
    X = data(2, n=25)
    groups = ["b" if i % 3 else "a" for i in range(25)]
    groups[7] = "c"
    models = hmmop.fit_many(X, groups, n_states=3, n_symbols=3, n_init=2, epochs=20, seed=3, prior={"B": 1.1})
    assert list(models) == ["a", "b", "c"]
    for i, (g, model) in enumerate(models.items()):
        own = [x for x, gg in zip(X, groups) if gg == g]
        ref = hmmop.HMM(3, 3, seed=3 + i)
        ref._starts_together = False
        ref.fit(own, method="em", epochs=20, n_init=2, seed=3 + i, prior={"B": 1.1})
        for x, y in zip(model.probabilities(), ref.probabilities()):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(model.history_, ref.history_)
    # the categorical gradient block follows EM's result
    m = models["c"]
    A = m.A
    m.fit([X[7]], epochs=1, learning_rate=1e-9)
    np.testing.assert_allclose(m.A, A, rtol=1e-5)
    with pytest.raises(ValueError, match="groups: 3 labels for 25 sequences"):
        hmmop.fit_many(X, ["a", "b", "c"], 2, 3)


def test_select_scores_every_number_of_states_and_picks_by_the_criterion():
    truth = hmmop.HMM.from_probabilities([[0.9, 0.1], [0.2, 0.8]], [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]],
                                         [0.5, 0.5])
    X, _ = truth.sample(20, 60, seed=1)
    sel = hmmop.select(X, states=range(1, 5), n_symbols=3, n_init=3, epochs=50, seed=2)
    assert sel.states == [1, 2, 3, 4]
    for i, n in enumerate(sel.states):
        ref = hmmop.HMM(n, 3, seed=2 + n)           # seeded by N: the same whatever else states holds
        ref._starts_together = False
        ref.fit(X, method="em", n_init=3, seed=2 + n, epochs=50)
        for x, y in zip(sel.models[n].probabilities(), ref.probabilities()):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(sel.bic[i], ref.bic(X), rtol=1e-12)
        np.testing.assert_allclose(sel.loglik[i], ref.score(X), rtol=1e-12)
    assert sel.best_n_states == sel.states[int(np.argmin(sel.bic))] == 2
    assert sel.best is sel.models[2]
    assert "<- bic" in sel.table().splitlines()[2]
    aic = hmmop.select(X, states=[3, 2], n_symbols=3, n_init=3, epochs=50, seed=2, criterion="loglik")
    assert aic.best_n_states == [3, 2][int(np.argmax(aic.loglik))]
    np.testing.assert_array_equal(aic.loglik, sel.loglik[[2, 1]])
    one = hmmop.select(X, states=[2], n_symbols=3, n_init=1, epochs=5, seed=2)
    np.testing.assert_array_equal(one.inits[2], one.loglik)
    with pytest.raises(ValueError, match="criterion must be one of"):
        hmmop.select(X, states=[2], n_symbols=3, criterion="dic")
    with pytest.raises(ValueError, match="states must be distinct positive integers"):
        hmmop.select(X, states=[2, 2], n_symbols=3)


def test_a_model_with_a_vocabulary_fits_its_starts_and_labels():
    """fit scores the rows it prepared (symbol codes), not tokens: n_init, labels, fit_many and select
    work on a model with a vocabulary."""
    X = [list("abcab"), list("bcaacb"), list("aab")]
    fits = []
    for together in (True, False):
        model = hmmop.HMM(2, symbols=list("abc"), seed=0)
        model._starts_together = together
        model.fit(X, method="em", epochs=5, n_init=3, seed=1)
        fits.append(model)
    same = fits[0]
    np.testing.assert_array_equal(same.inits_, fits[1].inits_)
    assert same.inits_.max() == pytest.approx(same.score(X), rel=1e-12)
    history = same.fit(X, method="em", epochs=3, labels=[[0, -1, -1, -1, 1], None, None])
    np.testing.assert_allclose(history[-1], same.score(X, labels=[[0, -1, -1, -1, 1], None, None]), rtol=0.05)
    models = hmmop.fit_many(X, [0, 1, 0], 2, symbols=list("abc"), n_init=2, epochs=3, seed=0)
    assert models[0].symbols == list("abc") and len(models[0].inits_) == 2
    sel = hmmop.select(X, [1, 2], symbols=list("abc"), n_init=2, epochs=3, seed=0)
    np.testing.assert_allclose(sel.loglik, [sel.models[n].score(X) for n in (1, 2)], rtol=1e-12)


def test_select_of_a_family_fits_every_size_as_alone_and_finds_the_true_one():
    """select(family=GaussianHMM): each N's model is that size's fit alone (same parameters, inits_),
    the criteria are the models' own aic/bic, and on three well-separated states BIC picks 3."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 400)
    X = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]])[truth] + 0.7 * rng.normal(size=(400, 2))
    lengths = [200, 200]
    settings = dict(n_features=2, covariance_type="diag", dtype="float64")
    sel = hmmop.select(X, range(1, 5), lengths=lengths, n_init=2, epochs=30, seed=0, family=hmmop.GaussianHMM,
                       **settings)
    assert sel.best_n_states == 3 and sel.best is sel.models[3]
    for i, n in enumerate(sel.states):
        alone = hmmop.GaussianHMM(n, seed=n, **settings)
        alone.fit(X, lengths, n_init=2, epochs=30, seed=n, progress=False)
        np.testing.assert_array_equal(sel.models[n].means, alone.means)
        np.testing.assert_array_equal(sel.models[n].inits_, alone.inits_)
        assert sel.bic[i] == alone.bic(X, lengths) and sel.aic[i] == alone.aic(X, lengths)
    with pytest.raises(ValueError, match="n_symbols"):
        hmmop.select(X, [2], lengths=lengths, n_symbols=3, family=hmmop.GaussianHMM, **settings)
