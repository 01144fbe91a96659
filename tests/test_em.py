"""Fitting with hmmop.HMM.fit: Baum-Welch against hmmlearn 0.3.3, expected counts against hmmlearn's
sufficient statistics and a NumPy forward-backward, structural zeros, n_init, priors, bad input, divergence.
"""
import re

import numpy as np
import pytest

import hmmop
from hmmop import HMM
from hmmop.fit import em
from reference import hmmlearn_model as oracle, random_model

TIGHT = dict(rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def hmmlearn_em(start, X, lengths, n_iter, params="ste", prior=None):
    """hmmlearn's Baum-Welch from ``start`` (A, B, pi) for exactly n_iter iterations."""
    prior = prior or {}
    kwargs = dict(n_iter=n_iter, init_params="", params=params, tol=-np.inf)
    for ours, theirs in (("A", "transmat_prior"), ("B", "emissionprob_prior"), ("pi", "startprob_prior")):
        if ours in prior:
            kwargs[theirs] = prior[ours]
    ref = oracle(*start, **kwargs)
    ref.fit(X, lengths)
    return ref


def concat(seqs):
    return np.concatenate(seqs).astype(np.int64).reshape(-1, 1), [len(s) for s in seqs]


def sample_data(truth, lengths, seed):
    ref = oracle(*truth)
    rng = np.random.default_rng(seed)
    return [ref.sample(L, random_state=int(rng.integers(1 << 30)))[0].ravel() for L in lengths]


def log_prior(params, prior):
    """sum((a - 1) * log p) over the prior's parameters (no structural zeros here)."""
    return float(sum(np.sum((np.broadcast_to(prior[k], params[k].shape) - 1) * np.log(params[k]))
                     for k in prior))


def forward_backward(A, B, pi, seq):
    """Scaled forward-backward in NumPy: (ll, gamma[0], xi summed over t, emission counts); -2 = missing."""
    n, m = B.shape
    seq = np.asarray(seq)
    T = len(seq)
    E = np.array([np.ones(n) if o == -2 else B[:, o] for o in seq])
    alpha, c = np.zeros((T, n)), np.zeros(T)
    alpha[0] = pi * E[0]
    for t in range(T):
        if t:
            alpha[t] = (alpha[t - 1] @ A) * E[t]
        c[t] = alpha[t].sum()
        alpha[t] /= c[t]
    beta = np.ones((T, n))
    for t in range(T - 2, -1, -1):
        beta[t] = A @ (E[t + 1] * beta[t + 1]) / c[t + 1]
    gamma = alpha * beta
    xi = np.zeros((n, n))
    for t in range(T - 1):
        xi += np.outer(alpha[t], E[t + 1] * beta[t + 1]) * A / c[t + 1]
    emit = np.zeros((n, m))
    for t, o in enumerate(seq):
        if o != -2:
            emit[:, o] += gamma[t]
    return np.log(c).sum(), gamma[0], xi, emit


@pytest.fixture(scope="module")
def data():
    """Variable-length sequences from a 4-state, 6-symbol model and a different starting model."""
    rng = np.random.default_rng(10)
    truth = random_model(rng, 4, 6)
    start = random_model(rng, 4, 6)
    seqs = sample_data(truth, [1, 2, 5, 17, 40, 80, 120, 3, 60, 33, 1, 90], seed=11)
    return start, seqs


def params_of(model):
    return {"A": model.A, "B": model.B, "pi": model.pi}


def assert_params_match(model, ref, **tol):
    tol = tol or TIGHT
    np.testing.assert_allclose(model.A, ref.transmat_, **tol)
    np.testing.assert_allclose(model.B, ref.emissionprob_, **tol)
    np.testing.assert_allclose(model.pi, ref.startprob_, **tol)


# ---------------------------------------------------------------------------------------------------------------
# Baum-Welch against hmmlearn
# ---------------------------------------------------------------------------------------------------------------
PRIORS = {
    "none": None,
    "scalars": {"A": 2.0, "B": 1.5, "pi": 3.0},
    "arrays": {"A": 1.0 + 3 * np.random.default_rng(1).random((4, 4)),
               "B": 1.0 + 2 * np.random.default_rng(2).random((4, 6)),
               "pi": 1.0 + 4 * np.random.default_rng(3).random(4)},
    "broadcast-row": {"B": 1.0 + np.arange(6) / 2.0},
    "A-only": {"A": 2.5},
}


@pytest.mark.parametrize("prior", list(PRIORS), ids=list(PRIORS))
@pytest.mark.parametrize("epochs", [1, 5, 20])
def test_em_matches_hmmlearn(data, epochs, prior):
    start, seqs = data
    prior = PRIORS[prior]
    X, lengths = concat(seqs)
    ref = hmmlearn_em(start, X, lengths, epochs, prior=prior)
    model = HMM.from_probabilities(*start, dtype="float64")
    kwargs = {} if prior is None else {"prior": prior}
    history = model.fit(seqs, method="em", epochs=epochs, **kwargs)
    assert_params_match(model, ref)
    assert history.dtype == np.float64 and len(history) == epochs
    np.testing.assert_array_equal(model.history_, history)
    if prior is None:
        np.testing.assert_allclose(history, list(ref.monitor_.history), rtol=1e-10)


@pytest.mark.parametrize("prior", ["none", "arrays"])
def test_em_history_with_prior_is_the_log_posterior(data, prior):
    start, seqs = data
    prior = PRIORS[prior] or {}
    X, lengths = concat(seqs)
    model = HMM.from_probabilities(*start, dtype="float64")
    history = model.fit(seqs, method="em", epochs=5, prior=prior or None)
    ll = list(hmmlearn_em(start, X, lengths, 5, prior=prior).monitor_.history)
    before = [dict(zip(("A", "B", "pi"), start))]
    for j in range(1, 5):
        ref = hmmlearn_em(start, X, lengths, j, prior=prior)
        before.append({"A": ref.transmat_, "B": ref.emissionprob_, "pi": ref.startprob_})
    expected = [ll[j] + log_prior(before[j], prior) for j in range(5)]
    np.testing.assert_allclose(history, expected, rtol=1e-10)


@pytest.mark.parametrize("prior", ["none", "arrays"])
def test_em_ndarray_engine_matches_hmmlearn(data, prior):
    start, seqs = data
    prior = PRIORS[prior]
    X, lengths = concat(seqs)
    ref = hmmlearn_em(start, X, lengths, 5, prior=prior)
    model = HMM.from_probabilities(*start, engine="ndarray", dtype="float64")
    model.fit(seqs, method="em", epochs=5, **({} if prior is None else {"prior": prior}))
    assert_params_match(model, ref)
    if prior is None:
        np.testing.assert_allclose(model.history_, list(ref.monitor_.history), rtol=1e-10)


def test_em_takes_hmmlearns_input_form(data):
    start, seqs = data
    X, lengths = concat(seqs)
    ref = hmmlearn_em(start, X, lengths, 5)
    for x in (X, X.ravel()):
        model = HMM.from_probabilities(*start, dtype="float64")
        model.fit(x, lengths=lengths, method="em", epochs=5)
        assert_params_match(model, ref)


@pytest.mark.parametrize("learn,params", [(("A", "pi"), "st"), (("B",), "e"), (("A",), "t")])
def test_em_learns_only_the_named_parameters(data, learn, params):
    start, seqs = data
    X, lengths = concat(seqs)
    ref = hmmlearn_em(start, X, lengths, 5, params=params)
    model = HMM.from_probabilities(*start, dtype="float64")
    before = params_of(model)        # the model's own values (a log/softmax round trip from start)
    model.fit(seqs, method="em", epochs=5, learn=learn)
    assert_params_match(model, ref)
    for name in ("A", "B", "pi"):
        if name not in learn:
            np.testing.assert_array_equal(getattr(model, name), before[name])


def test_em_in_float32_is_close(data):
    start, seqs = data
    X, lengths = concat(seqs)
    model = HMM.from_probabilities(*start)
    ref = hmmlearn_em((model.A, model.B, model.pi), X, lengths, 10)
    model.fit(seqs, method="em", epochs=10)
    assert_params_match(model, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# expected counts
# ---------------------------------------------------------------------------------------------------------------
def padded(seqs):
    obs = np.full((len(seqs), max(len(s) for s in seqs)), -1, dtype=np.int64)
    for b, s in enumerate(seqs):
        obs[b, :len(s)] = s
    return obs


@pytest.mark.parametrize("backend", ["auto", "ndarray"])
def test_expected_counts_match_hmmlearn_and_numpy(data, backend):
    (A, B, pi), seqs = data
    X, lengths = concat(seqs)
    ref = oracle(A, B, pi)
    stats, ref_ll = ref._do_estep(X, lengths)             # hmmlearn's sufficient statistics
    ll, start, trans, emit = em.expected_counts(A, B, pi, padded(seqs), backend=backend)
    for x in (ll, start, trans, emit):
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
    assert ll.shape == (len(seqs),) and start.shape == (4,) and trans.shape == (4, 4) and emit.shape == (4, 6)
    np.testing.assert_allclose(ll.sum(), ref_ll, rtol=1e-10)
    np.testing.assert_allclose(ll, [ref.score(s.reshape(-1, 1)) for s in seqs], rtol=1e-10)
    np.testing.assert_allclose(start, stats["start"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(trans, stats["trans"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emit, stats["obs"], rtol=1e-10, atol=1e-12)
    mine = [forward_backward(A, B, pi, s) for s in seqs]
    np.testing.assert_allclose(start, sum(x[1] for x in mine), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(trans, sum(x[2] for x in mine), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emit, sum(x[3] for x in mine), rtol=1e-10, atol=1e-12)
    # counts add up: one start per sequence, T - 1 transitions, T emissions
    np.testing.assert_allclose(start.sum(), len(seqs), rtol=1e-12)
    np.testing.assert_allclose(trans.sum(), sum(L - 1 for L in lengths), rtol=1e-12)
    np.testing.assert_allclose(emit.sum(), sum(lengths), rtol=1e-12)


def test_expected_counts_with_missing_observations():
    rng = np.random.default_rng(20)
    A, B, pi = random_model(rng, 3, 5)
    seqs = [rng.integers(0, 5, L) for L in (12, 1, 30, 7)]
    seqs[0][[0, 4, 5]] = -2
    seqs[1][0] = -2
    seqs[2][[10, 29]] = -2
    ll, start, trans, emit = em.expected_counts(A, B, pi, padded(seqs))
    mine = [forward_backward(A, B, pi, s) for s in seqs]
    np.testing.assert_allclose(ll, [x[0] for x in mine], rtol=1e-10)
    np.testing.assert_allclose(start, sum(x[1] for x in mine), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(trans, sum(x[2] for x in mine), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emit, sum(x[3] for x in mine), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emit.sum(), sum(int((s != -2).sum()) for s in seqs), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# structural zeros
# ---------------------------------------------------------------------------------------------------------------
def left_right(rng, n=4, m=5):
    A = (rng.random((n, n)) + 0.1) * ((np.arange(n)[None, :] - np.arange(n)[:, None]) % n <= 1)
    A[n - 1] = 0.0
    A[n - 1, n - 1] = 1.0
    A /= A.sum(axis=1, keepdims=True)
    B = rng.random((n, m)) + 0.1
    B[0, 0] = B[1, 2] = B[3, 1] = B[3, 4] = 0.0
    B /= B.sum(axis=1, keepdims=True)
    pi = np.array([0.7, 0.3] + [0.0] * (n - 2))
    return A, B, pi


@pytest.fixture(scope="module")
def structured():
    truth = left_right(np.random.default_rng(30))
    start = left_right(np.random.default_rng(31))
    seqs = sample_data(truth, [20, 35, 8, 50, 12, 40], seed=32)
    return start, seqs


FITS = {"em": dict(method="em"),
        "gradient": dict(method="gradient", optimizer="adam", learning_rate=0.05)}


def assert_zeros_kept(model, start, zeros):
    for name, before, after in zip(("A", "B", "pi"), start, (model.A, model.B, model.pi)):
        z = zeros[name]
        assert (after[z] == 0.0).all(), f"{name}: structural zeros moved to {after[z]}"
        assert np.isfinite(after).all()
        np.testing.assert_allclose(after.sum(axis=-1), 1.0, rtol=1e-12)
        assert not np.allclose(after[~z], before[~z], rtol=1e-3, atol=1e-4), f"{name} did not train"


@pytest.mark.parametrize("method", list(FITS))
def test_keep_zeros_stay_exactly_zero(structured, method):
    start, seqs = structured
    model = HMM.from_probabilities(*start, keep_zeros=True, dtype="float64")
    history = model.fit(seqs, epochs=50, **FITS[method])
    assert np.isfinite(history).all()
    assert_zeros_kept(model, start, {"A": start[0] == 0, "B": start[1] == 0, "pi": start[2] == 0})
    assert np.isfinite(model.score(seqs))


def test_keep_zeros_em_matches_hmmlearn(structured):
    start, seqs = structured
    X, lengths = concat(seqs)
    with np.errstate(divide="ignore"):
        ref = hmmlearn_em(start, X, lengths, 50)
    model = HMM.from_probabilities(*start, keep_zeros=True, dtype="float64")
    model.fit(seqs, method="em", epochs=50)
    assert_params_match(model, ref)


@pytest.mark.parametrize("method", list(FITS))
def test_mask_stays_exactly_zero(structured, method):
    start, seqs = structured
    mask = {"A": start[0] > 0, "B": start[1] > 0, "pi": start[2] > 0}
    model = HMM.from_probabilities(*start, mask=mask, dtype="float64")
    model.fit(seqs, epochs=50, **FITS[method])
    assert_zeros_kept(model, start, {k: ~v for k, v in mask.items()})
    # a random model with the mask starts with the zeros in place and keeps them
    model = HMM(4, 5, mask=mask, seed=3, dtype="float64")
    first = (model.A, model.B, model.pi)
    for name, value in zip(("A", "B", "pi"), first):
        assert (value[~mask[name]] == 0.0).all()
        np.testing.assert_allclose(value.sum(axis=-1), 1.0, rtol=1e-12)
    model.fit(seqs, epochs=50, **FITS[method])
    assert_zeros_kept(model, first, {k: ~v for k, v in mask.items()})


def test_mask_row_without_a_free_entry_is_refused():
    ok = np.ones((3, 3), dtype=bool)
    bad_A = ok.copy()
    bad_A[1] = False
    bad_B = np.ones((3, 2), dtype=bool)
    bad_B[2] = False
    A, B, pi = random_model(np.random.default_rng(0), 3, 2)
    for mask in ({"A": bad_A}, {"B": bad_B}, {"pi": np.zeros(3, dtype=bool)}):
        with pytest.raises(ValueError):
            HMM(3, 2, mask=mask, seed=0)
        with pytest.raises(ValueError):
            HMM.from_probabilities(A, B, pi, mask=mask)


@pytest.mark.parametrize("mask", [{"A": np.ones((2, 2), dtype=bool)}, {"B": np.ones((3, 3), dtype=bool)},
                                  {"pi": np.ones(4, dtype=bool)}, {"B": np.ones((2, 3), dtype=bool)}],
                         ids=["A2x2", "B3x3", "pi4", "B2x3"])
def test_mask_of_the_wrong_shape_is_refused(mask):
    A, B, pi = random_model(np.random.default_rng(0), 3, 2)
    with pytest.raises(ValueError):
        HMM(3, 2, mask=mask, seed=0)
    with pytest.raises(ValueError):
        HMM.from_probabilities(A, B, pi, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# n_init
# ---------------------------------------------------------------------------------------------------------------
N_INIT_FITS = {"em": dict(method="em", epochs=15),
               "gradient": dict(method="gradient", optimizer="adam", learning_rate=0.05, epochs=30)}


@pytest.mark.parametrize("method", list(N_INIT_FITS))
def test_n_init_keeps_the_best_start(data, method):
    start, seqs = data
    opts = N_INIT_FITS[method]
    single = HMM.from_probabilities(*start, dtype="float64")
    single.fit(seqs, **opts)
    model = HMM.from_probabilities(*start, dtype="float64")
    history = model.fit(seqs, n_init=4, seed=0, **opts)
    inits = np.asarray(model.inits_)
    assert inits.shape == (4,) and np.isfinite(inits).all()
    assert len(np.unique(inits)) > 1                               # the random starts are different fits
    np.testing.assert_allclose(inits[0], single.score(seqs), rtol=1e-10)   # start 0 = the model's parameters
    np.testing.assert_allclose(model.score(seqs), inits.max(), rtol=1e-10)
    assert len(history) == opts["epochs"] and np.array_equal(model.history_, history)
    assert np.isfinite(history).all()
    if np.argmax(inits) == 0:                                      # history_ is the kept fit's
        np.testing.assert_allclose(history, single.history_, rtol=1e-10)
    else:
        assert not np.allclose(history, single.history_, rtol=1e-8)
    if method == "em":                                             # EM never decreases the likelihood
        assert (np.diff(history) >= -1e-8 * np.abs(history[1:])).all()
        assert history[-1] <= model.score(seqs) + 1e-8 * abs(history[-1])
    # seeded: the same seed gives the same fits
    again = HMM.from_probabilities(*start, dtype="float64")
    again.fit(seqs, n_init=4, seed=0, **opts)
    np.testing.assert_array_equal(np.asarray(again.inits_), inits)
    for a, b in zip((again.A, again.B, again.pi), (model.A, model.B, model.pi)):
        np.testing.assert_array_equal(a, b)


def test_n_init_in_float32(data):
    start, seqs = data
    model = HMM.from_probabilities(*start)
    model.fit(seqs, method="em", epochs=10, n_init=3, seed=1)
    assert np.asarray(model.inits_).shape == (3,)
    np.testing.assert_allclose(model.score(seqs), np.max(model.inits_), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# bad input: refused before training, the model unchanged
# ---------------------------------------------------------------------------------------------------------------
BAD_FITS = {
    "method=foo": dict(method="foo"),
    "n_init=0": dict(n_init=0),
    "n_init=-1": dict(n_init=-1),
    "n_init=1.5": dict(n_init=1.5),
    "n_init='2'": dict(n_init="2"),
    "prior A<0": dict(prior={"A": -1.0}),
    "prior B=0": dict(prior={"B": 0.0}),
    "prior pi nan": dict(prior={"pi": np.nan}),
    "prior A inf": dict(prior={"A": np.inf}),
    "prior array with a negative": dict(prior={"B": np.array([[2.0, -0.5], [1.0, 1.0], [1.0, 1.0]])}),
    "prior unknown key": dict(prior={"C": 2.0}),
    "prior A wrong shape": dict(prior={"A": np.full((2, 2), 2.0)}),
    "prior pi wrong shape": dict(prior={"pi": np.full(4, 2.0)}),
    "prior B wrong shape": dict(prior={"B": np.full((3, 3), 2.0)}),
    "prior not a dict": dict(prior=[2.0, 2.0]),
    "learning_rate=0": dict(learning_rate=0),
    "learning_rate=-1": dict(learning_rate=-1),
    "learning_rate=nan": dict(learning_rate=np.nan),
    "learning_rate=inf": dict(learning_rate=np.inf),
    "learning_rate='0.1'": dict(learning_rate="0.1"),
}


@pytest.mark.parametrize("method", ["gradient", "em"])
@pytest.mark.parametrize("bad", list(BAD_FITS), ids=list(BAD_FITS))
def test_bad_fit_options_fail_before_training(bad, method):
    kwargs = dict(BAD_FITS[bad])
    if bad.startswith("learning_rate") and method == "em":
        pytest.skip("EM does not use a learning rate")
    kwargs.setdefault("method", method)
    model = HMM(3, 2, seed=0, dtype="float64")
    before = (model.A, model.B, model.pi)
    with pytest.raises((ValueError, TypeError)):
        model.fit([[0, 1, 1, 0], [1, 1]], epochs=3, **kwargs)
    for a, b in zip(before, (model.A, model.B, model.pi)):
        np.testing.assert_array_equal(a, b)
    assert len(model.history_) == 0


# ---------------------------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------------------------
def test_divergence_is_reported_and_the_model_stays_usable():
    rng = np.random.default_rng(40)
    seqs = [rng.integers(0, 4, 200) for _ in range(20)]
    model = HMM(3, 4, seed=0, dtype="float64")
    values = []
    with pytest.raises(hmmop.DivergenceError) as info:
        model.fit(seqs, epochs=20, optimizer="sgd", learning_rate=1e6, normalize=False,
                  callback=lambda epoch, value: values.append((epoch, value)))
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    finite = [v for _, v in values if np.isfinite(v)]
    first_bad = next((e for e, v in values if not np.isfinite(v)), len(finite))   # 0-based epoch
    assert re.search(rf"epoch {first_bad}\b|epoch {first_bad + 1}\b", message), message
    assert re.search(r"smaller", message, re.I) and re.search(r"learning.rate", message, re.I), message
    for x in (model.A, model.B, model.pi):
        assert np.isfinite(x).all()
    total = model.score(seqs)
    assert np.isfinite(total)
    assert finite, "the first epoch's objective should be finite"
    np.testing.assert_allclose(total, finite[-1], rtol=1e-10)    # the last parameters with a finite objective


# ---------------------------------------------------------------------------------------------------------------
# priors in gradient training
# ---------------------------------------------------------------------------------------------------------------
GRAD_PRIOR = {"A": 1.0 + 3 * np.random.default_rng(50).random((4, 4)), "B": 2.0, "pi": 1.5}


def log_posterior(params, seqs, prior):
    X, lengths = concat(seqs)
    return oracle(params["A"], params["B"], params["pi"]).score(X, lengths) + log_prior(params, prior)


def test_gradient_history_is_the_log_posterior(data):
    start, seqs = data
    model = HMM.from_probabilities(*start, dtype="float64")
    seen = []
    history = model.fit(seqs, epochs=4, optimizer="adam", learning_rate=0.05, prior=GRAD_PRIOR,
                        callback=lambda epoch, value: seen.append((value, params_of(model))))
    assert len(history) == 4 and len(seen) == 4
    before = [dict(zip(("A", "B", "pi"), start))] + [p for _, p in seen[:-1]]
    for h, (value, _), params in zip(history, seen, before):
        np.testing.assert_allclose(h, log_posterior(params, seqs, GRAD_PRIOR), rtol=1e-10)
        assert h == value
    # one epoch at a tiny learning rate: the final parameters are (nearly) the first
    model = HMM.from_probabilities(*start, dtype="float64")
    history = model.fit(seqs, epochs=1, learning_rate=1e-12, prior=GRAD_PRIOR)
    np.testing.assert_allclose(history[0], log_posterior(params_of(model), seqs, GRAD_PRIOR), rtol=1e-9)


def test_gradient_map_reaches_em_map(data):
    """Gradient training with a prior maximises the same log-posterior as EM's MAP update."""
    start, seqs = data
    em_model = HMM.from_probabilities(*start, dtype="float64")
    em_history = em_model.fit(seqs, method="em", epochs=300, prior=GRAD_PRIOR)
    optimum = log_posterior(params_of(em_model), seqs, GRAD_PRIOR)
    assert optimum >= em_history[-1] - 1e-8 * abs(optimum)
    grad = HMM.from_probabilities(*start, dtype="float64")
    grad.fit(seqs, epochs=400, optimizer="adam", learning_rate=0.05, prior=GRAD_PRIOR)
    reached = log_posterior(params_of(grad), seqs, GRAD_PRIOR)
    assert abs(reached - optimum) <= 1e-6 * abs(optimum), (reached, optimum)
    for a, b in zip(params_of(grad).values(), params_of(em_model).values()):
        np.testing.assert_allclose(a, b, atol=5e-3)
    # and without the prior the optimum is a different point
    plain = HMM.from_probabilities(*start, dtype="float64")
    plain.fit(seqs, method="em", epochs=300)
    assert log_posterior(params_of(plain), seqs, GRAD_PRIOR) < optimum - 1e-3
