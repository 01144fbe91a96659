"""PoissonHMM (EmissionHMM core + PoissonEmission) against independent oracles.

Oracles: hmmlearn 0.3.3's PoissonHMM (EM from the same start, with and without its gamma prior, params
subsets, its random start, score / posteriors / Viterbi, bic), scipy.stats.poisson densities and brute-force
enumeration of the state paths (missing rows), the empirical moments of many samples, and hmmop's own
NumPy log-likelihood for the MXNet expression.
"""
import itertools

import numpy as np
import pytest
from hmmlearn import hmm as hl_hmm
from scipy.special import logsumexp
from scipy.stats import poisson

import hmmop  # noqa: F401  (before mxnet: hmmop's import hook)
from hmmop.emissions.poisson import PoissonEmission
from hmmop.models.core import load
from hmmop.models.poisson import PoissonHMM

N, D = 3, 2
LENGTHS = np.array([60, 45, 50])
TRUE_A = np.array([[0.8, 0.1, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]])
TRUE_PI = np.array([0.5, 0.3, 0.2])
TRUE_LAMBDAS = np.array([[1.0, 6.0], [4.0, 0.5], [9.0, 3.0]])


def markov_counts(rng, A, pi, lambdas, lengths):
    """(X (sum(lengths), D) int64, states): sequences drawn with NumPy alone (no hmmop code)."""
    X, S = [], []
    for L in lengths:
        s = rng.choice(len(pi), p=pi)
        for t in range(L):
            if t:
                s = rng.choice(len(pi), p=A[s])
            S.append(s)
            X.append(rng.poisson(lambdas[s]))
    return np.array(X), np.array(S)


X3, _ = markov_counts(np.random.default_rng(0), TRUE_A, TRUE_PI, TRUE_LAMBDAS, LENGTHS)


def start_params(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.full(N, 5.0), size=N), rng.dirichlet(np.full(N, 5.0)),
            TRUE_LAMBDAS * rng.uniform(0.5, 1.5, size=(N, D)))


def hmmlearn_model(A, pi, lambdas, **kwargs):
    kwargs.setdefault("init_params", "")
    kwargs.setdefault("tol", -np.inf)
    hl = hl_hmm.PoissonHMM(N, **kwargs)
    hl.startprob_, hl.transmat_, hl.lambdas_ = np.array(pi), np.array(A), np.array(lambdas)
    return hl


def assert_same(model, hl, atol=1e-8):
    np.testing.assert_allclose(model.A, hl.transmat_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.pi, hl.startprob_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.lambdas, hl.lambdas_, rtol=0, atol=atol)


# -- EM --------------------------------------------------------------------------------------------------

PRIORS = {
    "none": ({}, {}),
    "scalar": (dict(lambdas_prior=2.0, lambdas_weight=0.5), dict(lambdas_prior=2.0, lambdas_weight=0.5)),
    "per state": (dict(lambdas_prior=np.array([1.0, 3.0, 0.5]), lambdas_weight=np.array([0.2, 2.0, 1.0])),
                  dict(lambdas_prior=np.array([[1.0], [3.0], [0.5]]), lambdas_weight=np.array([[0.2], [2.0], [1.0]]))),
    "full": (dict(lambdas_prior=np.arange(1.0, 7.0).reshape(N, D), lambdas_weight=3.0),
             dict(lambdas_prior=np.arange(1.0, 7.0).reshape(N, D), lambdas_weight=3.0)),
}


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("params", ["stl", "l", "st", "sl", "t"])
def test_em_equals_hmmlearn(params, prior):
    ours, theirs = PRIORS[prior]
    A, pi, lambdas = start_params()
    model = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64", **ours)
    history = model.fit(X3, LENGTHS, method="em", epochs=5, tol=None, params=params)
    hl = hmmlearn_model(A, pi, lambdas, params=params, n_iter=5, **theirs).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10, atol=0)
    if "l" in params and prior != "none":                  # the prior changes the result: not vacuous
        plain = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
        plain.fit(X3, LENGTHS, epochs=5, params=params)
        assert np.abs(plain.lambdas - model.lambdas).max() > 1e-3


def test_em_takes_every_data_form():
    A, pi, lambdas = start_params(2)
    seqs = np.split(X3, np.cumsum(LENGTHS)[:-1])
    a = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
    b = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
    np.testing.assert_array_equal(a.fit(X3, LENGTHS, epochs=3), b.fit([s.astype(float) for s in seqs], epochs=3))
    np.testing.assert_array_equal(a.lambdas, b.lambdas)


# -- inference -------------------------------------------------------------------------------------------

def test_score_posteriors_and_viterbi_equal_hmmlearn():
    A, pi, lambdas = start_params(3)
    model = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
    hl = hmmlearn_model(A, pi, lambdas)
    np.testing.assert_allclose(model.score(X3, LENGTHS), hl.score(X3, LENGTHS), rtol=1e-10)
    np.testing.assert_allclose(np.concatenate(model.predict_proba(X3, LENGTHS)), hl.predict_proba(X3, LENGTHS),
                               rtol=0, atol=1e-10)
    log_prob, paths = model.decode(X3, LENGTHS)
    hl_log_prob, hl_path = hl.decode(X3, LENGTHS)
    np.testing.assert_allclose(log_prob, hl_log_prob, rtol=1e-10)
    np.testing.assert_array_equal(np.concatenate(paths), hl_path)
    assert model.n_free_parameters == sum(hl._get_n_fit_scalars_per_param().values())
    np.testing.assert_allclose(model.bic(X3, LENGTHS), hl.bic(X3, LENGTHS), rtol=1e-10)


def test_log_likelihood_equals_scipy_with_a_zero_rate():
    em = PoissonEmission(2, 3)
    em.lambdas = [[0.5, 0.0, 2.0], [3.0, 1.0, 0.0]]
    X = np.array([[0, 0, 1], [2, 1, 0], [7, 0, 3], [0, 0, 0]], dtype=float)
    expected = np.stack([poisson.logpmf(X, em.lambdas[i]).sum(axis=1) for i in range(2)], axis=1)
    got = em.log_likelihood(X)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    assert np.isneginf(got).sum() == 3
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12)
    big = np.array([[5000.0, 123456.0]])                  # counts beyond any table: lgamma of the values
    em2 = PoissonEmission(1, 2)
    em2.lambdas = [[4000.0, 1e5]]
    np.testing.assert_allclose(em2.log_likelihood(big)[:, 0], poisson.logpmf(big, [4000.0, 1e5]).sum(axis=1),
                               rtol=1e-12)


def test_missing_rows_match_brute_force_and_add_no_statistics():
    A, pi, lambdas = start_params(4)
    X = X3[:5].astype(float)
    X[2] = np.nan
    model = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
    dens = np.array([[0.0 if np.isnan(x).all() else poisson.logpmf(x, lambdas[i]).sum() for i in range(N)]
                     for x in X])
    paths = np.array(list(itertools.product(range(N), repeat=len(X))))
    logp = (np.log(pi)[paths[:, 0]] + np.log(A[paths[:, :-1], paths[:, 1:]]).sum(axis=1)
            + dens[np.arange(len(X)), paths].sum(axis=1))
    np.testing.assert_allclose(model.score(X), logsumexp(logp), rtol=1e-12)
    em = model.emission
    gamma = np.random.default_rng(0).dirichlet(np.ones(N), size=len(X))
    with_missing, without = em.empty_stats(), em.empty_stats()
    em.accumulate(with_missing, X, gamma)
    keep = ~np.isnan(X).all(axis=1)
    em.accumulate(without, X[keep], gamma[keep])
    for key in without:
        np.testing.assert_array_equal(with_missing[key], without[key])
    model.fit(X, epochs=3)                                  # EM runs through a missing row
    assert np.isfinite(model.lambdas).all()


# -- start -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 7])
def test_start_equals_hmmlearn_random_state(seed):
    """PoissonHMM(seed=s).fit from scratch == hmmlearn's PoissonHMM(random_state=s).fit: pi and A from
    RandomState(s).dirichlet, lambdas from a fresh RandomState(s).gamma with the moments of X."""
    model = PoissonHMM(N, D, seed=seed, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=3)
    hl = hl_hmm.PoissonHMM(N, random_state=seed, n_iter=3, tol=-np.inf).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10)
    start = hl_hmm.PoissonHMM(N, random_state=seed, n_iter=0).fit(X3, LENGTHS)
    np.testing.assert_array_equal(PoissonEmission(N, D).initialize(X3, seed).lambdas, start.lambdas_)


def test_start_needs_counts_that_vary():
    with pytest.raises(ValueError, match="variance"):
        PoissonEmission(2, 2).initialize(np.full((5, 2), 3.0), 0)


# -- gradient training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_log_likelihood_nd_equals_log_likelihood(dtype):
    import mxnet as mx
    A, pi, lambdas = start_params(5)
    em = PoissonHMM.from_parameters(A, pi, lambdas).emission
    raw = {k: mx.nd.array(v, dtype=dtype) for k, v in em.raw_parameters().items()}
    got = em.log_likelihood_nd(mx.nd, mx.nd.array(X3.reshape(5, -1, D), dtype=dtype), **raw).asnumpy()
    np.testing.assert_allclose(got.reshape(-1, N), em.log_likelihood(X3.astype(float)),
                               rtol=1e-10 if dtype == "float64" else 1e-5)


def test_gradient_training_climbs_and_learns_only_lambdas_with_l():
    A, pi, lambdas = start_params(6)
    model = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64")
    before = model.score(X3, LENGTHS)
    history = model.fit(X3, LENGTHS, method="gradient", epochs=60, learning_rate=0.05, params="l")
    assert model.score(X3, LENGTHS) > before + 1.0 and history[-1] > history[0]
    np.testing.assert_allclose(model.A, A, rtol=0, atol=1e-12)        # (through a softmax and back)
    assert np.abs(model.lambdas - lambdas).max() > 1e-2


# -- files, sampling, bad input --------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    A, pi, lambdas = start_params(7)
    model = PoissonHMM.from_parameters(A, pi, lambdas, dtype="float64", lambdas_prior=np.array([1.0, 2.0, 3.0]),
                                       lambdas_weight=0.5)
    model.fit(X3, LENGTHS, epochs=2)
    path = str(tmp_path / "p.npz")
    model.save(path)
    back = load(path)
    assert isinstance(back, PoissonHMM) and PoissonHMM.load(path).n_features == D
    np.testing.assert_array_equal(back.lambdas, model.lambdas)
    np.testing.assert_allclose(back.A, model.A, rtol=1e-15, atol=0)     # (renormalised on loading)
    np.testing.assert_array_equal(back.emission.lambdas_prior, [1.0, 2.0, 3.0])
    assert back.emission.lambdas_weight == 0.5
    np.testing.assert_allclose(back.score(X3, LENGTHS), model.score(X3, LENGTHS), rtol=1e-13)


def test_sample_shapes_and_moments():
    model = PoissonHMM.from_parameters(TRUE_A, TRUE_PI, TRUE_LAMBDAS, dtype="float64")
    X, states = model.sample(3, 7, seed=0)
    assert len(X) == len(states) == 3 and X[0].shape == (7, D) and X[0].dtype.kind == "i"
    X, states = model.sample(40, 500, seed=1)
    X, states = np.concatenate(X), np.concatenate(states)
    assert (X >= 0).all()
    again, _ = model.sample(40, 500, seed=1)
    np.testing.assert_array_equal(np.concatenate(again), X)
    for i in range(N):
        rows = X[states == i]
        se = np.sqrt(TRUE_LAMBDAS[i] / len(rows))
        assert (np.abs(rows.mean(axis=0) - TRUE_LAMBDAS[i]) < 5 * se).all()
        assert (np.abs(rows.var(axis=0) / TRUE_LAMBDAS[i] - 1) < 0.1).all()     # Poisson: variance = mean


BAD_DATA = {
    "negative": (np.array([[1, 2], [3, -1]]), r"X\[1\].*-1.*non-negative integers"),
    "fractional": (np.array([[1, 2.5], [3, 1]]), r"X\[0\].*2\.5.*integers"),
    "features": (np.ones((4, 3)), r"3 features per row but the model has 2"),
    "infinite": (np.array([[1, np.inf]]), r"X\[0\] has a non-finite value"),
    "part nan": (np.array([[1, np.nan], [1, 2]]), r"X\[0\] has a non-finite value"),
    # (data.feature_rows converts a 2-D array before the emission sees it: NumPy's message, not naming X)
    "text": (np.array([["a", "b"]]), r"could not convert string"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_raises_value_error_naming_the_input(name):
    X, message = BAD_DATA[name]
    model = PoissonHMM.from_parameters(TRUE_A, TRUE_PI, TRUE_LAMBDAS, dtype="float64")
    for call in (lambda: model.fit(X, epochs=1), lambda: model.score(X)):
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(model.lambdas, TRUE_LAMBDAS)


def test_bad_settings_and_parameters():
    with pytest.raises(ValueError, match="n_states"):
        PoissonEmission(0, 2)
    with pytest.raises(ValueError, match="lambdas_prior"):
        PoissonEmission(2, 2, lambdas_prior=-1.0)
    with pytest.raises(ValueError, match="lambdas_weight"):
        PoissonEmission(2, 2, lambdas_weight=np.ones(3))
    em = PoissonEmission(2, 2)
    with pytest.raises(ValueError, match=r"lambdas\[1\]"):
        em.lambdas = [[1.0, 2.0], [-1.0, 1.0]]
    with pytest.raises(ValueError, match="shape"):
        em.lambdas = np.ones((3, 2))
    with pytest.raises(ValueError, match="params"):
        em.m_step(em.empty_stats(), "m")
    with pytest.raises(ValueError, match="states"):
        em.sample([0, 2])


def test_log_likelihood_kept_row_terms_follow_the_data():
    """log(k!) terms kept per data array: the same array again, changed in place, another array, a copy."""
    import copy
    import pickle
    em = PoissonEmission(2, 3)
    em.lambdas = [[0.5, 1.5, 2.0], [3.0, 1.0, 4.0]]

    def expected(X):
        out = np.stack([poisson.logpmf(X, em.lambdas[i]).sum(axis=1) for i in range(2)], axis=1)
        out[np.isnan(X).all(axis=1)] = 0.0
        return out

    X = np.random.default_rng(0).poisson(3.0, size=(50, 3)).astype(float)
    for _ in range(2):
        np.testing.assert_allclose(em.log_likelihood(X), expected(X), rtol=1e-12)
    X[3, 1] += 7.0
    X[5] = np.nan
    np.testing.assert_allclose(em.log_likelihood(X), expected(X), rtol=1e-12)
    Y = X[::-1].copy()
    np.testing.assert_allclose(em.log_likelihood(Y), expected(Y), rtol=1e-12)
    for other in (pickle.loads(pickle.dumps(em)), copy.deepcopy(em)):
        np.testing.assert_allclose(other.log_likelihood(X), expected(X), rtol=1e-12)


def test_row_cache_keeps_nothing_for_freed_or_large_arrays(monkeypatch):
    import gc

    from hmmop.emissions.poisson import RowCache
    em = PoissonEmission(2, 3)
    em.lambdas = [[0.5, 1.5, 2.0], [3.0, 1.0, 4.0]]
    X = np.random.default_rng(1).poisson(2.0, size=(40, 3)).astype(float)
    expected = np.stack([poisson.logpmf(X, em.lambdas[i]).sum(axis=1) for i in range(2)], axis=1)
    np.testing.assert_allclose(em.log_likelihood(X), expected, rtol=1e-12)
    cache = em._row_cache
    assert cache.get(X)                                     # kept for X
    del X
    gc.collect()
    assert cache._copy is None and not cache._values        # X freed: nothing kept
    monkeypatch.setattr(RowCache, "LIMIT", 10)
    X = np.random.default_rng(1).poisson(2.0, size=(40, 3)).astype(float)
    for _ in range(2):
        np.testing.assert_allclose(em.log_likelihood(X), expected, rtol=1e-12)
        assert cache._copy is None and not cache._values    # beyond LIMIT: computed, not kept
