"""hmmop.hmmlearn against hmmlearn 0.3.3, the oracle: the same script gives the same numbers.

Each test runs hmmlearn's class and hmmop's on the same data, constructor arguments and start, and
compares: fitted parameters (1e-8), EM histories, scores and posteriors (1e-10), Viterbi and MAP
paths, samples from the same random_state, the sklearn protocol, exception types and log warnings.
What hmmop adds (missing observations, dtype, model files) is checked against a forward recursion
written here in NumPy, or against the model without the missing rows.
"""
import inspect
import logging
import pickle

import numpy as np
import pytest
import sklearn.base
from hmmlearn import hmm as hl
from scipy.special import logsumexp
from sklearn.exceptions import NotFittedError

import hmmop  # noqa: F401  (before mxnet: hmmop's import hook)
import hmmop.ops.threads
from hmmop import hmmlearn as hh

TYPES = ["spherical", "diag", "full", "tied"]
N, M, D = 3, 5, 2
LENGTHS = [40, 25, 35]
ATOL_PARAM, ATOL_SCORE = 1e-8, 1e-10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One BLAS and kernel thread: the data are tiny (the results do not depend on it)."""
    from threadpoolctl import threadpool_limits
    previous = hmmop.ops.threads._override
    with threadpool_limits(1):
        hmmop.set_num_threads(1)
        try:
            yield
        finally:
            hmmop.set_num_threads(previous)


def symbols(seed=0, lengths=LENGTHS):
    """Categorical data from a sticky 3-state chain, (n, 1) ints."""
    rng = np.random.default_rng(seed)
    B = np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1], [0.05, 0.05, 0.1, 0.2, 0.6]])
    out = []
    for L in lengths:
        s = rng.integers(N)
        for _ in range(L):
            s = s if rng.random() < 0.8 else rng.integers(N)
            out.append(rng.choice(M, p=B[s]))
    return np.array(out)[:, None]


def features(seed=0, lengths=LENGTHS):
    """Gaussian data: blocks of 10 rows around one of three centres, (n, D) floats."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
    labels = np.repeat(rng.integers(N, size=sum(lengths) // 10 + 1), 10)[:sum(lengths)]
    return centres[labels] + rng.normal(size=(sum(lengths), D)) @ np.array([[1.0, 0.3], [0.0, 0.8]])


def close(a, b, atol):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=atol)


def same_history(a, b):
    assert a.monitor_.iter == b.monitor_.iter
    assert len(a.monitor_.history) == len(b.monitor_.history)
    np.testing.assert_allclose(list(b.monitor_.history), list(a.monitor_.history), rtol=1e-12, atol=ATOL_SCORE)
    assert a.monitor_.converged == b.monitor_.converged


def start_params(kind, seed=5):
    """A start for EM: probabilities, means, covars in hmmlearn's assignment shape for ``kind``."""
    rng = np.random.default_rng(seed)
    p = {"startprob_": rng.dirichlet(np.ones(N)), "transmat_": rng.dirichlet(np.ones(N) * 2, N),
         "emissionprob_": rng.dirichlet(np.ones(M), N), "means_": rng.normal(0, 2, (N, D))}
    W = rng.normal(size=(N, D, D)) * 0.5
    full = W @ W.transpose(0, 2, 1) + np.eye(D)
    p["covars_"] = {"spherical": rng.uniform(0.5, 2, N), "diag": rng.uniform(0.5, 2, (N, D)), "full": full,
                    "tied": full[0]}.get(kind)
    return p


def set_params(models, params, letters):
    names = {"s": "startprob_", "t": "transmat_", "e": "emissionprob_", "m": "means_", "c": "covars_"}
    for model in models:
        for c in letters:
            setattr(model, names[c], np.array(params[names[c]], copy=True))


# -- fit: the same EM -----------------------------------------------------------------------------------
CATEGORICAL_FITS = [
    {},
    {"init_params": "", "preset": "ste"},
    {"init_params": "st", "preset": "e"},
    {"init_params": "e", "preset": "st", "params": "te"},
    {"params": "e"},
    {"params": "st"},
    {"emissionprob_prior": 2.0, "transmat_prior": 1.5, "startprob_prior": 3.0},
    {"transmat_prior": np.full((N, N), 0.9), "emissionprob_prior": np.linspace(1, 2, N * M).reshape(N, M)},
    {"n_features": 7},
    {"tol": 1e-3, "n_iter": 200},
]


@pytest.mark.parametrize("kw", CATEGORICAL_FITS, ids=[str(i) for i in range(len(CATEGORICAL_FITS))])
def test_categorical_fit_equals_hmmlearn(kw):
    kw = dict(kw)
    preset = kw.pop("preset", "")
    kw.setdefault("n_iter", 15)
    kw.setdefault("tol", -np.inf)
    X = symbols()
    a, b = hl.CategoricalHMM(N, random_state=3, **kw), hh.CategoricalHMM(N, random_state=3, **kw)
    set_params((a, b), start_params(None), preset)
    a.fit(X, LENGTHS)
    assert b.fit(X, LENGTHS) is b
    for name in ("startprob_", "transmat_", "emissionprob_"):
        close(getattr(b, name), getattr(a, name), ATOL_PARAM)
    assert b.n_features == a.n_features
    same_history(a, b)


GAUSSIAN_FITS = [
    {},
    {"init_params": "", "preset": "stmc"},
    {"init_params": "mc", "preset": "st"},
    {"init_params": "st", "preset": "mc", "params": "mc"},
    {"params": "sm"},
    {"params": "c", "init_params": "c", "preset": "stm"},
    {"means_prior": 1.0, "means_weight": 2.0, "covars_prior": 0.5, "covars_weight": 3.0},
    {"startprob_prior": 2.0, "transmat_prior": 3.0, "min_covar": 0.1},
    {"tol": 1e-2, "n_iter": 100},
]


class FixedGaussianHMM(hl.GaussianHMM):
    """hmmlearn's GaussianHMM with params holding 'c' but not 'm': hmmlearn 0.3.3 then leaves the
    posterior sums the covariance update needs at 0 (and its covariances blow up); this oracle gathers
    them, as hmmop does, and is otherwise hmmlearn's."""

    def _needs_sufficient_statistics_for_mean(self):
        return True


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("kw", GAUSSIAN_FITS, ids=[str(i) for i in range(len(GAUSSIAN_FITS))])
def test_gaussian_fit_equals_hmmlearn(kind, kw):
    kw = dict(kw)
    preset = kw.pop("preset", "")
    kw.setdefault("n_iter", 10)
    kw.setdefault("tol", -np.inf)
    X = features()
    oracle = FixedGaussianHMM if "c" in kw.get("params", "") and "m" not in kw["params"] else hl.GaussianHMM
    a = oracle(N, covariance_type=kind, random_state=4, **kw)
    b = hh.GaussianHMM(N, covariance_type=kind, random_state=4, **kw)
    set_params((a, b), start_params(kind), preset)
    a.fit(X, LENGTHS)
    b.fit(X, LENGTHS)
    for name in ("startprob_", "transmat_", "means_"):
        close(getattr(b, name), getattr(a, name), ATOL_PARAM)
    close(b._covars_, a._covars_, ATOL_PARAM)       # the stored form (hmmlearn's spherical: (N, D) repeated)
    if kind != "spherical":                          # (hmmlearn's spherical covars_ reads (N*D, D, D))
        close(b.covars_, a.covars_, ATOL_PARAM)
    assert b.n_features == a.n_features == D
    same_history(a, b)


@pytest.mark.parametrize("seed", [0, 7, "RandomState"])
def test_random_state_initialisation_equals_hmmlearn(seed):
    """params="" keeps fit's start: hmmlearn's Dirichlet draws, k-means means, np.cov covariances, the
    categorical emission's uniform draws - for an int seed and for a RandomState (its stream continued)."""
    Xc, Xg = symbols(1), features(1)
    rs = (lambda: np.random.RandomState(11)) if seed == "RandomState" else (lambda: seed)
    a = hl.CategoricalHMM(N, random_state=rs(), params="", n_iter=1).fit(Xc, LENGTHS)
    b = hh.CategoricalHMM(N, random_state=rs(), params="", n_iter=1).fit(Xc, LENGTHS)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    assert isinstance(b.random_state, np.random.RandomState)        # hmmlearn's quirk, kept
    np.testing.assert_array_equal(b.sample(20)[0], a.sample(20)[0])  # ... so sample() continues that stream
    for kind in TYPES:
        a = hl.GaussianHMM(N, covariance_type=kind, random_state=rs(), params="", n_iter=1).fit(Xg, LENGTHS)
        b = hh.GaussianHMM(N, covariance_type=kind, random_state=rs(), params="", n_iter=1).fit(Xg, LENGTHS)
        for name in ("startprob_", "transmat_", "means_", "_covars_"):
            close(getattr(b, name), getattr(a, name), 1e-12)


def test_convergence_and_monitor_equal_hmmlearn():
    X = features(2)
    a = hl.GaussianHMM(N, random_state=0, n_iter=500, tol=1e-4).fit(X, LENGTHS)
    b = hh.GaussianHMM(N, random_state=0, n_iter=500, tol=1e-4).fit(X, LENGTHS)
    same_history(a, b)
    assert b.monitor_.converged and b.monitor_.iter < 500
    assert type(b.monitor_.history).__name__ == "deque"
    # monitor_ comes from __init__: set_params(tol=...) later changes nothing in either library
    a = hl.GaussianHMM(N, random_state=0, n_iter=50, tol=1e-4).set_params(tol=-np.inf).fit(X, LENGTHS)
    b = hh.GaussianHMM(N, random_state=0, n_iter=50, tol=1e-4).set_params(tol=-np.inf).fit(X, LENGTHS)
    same_history(a, b)


def test_verbose_lines_equal_hmmlearn(capsys):
    X = symbols()
    hl.CategoricalHMM(N, random_state=0, n_iter=5, verbose=True).fit(X, LENGTHS)
    theirs = capsys.readouterr().err.splitlines()
    hh.CategoricalHMM(N, random_state=0, n_iter=5, verbose=True).fit(X, LENGTHS)
    ours = capsys.readouterr().err.splitlines()
    assert len(ours) == len(theirs) == 5
    for o, t in zip(ours, theirs):
        assert len(o) == len(t) and o.split()[0] == t.split()[0]
        close([float(v) for v in o.split()[1:]], [float(v) for v in t.split()[1:]], 1e-6)


# -- inference from the same parameters ------------------------------------------------------------------
def fixed_pair(kind):
    """(hmmlearn model, hmmop model) holding the same parameters (kind None: categorical), seeded so
    that a test which fits one is reproducible."""
    p = start_params(kind, seed=9)
    if kind is None:
        a, b = (m.CategoricalHMM(N, n_features=M, random_state=0) for m in (hl, hh))
        set_params((a, b), p, "ste")
    else:
        a, b = (m.GaussianHMM(N, covariance_type=kind, random_state=0) for m in (hl, hh))
        set_params((a, b), p, "stmc")
    return a, b


@pytest.mark.parametrize("kind", [None] + TYPES)
def test_inference_equals_hmmlearn(kind):
    a, b = fixed_pair(kind)
    X = symbols(3) if kind is None else features(3)
    for lengths in (LENGTHS, None):
        close(b.score(X, lengths), a.score(X, lengths), ATOL_SCORE)
        (la, pa), (lb, pb) = a.score_samples(X, lengths), b.score_samples(X, lengths)
        close(lb, la, ATOL_SCORE)
        close(pb, pa, ATOL_SCORE)
        close(b.predict_proba(X, lengths), pa, ATOL_SCORE)
        for algorithm in ("viterbi", "map"):
            (la, sa), (lb, sb) = a.decode(X, lengths, algorithm=algorithm), b.decode(X, lengths, algorithm=algorithm)
            close(lb, la, ATOL_SCORE)               # "map": hmmlearn's sum of maximal posteriors, kept
            np.testing.assert_array_equal(sb, sa)
            assert sb.dtype == sa.dtype and sb.shape == (len(X),)
        np.testing.assert_array_equal(b.predict(X, lengths), a.predict(X, lengths))
        close(b.aic(X, lengths), a.aic(X, lengths), 1e-9)
        close(b.bic(X, lengths), a.bic(X, lengths), 1e-9)
    b.algorithm = a.algorithm = "map"
    np.testing.assert_array_equal(b.predict(X, LENGTHS), a.predict(X, LENGTHS))
    close(b.get_stationary_distribution(), a.get_stationary_distribution(), 1e-12)


def test_viterbi_ties_broken_as_hmmlearn():
    """Every path equally likely: the choice among ties is hmmlearn's."""
    a, b = hl.CategoricalHMM(N, n_features=2), hh.CategoricalHMM(N, n_features=2)
    for m in (a, b):
        m.startprob_, m.transmat_ = np.full(N, 1 / N), np.full((N, N), 1 / N)
        m.emissionprob_ = np.full((N, 2), 0.5)
    X = np.array([[0], [1], [1], [0], [1]])
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    close(b.decode(X)[0], a.decode(X)[0], ATOL_SCORE)


@pytest.mark.parametrize("kind", [None, "diag", "full", "tied"])
def test_sample_follows_hmmlearns_stream(kind):
    a, b = fixed_pair(kind)
    for kwargs in ({"random_state": 5}, {"random_state": 6, "currstate": 2}, {"random_state": 7, "currstate": 0}):
        (Xa, Sa), (Xb, Sb) = a.sample(40, **kwargs), b.sample(40, **kwargs)
        np.testing.assert_array_equal(Sb, Sa)
        assert Xb.shape == Xa.shape and Sb.dtype == Sa.dtype
        if kind is None:
            np.testing.assert_array_equal(Xb, Xa)
        else:
            close(Xb, Xa, 1e-12)


def test_spherical_sample_uses_each_states_variance():
    """hmmlearn 0.3.3's spherical covars_ reads (N*D, D, D) after fit, so its sample() takes another
    state's variance; hmmop reads (N, D, D) and matches hmmlearn when covars_ was assigned as (N,)."""
    a, b = fixed_pair("spherical")
    (Xa, Sa), (Xb, Sb) = a.sample(30, random_state=1), b.sample(30, random_state=1)
    np.testing.assert_array_equal(Sb, Sa)
    close(Xb, Xa, 1e-12)
    b.fit(features(), LENGTHS)
    assert b.covars_.shape == (N, D, D)
    close(b.covars_[:, 0, 0], b._covars_[:, 0], 0)


# -- the estimator protocol ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CategoricalHMM", "GaussianHMM"])
def test_constructor_signature_equals_hmmlearn(name):
    ours = inspect.signature(getattr(hh, name)).parameters
    theirs = inspect.signature(getattr(hl, name)).parameters
    assert [p for p in ours if p != "dtype"] == list(theirs)
    for p, t in theirs.items():
        assert (ours[p].default, ours[p].kind) == (t.default, t.kind), p
    assert ours["dtype"].kind == inspect.Parameter.KEYWORD_ONLY and ours["dtype"].default == "float64"
    assert issubclass(getattr(hh, name), sklearn.base.BaseEstimator)


def test_clone_get_set_params():
    b = hh.GaussianHMM(N, covariance_type="full", n_iter=7, random_state=0)
    params = b.get_params()
    assert params == {**hl.GaussianHMM(N, covariance_type="full", n_iter=7, random_state=0).get_params(),
                      "dtype": "float64"}
    c = sklearn.base.clone(b)
    assert c is not b and c.get_params() == params and not hasattr(c, "startprob_")
    assert c.set_params(n_components=2, covariance_type="tied") is c
    assert (c.n_components, c.covariance_type) == (2, "tied")
    X = features()
    c.fit(X, LENGTHS)
    assert c.means_.shape == (2, D) and c.covars_.shape == (2, D, D)
    assert "GaussianHMM(" in repr(c)


@pytest.mark.parametrize("kind", [None, "full"])
def test_pickle_round_trip(kind):
    a, b = fixed_pair(kind)
    X = symbols() if kind is None else features()
    b.fit(X, LENGTHS)
    c = pickle.loads(pickle.dumps(b))
    assert c.score(X, LENGTHS) == b.score(X, LENGTHS)
    assert c.monitor_.iter == b.monitor_.iter and list(c.monitor_.history) == list(b.monitor_.history)
    drop = lambda p: {k: v for k, v in p.items() if k != "random_state"}     # noqa: E731 (a RandomState after fit)
    assert drop(c.get_params()) == drop(b.get_params())
    rs = None if kind is None else 4        # (categorical: the RandomState fit left, which travels too)
    np.testing.assert_array_equal(c.sample(10, random_state=rs)[1], b.sample(10, random_state=rs)[1])


def test_a_state_collapsed_onto_one_point_still_scores_as_hmmlearn():
    """EM that leaves a full covariance singular (one state on one outlying row: hmmlearn's covars_prior
    alone, 0.01 in every entry) gives hmmlearn's parameters, and the model still scores - itself, a
    pickled copy, hmmlearn - with Sigma + 1e-7 I for that state (CI once saw this refused)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(30, D)), [[50.0, 50.0]], rng.normal(size=(30, D)) + 3])
    a, b = (m.GaussianHMM(N, covariance_type="full", init_params="", n_iter=2) for m in (hl, hh))
    set_params((a, b), {"startprob_": np.ones(N) / N, "transmat_": np.full((N, N), 1 / N),
                        "means_": np.array([[0.0, 0.0], [3.0, 3.0], [50.0, 50.0]]),
                        "covars_": np.tile(np.eye(D), (N, 1, 1))}, "stmc")
    a.fit(X)
    b.fit(X)
    close(b.covars_, a.covars_, 1e-10)
    assert np.linalg.matrix_rank(b.covars_[2]) == 1
    same_history(a, b)
    close(b.score(X), a.score(X), 1e-8)
    c = pickle.loads(pickle.dumps(b))
    assert c.score(X) == b.score(X)


@pytest.mark.parametrize("kind", [None, "spherical", "diag", "full", "tied"])
def test_save_load_round_trip(kind, tmp_path):
    _, b = fixed_pair(kind)
    X = symbols() if kind is None else features()
    b.set_params(n_iter=3, random_state=1).fit(X, LENGTHS)
    path = str(tmp_path / "model.npz")
    b.save(path)
    c = hh.load(path)
    assert type(c) is type(b) and c.n_iter == 3
    assert {k: v for k, v in c.get_params().items() if k != "random_state"} == \
        {k: v for k, v in b.get_params().items() if k != "random_state"}
    close(c.score(X, LENGTHS), b.score(X, LENGTHS), 1e-12)
    np.testing.assert_array_equal(c.predict(X, LENGTHS), b.predict(X, LENGTHS))
    core = hmmop.load(path)                         # hmmop's own model class reads the same file
    assert type(core) is (hmmop.HMM if kind is None else hmmop.GaussianHMM)
    close(core.score(X[:, 0] if kind is None else X, np.array(LENGTHS)), b.score(X, LENGTHS), 1e-12)
    assert type(b).load(path).n_features == b.n_features
    with pytest.raises(ValueError):
        (hh.GaussianHMM if kind is None else hh.CategoricalHMM).load(path)


# -- errors and warnings ----------------------------------------------------------------------------------
def raises_alike(make, call):
    """Both libraries raise, with the same exception type (ours may be a subclass of theirs)."""
    with pytest.raises(Exception) as theirs:
        call(make(hl))
    with pytest.raises(type(theirs.value)):
        call(make(hh))


X_G, X_C = features(), symbols()
ERRORS = {
    "score before fit": (lambda m: m.GaussianHMM(N), lambda m: m.score(X_G)),
    "predict before fit": (lambda m: m.CategoricalHMM(N), lambda m: m.predict(X_C)),
    "sample before fit": (lambda m: m.GaussianHMM(N), lambda m: m.sample(3)),
    "stationary before fit": (lambda m: m.GaussianHMM(N), lambda m: m.get_stationary_distribution()),
    "covariance type": (lambda m: m.GaussianHMM(N, covariance_type="diagonal"), lambda m: m.fit(X_G)),
    "fewer samples than states": (lambda m: m.GaussianHMM(5), lambda m: m.fit(X_G[:3])),
    "1-D X": (lambda m: m.GaussianHMM(N), lambda m: m.fit(X_G[:, 0])),
    "empty X": (lambda m: m.GaussianHMM(N), lambda m: m.fit(np.zeros((0, D)))),
    "lengths sum": (lambda m: m.GaussianHMM(N), lambda m: m.fit(X_G, [10, 20])),
    "categorical lengths sum": (lambda m: m.CategoricalHMM(N), lambda m: m.fit(X_C, [10, 20])),
    "float symbols": (lambda m: m.CategoricalHMM(N), lambda m: m.fit(X_C + 0.5)),
    "negative symbols": (lambda m: m.CategoricalHMM(N), lambda m: m.fit(X_C - 3)),
    "symbol above n_features": (lambda m: m.CategoricalHMM(N, n_features=3), lambda m: m.fit(X_C)),
    "unknown decoder": (lambda m: fitted(m.GaussianHMM(N)), lambda m: m.decode(X_G, algorithm="best")),
    "startprob_ sum": (lambda m: fitted(m.GaussianHMM(N)), lambda m: bad(m, "startprob_", [0.5, 0.2, 0.2])),
    "transmat_ shape": (lambda m: fitted(m.GaussianHMM(N)), lambda m: bad(m, "transmat_", np.eye(2))),
    "emissionprob_ sum": (lambda m: fitted(m.CategoricalHMM(N), X_C),
                          lambda m: bad(m, "emissionprob_", np.full((N, M), 0.1), X_C)),
    "diag covars_ negative": (lambda m: m.GaussianHMM(N), lambda m: setattr(m, "covars_", -np.ones((N, D)))),
    "full covars_ not SPD": (lambda m: m.GaussianHMM(N, covariance_type="full"),
                             lambda m: setattr(m, "covars_", np.tile([[1.0, 2.0], [2.0, 1.0]], (N, 1, 1)))),
    "other n_features in fit": (lambda m: fitted(m.GaussianHMM(N)), lambda m: m.fit(np.ones((50, 3)))),
    "score, other n_features": (lambda m: fitted(m.GaussianHMM(N)), lambda m: m.score(np.ones((50, 3)))),
    "score, symbol out of range": (lambda m: fitted(m.CategoricalHMM(N), X_C),
                                   lambda m: m.score(np.array([[0], [M + 2]]))),
}


def fitted(model, X=None):
    return model.set_params(n_iter=2).fit(X_G if X is None else X, LENGTHS)


def bad(model, name, value, X=None):
    setattr(model, name, np.array(value))
    return model.score(X_G if X is None else X)


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_of_hmmlearns_types(case):
    raises_alike(*ERRORS[case])
    if "before fit" in case:
        with pytest.raises(NotFittedError):
            ERRORS[case][1](ERRORS[case][0](hh))


def test_warning_when_a_set_parameter_is_overwritten(caplog):
    X = features()
    for lib in (hl, hh):
        caplog.clear()
        model = lib.GaussianHMM(N, n_iter=1)
        model.startprob_ = np.full(N, 1 / N)
        model.means_ = np.zeros((N, D))
        with caplog.at_level(logging.WARNING):
            model.fit(X, LENGTHS)
        messages = [r.getMessage() for r in caplog.records if "overwritten" in r.getMessage()]
        assert len(messages) == 2 and "'startprob_'" in messages[0] and "'means_'" in messages[1], lib
        caplog.clear()
        model = lib.GaussianHMM(N, n_iter=1, init_params="")
        set_params([model], start_params("diag"), "stmc")
        with caplog.at_level(logging.WARNING):
            model.fit(X, LENGTHS)
        assert not [r for r in caplog.records if "overwritten" in r.getMessage()]


def test_degenerate_warning(caplog):
    with caplog.at_level(logging.WARNING):
        hh.CategoricalHMM(4, n_iter=1, random_state=0).fit(np.array([[0], [1], [2]]))
    assert any("degenerate solution" in r.getMessage() for r in caplog.records)


# -- beyond hmmlearn -------------------------------------------------------------------------------------
def forward_ll(startprob, transmat, log_e, lengths):
    """The log-likelihood by NumPy's forward recursion on the log-emissions (rows of 0: missing)."""
    total, s = 0.0, 0
    for L in lengths:
        alpha = np.log(startprob) + log_e[s]
        for t in range(s + 1, s + L):
            alpha = logsumexp(alpha[:, None] + np.log(transmat), axis=0) + log_e[t]
        total += logsumexp(alpha)
        s += L
    return total


def test_missing_observations():
    a, b = fixed_pair("full")
    X = features(4)
    missing = [0, 5, 6, 39, 70]
    Xm = X.copy()
    Xm[missing] = np.nan
    log_e = a._compute_log_likelihood(X)
    log_e[missing] = 0.0
    close(b.score(Xm, LENGTHS), forward_ll(a.startprob_, a.transmat_, log_e, LENGTHS), 1e-9)
    post = b.predict_proba(Xm, LENGTHS)
    assert np.isfinite(post).all()
    close(post.sum(axis=1), np.ones(len(X)), 1e-12)
    b.fit(Xm, LENGTHS)                  # EM (and its k-means start) skip the missing rows
    assert np.isfinite(b.means_).all() and np.isfinite(b.monitor_.history[-1])
    a, b = fixed_pair(None)
    S = symbols(4)
    Sm = S.copy()
    Sm[missing] = -2
    log_e = np.log(a.emissionprob_[:, S[:, 0]].T)
    log_e[missing] = 0.0
    close(b.score(Sm, LENGTHS), forward_ll(a.startprob_, a.transmat_, log_e, LENGTHS), 1e-9)
    b.fit(Sm, LENGTHS)
    assert np.isfinite(b.emissionprob_).all()


def test_partly_missing_row_is_an_error():
    _, b = fixed_pair("diag")
    X = features()
    X[3, 0] = np.nan
    with pytest.raises(ValueError):
        b.score(X, LENGTHS)


def test_structural_zeros_stay_zero():
    X = features()
    transmat = np.array([[0.8, 0.2, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]])
    models = [lib.GaussianHMM(N, init_params="mc", n_iter=10, random_state=0) for lib in (hl, hh)]
    for m in models:
        m.startprob_, m.transmat_ = np.array([1.0, 0.0, 0.0]), transmat.copy()
        m.fit(X, LENGTHS)
    a, b = models
    assert (b.transmat_[transmat == 0] == 0).all() and b.startprob_[1:].tolist() == [0.0, 0.0]
    close(b.transmat_, a.transmat_, ATOL_PARAM)


def test_float32():
    X = features()
    b64 = hh.GaussianHMM(N, covariance_type="full", random_state=0, n_iter=5).fit(X, LENGTHS)
    b32 = hh.GaussianHMM(N, covariance_type="full", random_state=0, n_iter=5, dtype="float32").fit(X, LENGTHS)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert getattr(b32, name).dtype == np.float32
        np.testing.assert_allclose(getattr(b32, name), getattr(b64, name), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b32.score(X, LENGTHS), b64.score(X, LENGTHS), rtol=1e-5)
    with pytest.raises(TypeError):
        hh.GaussianHMM(N, dtype="int32").fit(X)


def test_custom_monitor_as_in_hmmlearns_docs():
    """A monitor_ replaced by a subclass with its own ``converged`` (hmmlearn's documented pattern)
    stops hmmop's fit where it stops hmmlearn's."""
    X = symbols(5)
    fits = []
    for lib in (hl, hh):
        base = __import__("hmmlearn.base", fromlist=["ConvergenceMonitor"]).ConvergenceMonitor \
            if lib is hl else hh.ConvergenceMonitor

        class ThresholdMonitor(base):
            @property
            def converged(self):
                return self.iter == self.n_iter or self.history[-1] >= -150

        model = lib.CategoricalHMM(N, random_state=0, n_iter=50)
        model.monitor_ = ThresholdMonitor(model.monitor_.tol, model.monitor_.n_iter, model.monitor_.verbose)
        fits.append(model.fit(X, LENGTHS))
    same_history(*fits)
    assert fits[1].monitor_.iter < 50
    close(fits[1].emissionprob_, fits[0].emissionprob_, ATOL_PARAM)


def test_inference_follows_every_change_of_the_parameters():
    """Methods see in-place edits, assignments and refits, as hmmlearn's (which reads the attributes
    at each call; hmmop keeps the core of the last call while they are unchanged)."""
    a, b = fixed_pair("full")
    X = features(6)
    close(b.score(X, LENGTHS), a.score(X, LENGTHS), ATOL_SCORE)
    for m in (a, b):
        m.transmat_[0] = [0.2, 0.3, 0.5]
        m.means_[1, 0] += 1.0
    close(b.score(X, LENGTHS), a.score(X, LENGTHS), ATOL_SCORE)
    for m in (a, b):
        m.covars_ = np.tile(np.eye(D) * 2, (N, 1, 1))
    close(b.score(X, LENGTHS), a.score(X, LENGTHS), ATOL_SCORE)
    for m in (a, b):
        m.set_params(init_params="", n_iter=3, tol=-np.inf).fit(X, LENGTHS)
    close(b.score(X, LENGTHS), a.score(X, LENGTHS), ATOL_SCORE)
    np.testing.assert_array_equal(b.predict(X, LENGTHS), a.predict(X, LENGTHS))


def test_hmmlearn_is_never_imported():
    """hmmlearn is the tests' oracle only: the drop-in runs without it."""
    import subprocess
    import sys
    code = ("import sys; from hmmop import hmmlearn as hmm; import numpy as np; "
            "m = hmm.GaussianHMM(2, n_iter=2, random_state=0).fit(np.arange(20.0).reshape(10, 2)); "
            "m.score(np.zeros((3, 2))); assert 'hmmlearn' not in sys.modules, 'hmmlearn was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
