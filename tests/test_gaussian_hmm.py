"""hmmop.GaussianHMM (EmissionHMM core + GaussianEmission) against independent oracles.

Oracles: hmmlearn 0.3.3's GaussianHMM (EM from the same start, with and without priors and params
subsets, the k-means start, score / posteriors / Viterbi / MAP, aic / bic), brute-force enumeration of
every state path with scipy.stats densities (missing observations), EM's optimum (gradient training),
the empirical frequencies of many samples, and model files written here by hand (corrupted ones).
The component's own unit tests are in test_gaussian_emission.py; nothing of those is repeated here.
"""
import itertools
import json

import numpy as np
import pytest
from hmmlearn import hmm as hl_hmm
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import hmmop  # noqa: F401  (before mxnet: hmmop's import hook)
import hmmop.ops.threads
from hmmop import GaussianHMM

TYPES = ["spherical", "diag", "full", "tied"]
N, D = 3, 2
LENGTHS = np.array([40, 25, 33])

TRUE_A = np.array([[0.80, 0.10, 0.10],
                   [0.15, 0.70, 0.15],
                   [0.10, 0.20, 0.70]])
TRUE_PI = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
TRUE_COV = np.array([[[0.6, 0.2], [0.2, 0.5]],
                     [[0.8, -0.3], [-0.3, 0.7]],
                     [[0.5, 0.0], [0.0, 0.9]]])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Single-threaded BLAS (scipy, hmmlearn, KMeans) and kernel: the data are tiny, so threads only cost
    (the results do not depend on the thread count: sequences are independent)."""
    from threadpoolctl import threadpool_limits
    previous = hmmop.ops.threads._override
    with threadpool_limits(1):
        hmmop.set_num_threads(1)
        try:
            yield
        finally:
            hmmop.set_num_threads(previous)


def markov_rows(rng, A, pi, means, covs, lengths):
    """(X (sum(lengths), D), states): sequences drawn with NumPy alone (no hmmop code), concatenated."""
    X, S = [], []
    for L in lengths:
        s = rng.choice(len(pi), p=pi)
        for t in range(L):
            if t:
                s = rng.choice(len(pi), p=A[s])
            S.append(s)
            X.append(rng.multivariate_normal(means[s], covs[s]))
    return np.array(X), np.array(S)


X3, _ = markov_rows(np.random.default_rng(0), TRUE_A, TRUE_PI, TRUE_MEANS, TRUE_COV, LENGTHS)


def covars_for(kind, rng):
    """Start covariances in hmmlearn's setter shape for ``kind`` (well conditioned, not diagonal)."""
    if kind == "spherical":
        return rng.uniform(0.6, 2.0, size=N)
    if kind == "diag":
        return rng.uniform(0.5, 2.0, size=(N, D))
    B = rng.normal(size=(N, D, D))
    full = B @ B.transpose(0, 2, 1) / D + 0.5 * np.eye(D)
    return full if kind == "full" else full[0]


def start_params(kind, seed=1):
    """A start (A, pi, means, covars) away from the truth, for both libraries."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.full(N, 5.0), size=N)
    pi = rng.dirichlet(np.full(N, 5.0))
    means = TRUE_MEANS + rng.normal(scale=0.7, size=(N, D))
    return A, pi, means, covars_for(kind, rng)


def hmmlearn_model(kind, A, pi, means, covars, **kwargs):
    """An hmmlearn GaussianHMM holding the given parameters (no initialisation of its own)."""
    kwargs.setdefault("init_params", "")
    kwargs.setdefault("tol", -np.inf)
    hl = hl_hmm.GaussianHMM(N, kind, **kwargs)
    hl.n_features = D                     # hmmlearn needs it to accept covars_ before fit
    hl.startprob_ = np.array(pi, dtype=float)
    hl.transmat_ = np.array(A, dtype=float)
    hl.means_ = np.array(means, dtype=float)
    hl.covars_ = np.array(covars, dtype=float)
    return hl


def hmmlearn_compact(hl):
    """hmmlearn's stored covariances in hmmop's stored form (a fitted spherical model keeps them (N, D))."""
    c = np.asarray(hl._covars_)
    if hl.covariance_type == "spherical" and c.ndim == 2:
        assert np.all(c == c[:, :1])
        c = c[:, 0]
    return c


def assert_same_parameters(model, hl, atol=1e-8):
    np.testing.assert_allclose(model.A, hl.transmat_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.pi, hl.startprob_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.means, hl.means_, rtol=0, atol=atol)
    np.testing.assert_allclose(model.emission.compact_covars, hmmlearn_compact(hl), rtol=0, atol=atol)
    if hl.covariance_type != "spherical":          # hmmlearn's covars_ is misshapen after a spherical fit
        np.testing.assert_allclose(model.covars, hl.covars_, rtol=0, atol=atol)


def snapshot(model):
    return model.A, model.pi, model.means, model.covars


# -- 1. EM equals hmmlearn's ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_em_equals_hmmlearn(kind):
    A, pi, means, covars = start_params(kind)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=5)
    hl = hmmlearn_model(kind, A, pi, means, covars, params="stmc", n_iter=5).fit(X3, LENGTHS)
    assert_same_parameters(model, hl)
    assert history.dtype == np.float64 and len(history) == 5
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    np.testing.assert_array_equal(model.history_, history)
    assert np.all(np.diff(history) > 0)                      # EM climbs from this start
    # the fitted model scores as hmmlearn's fitted one
    np.testing.assert_allclose(model.score(X3, LENGTHS), hl.score(X3, LENGTHS), rtol=1e-10)


EMISSION_PRIORS = {
    "spherical": dict(means_prior=0.5, means_weight=np.array([1.0, 2.0, 0.5]), covars_prior=0.3,
                      covars_weight=3.0),
    "diag": dict(means_prior=np.array([[0.0, 0.5], [2.0, 1.0], [-1.0, 2.0]]),
                 means_weight=np.array([1.0, 2.0, 0.5]),
                 covars_prior=np.array([[0.2, 0.1], [0.3, 0.4], [0.1, 0.2]]), covars_weight=3.0),
    "full": dict(means_prior=np.array([[0.0, 0.5], [2.0, 1.0], [-1.0, 2.0]]), means_weight=2.0,
                 covars_prior=np.array([[[0.3, 0.1], [0.1, 0.2]]] * N), covars_weight=5.0),
    "tied": dict(means_prior=-0.5, means_weight=1.5, covars_prior=np.array([[0.4, 0.1], [0.1, 0.3]]),
                 covars_weight=6.0),
}


def hmmlearn_priors(kind, priors):
    """The same priors as hmmlearn's M-step broadcasts them: a per-state means weight as a column (hmmlearn
    takes per-state weights for spherical / diag means only; its covars_weight must be a scalar)."""
    out = dict(priors)
    if np.ndim(out["means_weight"]):
        out["means_weight"] = np.reshape(out["means_weight"], (N, 1))
    return out


@pytest.mark.parametrize("kind", TYPES)
def test_em_with_emission_priors_equals_hmmlearn(kind):
    priors = EMISSION_PRIORS[kind]
    A, pi, means, covars = start_params(kind, seed=2)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64", **priors)
    history = model.fit(X3, LENGTHS, epochs=5)
    hl = hmmlearn_model(kind, A, pi, means, covars, params="stmc", n_iter=5, **hmmlearn_priors(kind, priors))
    hl.fit(X3, LENGTHS)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    # the priors do change the result (the test is not vacuous)
    plain = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    plain.fit(X3, LENGTHS, epochs=5)
    assert np.abs(plain.means - model.means).max() > 1e-3


def test_em_with_dirichlet_prior_on_A_and_pi_equals_hmmlearn():
    """prior={"A", "pi"} are hmmlearn's transmat_prior / startprob_prior; hmmop's history adds the
    log-prior sum((a - 1) log p) of the parameters before each update (hmmlearn's does not)."""
    kind = "diag"
    rng = np.random.default_rng(3)
    a_prior = rng.uniform(1.0, 4.0, size=(N, N))
    p_prior = rng.uniform(1.0, 4.0, size=N)
    A, pi, means, covars = start_params(kind, seed=3)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=4, prior={"A": a_prior, "pi": p_prior})
    hl = hmmlearn_model(kind, A, pi, means, covars, params="stmc", n_iter=1,
                        transmat_prior=a_prior, startprob_prior=p_prior)
    expected = []
    for _ in range(4):                    # one hmmlearn iteration at a time, to know the parameters before it
        log_prior = ((a_prior - 1) * np.log(hl.transmat_)).sum() + ((p_prior - 1) * np.log(hl.startprob_)).sum()
        hl.fit(X3, LENGTHS)
        expected.append(hl.monitor_.history[-1] + log_prior)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, expected, rtol=1e-8, atol=0)


@pytest.mark.parametrize("params", ["mc", "st", "tm", "s"])
def test_em_params_subset_equals_hmmlearn(params):
    kind = "full"
    A, pi, means, covars = start_params(kind, seed=4)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    before = snapshot(model)
    history = model.fit(X3, LENGTHS, epochs=4, params=params)
    hl = hmmlearn_model(kind, A, pi, means, covars, params=params, n_iter=4).fit(X3, LENGTHS)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    after = snapshot(model)
    for letter, old, new in zip("tsmc", before, after):
        if letter in params:
            assert np.abs(old - new).max() > 1e-6, f"{letter} did not move"
        else:
            np.testing.assert_array_equal(old, new)             # untouched, bit for bit


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_em_covars_only_equals_hmmlearn_m_step(kind):
    """params="c": hmmlearn 0.3.3 cannot be the oracle through fit (without 'm' it does not accumulate the
    'post' and 'obs' statistics its covariance update needs, giving NaN), so drive its E-step with "mc"
    statistics and its M-step with params="c" by hand."""
    A, pi, means, covars = start_params(kind, seed=17)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=3, params="c")
    hl = hmmlearn_model(kind, A, pi, means, covars)
    expected = []
    for _ in range(3):
        hl.params = "mc"
        stats, ll = hl._do_estep(X3, LENGTHS)
        hl.params = "c"
        hl._do_mstep(stats)
        expected.append(ll)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, expected, rtol=1e-8, atol=0)
    np.testing.assert_array_equal(model.means, means)
    np.testing.assert_array_equal(model.A, A)


@pytest.mark.parametrize("keep_zeros", [True, False])
def test_em_with_zeros_in_A_equals_hmmlearn(keep_zeros):
    """A zero transition stays zero under EM (hmmlearn's counts are 0 there); keep_zeros=True also makes it
    a structural zero, one free parameter less."""
    A, pi, means, covars = start_params("diag", seed=18)
    A[0, 1] = 0.0
    A[0] /= A[0].sum()
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64", keep_zeros=keep_zeros)
    history = model.fit(X3, LENGTHS, epochs=5)
    hl = hmmlearn_model("diag", A, pi, means, covars, params="stmc", n_iter=5).fit(X3, LENGTHS)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    assert model.A[0, 1] == 0.0
    full_count = sum(hl._get_n_fit_scalars_per_param().values())
    assert model.n_free_parameters == full_count - keep_zeros


def test_em_tol_stops_as_hmmlearn_per_observed_row():
    """tol is per observed row: hmmop's tol=t stops where hmmlearn's tol=t*n (same order: E, M, then test)."""
    A, pi, means, covars = start_params("full", seed=19)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="full", dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=100, tol=1e-3)
    hl = hmmlearn_model("full", A, pi, means, covars, params="stmc", n_iter=100,
                        tol=1e-3 * len(X3)).fit(X3, LENGTHS)
    assert 2 < len(history) < 100
    assert len(history) == len(hl.monitor_.history)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    assert_same_parameters(model, hl)


def test_em_of_a_float32_model_computes_in_float64():
    A, pi, means, covars = start_params("full", seed=20)
    fits = []
    for dtype in ("float32", "float64"):
        model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="full", dtype=dtype)
        fits.append((model.fit(X3, LENGTHS, epochs=3), model.means, model.covars, model.A))
    for a, b in zip(*fits):
        np.testing.assert_array_equal(a, b)


def test_data_forms_agree():
    """A list of (T_i, D) arrays and hmmlearn's (X, lengths) are the same data; one (T, D) array is one sequence."""
    A, pi, means, covars = start_params("diag", seed=5)
    seqs = np.split(X3, np.cumsum(LENGTHS)[:-1])
    fits = []
    for data in ((X3, LENGTHS), (seqs, None)):
        m = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
        fits.append((m.fit(data[0], data[1], epochs=3), m.means, m.score(X3, LENGTHS)))
    np.testing.assert_array_equal(fits[0][0], fits[1][0])
    np.testing.assert_array_equal(fits[0][1], fits[1][1])
    m = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    assert m.score(X3) == pytest.approx(m.score(X3, [len(X3)]), rel=1e-14)
    assert m.score(X3) != pytest.approx(m.score(X3, LENGTHS), rel=1e-6)


# -- 2. inference equals hmmlearn's -----------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_inference_equals_hmmlearn(kind):
    A, pi, means, covars = start_params(kind, seed=6)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    hl = hmmlearn_model(kind, A, pi, means, covars)

    score = model.score(X3, LENGTHS)
    assert isinstance(score, float)
    np.testing.assert_allclose(score, hl.score(X3, LENGTHS), rtol=1e-10)
    per_seq = model.score_sequences(X3, LENGTHS)
    expected = [hl.score(x) for x in np.split(X3, np.cumsum(LENGTHS)[:-1])]
    np.testing.assert_allclose(per_seq, expected, rtol=1e-10)

    ll, post = model.score_samples(X3, LENGTHS)
    hl_ll, hl_post = hl.score_samples(X3, LENGTHS)
    np.testing.assert_allclose(ll, hl_ll, rtol=1e-10)
    assert [p.shape for p in post] == [(L, N) for L in LENGTHS]
    np.testing.assert_allclose(np.concatenate(post), hl_post, rtol=0, atol=1e-10)
    proba = model.predict_proba(X3, LENGTHS)
    np.testing.assert_allclose(np.concatenate(proba), hl.predict_proba(X3, LENGTHS), rtol=0, atol=1e-10)

    log_prob, paths = model.decode(X3, LENGTHS, algorithm="viterbi")
    hl_log_prob, hl_path = hl.decode(X3, LENGTHS, algorithm="viterbi")
    np.testing.assert_allclose(log_prob, hl_log_prob, rtol=1e-10)
    assert [len(p) for p in paths] == list(LENGTHS)
    np.testing.assert_array_equal(np.concatenate(paths), hl_path)
    np.testing.assert_array_equal(np.concatenate(model.predict(X3, LENGTHS)), hl.predict(X3, LENGTHS))

    # "map": hmmlearn's path; hmmop's log_prob is documented as the data's log-likelihood
    # (hmmlearn 0.3.3 returns the sum of the maximal posteriors there instead)
    map_lp, map_paths = model.decode(X3, LENGTHS, algorithm="map")
    _, hl_map = hl.decode(X3, LENGTHS, algorithm="map")
    np.testing.assert_array_equal(np.concatenate(map_paths), hl_map)
    assert map_lp == pytest.approx(score, rel=1e-12)


def test_inference_does_not_depend_on_the_thread_count():
    """(The rest of the file runs the kernel on one thread.)"""
    A, pi, means, covars = start_params("full", seed=27)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="full", dtype="float64")
    results = []
    for threads in (1, 2):
        hmmop.set_num_threads(threads)
        results.append((model.score_sequences(X3, LENGTHS), np.concatenate(model.predict_proba(X3, LENGTHS)),
                        np.concatenate(model.predict(X3, LENGTHS))))
    hmmop.set_num_threads(1)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_viterbi_tie_follows_hmmlearn():
    """States 1 and 2 identical (same emission, same rows and columns of A): every path through them has
    an exactly tied twin; hmmop must break the ties as hmmlearn does."""
    A = np.array([[0.6, 0.2, 0.2], [0.3, 0.35, 0.35], [0.3, 0.35, 0.35]])
    pi = np.array([0.4, 0.3, 0.3])
    means = np.array([[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])
    covars = np.array([[1.0, 1.0], [0.7, 0.7], [0.7, 0.7]])
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    hl = hmmlearn_model("diag", A, pi, means, covars)
    lengths = np.array([12, 7, 9])
    X = np.random.default_rng(7).normal(scale=1.5, size=(lengths.sum(), D)) + 1.0
    log_prob, paths = model.decode(X, lengths)
    hl_log_prob, hl_path = hl.decode(X, lengths, algorithm="viterbi")
    path = np.concatenate(paths)
    assert {1, 2} & set(path.tolist())                        # the tied states are used
    np.testing.assert_array_equal(path, hl_path)
    np.testing.assert_allclose(log_prob, hl_log_prob, rtol=1e-10)


# -- 3. k-means start ---------------------------------------------------------------------------------

def hmmlearn_seed(seed):
    """The int hmmop's fit hands to KMeans: _start draws it from default_rng(fit's seed)."""
    return int(np.random.default_rng(seed).integers(2 ** 31 - 1))


@pytest.mark.parametrize("kind", TYPES)
def test_kmeans_start_equals_hmmlearn(kind):
    """GaussianHMM(seed=s).fit from scratch == hmmlearn 0.3.3's GaussianHMM(random_state=s).fit: the same
    Dirichlet(1/N) draws of pi and A from RandomState(s), the same KMeans(random_state=s) means and
    covariance start, then the same EM."""
    seed = 11
    model = GaussianHMM(N, D, kind, seed=seed, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=4)
    hl = hl_hmm.GaussianHMM(N, kind, random_state=seed, n_iter=4, tol=-np.inf).fit(X3, LENGTHS)
    assert_same_parameters(model, hl)
    np.testing.assert_allclose(history, list(hl.monitor_.history), rtol=1e-8, atol=0)
    # fit's own seed overrides the constructor's, and gives the same as a constructor seed
    other = GaussianHMM(N, D, kind, seed=999, dtype="float64")
    np.testing.assert_array_equal(other.fit(X3, LENGTHS, epochs=4, seed=seed), history)


# -- 4. missing observations ------------------------------------------------------------------------

def brute_force(A, pi, means, covs, X):
    """(log-likelihood, posteriors (T, N), best path, its log-probability) by enumerating every state path;
    a NaN row contributes no density."""
    T = len(X)
    dens = np.array([[0.0 if np.isnan(x).all() else multivariate_normal(means[i], covs[i]).logpdf(x)
                      for i in range(len(pi))] for x in X])
    paths = np.array(list(itertools.product(range(len(pi)), repeat=T)))
    logp = (np.log(pi)[paths[:, 0]] + np.log(A[paths[:, :-1], paths[:, 1:]]).sum(axis=1)
            + dens[np.arange(T), paths].sum(axis=1))
    ll = logsumexp(logp)
    w = np.exp(logp - ll)
    post = np.stack([np.bincount(paths[:, t], weights=w, minlength=len(pi)) for t in range(T)])
    best = int(np.argmax(logp))
    return ll, post, paths[best], logp[best]


@pytest.mark.parametrize("kind", ["diag", "full"])
@pytest.mark.parametrize("missing", [[0], [3], [6], [2, 3]], ids=["first", "middle", "last", "two"])
def test_missing_rows_match_brute_force(kind, missing):
    A, pi, means, covars = start_params(kind, seed=8)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    X = np.random.default_rng(9).normal(scale=2.0, size=(7, D))
    X[missing] = np.nan
    ll, post, best, best_lp = brute_force(A, pi, means, model.covars, X)
    assert model.score(X) == pytest.approx(ll, rel=1e-10)
    proba = model.predict_proba(X)[0]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, post, rtol=0, atol=1e-10)
    log_prob, paths = model.decode(X)
    np.testing.assert_array_equal(paths[0], best)
    assert log_prob == pytest.approx(best_lp, rel=1e-10)
    # bic counts the observed rows only
    k = model.n_free_parameters
    assert model.bic(X) == pytest.approx(-2 * ll + k * np.log(7 - len(missing)), rel=1e-10)


def test_missing_rows_in_concatenated_data_and_em():
    """A NaN row inside (X, lengths): the sequence scores as the brute force says, and EM runs (its history
    climbs) without the missing row moving the means."""
    A, pi, means, covars = start_params("diag", seed=10)
    X = X3[:12].copy()
    X[4] = np.nan
    lengths = [5, 7]
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    expected = sum(brute_force(A, pi, means, model.covars, x)[0] for x in (X[:5], X[5:]))
    assert model.score(X, lengths) == pytest.approx(expected, rel=1e-10)
    history = model.fit(X, lengths, epochs=5)
    assert np.all(np.diff(history) > -1e-9)
    assert np.isfinite(model.means).all() and np.isfinite(model.covars).all()


# -- 5. gradient training -----------------------------------------------------------------------------

def two_state_data():
    A = np.array([[0.9, 0.1], [0.2, 0.8]])
    pi = np.array([0.6, 0.4])
    means = np.array([[-2.0, 0.0], [2.0, 0.5]])
    covs = np.array([np.eye(2) * 0.5, np.eye(2) * 0.4])
    X, _ = markov_rows(np.random.default_rng(12), A, pi, means, covs, [60, 50])
    start = (np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([0.5, 0.5]),
             np.array([[-1.0, 0.5], [1.0, -0.5]]), np.ones((2, 2)))
    return X, np.array([60, 50]), start


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradient_training_approaches_em_optimum(dtype):
    X, lengths, (A, pi, means, covars) = two_state_data()
    em = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    em.fit(X, lengths, epochs=200, tol=1e-10)
    em_ll = em.score(X, lengths)
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype=dtype)
    history = model.fit(X, lengths, method="gradient", epochs=250, learning_rate=0.05)
    assert len(history) == 250
    assert history[-1] > history[0] + 10
    ll = model.score(X, lengths)
    assert ll <= em_ll + 1e-3 * len(X)                         # EM's optimum is (locally) the best
    assert abs(ll - em_ll) < 2e-3 * len(X), (ll, em_ll)
    np.testing.assert_allclose(model.means, em.means, atol=0.05)
    np.testing.assert_allclose(model.A, em.A, atol=0.03)
    # the history is the objective before each update: its last entry is close to the final score
    assert abs(history[-1] - ll) < 1e-3 * len(X)
    assert model.dtype == np.dtype(dtype)


def test_gradient_params_m_changes_only_means():
    X, lengths, (A, pi, means, covars) = two_state_data()
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64", covariance_type="diag")
    history = model.fit(X, lengths, method="gradient", epochs=40, params="m", learning_rate=0.05)
    assert history[-1] > history[0]
    assert np.abs(model.means - means).max() > 0.1
    np.testing.assert_allclose(model.A, A, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.pi, pi, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.emission.compact_covars, covars, rtol=1e-12)


@pytest.mark.parametrize("kind", ["spherical", "full", "tied"])
def test_gradient_training_other_covariance_types_climb(kind):
    A, pi, means, covars = start_params(kind, seed=13)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    start = model.score(X3, LENGTHS)
    history = model.fit(X3, LENGTHS, method="gradient", epochs=30, learning_rate=0.05)
    assert history[0] == pytest.approx(start, rel=1e-9)        # the first entry is the start's objective
    assert history[-1] > history[0]
    assert model.score(X3, LENGTHS) > start
    np.linalg.cholesky(model.covars)                           # still positive definite


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradient_training_with_missing_rows(dtype):
    """The padded operator path sums NaN rows out as the kernel does: the first history entry is score's."""
    A, pi, means, covars = start_params("diag", seed=24)
    X = X3.copy()
    X[[3, 50, 51]] = np.nan
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype=dtype)
    start = model.score(X, LENGTHS)
    history = model.fit(X, LENGTHS, method="gradient", epochs=8, learning_rate=0.05)
    assert history[0] == pytest.approx(start, rel=1e-10 if dtype == "float64" else 1e-6)
    assert history[-1] > history[0] and model.score(X, LENGTHS) > start
    assert np.isfinite(model.means).all()


@pytest.mark.parametrize("method", ["em", "gradient"])
def test_objective_with_dirichlet_prior_is_loglik_plus_log_prior(method):
    """Both methods report the same objective: log-likelihood + sum((a - 1) log p) over A and pi."""
    A, pi, means, covars = start_params("diag", seed=42)
    a_prior, p_prior = np.full((N, N), 2.5), np.array([1.5, 3.0, 2.0])
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    expected = model.score(X3, LENGTHS) + ((a_prior - 1) * np.log(A)).sum() + ((p_prior - 1) * np.log(pi)).sum()
    history = model.fit(X3, LENGTHS, method=method, epochs=10, prior={"A": a_prior, "pi": p_prior})
    assert history[0] == pytest.approx(expected, rel=1e-10)
    assert history[-1] > history[0]


def test_gradient_training_keeps_structural_zeros():
    A, pi, means, covars = start_params("diag", seed=25)
    A[0, 1] = 0.0
    A[0] /= A[0].sum()
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64", keep_zeros=True)
    model.fit(X3, LENGTHS, method="gradient", epochs=10)
    assert model.A[0, 1] == 0.0
    np.testing.assert_allclose(model.A.sum(axis=1), 1.0, rtol=1e-12)


def test_gradient_divergence_keeps_last_finite_parameters():
    A, pi, means, covars = start_params("diag", seed=26)
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float32")
    start = model.score(X3, LENGTHS)
    with pytest.raises(hmmop.DivergenceError, match="learning rate"):
        model.fit(X3, LENGTHS, method="gradient", epochs=20, learning_rate=100.0)
    assert len(model.history_) >= 2 and np.isfinite(model.history_).all()
    assert start == pytest.approx(model.history_[0], rel=1e-6)
    score = model.score(X3, LENGTHS)                   # the parameters of the last finite objective
    assert score == pytest.approx(model.history_[-1], rel=1e-5)


# A learning rate so large that one step sends log-variances to +-1e4: MXNet's objective stays finite (the
# state with variance exp(-1e4) gets log-density -inf, the others carry the sequence), but exp(+-1e4) is not
# a float64 variance, so _DenseHMMBlock.store_into -> GaussianEmission.set_raw_parameters raises ValueError
# after store_into has already replaced the model's A and pi.
def test_gradient_to_unrepresentable_variances_is_a_divergence():
    A, pi, means, covars = start_params("diag", seed=26)
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    with pytest.raises(hmmop.DivergenceError):
        model.fit(X3, LENGTHS, method="gradient", epochs=3, learning_rate=1e4)


def test_failed_gradient_fit_leaves_a_consistent_model():
    A, pi, means, covars = start_params("diag", seed=26)
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    with pytest.raises(Exception):
        model.fit(X3, LENGTHS, method="gradient", epochs=3, learning_rate=1e4)
    # either untouched, or holding the parameters whose objective the history reports last
    untouched = np.array_equal(model.A, A) and np.array_equal(model.means, means)
    consistent = len(model.history_) > 0 and model.score(X3, LENGTHS) == pytest.approx(model.history_[-1],
                                                                                        rel=1e-8)
    assert untouched or consistent


# -- 6. model files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_save_load_round_trip(kind, tmp_path):
    A, pi, means, covars = start_params(kind, seed=14)
    A[0, 2] = 0.0
    A[0] /= A[0].sum()
    priors = EMISSION_PRIORS[kind]
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64",
                                        keep_zeros=True, **priors)
    path = str(tmp_path / "model.npz")
    model.save(path)
    for loaded in (GaussianHMM.load(path), hmmop.load(path)):
        assert type(loaded) is GaussianHMM
        assert loaded.dtype == np.float64 and loaded.covariance_type == kind
        # (A and pi are renormalised on loading: equal to the last bits, not bit for bit)
        for old, new in zip(snapshot(model), snapshot(loaded)):
            np.testing.assert_allclose(new, old, rtol=1e-14, atol=1e-16)
        assert loaded.score(X3, LENGTHS) == pytest.approx(model.score(X3, LENGTHS), rel=1e-13)
        assert loaded.n_free_parameters == model.n_free_parameters
    # settings travel: the structural zero and the priors give the same EM
    loaded = hmmop.load(path)
    h1 = model.fit(X3, LENGTHS, epochs=2)
    h2 = loaded.fit(X3, LENGTHS, epochs=2)
    np.testing.assert_allclose(h1, h2, rtol=1e-12)
    np.testing.assert_allclose(model.means, loaded.means, rtol=1e-10, atol=1e-12)
    assert loaded.A[0, 2] == 0.0


def test_save_load_float32_keeps_dtype(tmp_path):
    A, pi, means, covars = start_params("full", seed=15)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="full", dtype="float32")
    model.save(str(tmp_path / "a.npz"))
    loaded = hmmop.load(str(tmp_path / "a.npz"))
    assert loaded.dtype == np.float32
    assert loaded.score(X3, LENGTHS) == pytest.approx(model.score(X3, LENGTHS), rel=1e-5)
    loaded.save(str(tmp_path / "b.npz"))                    # float32 values survive a second trip exactly
    again = hmmop.load(str(tmp_path / "b.npz"))
    assert again.score(X3, LENGTHS) == loaded.score(X3, LENGTHS)
    with np.load(str(tmp_path / "a.npz")) as f:
        assert f["A"].dtype == np.float32 and f["emission_means"].dtype == np.float32
        assert int(f["version"]) == 2 and str(f["family"]) == "gaussian"


def test_version_1_categorical_file(tmp_path):
    path = str(tmp_path / "cat.npz")
    cat = hmmop.HMM(2, 3, seed=0)
    cat.save(path)
    loaded = hmmop.load(path)
    assert type(loaded) is hmmop.HMM
    for a, b in zip(cat.probabilities(), loaded.probabilities()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="not a GaussianHMM"):
        GaussianHMM.load(path)


def _saved_fields(tmp_path):
    A, pi, means, covars = start_params("diag", seed=16)
    path = str(tmp_path / "good.npz")
    GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64").save(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _meta_edit(**changes):
    def edit(fields):
        meta = json.loads(str(fields["meta"]))
        for key, value in changes.items():
            if value is None:
                del meta[key]
            else:
                meta[key] = value
        fields["meta"] = np.array(json.dumps(meta))
    return edit


def _set(key, value):
    def edit(fields):
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return edit


CORRUPTIONS = {
    "unknown family": (_set("family", np.array("poisson")), "poisson"),
    "version 3": (_set("version", np.array(3)), "version 3"),
    "other format": (_set("format", np.array("something.else")), "not an hmmop model file"),
    "no A": (_set("A", None), "no \\['A'\\]"),
    "no covars": (_set("emission_covars", None), "covars"),
    "negative covars": (lambda f: f.update(emission_covars=-f["emission_covars"]), "covars"),
    "no n_states": (_meta_edit(n_states=None), "not a complete"),
    "bad covariance_type": (lambda f: _meta_edit(emission=dict(json.loads(str(f["meta"]))["emission"],
                                                               covariance_type="weird"))(f), "weird"),
}

# Corruptions that escape as other exceptions (or without the file's name): core.py _from_fields parses
# meta and reads meta["dtype"] outside its try/except (KeyError, ValueError).
CORRUPTIONS_XFAIL = {
    "meta not JSON": _set("meta", np.array("{not json")),
    "meta a list": _set("meta", np.array("[]")),
    "no dtype": _meta_edit(dtype=None),
    "int8 dtype": _meta_edit(dtype="int8"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_files_raise_value_error(name, tmp_path):
    fields = _saved_fields(tmp_path)
    edit, message = CORRUPTIONS[name]
    edit(fields)
    path = str(tmp_path / "bad.npz")
    np.savez(path, **fields)
    with pytest.raises(ValueError, match=message):
        hmmop.load(path)
    with pytest.raises(ValueError):
        GaussianHMM.load(path)


@pytest.mark.parametrize("name", list(CORRUPTIONS_XFAIL))
def test_corrupted_meta_raises_clear_value_error(name, tmp_path):
    fields = _saved_fields(tmp_path)
    CORRUPTIONS_XFAIL[name](fields)
    path = str(tmp_path / "bad.npz")
    np.savez(path, **fields)
    with pytest.raises(ValueError, match="bad.npz"):
        hmmop.load(path)


def test_unreadable_and_absent_files(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="not an hmmop model file"):
        hmmop.load(str(path))
    with pytest.raises(ValueError, match="not an hmmop model file"):
        GaussianHMM.load(str(path))
    with pytest.raises(FileNotFoundError):
        hmmop.load(str(tmp_path / "absent.npz"))


# -- 7. n_init ----------------------------------------------------------------------------------------

def test_n_init_keeps_the_best_start():
    model = GaussianHMM(N, D, "diag", seed=21, dtype="float64")
    history = model.fit(X3, LENGTHS, epochs=3, n_init=3)
    assert len(model.inits_) == 3 and len(model.histories_) == 3
    best = int(np.argmax(model.inits_))
    assert model.score(X3, LENGTHS) == pytest.approx(model.inits_.max(), rel=1e-12)
    np.testing.assert_array_equal(history, model.histories_[best])
    np.testing.assert_array_equal(model.history_, model.histories_[best])
    assert len(set(np.round(model.inits_, 6))) > 1              # the starts really differ
    # the first start is the plain fit with the same seed
    single = GaussianHMM(N, D, "diag", seed=21, dtype="float64")
    np.testing.assert_array_equal(single.fit(X3, LENGTHS, epochs=3), model.histories_[0])
    assert single.inits_.size == 0


@pytest.mark.parametrize("params,seed", [("st", 0), ("mc", 2)])
def test_n_init_keeps_the_parameters_that_are_not_learned(params, seed):
    A, pi, means, covars = start_params("diag", seed=41)
    model = GaussianHMM.from_parameters(A, pi, means, covars, dtype="float64")
    model.fit(X3, LENGTHS, epochs=3, params=params, n_init=3, seed=seed)
    kept = {"s": (model.pi, pi), "t": (model.A, A), "m": (model.means, means),
            "c": (model.emission.compact_covars, covars)}
    for letter, (now, given) in kept.items():
        if letter not in params:
            np.testing.assert_array_equal(now, given, err_msg=f"{letter!r} is not learned but changed")


# -- 8. sampling --------------------------------------------------------------------------------------

def test_sample_is_reproducible_and_follows_the_model():
    means = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
    model = GaussianHMM.from_parameters(TRUE_A, TRUE_PI, means, TRUE_COV, covariance_type="full", dtype="float64")
    X1, S1 = model.sample(3, 20, seed=5)
    X2, S2 = model.sample(3, 20, seed=5)
    assert len(X1) == 3 and all(x.shape == (20, D) for x in X1) and all(s.shape == (20,) for s in S1)
    for a, b in zip(X1 + S1, X2 + S2):
        np.testing.assert_array_equal(a, b)
    X3_, S3_ = model.sample(3, 20, seed=6)
    assert not np.array_equal(np.concatenate(X1), np.concatenate(X3_))

    X, S = model.sample(1, 30000, seed=7)
    X, S = X[0], np.asarray(S[0])
    counts = np.zeros((N, N))
    np.add.at(counts, (S[:-1], S[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), TRUE_A, atol=0.02)
    for i in range(N):
        np.testing.assert_allclose(X[S == i].mean(axis=0), means[i], atol=0.05)
        np.testing.assert_allclose(np.cov(X[S == i].T), TRUE_COV[i], atol=0.06)

    _, starts = model.sample(4000, 1, seed=8)
    freq = np.bincount(np.concatenate(starts), minlength=N) / 4000
    np.testing.assert_allclose(freq, TRUE_PI, atol=0.03)


# -- 9. aic / bic -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_aic_bic_equal_hmmlearn(kind):
    A, pi, means, covars = start_params(kind, seed=22)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")
    hl = hmmlearn_model(kind, A, pi, means, covars, params="stmc")
    assert model.n_free_parameters == sum(hl._get_n_fit_scalars_per_param().values())
    np.testing.assert_allclose(model.aic(X3, LENGTHS), hl.aic(X3, LENGTHS), rtol=1e-10)
    np.testing.assert_allclose(model.bic(X3, LENGTHS), hl.bic(X3, LENGTHS), rtol=1e-10)


# -- 10. bad input ------------------------------------------------------------------------------------

def _inf_rows():
    X = X3.copy()
    X[5, 1] = np.inf
    return X


BAD_CALLS = {
    "wrong n_features": (lambda m: m.fit(np.ones((20, D + 1)), epochs=1), "features"),
    "wrong n_features score": (lambda m: m.score(np.ones((20, D + 1))), "features"),
    "inf value": (lambda m: m.fit(_inf_rows(), LENGTHS, epochs=1), r"X\[5\]"),
    "inf value decode": (lambda m: m.decode(_inf_rows(), LENGTHS), r"X\[5\]"),
    "partly NaN row": (lambda m: m.score(np.array([[0.0, np.nan], [1.0, 1.0]])), r"X\[0\]"),
    "lengths sum": (lambda m: m.score(X3, [40, 25, 30]), "lengths"),
    "negative lengths": (lambda m: m.fit(X3, [40, -25, 83], epochs=1), "lengths"),
    "unknown method": (lambda m: m.fit(X3, LENGTHS, method="newton"), "method"),
    "unknown algorithm": (lambda m: m.decode(X3, LENGTHS, algorithm="beam"), "algorithm"),
    "n_init 0": (lambda m: m.fit(X3, LENGTHS, n_init=0), "n_init"),
    "params letter": (lambda m: m.fit(X3, LENGTHS, params="mx", epochs=1), "params"),
    "sample length": (lambda m: m.sample(2, 0), "length"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_raises_and_leaves_the_model_usable(name):
    A, pi, means, covars = start_params("full", seed=23)
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="full", dtype="float64")
    before = snapshot(model)
    score = model.score(X3, LENGTHS)
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call(model)
    for old, new in zip(before, snapshot(model)):
        np.testing.assert_array_equal(old, new)
    assert model.score(X3, LENGTHS) == score
    model.fit(X3, LENGTHS, epochs=1)                          # and it still trains


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianHMM(N, D, covariance_type="banded")
    A, pi, means, _ = start_params("full")
    not_pd = np.array([[[1.0, 2.0], [2.0, 1.0]]] * N)         # symmetric, eigenvalues 3 and -1
    with pytest.raises(ValueError, match=r"covars\[0\]"):
        GaussianHMM.from_parameters(A, pi, means, not_pd, covariance_type="full")
    with pytest.raises(ValueError, match="covars"):
        GaussianHMM.from_parameters(A, pi, means, not_pd[0], covariance_type="tied")
    with pytest.raises(ValueError, match=r"covars\[1\]"):
        GaussianHMM.from_parameters(A, pi, means, np.array([1.0, -1.0, 1.0]), covariance_type="spherical")
    with pytest.raises(ValueError, match="covars"):
        GaussianHMM.from_parameters(A, pi, means, np.ones((N, D + 1)), covariance_type="diag")
    with pytest.raises(ValueError, match="A"):
        GaussianHMM.from_parameters(A[:2], pi, means, np.ones((N, D)))
    with pytest.raises(ValueError, match="pi"):
        GaussianHMM.from_parameters(A, pi * 2, means, np.ones((N, D)))
