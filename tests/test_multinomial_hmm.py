"""MultinomialHMM (EmissionHMM core + MultinomialEmission) against independent oracles.

Oracles: hmmlearn 0.3.3's MultinomialHMM (EM from the same start, params subsets, its random start, score /
posteriors / Viterbi, bic), scipy.stats.multinomial densities, one hand-computed MAP step from hmmlearn's
posteriors (the Dirichlet prior, which hmmlearn's MultinomialHMM lacks), the empirical frequencies of many
samples, and hmmop's own NumPy log-likelihood for the MXNet expression.
"""
import logging

import numpy as np
import pytest
from hmmlearn import hmm as hl_hmm
from scipy.stats import multinomial

import hmmop  # noqa: F401  (before mxnet: hmmop's import hook)
from hmmop.emissions.multinomial import MultinomialEmission
from hmmop.models.core import load
from hmmop.models.multinomial import MultinomialHMM

N, M, TRIALS = 3, 4, 6
LENGTHS = np.array([50, 40, 45])
TRUE_A = np.array([[0.8, 0.1, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]])
TRUE_PI = np.array([0.5, 0.3, 0.2])
TRUE_B = np.array([[0.6, 0.2, 0.1, 0.1], [0.05, 0.15, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25]])


@pytest.fixture(autouse=True)
def quiet_hmmlearn():
    """hmmlearn's MultinomialHMM logs a note on its API change at every construction."""
    logger = logging.getLogger("hmmlearn.hmm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def markov_counts(rng, A, pi, B, lengths, trials):
    """(X (sum(lengths), M) int64, states): sequences drawn with NumPy alone (no hmmop code)."""
    X, S = [], []
    for L in lengths:
        s = rng.choice(len(pi), p=pi)
        for t in range(L):
            if t:
                s = rng.choice(len(pi), p=A[s])
            S.append(s)
            X.append(rng.multinomial(trials, B[s]))
    return np.array(X), np.array(S)


X3, _ = markov_counts(np.random.default_rng(0), TRUE_A, TRUE_PI, TRUE_B, LENGTHS, TRIALS)


def start_params(seed=1):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.full(N, 5.0), size=N), rng.dirichlet(np.full(N, 5.0)),
            rng.dirichlet(np.full(M, 3.0), size=N))


def hmmlearn_model(A, pi, B, **kwargs):
    kwargs.setdefault("init_params", "")
    kwargs.setdefault("tol", -np.inf)
    kwargs.setdefault("n_trials", TRIALS)
    hl = hl_hmm.MultinomialHMM(N, **kwargs)
    hl.startprob_, hl.transmat_, hl.emissionprob_ = np.array(pi), np.array(A), np.array(B)
    return hl


def assert_same(model, hl, atol=1e-8):
    np.testing.assert_allclose(model.A, hl.transmat_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.pi, hl.startprob_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.emissionprob, hl.emissionprob_, rtol=0, atol=atol)


# -- EM --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", ["ste", "e", "st", "se", "t"])
def test_em_equals_hmmlearn(params):
    A, pi, B = start_params()
    model = MultinomialHMM.from_parameters(A, pi, B, n_trials=TRIALS, dtype="float64")
    history = model.fit(X3, LENGTHS, method="em", epochs=5, tol=None, params=params)
    hl = hmmlearn_model(A, pi, B, params=params, n_iter=5).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10, atol=0)


def test_em_without_n_trials_equals_hmmlearn_on_rows_of_any_total():
    rng = np.random.default_rng(2)
    X = np.array([rng.multinomial(rng.integers(0, 9), TRUE_B[rng.integers(N)]) for _ in range(LENGTHS.sum())])
    A, pi, B = start_params(2)
    model = MultinomialHMM.from_parameters(A, pi, B, dtype="float64")
    model.fit(X, LENGTHS, epochs=4)
    hl = hmmlearn_model(A, pi, B, n_trials=None, n_iter=4).fit(X, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(model.score(X, LENGTHS), hl.score(X, LENGTHS), rtol=1e-10)


@pytest.mark.parametrize("prior", [2.5, "array"])
def test_dirichlet_prior_is_the_map_step_on_hmmlearn_posteriors(prior):
    """hmmlearn's MultinomialHMM has no emission prior: the oracle is one MAP step by hand,
    rows of max(gamma^T X + a - 1, 0) normalised, from hmmlearn's posteriors."""
    A, pi, B = start_params(3)
    a = np.random.default_rng(3).uniform(0.3, 4.0, size=(N, M)) if prior == "array" else prior
    model = MultinomialHMM.from_parameters(A, pi, B, n_trials=TRIALS, dtype="float64", emissionprob_prior=a)
    model.fit(X3, LENGTHS, epochs=1, params="e")
    gamma = hmmlearn_model(A, pi, B).predict_proba(X3, LENGTHS)
    counts = np.maximum(gamma.T @ X3 + np.broadcast_to(a, (N, M)) - 1, 0)
    np.testing.assert_allclose(model.emissionprob, counts / counts.sum(axis=1, keepdims=True), rtol=0, atol=1e-12)
    assert np.abs(model.emissionprob - hmmlearn_model(A, pi, B, params="e", n_iter=1).fit(X3, LENGTHS)
                  .emissionprob_).max() > 1e-3


# -- inference -------------------------------------------------------------------------------------------

def test_score_posteriors_and_viterbi_equal_hmmlearn():
    A, pi, B = start_params(4)
    model = MultinomialHMM.from_parameters(A, pi, B, n_trials=TRIALS, dtype="float64")
    hl = hmmlearn_model(A, pi, B)
    np.testing.assert_allclose(model.score(X3, LENGTHS), hl.score(X3, LENGTHS), rtol=1e-10)
    np.testing.assert_allclose(np.concatenate(model.predict_proba(X3, LENGTHS)), hl.predict_proba(X3, LENGTHS),
                               rtol=0, atol=1e-10)
    log_prob, paths = model.decode(X3, LENGTHS)
    hl_log_prob, hl_path = hl.decode(X3, LENGTHS)
    np.testing.assert_allclose(log_prob, hl_log_prob, rtol=1e-10)
    np.testing.assert_array_equal(np.concatenate(paths), hl_path)
    assert model.n_free_parameters == sum(hl._get_n_fit_scalars_per_param().values())
    np.testing.assert_allclose(model.bic(X3, LENGTHS), hl.bic(X3, LENGTHS), rtol=1e-10)


def test_log_likelihood_equals_scipy_with_a_zero_probability():
    em = MultinomialEmission(2, 3)
    em.emissionprob = [[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]]
    X = np.array([[2, 0, 1], [0, 1, 0], [0, 0, 0], [10, 5, 7]], dtype=float)
    expected = np.stack([multinomial.logpmf(X, n=X.sum(axis=1), p=em.emissionprob[i]) for i in range(2)], axis=1)
    got = em.log_likelihood(X)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    assert np.isneginf(got).sum() == 2
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-14)
    X[1] = np.nan
    np.testing.assert_array_equal(em.log_likelihood(X)[1], 0.0)


def test_missing_rows_add_no_statistics():
    em = MultinomialEmission(N, M)
    X = X3[:8].astype(float)
    X[[0, 5]] = np.nan
    gamma = np.random.default_rng(0).dirichlet(np.ones(N), size=len(X))
    a, b = em.empty_stats(), em.empty_stats()
    em.accumulate(a, X, gamma)
    keep = ~np.isnan(X).all(axis=1)
    em.accumulate(b, X[keep], gamma[keep])
    np.testing.assert_array_equal(a["obs"], b["obs"])


# -- start -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 5])
def test_start_equals_hmmlearn_random_state(seed):
    model = MultinomialHMM(N, M, n_trials=TRIALS, seed=seed, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=3)
    hl = hl_hmm.MultinomialHMM(N, n_trials=TRIALS, random_state=seed, n_iter=3, tol=-np.inf).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10)


# -- gradient training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_log_likelihood_nd_equals_log_likelihood(dtype):
    import mxnet as mx
    A, pi, B = start_params(5)
    em = MultinomialHMM.from_parameters(A, pi, B).emission
    raw = {k: mx.nd.array(v, dtype=dtype) for k, v in em.raw_parameters().items()}
    got = em.log_likelihood_nd(mx.nd, mx.nd.array(X3.reshape(5, -1, M), dtype=dtype), **raw).asnumpy()
    np.testing.assert_allclose(got.reshape(-1, N), em.log_likelihood(X3.astype(float)),
                               rtol=1e-10 if dtype == "float64" else 1e-5)


def test_gradient_training_climbs():
    A, pi, B = start_params(6)
    model = MultinomialHMM.from_parameters(A, pi, B, n_trials=TRIALS, dtype="float64")
    before = model.score(X3, LENGTHS)
    history = model.fit(X3, LENGTHS, method="gradient", epochs=60, learning_rate=0.05)
    assert model.score(X3, LENGTHS) > before + 1.0 and history[-1] > history[0]
    np.testing.assert_allclose(model.emissionprob.sum(axis=1), 1.0, rtol=0, atol=1e-12)


# -- files, sampling, bad input --------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    A, pi, B = start_params(7)
    model = MultinomialHMM.from_parameters(A, pi, B, n_trials=TRIALS, dtype="float64", emissionprob_prior=1.5)
    model.fit(X3, LENGTHS, epochs=2)
    path = str(tmp_path / "m.npz")
    model.save(path)
    back = load(path)
    assert isinstance(back, MultinomialHMM) and back.n_trials == TRIALS
    assert back.emission.emissionprob_prior == 1.5
    np.testing.assert_array_equal(back.emissionprob, model.emissionprob)
    np.testing.assert_allclose(back.score(X3, LENGTHS), model.score(X3, LENGTHS), rtol=1e-13)


def test_sample_shapes_and_frequencies():
    model = MultinomialHMM.from_parameters(TRUE_A, TRUE_PI, TRUE_B, n_trials=TRIALS, dtype="float64")
    X, states = model.sample(2, 9, seed=0)
    assert len(X) == 2 and X[0].shape == (9, M) and X[0].dtype.kind == "i"
    X, states = model.sample(30, 400, seed=1)
    X, states = np.concatenate(X), np.concatenate(states)
    np.testing.assert_array_equal(X.sum(axis=1), TRIALS)
    for i in range(N):
        freq = X[states == i].sum(axis=0) / (TRIALS * (states == i).sum())
        se = np.sqrt(TRUE_B[i] * (1 - TRUE_B[i]) / (TRIALS * (states == i).sum()))
        assert (np.abs(freq - TRUE_B[i]) < 5 * se).all()
    with pytest.raises(ValueError, match="n_trials"):
        MultinomialHMM.from_parameters(TRUE_A, TRUE_PI, TRUE_B).sample(1, 3)


BAD_DATA = {
    "total": (np.array([[1, 2, 3, 0], [2, 2, 2, 1]]), r"X\[1\] sums to 7 but n_trials = 6"),
    "negative": (np.array([[7, -1, 0, 0]]), r"X\[0\].*-1.*non-negative integers"),
    "fractional": (np.array([[1.5, 1.5, 3, 0]]), r"X\[0\].*1\.5.*integers"),
    "features": (np.full((2, 3), 2), r"3 features per row but the model has 4"),
    "infinite": (np.array([[np.inf, 0, 0, 0]]), r"X\[0\] has a non-finite value"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_raises_value_error_naming_the_input(name):
    X, message = BAD_DATA[name]
    model = MultinomialHMM.from_parameters(TRUE_A, TRUE_PI, TRUE_B, n_trials=TRIALS, dtype="float64")
    for call in (lambda: model.fit(X, epochs=1), lambda: model.score(X), lambda: model.predict(X)):
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(model.emissionprob, TRUE_B)


def test_bad_settings_and_parameters():
    with pytest.raises(ValueError, match="n_trials"):
        MultinomialEmission(2, 3, n_trials=2.5)
    with pytest.raises(ValueError, match="emissionprob_prior"):
        MultinomialEmission(2, 3, emissionprob_prior=0.0)
    with pytest.raises(ValueError, match="emissionprob_prior"):
        MultinomialEmission(2, 3, emissionprob_prior=np.ones(3))
    em = MultinomialEmission(2, 3)
    with pytest.raises(ValueError, match=r"emissionprob\[0\]"):
        em.emissionprob = [[0.5, 0.4, 0.2], [0.2, 0.3, 0.5]]
    with pytest.raises(ValueError, match="shape"):
        em.emissionprob = np.full((2, 4), 0.25)


def test_log_likelihood_kept_row_terms_follow_the_data():
    """log(n!) - sum log(x!) kept per data array: the same array again, changed in place, another array, a copy."""
    import copy
    import pickle
    em = MultinomialEmission(2, 3)
    em.emissionprob = [[0.5, 0.2, 0.3], [0.2, 0.3, 0.5]]

    def expected(X):
        keep = ~np.isnan(X).all(axis=1)
        out = np.zeros((len(X), 2))
        out[keep] = np.stack([multinomial.logpmf(X[keep], n=X[keep].sum(axis=1), p=em.emissionprob[i])
                              for i in range(2)], axis=1)
        return out

    X = np.random.default_rng(0).multinomial(6, [0.3, 0.3, 0.4], size=50).astype(float)
    for _ in range(2):
        np.testing.assert_allclose(em.log_likelihood(X), expected(X), rtol=1e-12)
    X[3] = [1.0, 9.0, 0.0]
    X[5] = np.nan
    np.testing.assert_allclose(em.log_likelihood(X), expected(X), rtol=1e-12)
    Y = X[::-1].copy()
    np.testing.assert_allclose(em.log_likelihood(Y), expected(Y), rtol=1e-12)
    for other in (pickle.loads(pickle.dumps(em)), copy.deepcopy(em)):
        np.testing.assert_allclose(other.log_likelihood(X), expected(X), rtol=1e-12)
