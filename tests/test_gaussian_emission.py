"""GaussianEmission against independent oracles: hmmlearn 0.3.3's GaussianHMM (log-densities,
E-step sums, M-step with priors, initialisation, parameter counts), scipy.stats for the densities,
the moments of many samples, finite differences for the MXNet expression's gradients."""
import json
import re

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from scipy.stats import multivariate_normal

import hmmop  # (before mxnet: hmmop's import hook)
import mxnet as mx
from hmmop import _kernel
from hmmop.emissions import COVARIANCE_TYPES, Emission, GaussianEmission

TYPES = ["spherical", "diag", "full", "tied"]


def random_covars(rng, kind, N, D):
    """Covariances in hmmlearn's setter shapes, well conditioned and not diagonal."""
    if kind == "spherical":
        return rng.uniform(0.5, 2.0, size=N)
    if kind == "diag":
        return rng.uniform(0.3, 3.0, size=(N, D))
    A = rng.normal(size=(N, D, D))
    full = A @ A.transpose(0, 2, 1) / D + 0.5 * np.eye(D)
    return full if kind == "full" else full[0]


def pair(rng, kind, N=3, D=4, offset=0.0, **priors):
    """A GaussianEmission and an hmmlearn GaussianHMM (params "mc") with the same random parameters."""
    means = offset + rng.normal(scale=2.0, size=(N, D))
    covars = random_covars(rng, kind, N, D)
    em = GaussianEmission(N, D, kind, **priors)
    em.means = means
    em.set_covars(covars)
    hl = GaussianHMM(N, kind, params="mc", init_params="", **priors)
    hl.n_features = D
    hl.means_ = means.copy()
    hl.covars_ = covars.copy()
    return em, hl


def hmmlearn_stats(hl, X, gamma):
    stats = hl._initialize_sufficient_statistics()
    hl._accumulate_sufficient_statistics(stats, X, None, gamma, None, None)
    return stats


def hmmlearn_compact(hl):
    """hmmlearn's stored covariances in GaussianEmission's stored form (hmmlearn tiles spherical to (N, D))."""
    c = np.asarray(hl._covars_)
    if hl.covariance_type == "spherical" and c.ndim == 2:
        assert np.all(c == c[:, :1])
        c = c[:, 0]
    return c


# -- the interface -----------------------------------------------------------

def test_exports_and_interface():
    assert COVARIANCE_TYPES == ("spherical", "diag", "full", "tied")
    em = GaussianEmission(2, 3)
    assert isinstance(em, Emission) and em.family == "gaussian" and em.n_states == 2
    assert em.covariance_type == "diag" and em.min_covar == 1e-3
    base = Emission()
    for call in (lambda: base.log_likelihood(np.zeros((1, 1))), base.empty_stats, lambda: base.n_free_parameters,
                 base.fields, base.meta, base.raw_parameters, lambda: Emission.from_fields(1, {}, {})):
        with pytest.raises(NotImplementedError):
            call()


@pytest.mark.parametrize("kind", TYPES)
def test_n_free_parameters_is_hmmlearns(kind):
    for N, D in [(1, 1), (3, 4), (5, 2)]:
        hl = GaussianHMM(N, kind)
        hl.n_features = D
        counts = hl._get_n_fit_scalars_per_param()
        assert GaussianEmission(N, D, kind).n_free_parameters == counts["m"] + counts["c"]


# -- log-densities -----------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_log_likelihood_matches_hmmlearn(kind, offset):
    rng = np.random.default_rng(TYPES.index(kind))
    em, hl = pair(rng, kind, offset=offset)
    X = em.means[rng.integers(3, size=500)] + rng.normal(scale=1.5, size=(500, 4))
    ours = em.log_likelihood(X)
    assert ours.dtype == np.float64 and ours.shape == (500, 3)
    np.testing.assert_allclose(ours, hl._compute_log_likelihood(X), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_matches_scipy(kind):
    rng = np.random.default_rng(10 + TYPES.index(kind))
    em, _ = pair(rng, kind, N=4, D=3)
    X = rng.normal(scale=3.0, size=(50, 3))
    expected = np.stack([multivariate_normal(em.means[i], em.covars[i]).logpdf(X) for i in range(4)], axis=1)
    np.testing.assert_allclose(em.log_likelihood(X), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_blocks_and_missing_rows(kind):
    """Blocks of 8 and 16 rows in C (the vector widths; 1000 = 62 * 16 + 8 leaves a short block)."""
    rng = np.random.default_rng(20 + TYPES.index(kind))
    em, hl = pair(rng, kind)
    X = rng.normal(size=(1000, 4))
    expected = hl._compute_log_likelihood(X)
    gone = [0, 7, 8, 15, 16, 511, 999]
    X[gone] = np.nan
    expected[gone] = 0.0
    got = em.log_likelihood(X)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert np.all(got[gone] == 0.0)
    X[9, 2] = np.nan                                                  # part of a row: not a missing row
    with pytest.raises(ValueError, match=r"X\[9\]"):
        em.log_likelihood(X)
    X[9] = [0.0, np.inf, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"X\[9\]"):
        em.log_likelihood(X)
    X[9] = 0.0
    X[997, 0] = np.nan                                                # NaN in column 0 only, in the last block
    with pytest.raises(ValueError, match=r"X\[997\]"):
        em.log_likelihood(X)
    assert em.log_likelihood(np.empty((0, 4))).shape == (0, 3)


# -- E-step statistics and M-step --------------------------------------------

PRIORS = [
    {},
    {"means_prior": 0.7, "means_weight": 2.5, "covars_prior": 0.3, "covars_weight": 7.0},
    {"means_prior": "array", "means_weight": 1.5, "covars_prior": "array", "covars_weight": 3.0},
]


def prior_arrays(rng, kind, priors, N=3, D=4):
    priors = dict(priors)
    if priors.get("means_prior") == "array":
        priors["means_prior"] = rng.normal(size=(N, D))
    if priors.get("covars_prior") == "array":
        priors["covars_prior"] = np.abs(random_covars(rng, "full" if kind != "tied" else "tied", N, D))
        if kind in ("spherical", "diag"):
            priors["covars_prior"] = rng.uniform(0.1, 1.0, size=(N, D))
    return priors


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("which", range(len(PRIORS)))
def test_m_step_matches_hmmlearn(kind, which):
    rng = np.random.default_rng(30 + 4 * which + TYPES.index(kind))
    priors = prior_arrays(rng, kind, PRIORS[which])
    em, hl = pair(rng, kind, **priors)
    X = em.means[rng.integers(3, size=400)] + rng.normal(size=(400, 4))
    gamma = rng.dirichlet(np.ones(3), size=400)
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    ref = hmmlearn_stats(hl, X, gamma)
    np.testing.assert_allclose(stats["post"], ref["post"], rtol=1e-12)
    np.testing.assert_allclose(stats["obs"], ref["obs"], rtol=1e-12)
    if kind in ("spherical", "diag"):
        np.testing.assert_allclose(stats["obs**2"], ref["obs**2"], rtol=1e-12)
    elif kind == "full":
        np.testing.assert_allclose(stats["obs*obs.T"], ref["obs*obs.T"], rtol=1e-12)
    else:                                                             # tied keeps the sum over states
        np.testing.assert_allclose(stats["obs*obs.T"], ref["obs*obs.T"].sum(axis=0), rtol=1e-12)
    em.m_step(stats)
    hl._do_mstep(ref)
    np.testing.assert_allclose(em.means, hl.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(em.compact_covars, hmmlearn_compact(hl), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(em.covars, hl.covars_ if kind != "spherical" else
                               np.stack([c * np.eye(4) for c in hmmlearn_compact(hl)]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", TYPES)
def test_m_step_matches_hmmlearn_with_an_almost_empty_state(kind):
    # state 2's posterior mass (1e-7) is under hmmlearn's 1e-5 guard on the spherical/diag denominators
    rng = np.random.default_rng(40 + TYPES.index(kind))
    em, hl = pair(rng, kind, means_weight=0.1)
    X = rng.normal(size=(100, 4))
    gamma = rng.dirichlet(np.ones(3), size=100)
    gamma[:, 2] = 1e-9
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    em.m_step(stats)
    hl._do_mstep(hmmlearn_stats(hl, X, gamma))
    np.testing.assert_allclose(em.means, hl.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(em.compact_covars, hmmlearn_compact(hl), rtol=1e-9)


@pytest.mark.parametrize("kind", TYPES)
def test_m_step_params_m_and_c_alone(kind):
    rng = np.random.default_rng(50 + TYPES.index(kind))
    priors = PRIORS[1]
    em, hl = pair(rng, kind, **priors)
    X = rng.normal(size=(300, 4))
    gamma = rng.dirichlet(np.ones(3), size=300)
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    ref = hmmlearn_stats(hl, X, gamma)                                # all sums (hmmlearn params "mc")
    old_means, old_covars = em.means.copy(), em.compact_covars
    em.m_step(stats, params="m")
    hl.params = "m"
    hl._do_mstep(ref)
    np.testing.assert_allclose(em.means, hl.means_, rtol=1e-10)
    np.testing.assert_array_equal(em.compact_covars, old_covars)
    # 'c' alone: the covariances about the current means (hmmlearn's formula with params "c")
    em.means = old_means
    hl.means_ = old_means.copy()
    em.m_step(stats, params="c")
    hl.params = "c"
    hl._do_mstep(ref)
    np.testing.assert_array_equal(em.means, old_means)
    np.testing.assert_allclose(em.compact_covars, hmmlearn_compact(hl), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["spherical", "diag", "full"])
def test_per_state_prior_weights_match_hmmlearn_state_by_state(kind):
    rng = np.random.default_rng(60 + TYPES.index(kind))
    mw, cw = np.array([0.5, 2.0, 8.0]), np.array([1.0, 4.0, 9.0])
    em, _ = pair(rng, kind, means_prior=0.4, means_weight=mw, covars_prior=0.2, covars_weight=cw)
    X = rng.normal(size=(200, 4))
    gamma = rng.dirichlet(np.ones(3), size=200)
    start_means, start_covars = em.means.copy(), em.compact_covars
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    em.m_step(stats)
    for i in range(3):                                  # the update of state i uses only state i's weights
        hl = GaussianHMM(3, kind, params="mc", means_prior=0.4, means_weight=mw[i], covars_prior=0.2,
                         covars_weight=cw[i])
        hl.n_features = 4
        hl.means_, hl.covars_ = start_means.copy(), start_covars.copy()
        hl._do_mstep(hmmlearn_stats(hl, X, gamma))
        np.testing.assert_allclose(em.means[i], hl.means_[i], rtol=1e-10)
        np.testing.assert_allclose(em.compact_covars[i], hmmlearn_compact(hl)[i], rtol=1e-10)


@pytest.mark.parametrize("kind", TYPES)
def test_statistics_add_up_and_skip_missing_rows(kind):
    """Over several chunks of the C sums (4096 rows each here) and a short last one."""
    rng = np.random.default_rng(70 + TYPES.index(kind))
    em, _ = pair(rng, kind)
    n = 9000
    X = rng.normal(size=(n, 4))
    gamma = rng.dirichlet(np.ones(3), size=n)
    whole = em.empty_stats()
    em.accumulate(whole, X, gamma)
    parts = em.empty_stats()
    em.accumulate(parts, X[:300], gamma[:300])
    em.accumulate(parts, X[300:], gamma[300:])
    gone = np.zeros(n, bool)
    gone[[3, 299, 300, 650, 4095, 4096, 8999]] = True
    Xm = X.copy()
    Xm[gone] = np.nan
    kept, with_missing = em.empty_stats(), em.empty_stats()
    em.accumulate(kept, X[~gone], gamma[~gone])
    em.accumulate(with_missing, Xm, gamma)
    for key in whole:
        np.testing.assert_allclose(parts[key], whole[key], rtol=1e-12)
        np.testing.assert_allclose(with_missing[key], kept[key], rtol=1e-12)
    Xm[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[5\]"):
        em.accumulate(em.empty_stats(), Xm, gamma)


@pytest.mark.parametrize("kind", ["diag", "full", "tied"])
def test_state_without_mass_keeps_its_mean(kind):
    rng = np.random.default_rng(80)
    em, _ = pair(rng, kind)
    X = rng.normal(size=(100, 4))
    gamma = np.zeros((100, 3))
    gamma[:, :2] = rng.dirichlet(np.ones(2), size=100)                # state 2 never occupied
    old_mean, old_cov = em.means[2].copy(), em.covars[2]
    stats = em.empty_stats()
    em.accumulate(stats, X, gamma)
    em.m_step(stats)
    np.testing.assert_array_equal(em.means[2], old_mean)             # hmmlearn: 0/0 = NaN
    assert np.isfinite(em.covars).all()
    if kind == "full":                                                # covars_weight 1 <= D: no prior weight either
        np.testing.assert_array_equal(em.covars[2], old_cov)
    assert np.isfinite(em.log_likelihood(X)).all()


# -- initialisation ----------------------------------------------------------

def test_initialize_means_match_hmmlearn_init():
    rng = np.random.default_rng(91)                   # (a seed where n_init=3 or 1 would give other means)
    X = rng.normal(size=(180, 3))                     # no clear clusters: k-means's restarts and seed matter
    X[:, 1] += 0.5 * X[:, 0]
    em = GaussianEmission(6, 3, "full", min_covar=0.01).initialize(X, 11)
    hl = GaussianHMM(6, "full", min_covar=0.01, random_state=11)
    hl._init(X)
    np.testing.assert_allclose(em.means, hl.means_, rtol=1e-12)
    np.testing.assert_allclose(em.covars, hl.covars_, rtol=1e-12)
    # missing rows are left out; the rest is the same start
    Xm = np.insert(X, [0, 50, 180], np.nan, axis=0)
    em2 = GaussianEmission(6, 3, "full", min_covar=0.01).initialize(Xm, 11)
    np.testing.assert_allclose(em2.means, em.means, rtol=1e-12)
    np.testing.assert_allclose(em2.covars, em.covars, rtol=1e-12)


@pytest.mark.parametrize("kind", TYPES)
def test_initialize_covars_match_hmmlearn_init(kind):
    rng = np.random.default_rng(92)
    X = rng.normal(size=(150, 3)) @ rng.normal(size=(3, 3))          # correlated features
    em = GaussianEmission(4, 3, kind, min_covar=0.05)
    em.initialize(X, 0, params="c")
    hl = GaussianHMM(4, kind, min_covar=0.05, init_params="c")
    hl.means_ = np.zeros((4, 3))                                      # (so hmmlearn runs no k-means either)
    hl._init(X)
    np.testing.assert_allclose(em.compact_covars, hmmlearn_compact(hl), rtol=1e-12)
    np.testing.assert_array_equal(em.means, 0.0)


def test_initialize_seeds_and_random_init():
    rng = np.random.default_rng(91)
    X = rng.normal(size=(200, 2)) + np.repeat(rng.normal(scale=5, size=(4, 2)), 50, axis=0)
    a = GaussianEmission(4, 2).initialize(X, np.random.default_rng(5))
    b = GaussianEmission(4, 2).initialize(X, np.random.default_rng(5))
    np.testing.assert_array_equal(a.means, b.means)
    r = GaussianEmission(4, 2, "full").initialize(X, 3, init="random")
    assert all(any(np.array_equal(m, x) for x in X) for m in r.means)   # means are data rows
    assert len({tuple(m) for m in r.means}) == 4
    np.testing.assert_allclose(r.covars[0], np.cov(X.T) + 1e-3 * np.eye(2))
    with pytest.raises(ValueError, match="at least 4 observed rows"):
        GaussianEmission(4, 2).initialize(np.vstack([X[:3], np.full((5, 2), np.nan)]), 0)
    with pytest.raises(ValueError, match="init"):
        GaussianEmission(4, 2).initialize(X, 0, init="spectral")


# -- sampling ----------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_sample_moments(kind):
    rng = np.random.default_rng(100 + TYPES.index(kind))
    em, _ = pair(rng, kind, D=3)
    states = np.repeat([2, 0], [40000, 20000])
    x = em.sample(states, np.random.default_rng(1))
    assert x.shape == (60000, 3) and x.dtype == np.float64
    for i, rows in ((2, x[:40000]), (0, x[40000:])):
        scale = np.sqrt(np.diag(em.covars[i]))
        np.testing.assert_allclose(rows.mean(axis=0), em.means[i], atol=0.03 * scale.max())
        np.testing.assert_allclose(np.cov(rows.T), em.covars[i], atol=0.05 * scale.max() ** 2)
    np.testing.assert_array_equal(em.sample(states[:10], 7), em.sample(states[:10], 7))
    assert em.sample(np.array([], dtype=int), 0).shape == (0, 3)


# -- model files and raw parameters ------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_fields_meta_round_trip(kind):
    rng = np.random.default_rng(110 + TYPES.index(kind))
    priors = prior_arrays(rng, kind, PRIORS[2])
    em, _ = pair(rng, kind, **priors)
    meta = json.loads(json.dumps(em.meta()))
    assert meta["covariance_type"] == kind and meta["n_features"] == 4
    fields = em.fields()
    assert set(fields) == {"means", "covars"} and all(isinstance(v, np.ndarray) for v in fields.values())
    back = GaussianEmission.from_fields(3, fields, meta)
    X = rng.normal(size=(20, 4))
    np.testing.assert_array_equal(back.log_likelihood(X), em.log_likelihood(X))
    for name in ("means_prior", "covars_prior", "means_weight", "covars_weight"):
        np.testing.assert_array_equal(getattr(back, name), getattr(em, name))
    with pytest.raises(ValueError, match="covars"):
        GaussianEmission.from_fields(3, {"means": fields["means"]}, meta)


@pytest.mark.parametrize("kind", TYPES)
def test_raw_parameters_round_trip(kind):
    rng = np.random.default_rng(120 + TYPES.index(kind))
    em, _ = pair(rng, kind)
    raw = em.raw_parameters()
    key = "log_vars" if kind in ("spherical", "diag") else "cholesky"
    assert set(raw) == {"means", key}
    if key == "cholesky":
        assert np.all(np.triu(raw[key], 1) == 0)
    other = GaussianEmission(3, 4, kind)
    other.set_raw_parameters(raw)
    np.testing.assert_allclose(other.covars, em.covars, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(other.means, em.means)
    with pytest.raises(ValueError, match=key):
        other.set_raw_parameters({"means": raw["means"]})


def test_covars_setter_shapes_are_hmmlearns():
    rng = np.random.default_rng(130)
    for kind in TYPES:
        em, hl = pair(rng, kind)
        np.testing.assert_array_equal(em.covars, hl.covars_)
        assert em.covars.shape == (3, 4, 4)
    em = GaussianEmission(3, 2, "spherical")
    em.set_covars(np.tile([[1.0], [2.0], [3.0]], (1, 2)))             # hmmlearn's internal spherical form
    np.testing.assert_array_equal(em.compact_covars, [1.0, 2.0, 3.0])
    em.covars = [4.0, 5.0, 6.0]
    np.testing.assert_array_equal(em.covars[1], 5.0 * np.eye(2))


# -- the MXNet expression ----------------------------------------------------

def nd_args(raw, dtype="float64"):
    return {k: mx.nd.array(v, dtype=dtype) for k, v in raw.items()}


@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_nd_matches_numpy(kind):
    rng = np.random.default_rng(140 + TYPES.index(kind))
    em, _ = pair(rng, kind, offset=50.0)
    X = em.means[rng.integers(3, size=(2, 6))] + rng.normal(size=(2, 6, 4))
    expected = em.log_likelihood(X.reshape(-1, 4)).reshape(2, 6, 3)
    raw = em.raw_parameters()
    got = em.log_likelihood_nd(mx.nd, mx.nd.array(X, dtype="float64"), **nd_args(raw))
    assert got.shape == (2, 6, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-10, atol=1e-10)
    sym = em.log_likelihood_nd(mx.sym, mx.sym.var("X"), **{k: mx.sym.var(k) for k in raw})
    exe = sym.bind(mx.cpu(), {"X": mx.nd.array(X[0], dtype="float64"), **nd_args(raw)})
    np.testing.assert_allclose(exe.forward()[0].asnumpy(), expected[0], rtol=1e-10, atol=1e-10)
    # float32 works too (no float64 constants); centring keeps the digits with data far from 0
    got32 = em.log_likelihood_nd(mx.nd, mx.nd.array(X, dtype="float32"), **nd_args(raw, "float32"))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32.asnumpy(), expected, rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("N,D", [(1, 1), (2, 1), (1, 3)])
def test_one_state_or_one_feature(kind, N, D):
    rng = np.random.default_rng(145)
    em, hl = pair(rng, kind, N=N, D=D)
    X = rng.normal(size=(30, D))
    expected = hl._compute_log_likelihood(X)
    np.testing.assert_allclose(em.log_likelihood(X), expected, rtol=1e-10, atol=1e-10)
    got = em.log_likelihood_nd(mx.nd, mx.nd.array(X, dtype="float64"), **nd_args(em.raw_parameters()))
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["full", "tied", "diag"])
def test_log_likelihood_nd_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(150 + TYPES.index(kind))
    N, D = 3, 3
    em, _ = pair(rng, kind, N=N, D=D)
    raw = em.raw_parameters()
    X = rng.normal(scale=2.0, size=(7, D))
    head = rng.normal(size=(7, N))
    args = nd_args(raw)
    for v in args.values():
        v.attach_grad()
    with mx.autograd.record():
        ll = em.log_likelihood_nd(mx.nd, mx.nd.array(X, dtype="float64"), **args)
        obj = (ll * mx.nd.array(head, dtype="float64")).sum()
    obj.backward()

    def objective(values):                                            # the NumPy path, through set_raw_parameters
        probe = GaussianEmission(N, D, kind)
        probe.set_raw_parameters(values)
        return float((probe.log_likelihood(X) * head).sum())

    for name, value in raw.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            if name == "cholesky" and idx[-1] > idx[-2]:
                continue                                              # the strict upper triangle is ignored
            h = 1e-6
            plus, minus = {k: v.copy() for k, v in raw.items()}, {k: v.copy() for k, v in raw.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            numeric[idx] = (objective(plus) - objective(minus)) / (2 * h)
        np.testing.assert_allclose(args[name].grad.asnumpy(), numeric, rtol=1e-6, atol=1e-6)


# -- bad inputs --------------------------------------------------------------

def test_check_data():
    em = GaussianEmission(2, 3)
    X = np.arange(12.0).reshape(4, 3)
    assert em.check_data(X) is X or np.shares_memory(em.check_data(X), X)
    ints = em.check_data(np.arange(6).reshape(2, 3))
    assert ints.dtype == np.float64 and ints.flags.c_contiguous
    assert em.check_data(np.asfortranarray(X)).flags.c_contiguous
    X[2] = np.nan
    np.testing.assert_array_equal(em.missing_rows(em.check_data(X)), [False, False, True, False])
    with pytest.raises(ValueError, match="X has 5 features per row but the model has 3"):
        em.check_data(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"obs must be a 2-D array"):
        em.check_data(np.zeros(3), name="obs")
    X[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"X\[1\] has a non-finite value \(inf in column 2\)"):
        em.check_data(X)
    X[1, 2] = 0.0
    X[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"Y\[3\]"):
        em.check_data(X, name="Y")
    with pytest.raises(ValueError, match="real numbers"):
        em.check_data(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="real numbers"):
        em.check_data(np.ones((2, 3), dtype=complex))


def test_check_data_scan_in_c_agrees_with_the_base_class():
    """GaussianEmission.check_data scans float64 C-contiguous data in C; its results and errors are
    Emission.check_data's."""
    em = GaussianEmission(2, 3)
    rng = np.random.default_rng(5)
    for case in range(5):
        X = rng.normal(size=(3000, 3))
        if case >= 1:
            X[[4, 2999]] = np.nan                              # missing rows: fine
        if case == 2:
            X[1700, 1] = np.inf
        if case == 3:
            X[2500, 0] = np.nan
        if case == 4:
            X[9, 2] = -np.inf
            X[2000, 1] = np.nan
        try:
            expected = Emission.check_data(em, X.copy())
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                em.check_data(X)
        else:
            got = em.check_data(X)
            assert got is X                                    # no copy of data that is already float64
            np.testing.assert_array_equal(got, expected)


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="'spherical', 'diag', 'full', 'tied'"):
        GaussianEmission(2, 2, "block")
    with pytest.raises(ValueError, match="n_states"):
        GaussianEmission(0, 2)
    with pytest.raises(ValueError, match="means_prior"):
        GaussianEmission(2, 3, means_prior=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="means_weight"):
        GaussianEmission(2, 3, means_weight=-1)
    with pytest.raises(ValueError, match="covars_weight"):
        GaussianEmission(2, 3, "tied", covars_weight=[1, 2])
    with pytest.raises(ValueError, match="covars_prior"):
        GaussianEmission(2, 3, "full", covars_prior=np.ones((2, 3)))
    em = GaussianEmission(3, 2, "full")
    bad = np.tile(np.eye(2), (3, 1, 1))
    bad[2] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match=r"covars\[2\] is not symmetric positive definite"):
        em.set_covars(bad)
    bad[2] = [[1.0, 0.5], [0.0, 1.0]]
    with pytest.raises(ValueError, match=r"covars\[2\] is not symmetric"):
        em.set_covars(bad)
    with pytest.raises(ValueError, match=r"shape \(3, 2, 2\)"):
        em.set_covars(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"covars \(tied\) is not symmetric positive definite"):
        GaussianEmission(3, 2, "tied").set_covars([[1.0, 3.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match=r"covars\[1\] must be positive"):
        GaussianEmission(3, 2, "diag").set_covars([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"covars\[0\] must be positive"):
        GaussianEmission(3, 2, "spherical").set_covars([-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"means must have shape \(3, 2\)"):
        em.means = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(4, 3\)"):
        em.accumulate(em.empty_stats(), np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="params"):
        em.m_step(em.empty_stats(), params="mct")
    with pytest.raises(ValueError, match="obs\\*obs.T"):
        em.m_step({"post": np.ones(3), "obs": np.ones((3, 2))})
    with pytest.raises(ValueError, match=r"states must lie in \[0, 3\)"):
        em.sample([0, 3], 0)
    with pytest.raises(ValueError, match="states"):
        em.sample([0.5], 0)
    with pytest.raises(ValueError, match=r"X must have shape \(n, 2\)"):
        em.log_likelihood(np.zeros((4, 3)))


def with_threads(threads, fn):
    """fn() run on hmmop.set_num_threads(threads), the setting restored after."""
    previous = hmmop.ops.threads._override
    try:
        hmmop.set_num_threads(threads)
        return fn()
    finally:
        hmmop.set_num_threads(previous)


def numpy_sums(kind, X, gamma):
    """The E-step sums of the observed rows in NumPy float64: (post, obs, second)."""
    seen = ~np.isnan(X).all(axis=1)
    X, gamma = X[seen], gamma[seen]
    if kind in ("spherical", "diag"):
        second = gamma.T @ X ** 2
    elif kind == "full":
        second = np.einsum("ti,tj,tk->ijk", gamma, X, X)
    else:
        second = np.einsum("t,tj,tk->jk", gamma.sum(axis=1), X, X)
    return gamma.sum(axis=0), gamma.T @ X, second


@pytest.mark.parametrize("kind", TYPES)
def test_passes_do_not_depend_on_the_thread_count(kind):
    """The C passes (csrc/hmm_gauss.c): log-densities and E-step sums over several chunks of rows are the
    same bits on 1, 2 and 3 threads, and the sums equal NumPy's to 1e-12."""
    rng = np.random.default_rng(90 + TYPES.index(kind))
    em, _ = pair(rng, kind)
    X = rng.normal(size=(9001, 4))
    X[[7, 4100, 9000]] = np.nan                     # missing rows: skipped by the sums
    gamma = rng.dirichlet(np.ones(3), size=9001)

    def run():
        stats = em.empty_stats()
        em.accumulate(stats, X, gamma)
        return em.log_likelihood(X), stats

    results = [with_threads(threads, run) for threads in (1, 2, 3)]
    for ll, stats in results[1:]:
        np.testing.assert_array_equal(ll, results[0][0])
        for key in stats:
            np.testing.assert_array_equal(stats[key], results[0][1][key])
    stats = results[0][1]
    for key, expected in zip(stats, numpy_sums(kind, X, gamma)):
        # (off-diagonal sums cancel: 1e-12 of the largest entry, absolute)
        np.testing.assert_allclose(stats[key], expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


# -- the C passes against NumPy float64 (hmmop._kernel.gauss_*) ----------------

def loglik_inputs(rng, kind, N, D):
    """Random (c, P, a, b, cst) for gauss_loglik; P's upper triangle is garbage (it must not be read)."""
    c = rng.normal(size=D)
    a = -rng.uniform(0.1, 2.0, size=(N, D))
    b = rng.normal(size=(N, D))
    cst = rng.normal(size=N)
    P = None
    if kind != "diag":
        P = rng.normal(size=(N, D, D) if kind == "full" else (D, D))
        P[..., np.triu_indices(D, 1)[0], np.triu_indices(D, 1)[1]] = 1e300
    return c, P, (None if kind == "full" else a), b, cst


def numpy_loglik(kind, X, c, P, a, b, cst):
    """hmm_gauss.h's formulas, row by row in NumPy float64, without expanding the squares."""
    y = X - c
    if kind == "diag":
        return cst + (y ** 2) @ a.T + y @ b.T
    L = np.tril(P)
    if kind == "full":
        z = np.einsum("ijk,tk->tij", L, y) - b               # (n, N, D)
        return cst - 0.5 * (z ** 2).sum(axis=2)
    z = y @ L.T                                               # (n, D)
    return cst + (z ** 2) @ a.T + z @ b.T


@pytest.mark.parametrize("kind", ["diag", "full", "tied"])
@pytest.mark.parametrize("N, D", [(1, 1), (3, 5), (10, 8), (13, 17), (25, 3)])
def test_c_loglik_matches_numpy(kind, N, D):
    """Every state-group size (13 = 7 + 6, 25 = 3 groups), D below, at and above a vector, a short block."""
    rng = np.random.default_rng(N * 100 + D + ["diag", "full", "tied"].index(kind))
    n = 16 * 7 + 5
    X = rng.normal(size=(n, D))
    args = loglik_inputs(rng, kind, N, D)
    out = np.full((n, N), 7.0)
    assert _kernel.gauss_loglik(kind, X, *args, out, 2) == -1
    np.testing.assert_allclose(out, numpy_loglik(kind, X, *args), rtol=1e-12, atol=1e-12)
    gone = [0, 8, 15, 16, n - 1]
    X[gone] = np.nan
    X[3, D - 1] = np.inf                                      # an infinite value, then a NaN in column 0 only
    X[40, 0] = np.nan
    if D > 1:
        X[40, 1:] = 0.0
    out = np.full((n, N), 7.0)
    first_bad = _kernel.gauss_loglik(kind, X, *args, out, 3)
    if D == 1:                                                 # (with one feature, row 40 is a missing row)
        assert first_bad == 3
    else:
        assert first_bad == 3
        X[3] = 0.0
        assert _kernel.gauss_loglik(kind, X, *args, out, 1) == 40
        X[40] = np.nan
    X[3] = 0.0
    out = np.full((n, N), 7.0)
    assert _kernel.gauss_loglik(kind, X, *args, out, 2) == -1
    assert np.all(out[gone] == 0.0)
    seen = ~np.isnan(X).all(axis=1)
    np.testing.assert_allclose(out[seen], numpy_loglik(kind, X[seen], *args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["diag", "full", "tied"])
@pytest.mark.parametrize("N, D", [(1, 1), (3, 5), (13, 17)])
def test_c_stats_match_numpy(kind, N, D):
    """The sums over several chunks (at least 4096 rows each), added to what the outputs hold."""
    rng = np.random.default_rng(N * 100 + D + 7)
    n = 8200
    X = rng.normal(size=(n, D))
    X[[5, 4095, 4096, n - 1]] = np.nan
    gamma = rng.dirichlet(np.ones(N), size=n)
    shape = {"diag": (N, D), "full": (N, D, D), "tied": (D, D)}[kind]
    post, obs, second = np.ones(N), np.ones((N, D)), np.ones(shape)
    assert _kernel.gauss_stats(kind, X, gamma, post, obs, second, 2) == -1
    for got, expected in zip((post, obs, second), numpy_sums("diag" if kind == "diag" else kind, X, gamma)):
        np.testing.assert_allclose(got, expected + 1.0, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    if D > 1:
        X[6000, 0] = np.nan                                    # NaN in column 0 only: reported, nothing added
        before = post.copy()
        assert _kernel.gauss_stats(kind, X, gamma, post, obs, second, 2) == 6000
        np.testing.assert_array_equal(post, before)
        X[6000, 0] = 0.0
        X[6000, D - 1] = np.inf                                # elsewhere: non-finite sums, for the caller
        _kernel.gauss_stats(kind, X, gamma, post, obs, second, 2)
        assert not np.isfinite(second).all()


def test_c_scan():
    X = np.random.default_rng(3).normal(size=(1000, 5))
    missing = np.ones(1000, dtype=bool)
    assert _kernel.gauss_scan(X, True, 2, missing) == (-1, 0)
    assert not missing.any()
    X[[3, 600]] = np.nan
    X[700, 2] = np.inf
    X[800, 0] = np.nan
    assert _kernel.gauss_scan(X, True, 2, missing) == (700, 2)
    np.testing.assert_array_equal(np.flatnonzero(missing), [3, 600])
    assert _kernel.gauss_scan(X, False, 1) == (800, 2)             # column 0 only: row 700 is not read
    assert _kernel.gauss_scan(np.empty((0, 5)), True, 2) == (-1, 0)


@pytest.mark.parametrize("kind", ["full", "tied"])
def test_singular_covariance_is_evaluated_with_the_jitter(kind):
    """A singular (positive semi-definite) covariance - what EM leaves for a state on one point - is
    accepted and evaluated as Sigma + 1e-7 I (hmmlearn's fallback): scipy's density of that matrix."""
    em = GaussianEmission(2, 2, kind)
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])
    covars = np.stack([singular, 2 * np.eye(2)]) if kind == "full" else singular
    em.means = np.array([[0.0, 0.0], [1.0, -1.0]])
    em.set_covars(covars)
    X = np.random.default_rng(3).normal(size=(7, 2))
    mats = covars if kind == "full" else [covars, covars]
    expect = np.stack([multivariate_normal(em.means[i], mats[i] + 1e-7 * (i == 0 or kind == "tied") * np.eye(2))
                       .logpdf(X) for i in range(2)], axis=1)
    np.testing.assert_allclose(em.log_likelihood(X), expect, rtol=1e-6)   # (condition number 1e7)
    np.testing.assert_array_equal(em.covars, np.broadcast_to(covars, (2, 2, 2)))   # (tied: per state)
