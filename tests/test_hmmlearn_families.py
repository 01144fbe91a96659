"""hmmop.hmmlearn's PoissonHMM, MultinomialHMM and GMMHMM against hmmlearn 0.3.3, the oracle.

As test_hmmlearn_compat.py does for CategoricalHMM and GaussianHMM: EM from the same start (params and
init_params subsets, priors, every GMM covariance type), initialisation from random_state, scores,
posteriors, both decoders, aic/bic, samples from the same random stream, signatures, errors of the same
types, model files; missing rows against a NumPy forward recursion.
"""
import inspect
import logging

import numpy as np
import pytest
from hmmlearn import hmm as hl
from test_hmmlearn_compat import ATOL_PARAM, ATOL_SCORE, close, forward_ll, one_thread, same_history  # noqa: F401

from hmmop import hmmlearn as hh

N, D, K = 3, 3, 2
LENGTHS = [50, 30, 40]
TYPES = ["spherical", "diag", "full", "tied"]


@pytest.fixture(autouse=True)
def quiet_multinomial(caplog):
    """hmmlearn's MultinomialHMM logs a note on its API at every construction (silenced here only: other
    tests count hmmlearn's warnings)."""
    logger = logging.getLogger("hmmlearn.hmm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def counts(seed=0):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.5, 9, (N, D))
    labels = np.repeat(rng.integers(N, size=sum(LENGTHS) // 10), 10)
    return rng.poisson(rates[labels])


def multinomial_counts(seed=0, trials=5):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(D + 1), N)
    labels = np.repeat(rng.integers(N, size=sum(LENGTHS) // 10), 10)
    return np.array([rng.multinomial(trials, P[s]) for s in labels])


def mixture_rows(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (N * K, 2))
    labels = np.repeat(rng.integers(N * K, size=sum(LENGTHS) // 5), 5)
    return centres[labels] + rng.normal(size=(len(labels), 2))


def preset(models, values):
    for m in models:
        for name, value in values.items():
            setattr(m, name, np.array(value, copy=True))


def compare_fit(a, b, X, names):
    a.fit(X, LENGTHS)
    assert b.fit(X, LENGTHS) is b
    for name in ("startprob_", "transmat_") + names:
        close(getattr(b, name), getattr(a, name), ATOL_PARAM)
    same_history(a, b)


# -- PoissonHMM --------------------------------------------------------------------------------------------
POISSON_FITS = [{}, {"lambdas_prior": 2.0, "lambdas_weight": 0.5}, {"params": "l"}, {"params": "st"},
                {"init_params": "st", "preset": True}, {"init_params": "", "preset": True, "params": "tl"},
                {"startprob_prior": 2.0, "transmat_prior": 1.5}, {"tol": 1e-3, "n_iter": 100}]


@pytest.mark.parametrize("kw", POISSON_FITS, ids=[str(i) for i in range(len(POISSON_FITS))])
def test_poisson_fit_equals_hmmlearn(kw):
    kw = {"n_iter": 10, "tol": -np.inf, **kw}
    set_start = kw.pop("preset", False)
    a, b = hl.PoissonHMM(N, random_state=2, **kw), hh.PoissonHMM(N, random_state=2, **kw)
    if set_start:
        rng = np.random.default_rng(1)
        preset((a, b), {"startprob_": rng.dirichlet(np.ones(N)), "transmat_": rng.dirichlet(np.ones(N), N),
                        "lambdas_": rng.uniform(1, 8, (N, D))})
    compare_fit(a, b, counts(), ("lambdas_",))


# -- MultinomialHMM ------------------------------------------------------------------------------------
MULTINOMIAL_FITS = [{"n_trials": 5}, {}, {"n_trials": 5, "params": "e"}, {"n_trials": 5, "params": "st"},
                    {"n_trials": 5, "init_params": "st", "preset": True},
                    {"n_trials": 5, "transmat_prior": 2.0, "startprob_prior": 1.5}]


@pytest.mark.parametrize("kw", MULTINOMIAL_FITS, ids=[str(i) for i in range(len(MULTINOMIAL_FITS))])
def test_multinomial_fit_equals_hmmlearn(kw):
    kw = {"n_iter": 10, "tol": -np.inf, **kw}
    set_start = kw.pop("preset", False)
    a, b = hl.MultinomialHMM(N, random_state=2, **kw), hh.MultinomialHMM(N, random_state=2, **kw)
    if set_start:
        preset((a, b), {"emissionprob_": np.random.default_rng(1).dirichlet(np.ones(D + 1), N)})
    compare_fit(a, b, multinomial_counts(), ("emissionprob_",))
    np.testing.assert_array_equal(np.asarray(b.n_trials), np.asarray(a.n_trials))


# -- GMMHMM --------------------------------------------------------------------------------------------
GMM_FITS = [{}, {"params": "stw"}, {"params": "mc"}, {"params": "stmw"},
            {"weights_prior": 2.0, "means_prior": 0.5, "means_weight": 1.5},
            {"init_params": "", "preset": True}, {"init_params": "mw", "preset": True}]


def gmm_start(kind, rng):
    W = rng.normal(size=(N, K, 2, 2)) * 0.4
    full = W @ np.swapaxes(W, -1, -2) + np.eye(2)
    covars = {"spherical": rng.uniform(0.5, 2, (N, K)), "diag": rng.uniform(0.5, 2, (N, K, 2)), "full": full,
              "tied": full[:, 0]}[kind]
    return {"startprob_": rng.dirichlet(np.ones(N)), "transmat_": rng.dirichlet(np.ones(N), N),
            "weights_": rng.dirichlet(np.ones(K), N), "means_": rng.normal(0, 3, (N, K, 2)), "covars_": covars}


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("kw", GMM_FITS, ids=[str(i) for i in range(len(GMM_FITS))])
def test_gmm_fit_equals_hmmlearn(kind, kw):
    kw = {"n_iter": 8, "tol": -np.inf, **kw}
    set_start = kw.pop("preset", False)
    a = hl.GMMHMM(N, n_mix=K, covariance_type=kind, random_state=3, **kw)
    b = hh.GMMHMM(N, n_mix=K, covariance_type=kind, random_state=3, **kw)
    if set_start:
        preset((a, b), gmm_start(kind, np.random.default_rng(4)))
    compare_fit(a, b, mixture_rows(), ("weights_", "means_", "covars_"))


def test_random_state_initialisation_equals_hmmlearn():
    X, Y = counts(1), mixture_rows(1)
    for seed in (0, 5):
        a = hl.PoissonHMM(N, random_state=seed, params="", n_iter=1).fit(X, LENGTHS)
        b = hh.PoissonHMM(N, random_state=seed, params="", n_iter=1).fit(X, LENGTHS)
        close(b.lambdas_, a.lambdas_, 1e-12)
        Z = multinomial_counts(1)
        a = hl.MultinomialHMM(N, random_state=seed, params="", n_iter=1).fit(Z, LENGTHS)
        b = hh.MultinomialHMM(N, random_state=seed, params="", n_iter=1).fit(Z, LENGTHS)
        np.testing.assert_array_equal(b.emissionprob_, a.emissionprob_)
        for kind in TYPES:
            a = hl.GMMHMM(N, n_mix=K, covariance_type=kind, random_state=seed, params="", n_iter=1).fit(Y, LENGTHS)
            b = hh.GMMHMM(N, n_mix=K, covariance_type=kind, random_state=seed, params="", n_iter=1).fit(Y, LENGTHS)
            for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
                close(getattr(b, name), getattr(a, name), 1e-12)


# -- inference and sampling from the same parameters ---------------------------------------------------
def fixed_pair(family, kind="diag"):
    """(hmmlearn model, hmmop model) holding the same parameters, seeded (a fit is reproducible), and data."""
    rng = np.random.default_rng(7)
    common = {"startprob_": rng.dirichlet(np.ones(N)), "transmat_": rng.dirichlet(np.ones(N) * 2, N)}
    if family == "poisson":
        pair = hl.PoissonHMM(N, random_state=0), hh.PoissonHMM(N, random_state=0)
        preset(pair, {**common, "lambdas_": rng.uniform(1, 8, (N, D))})
        return pair, counts(3)
    if family == "multinomial":
        pair = tuple(m.MultinomialHMM(N, n_trials=5, random_state=0) for m in (hl, hh))
        preset(pair, {**common, "emissionprob_": rng.dirichlet(np.ones(D + 1), N)})
        return pair, multinomial_counts(3)
    pair = tuple(m.GMMHMM(N, n_mix=K, covariance_type=kind, random_state=0) for m in (hl, hh))
    preset(pair, {**gmm_start(kind, rng), **common})
    return pair, mixture_rows(3)


CASES = ["poisson", "multinomial"] + [f"gmm-{t}" for t in TYPES]


def pair_of(case):
    family, _, kind = case.partition("-")
    return fixed_pair(family, kind or "diag")


@pytest.mark.parametrize("case", CASES)
def test_inference_equals_hmmlearn(case):
    (a, b), X = pair_of(case)
    for lengths in (LENGTHS, None):
        close(b.score(X, lengths), a.score(X, lengths), ATOL_SCORE)
        (la, pa), (lb, pb) = a.score_samples(X, lengths), b.score_samples(X, lengths)
        close(lb, la, ATOL_SCORE)
        close(pb, pa, ATOL_SCORE)
        for algorithm in ("viterbi", "map"):
            (la, sa), (lb, sb) = a.decode(X, lengths, algorithm=algorithm), b.decode(X, lengths, algorithm=algorithm)
            close(lb, la, ATOL_SCORE)
            np.testing.assert_array_equal(sb, sa)
        close(b.aic(X, lengths), a.aic(X, lengths), 1e-9)
        close(b.bic(X, lengths), a.bic(X, lengths), 1e-9)
    close(b.get_stationary_distribution(), a.get_stationary_distribution(), 1e-12)


@pytest.mark.parametrize("case", CASES)
def test_sample_follows_hmmlearns_stream(case):
    (a, b), _ = pair_of(case)
    for kwargs in ({"random_state": 1}, {"random_state": 2, "currstate": 1}):
        (Xa, Sa), (Xb, Sb) = a.sample(25, **kwargs), b.sample(25, **kwargs)
        np.testing.assert_array_equal(Sb, Sa)
        assert Xb.shape == Xa.shape
        close(Xb, Xa, 1e-12)


@pytest.mark.parametrize("name", ["PoissonHMM", "MultinomialHMM", "GMMHMM"])
def test_constructor_signature_equals_hmmlearn(name):
    ours = inspect.signature(getattr(hh, name)).parameters
    theirs = inspect.signature(getattr(hl, name)).parameters
    assert [p for p in ours if p != "dtype"] == list(theirs)
    for p, t in theirs.items():
        assert (ours[p].default, ours[p].kind) == (t.default, t.kind), p


@pytest.mark.parametrize("case", CASES)
def test_save_load_round_trip(case, tmp_path):
    (_, b), X = pair_of(case)
    b.set_params(n_iter=2, random_state=0).fit(X, LENGTHS)
    path = str(tmp_path / "m.npz")
    b.save(path)
    c = hh.load(path)
    assert type(c) is type(b)
    close(c.score(X, LENGTHS), b.score(X, LENGTHS), 1e-12)
    np.testing.assert_array_equal(c.predict(X, LENGTHS), b.predict(X, LENGTHS))


# -- errors ----------------------------------------------------------------------------------------------
def fitted(model, X):
    return model.set_params(n_iter=2, random_state=0).fit(X, LENGTHS)


ERRORS = {
    "poisson score before fit": (lambda m: m.PoissonHMM(N), lambda m: m.score(counts())),
    "poisson lambdas_ shape": (lambda m: fitted(m.PoissonHMM(N), counts()),
                               lambda m: (setattr(m, "lambdas_", np.ones((N + 1, D))), m.score(counts()))),
    "poisson other n_features": (lambda m: fitted(m.PoissonHMM(N), counts()), lambda m: m.fit(counts()[:, :2])),
    "multinomial trials": (lambda m: m.MultinomialHMM(N, n_trials=4), lambda m: m.fit(multinomial_counts())),
    "multinomial fractions": (lambda m: m.MultinomialHMM(N), lambda m: m.fit(multinomial_counts() + 0.5)),
    "multinomial negative": (lambda m: m.MultinomialHMM(N), lambda m: m.fit(multinomial_counts() - 1)),
    "multinomial sample, varied trials": (
        lambda m: fitted(m.MultinomialHMM(N), np.vstack([multinomial_counts()[:60], multinomial_counts(1, 6)[60:]])),
        lambda m: m.sample(5)),
    "gmm covariance type": (lambda m: m.GMMHMM(N, covariance_type="diagonal"), lambda m: m.fit(mixture_rows())),
    "gmm weights_ sum": (lambda m: fitted(m.GMMHMM(N, n_mix=K), mixture_rows()),
                         lambda m: (setattr(m, "weights_", np.full((N, K), 0.3)), m.score(mixture_rows()))),
    "gmm covars_ shape": (lambda m: fitted(m.GMMHMM(N, n_mix=K), mixture_rows()),
                          lambda m: (setattr(m, "covars_", np.ones((N, K))), m.score(mixture_rows()))),
    "gmm negative covars_": (lambda m: fitted(m.GMMHMM(N, n_mix=K), mixture_rows()),
                             lambda m: (setattr(m, "covars_", -np.ones((N, K, 2))), m.score(mixture_rows()))),
    "gmm fewer samples than states": (lambda m: m.GMMHMM(4, n_mix=K), lambda m: m.fit(mixture_rows()[:3])),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_of_hmmlearns_types(case):
    make, call = ERRORS[case]
    with pytest.raises(Exception) as theirs:
        call(make(hl))
    with pytest.raises(type(theirs.value)):
        call(make(hh))


def test_missing_rows():
    (a, b), X = fixed_pair("poisson")
    Xm = X.astype(float)
    missing = [0, 7, 49, 50, 100]
    Xm[missing] = np.nan
    log_e = a._compute_log_likelihood(X)
    log_e[missing] = 0.0
    close(b.score(Xm, LENGTHS), forward_ll(a.startprob_, a.transmat_, log_e, LENGTHS), 1e-9)
    b.fit(Xm, LENGTHS)
    assert np.isfinite(b.lambdas_).all()
    (a, b), Y = fixed_pair("gmm", "full")
    Ym = Y.copy()
    Ym[missing] = np.nan
    log_e = a._compute_log_likelihood(Y)
    log_e[missing] = 0.0
    close(b.score(Ym, LENGTHS), forward_ll(a.startprob_, a.transmat_, log_e, LENGTHS), 1e-9)
