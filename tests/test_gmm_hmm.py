"""GMMHMM (EmissionHMM core + GMMEmission) against independent oracles.

Oracles: hmmlearn 0.3.3's GMMHMM (EM from the same start for every covariance type, with and without
priors, params subsets, its k-means start, score / posteriors / Viterbi), scipy.stats.multivariate_normal
mixture densities and brute-force enumeration of the state paths (missing rows), the empirical moments of
many samples, and hmmop's own NumPy log-likelihood for the MXNet expression.
"""
import itertools

import numpy as np
import pytest
from hmmlearn import hmm as hl_hmm
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import hmmop  # noqa: F401  (before mxnet: hmmop's import hook)
from hmmop.emissions.gmm import GMMEmission
from hmmop.models.core import load
from hmmop.models.gmm import GMMHMM

TYPES = ["spherical", "diag", "full", "tied"]
N, K, D = 3, 2, 2
LENGTHS = np.array([60, 45, 50])
TRUE_A = np.array([[0.8, 0.1, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]])
TRUE_PI = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[[0.0, 0.0], [1.5, -1.0]], [[4.0, 1.0], [3.0, 3.0]], [[-3.0, 3.0], [-2.0, 5.0]]])


def markov_rows(rng, lengths):
    """(X (sum(lengths), D), states): sequences drawn with NumPy alone (no hmmop code)."""
    X, S = [], []
    for L in lengths:
        s = rng.choice(N, p=TRUE_PI)
        for t in range(L):
            if t:
                s = rng.choice(N, p=TRUE_A[s])
            S.append(s)
            X.append(TRUE_MEANS[s, rng.integers(K)] + rng.normal(scale=0.6, size=D))
    return np.array(X), np.array(S)


X3, _ = markov_rows(np.random.default_rng(0), LENGTHS)


def covars_for(kind, rng, n_mix=K):
    """Start covariances in hmmlearn's GMMHMM shape for ``kind``."""
    if kind == "spherical":
        return rng.uniform(0.5, 2.0, size=(N, n_mix))
    if kind == "diag":
        return rng.uniform(0.5, 2.0, size=(N, n_mix, D))
    B = rng.normal(size=(N, n_mix, D, D))
    full = B @ np.swapaxes(B, -1, -2) / D + 0.5 * np.eye(D)
    return full if kind == "full" else full[:, 0]


def start_params(kind, seed=1, n_mix=K):
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.full(N, 5.0), size=N)
    pi = rng.dirichlet(np.full(N, 5.0))
    weights = rng.dirichlet(np.full(n_mix, 3.0), size=N)
    means = np.repeat(TRUE_MEANS.mean(axis=1, keepdims=True), n_mix, axis=1) + rng.normal(size=(N, n_mix, D))
    return A, pi, weights, means, covars_for(kind, rng, n_mix)


def hmmlearn_model(kind, A, pi, weights, means, covars, **kwargs):
    kwargs.setdefault("init_params", "")
    kwargs.setdefault("tol", -np.inf)
    hl = hl_hmm.GMMHMM(N, weights.shape[1], covariance_type=kind, **kwargs)
    hl.n_features = D
    hl.startprob_, hl.transmat_ = np.array(pi), np.array(A)
    hl.weights_, hl.means_, hl.covars_ = np.array(weights), np.array(means), np.array(covars)
    return hl


def assert_same(model, hl, atol=1e-8):
    np.testing.assert_allclose(model.A, hl.transmat_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.pi, hl.startprob_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.weights, hl.weights_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.means, hl.means_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.covars, hl.covars_, rtol=0, atol=atol)


# -- EM --------------------------------------------------------------------------------------------------

def priors_for(kind):
    """Priors away from the defaults, as arrays of hmmlearn's shapes (broadcast from fewer axes too)."""
    rng = np.random.default_rng(9)
    out = dict(weights_prior=rng.uniform(1.5, 4.0, size=(N, K)), means_prior=rng.normal(size=(N, K, D)),
               means_weight=rng.uniform(0.5, 3.0, size=(N, K)))
    if kind == "spherical":
        out.update(covars_prior=rng.uniform(0.5, 2.0, size=(N, K)), covars_weight=0.4)
    elif kind == "diag":
        out.update(covars_prior=1.5, covars_weight=rng.uniform(0.1, 0.8, size=(N, K, D)))
    elif kind == "full":
        out.update(covars_prior=np.array([[0.4, 0.1], [0.1, 0.3]]), covars_weight=rng.uniform(1.0, 4.0, size=(N, K)))
    else:
        out.update(covars_prior=np.array([[[0.5, 0.2], [0.2, 0.4]]] * N), covars_weight=np.array([1.0, 3.0, 5.0]))
    return out


@pytest.mark.parametrize("with_priors", [False, True], ids=["default priors", "priors"])
@pytest.mark.parametrize("kind", TYPES)
def test_em_equals_hmmlearn(kind, with_priors):
    A, pi, w, means, covars = start_params(kind)
    priors = priors_for(kind) if with_priors else {}
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64", **priors)
    history = model.fit(X3, LENGTHS, method="em", epochs=5, tol=None)
    hl = hmmlearn_model(kind, A, pi, w, means, covars, n_iter=5, **priors).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10, atol=0)
    if with_priors:                                          # the priors change the result: not vacuous
        plain = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
        plain.fit(X3, LENGTHS, epochs=5)
        assert np.abs(plain.covars - model.covars).max() > 1e-3
        assert np.abs(plain.means - model.means).max() > 1e-3


@pytest.mark.parametrize("params", ["w", "m", "c", "mc", "wc", "st", "tmc"])
@pytest.mark.parametrize("kind", ["diag", "full", "tied"])
def test_em_params_subset_equals_hmmlearn(kind, params):
    A, pi, w, means, covars = start_params(kind, seed=2)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    model.fit(X3, LENGTHS, epochs=3, params=params)
    hl = hmmlearn_model(kind, A, pi, w, means, covars, n_iter=3, params=params).fit(X3, LENGTHS)
    assert_same(model, hl)


@pytest.mark.parametrize("kind,n_mix", [("diag", 1), ("full", 3), ("spherical", 3), ("tied", 1)])
def test_em_other_mixture_sizes_equal_hmmlearn(kind, n_mix):
    A, pi, w, means, covars = start_params(kind, seed=3, n_mix=n_mix)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    model.fit(X3, LENGTHS, epochs=4)
    hl = hmmlearn_model(kind, A, pi, w, means, covars, n_iter=4).fit(X3, LENGTHS)
    assert_same(model, hl)


def test_em_of_a_component_with_zero_weight():
    """hmmlearn's rule for a dead component (weight 0, nothing to average): mean 0.  Its covariance
    update is 0/0 under the default priors - NaN in hmmlearn, the old covariance in hmmop."""
    kind = "diag"
    A, pi, w, means, covars = start_params(kind, seed=4)
    w[1] = [1.0, 0.0]
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    model.fit(X3, LENGTHS, epochs=2)
    with np.errstate(divide="ignore", invalid="ignore"):                   # (hmmlearn's log 0 and 0 / 0)
        hl = hmmlearn_model(kind, A, pi, w, means, covars, n_iter=1).fit(X3, LENGTHS)
    assert np.isnan(hl.covars_[1, 1]).all()
    np.testing.assert_array_equal(model.means[1, 1], 0.0)
    np.testing.assert_array_equal(model.covars[1, 1], covars[1, 1])
    assert model.weights[1, 1] == 0 and np.isfinite(model.score(X3, LENGTHS))
    one = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    one.fit(X3, LENGTHS, epochs=1)
    ok = ~np.isnan(hl.covars_)
    np.testing.assert_allclose(one.covars[ok], hl.covars_[ok], rtol=0, atol=1e-8)
    np.testing.assert_allclose(one.means, hl.means_, rtol=0, atol=1e-8)


def test_em_of_data_far_from_zero_equals_hmmlearn():
    """The sums are taken about the mean of the means: data at 1e4 keep their digits."""
    kind = "full"
    A, pi, w, means, covars = start_params(kind, seed=5)
    X = X3 + 1e4
    model = GMMHMM.from_parameters(A, pi, w, means + 1e4, covars, covariance_type=kind, dtype="float64")
    model.fit(X, LENGTHS, epochs=3)
    hl = hmmlearn_model(kind, A, pi, w, means + 1e4, covars, n_iter=3).fit(X, LENGTHS)
    np.testing.assert_allclose(model.means, hl.means_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.covars, hl.covars_, rtol=0, atol=1e-7)
    np.testing.assert_allclose(model.weights, hl.weights_, rtol=0, atol=1e-8)


# -- inference -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_score_posteriors_and_viterbi_equal_hmmlearn(kind):
    A, pi, w, means, covars = start_params(kind, seed=6)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    hl = hmmlearn_model(kind, A, pi, w, means, covars)
    np.testing.assert_allclose(model.score(X3, LENGTHS), hl.score(X3, LENGTHS), rtol=1e-10)
    np.testing.assert_allclose(np.concatenate(model.predict_proba(X3, LENGTHS)), hl.predict_proba(X3, LENGTHS),
                               rtol=0, atol=1e-10)
    log_prob, paths = model.decode(X3, LENGTHS)
    hl_log_prob, hl_path = hl.decode(X3, LENGTHS)
    np.testing.assert_allclose(log_prob, hl_log_prob, rtol=1e-10)
    np.testing.assert_array_equal(np.concatenate(paths), hl_path)


def mixture_logpdf(x, weights, means, covs):
    """log sum_k w_k N(x; m_k, S_k) with scipy (covs (K, D, D))."""
    return logsumexp([np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(x)
                      for k in range(len(weights))], axis=0)


def full_covs(kind, covars, i):
    """State i's (K, D, D) covariance matrices from hmmlearn's storage."""
    c = np.asarray(covars)
    if kind == "spherical":
        return c[i][:, None, None] * np.eye(D)
    if kind == "diag":
        return np.stack([np.diag(v) for v in c[i]])
    return c[i] if kind == "full" else np.repeat(c[i][None], K, axis=0)


@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_equals_scipy_mixture(kind):
    A, pi, w, means, covars = start_params(kind, seed=7)
    em = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind).emission
    expected = np.stack([mixture_logpdf(X3, w[i], means[i], full_covs(kind, covars, i)) for i in range(N)], axis=1)
    np.testing.assert_allclose(em.log_likelihood(X3), expected, rtol=1e-11)


def test_missing_rows_match_brute_force_and_add_no_statistics():
    kind = "full"
    A, pi, w, means, covars = start_params(kind, seed=8)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    X = X3[:5].copy()
    X[[1, 4]] = np.nan
    dens = np.array([[0.0 if np.isnan(x).all() else mixture_logpdf(x, w[i], means[i], covars[i])
                      for i in range(N)] for x in X])
    paths = np.array(list(itertools.product(range(N), repeat=len(X))))
    logp = (np.log(pi)[paths[:, 0]] + np.log(A[paths[:, :-1], paths[:, 1:]]).sum(axis=1)
            + dens[np.arange(len(X)), paths].sum(axis=1))
    np.testing.assert_allclose(model.score(X), logsumexp(logp), rtol=1e-12)
    em = model.emission
    gamma = np.random.default_rng(0).dirichlet(np.ones(N), size=len(X))
    a, b = em.empty_stats(), em.empty_stats()
    em.accumulate(a, X, gamma)
    keep = ~np.isnan(X).all(axis=1)
    em.accumulate(b, X[keep], gamma[keep])
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-14, atol=1e-14)
    model.fit(X, epochs=2)
    assert np.isfinite(model.covars).all()


def test_n_free_parameters():
    """hmmlearn 0.3.3 counts K - 1 free weights for the whole model; each state has K - 1."""
    for kind in TYPES:
        A, pi, w, means, covars = start_params(kind)
        model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind)
        theirs = hmmlearn_model(kind, A, pi, w, means, covars)._get_n_fit_scalars_per_param()
        assert model.n_free_parameters == sum(theirs.values()) - (K - 1) + N * (K - 1)


# -- start -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_kmeans_start_equals_hmmlearn_random_state(kind):
    seed = 3
    model = GMMHMM(N, D, K, kind, seed=seed, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=2)
    hl = hl_hmm.GMMHMM(N, K, covariance_type=kind, random_state=seed, n_iter=2, tol=-np.inf).fit(X3, LENGTHS)
    assert_same(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-10)


def test_start_of_a_cluster_smaller_than_n_mix_is_seeded():
    """hmmlearn draws such a cluster's means from NumPy's global generator; hmmop from RandomState(seed)."""
    X = np.concatenate([np.random.default_rng(1).normal(size=(40, D)), [[50.0, 50.0]]])
    a = GMMEmission(2, D, n_mix=3).initialize(X, 4)
    b = GMMEmission(2, D, n_mix=3).initialize(X, 4)
    np.testing.assert_array_equal(a.means, b.means)
    assert np.isfinite(a.means).all() and a.means.shape == (2, 3, D)


# -- gradient training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_nd_equals_log_likelihood(kind):
    import mxnet as mx
    A, pi, w, means, covars = start_params(kind, seed=10)
    em = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind).emission
    raw = {k: mx.nd.array(v, dtype="float64") for k, v in em.raw_parameters().items()}
    got = em.log_likelihood_nd(mx.nd, mx.nd.array(X3.reshape(5, -1, D), dtype="float64"), **raw).asnumpy()
    np.testing.assert_allclose(got.reshape(-1, N), em.log_likelihood(X3), rtol=1e-10)


@pytest.mark.parametrize("kind", ["diag", "tied"])
def test_gradient_training_climbs(kind):
    A, pi, w, means, covars = start_params(kind, seed=11)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
    before = model.score(X3, LENGTHS)
    history = model.fit(X3, LENGTHS, method="gradient", epochs=40, learning_rate=0.05)
    assert model.score(X3, LENGTHS) > before + 5.0 and history[-1] > history[0]
    np.testing.assert_allclose(model.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_gradient_params_w_changes_only_weights():
    A, pi, w, means, covars = start_params("full", seed=12)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type="full", dtype="float64")
    model.fit(X3, LENGTHS, method="gradient", epochs=10, params="w")
    np.testing.assert_allclose(model.means, means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.covars, covars, rtol=0, atol=1e-12)
    assert np.abs(model.weights - w).max() > 1e-3


# -- files, sampling, bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_save_load_round_trip(kind, tmp_path):
    A, pi, w, means, covars = start_params(kind, seed=13)
    model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64",
                                   **priors_for(kind))
    model.fit(X3, LENGTHS, epochs=2)
    path = str(tmp_path / "g.npz")
    model.save(path)
    back = load(path)
    assert isinstance(back, GMMHMM) and back.covariance_type == kind and back.n_mix == K
    for name in ("weights", "means", "covars"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    for name in ("A", "pi"):                 # (the core renormalises them on loading: rounding only)
        np.testing.assert_allclose(getattr(back, name), getattr(model, name), rtol=1e-15, atol=0)
    np.testing.assert_allclose(back.score(X3, LENGTHS), model.score(X3, LENGTHS), rtol=1e-13)
    # the priors too: one more EM step gives the same parameters
    model.fit(X3, LENGTHS, epochs=1)
    back.fit(X3, LENGTHS, epochs=1)
    np.testing.assert_allclose(back.covars, model.covars, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_sample_shapes_and_moments(kind):
    w = np.array([[0.3, 0.7]])
    means = np.array([[[-6.0, 0.0], [6.0, 1.0]]])
    covars = np.array([[[0.5, 2.0], [1.0, 0.3]]]) if kind == "diag" else \
        np.array([[[[1.0, 0.4], [0.4, 0.5]], [[0.6, -0.2], [-0.2, 1.5]]]])
    model = GMMHMM.from_parameters(np.ones((1, 1)), np.ones(1), w, means, covars, covariance_type=kind)
    X, states = model.sample(2, 5, seed=0)
    assert len(X) == 2 and X[0].shape == (5, D) and X[0].dtype == np.float64
    X = np.concatenate(model.sample(10, 3000, seed=1)[0])
    right = X[:, 0] > 0
    assert abs(right.mean() - 0.7) < 5 * np.sqrt(0.21 / len(X))
    for k, rows in ((0, X[~right]), (1, X[right])):
        cov = np.diag(covars[0, k]) if kind == "diag" else covars[0, k]
        np.testing.assert_allclose(rows.mean(axis=0), means[0, k], atol=5 * np.sqrt(cov.diagonal().max() / len(rows)))
        np.testing.assert_allclose(np.cov(rows.T), cov, atol=0.08)


BAD_DATA = {
    "features": (np.ones((4, 3)), r"3 features per row but the model has 2"),
    "infinite": (np.array([[1.0, np.inf], [0.0, 0.0]]), r"X\[0\] has a non-finite value"),
    "part nan": (np.array([[0.0, 0.0], [np.nan, 1.0]]), r"X\[1\] has a non-finite value"),
    "1-D": (np.ones(4), r"X"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_raises_value_error_naming_the_input(name):
    X, message = BAD_DATA[name]
    A, pi, w, means, covars = start_params("diag")
    model = GMMHMM.from_parameters(A, pi, w, means, covars, dtype="float64")
    for call in (lambda: model.fit(X, epochs=1), lambda: model.score(X)):
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(model.means, means)


def test_bad_settings_and_parameters():
    with pytest.raises(ValueError, match="covariance_type"):
        GMMEmission(2, 2, covariance_type="banded")
    with pytest.raises(ValueError, match="n_mix"):
        GMMEmission(2, 2, n_mix=0)
    with pytest.raises(ValueError, match="means_weight"):
        GMMEmission(2, 2, means_weight=-1.0)
    with pytest.raises(ValueError, match="covars_prior"):
        GMMEmission(2, 2, n_mix=2, covars_prior=np.ones((3, 3)))
    em = GMMEmission(2, 2, n_mix=2, covariance_type="full")
    with pytest.raises(ValueError, match=r"covars\[0, 1\] is not symmetric positive definite"):
        em.covars = np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]], np.eye(2), np.eye(2)]).reshape(2, 2, 2, 2)
    with pytest.raises(ValueError, match="shape"):
        em.covars = np.ones((2, 2, 2))
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        em.weights = [[0.5, 0.6], [0.5, 0.5]]
    diag = GMMEmission(2, 2, n_mix=2)
    with pytest.raises(ValueError, match=r"covars\[0, 1\] must be positive"):
        diag.covars = [[[1.0, 1.0], [1.0, -1.0]], [[1.0, 1.0], [1.0, 1.0]]]
    with pytest.raises(ValueError, match="params"):
        diag.m_step(diag.empty_stats(), "e")


# -- the C passes (csrc/hmm_mix.h) and the responsibilities log_likelihood keeps for accumulate -------------

def numpy_logsumexp(comp, K):
    """NumPy float64 reference of hmm_mix_logsumexp: (out (n, N), resp (n, N*K))."""
    c3 = comp.reshape(len(comp), -1, K)
    with np.errstate(all="ignore"):
        top = c3.max(axis=2)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(c3 - top[:, :, None])
        total = e.sum(axis=2)
        out = np.log(total) + top
        resp = e / total[:, :, None]
    resp[~np.isfinite(resp)] = 0.0
    return out, resp.reshape(comp.shape)


@pytest.mark.parametrize("n_mix", [1, 2, 3, 4, 6])
def test_mix_logsumexp_equals_numpy(n_mix):
    from hmmop import _kernel
    rng = np.random.default_rng(n_mix)
    n, n_states = 3000, 3
    comp = rng.normal(-20.0, 40.0, size=(n, n_states * n_mix))
    comp[rng.random(comp.shape) < 0.1] = -np.inf                  # components of density 0
    comp[5, :n_mix] = -np.inf                                     # a state of density 0
    comp[6] = np.nan                                              # a missing row
    comp[7, 1] = np.nan
    comp[8, 0] = -800.0                                           # exp below the normal range
    ref_out, ref_resp = numpy_logsumexp(comp, n_mix)
    out, resp = np.empty((n, n_states)), np.empty_like(comp)
    _kernel.mix_logsumexp(comp, n_mix, out, resp, 1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    np.testing.assert_allclose(out, ref_out, rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(resp, ref_resp, rtol=1e-14, atol=1e-300)
    assert np.isneginf(out[5, 0]) and (resp[5, :n_mix] == 0).all() and np.isnan(out[6]).all() and (resp[6] == 0).all()
    # two threads, no resp, resp in place of comp: the same bits
    out2 = np.empty_like(out)
    _kernel.mix_logsumexp(comp, n_mix, out2, None, 2)
    np.testing.assert_array_equal(out2, out)
    inplace = comp.copy()
    _kernel.mix_logsumexp(inplace, n_mix, out2, inplace, 2)
    np.testing.assert_array_equal(out2, out)
    np.testing.assert_array_equal(inplace, resp)
    with pytest.raises(ValueError):
        _kernel.mix_logsumexp(np.zeros((n, 2 * n_states * n_mix + 1)), 2, out, None, 1)     # not (n, N*K)


def test_mix_logsumexp_exp_and_log_over_their_ranges():
    """The vectorised exp and log against NumPy's on arguments from 1e-300 to 745 in magnitude."""
    from hmmop import _kernel
    x = -np.concatenate([np.logspace(-300, np.log10(745.0), 20000), np.linspace(0, 745, 20000)])
    comp = np.stack([np.zeros_like(x), x], axis=1)                # total 1 + exp(x), responsibility of x
    out, resp = np.empty((len(x), 1)), np.empty_like(comp)
    _kernel.mix_logsumexp(comp, 2, out, resp, 1)
    np.testing.assert_allclose(out[:, 0], np.logaddexp(0.0, x), rtol=2e-16, atol=2e-16)
    ref = np.exp(x) / (1.0 + np.exp(x))
    normal = ref > 1e-300
    np.testing.assert_allclose(resp[normal, 1], ref[normal], rtol=1e-15)
    np.testing.assert_allclose(resp[~normal, 1], ref[~normal], rtol=0, atol=1e-310)


def test_mix_loglik_diag_equals_numpy():
    from hmmop import _kernel
    rng = np.random.default_rng(5)
    n, n_states, n_mix, dim = 4000, 3, 3, 5
    S = n_states * n_mix
    X = rng.normal(3.0, 2.0, size=(n, dim))
    X[[10, 11]] = np.nan
    c = X[~np.isnan(X[:, 0])].mean(axis=0)
    a = -0.5 / rng.uniform(0.2, 3.0, size=(dim, S))
    b = rng.normal(size=(dim, S))
    cst = rng.normal(-5.0, 2.0, size=S)
    y = X - c
    with np.errstate(invalid="ignore"):
        comp = cst + (y * y) @ a + y @ b
    ref_out, ref_resp = numpy_logsumexp(comp, n_mix)
    out, resp = np.empty((n, n_states)), np.empty((n, S))
    _kernel.mix_loglik_diag(X, c, a, b, cst, n_mix, out, resp, 1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    np.testing.assert_allclose(out, ref_out, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(resp, ref_resp, rtol=1e-12, atol=1e-300)
    out2 = np.empty_like(out)
    _kernel.mix_loglik_diag(X, c, a, b, cst, n_mix, out2, None, 2)
    np.testing.assert_array_equal(out2, out)                      # no resp, two threads: the same bits
    with pytest.raises(ValueError):
        _kernel.mix_loglik_diag(X, c, a.T.copy(), b, cst, n_mix, out, None, 1)


def test_mix_stats_diag_equals_numpy():
    from hmmop import _kernel
    rng = np.random.default_rng(4)
    n, n_states, n_mix, dim = 5000, 3, 2, 3
    S = n_states * n_mix
    X = rng.normal(5.0, 2.0, size=(n, dim))
    X[[3, 70, 4999]] = np.nan                                     # missing rows: skipped
    q = rng.dirichlet(np.ones(n_mix), size=(n, n_states)).reshape(n, S)
    gamma = rng.dirichlet(np.ones(n_states), size=n)
    c = rng.normal(size=dim)
    keep = ~np.isnan(X).all(axis=1)
    r = (q.reshape(n, n_states, n_mix) * gamma[:, :, None]).reshape(n, S)[keep]
    y = X[keep] - c
    outs = []
    for threads in (1, 2):
        post, s0, s1, s2 = np.ones(n_states), np.ones(S), np.ones((S, dim)), np.ones((S, dim))   # added to
        _kernel.mix_stats_diag(X, c, q, gamma, post, s0, s1, s2, threads)
        np.testing.assert_allclose(post, 1 + gamma[keep].sum(axis=0), rtol=1e-13)
        np.testing.assert_allclose(s0, 1 + r.sum(axis=0), rtol=1e-13)
        np.testing.assert_allclose(s1, 1 + r.T @ y, rtol=1e-12)
        np.testing.assert_allclose(s2, 1 + r.T @ (y * y), rtol=1e-12)
        outs.append((post, s0, s1, s2))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)                       # the same bits on 1 and 2 threads


def accumulate_oracle(kind, w, means, covars, X, gamma):
    """E-step statistics from scipy's component densities: r_tik = gamma_ti w_ik N_ik(x_t) / p_i(x_t)."""
    keep = ~np.isnan(X).all(axis=1)
    X, gamma = X[keep], gamma[keep]
    dens = np.stack([np.stack([w[i, k] * multivariate_normal(means[i, k], full_covs(kind, covars, i)[k]).pdf(X)
                               for k in range(w.shape[1])], axis=1) for i in range(N)], axis=1)      # (n, N, K)
    r = gamma[:, :, None] * dens / dens.sum(axis=2, keepdims=True)
    dev = X[:, None, None, :] - means[None]                                                  # (n, N, K, D)
    if kind in ("spherical", "diag"):
        c_n = np.einsum("tik,tikd->ikd", r, dev * dev)
        c_n = c_n.sum(axis=2) if kind == "spherical" else c_n
    else:
        c_n = np.einsum("tik,tikd,tike->ikde", r, dev, dev)
        c_n = c_n.sum(axis=1) if kind == "tied" else c_n
    return {"post_sum": gamma.sum(axis=0), "post_mix_sum": r.sum(axis=0),
            "m_n": np.einsum("tik,td->ikd", r, X), "c_n": c_n}


def assert_stats(stats, expected):
    for key, value in expected.items():
        np.testing.assert_allclose(stats[key], value, rtol=1e-10, atol=1e-10, err_msg=key)


@pytest.mark.parametrize("kind", ["spherical", "diag"])
def test_accumulate_with_and_without_kept_responsibilities_equals_scipy(kind):
    A, pi, w, means, covars = start_params(kind, seed=11)
    em = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind).emission
    X = X3.copy()
    X[[2, 9]] = np.nan
    gamma = np.random.default_rng(1).dirichlet(np.ones(N), size=len(X))
    expected = accumulate_oracle(kind, w, means, covars, X, gamma)
    em.log_likelihood(X)                                          # not kept: X has not been accumulated yet
    assert "resp" not in em._row_cache.get(X)
    first = em.empty_stats()
    em.accumulate(first, X, gamma)
    assert_stats(first, expected)
    em.log_likelihood(X)                                          # kept for X at these parameters (EM)
    assert "resp" in em._row_cache.get(X)
    kept = em.empty_stats()
    em.accumulate(kept, X, gamma)
    assert_stats(kept, expected)
    assert "resp" not in em._row_cache.get(X)                     # used up: the next accumulate recomputes
    fresh = em.empty_stats()
    em.accumulate(fresh, X, gamma)
    assert_stats(fresh, expected)


@pytest.mark.parametrize("kind", TYPES)
def test_kept_responsibilities_are_not_used_after_a_change(kind):
    """Changed parameters, another array, or X changed in place after log_likelihood: accumulate recomputes."""
    A, pi, w, means, covars = start_params(kind, seed=12)
    em = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind).emission
    gamma = np.random.default_rng(2).dirichlet(np.ones(N), size=len(X3))
    moved = means + 0.7
    X = X3.copy()
    em.accumulate(em.empty_stats(), X, gamma)                     # X in an EM loop: its responsibilities kept
    em.log_likelihood(X)
    assert "resp" in em._row_cache.get(X)
    em.means = moved
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    assert_stats(stats, accumulate_oracle(kind, w, moved, covars, X, gamma))
    em.log_likelihood(X)
    assert "resp" in em._row_cache.get(X)
    X[:, 0] += 1.0                                                # the same array, new values
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    assert_stats(stats, accumulate_oracle(kind, w, moved, covars, X, gamma))
    em.accumulate(em.empty_stats(), X3, gamma)
    em.log_likelihood(X3)
    assert "resp" in em._row_cache.get(X3)
    stats = em.empty_stats()
    em.accumulate(stats, X3.copy(), gamma)                        # equal values, another array
    assert_stats(stats, accumulate_oracle(kind, w, moved, covars, X3, gamma))


def test_em_without_kept_responsibilities_equals_hmmlearn(monkeypatch):
    """Data beyond the size log_likelihood keeps responsibilities for: accumulate's own pass, same EM."""
    from hmmop.emissions import gmm
    monkeypatch.setattr(gmm, "_CACHE_ELEMENTS", 10)
    for kind in ("diag", "full"):
        A, pi, w, means, covars = start_params(kind, seed=13)
        model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type=kind, dtype="float64")
        model.fit(X3, LENGTHS, method="em", epochs=4, tol=None)
        assert_same(model, hmmlearn_model(kind, A, pi, w, means, covars, n_iter=4).fit(X3, LENGTHS))


def test_emission_pickles_and_copies_after_log_likelihood():
    import copy
    import pickle
    A, pi, w, means, covars = start_params("diag", seed=14)
    em = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type="diag").emission
    expected = em.log_likelihood(X3)
    for other in (pickle.loads(pickle.dumps(em)), copy.deepcopy(em)):
        np.testing.assert_array_equal(other.log_likelihood(X3), expected)


def test_em_is_the_same_on_one_and_two_threads():
    A, pi, w, means, covars = start_params("diag", seed=15)
    rng = np.random.default_rng(3)
    X = np.concatenate([X3] * 120) + rng.normal(scale=0.1, size=(120 * len(X3), D))   # enough rows for 2 threads
    lengths = np.tile(LENGTHS, 120)
    results = []
    for threads in (1, 2):
        hmmop.set_num_threads(threads)
        try:
            model = GMMHMM.from_parameters(A, pi, w, means, covars, covariance_type="diag", dtype="float64")
            results.append((model.fit(X, lengths, method="em", epochs=3, tol=None), model.means, model.covars))
        finally:
            hmmop.set_num_threads(None)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_singular_covariance_is_evaluated_with_the_jitter():
    """A singular component covariance (EM's leftover for a component on one point) is accepted and
    evaluated as Sigma + 1e-7 I, hmmlearn's fallback: scipy's mixture density of those matrices."""
    em = GMMEmission(2, 2, n_mix=2, covariance_type="full")
    covars = np.tile(np.eye(2), (2, 2, 1, 1))
    covars[1, 0] = [[1.0, 1.0], [1.0, 1.0]]
    em.covars = covars
    em.means = np.random.default_rng(1).normal(size=(2, 2, 2))
    em.weights = np.array([[0.5, 0.5], [0.3, 0.7]])
    X = np.random.default_rng(2).normal(size=(6, 2))
    jittered = covars + 1e-7 * np.eye(2) * np.array([[0, 0], [1, 0]])[:, :, None, None]
    expect = np.stack([logsumexp([np.log(em.weights[i, k]) + multivariate_normal(em.means[i, k], jittered[i, k])
                                  .logpdf(X) for k in range(2)], axis=0) for i in range(2)], axis=1)
    np.testing.assert_allclose(em.log_likelihood(X), expect, rtol=1e-6)   # (condition number 1e7)
