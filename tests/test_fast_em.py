"""EmissionHMM.em_iterations: the whole categorical EM loop in C (csrc/hmm_em.c, _kernel.em_categorical)
against the core's Python loop, hmmlearn 0.3.3's CategoricalHMM and a brute-force enumeration of state
paths; structural zeros, missing symbols, convergence, divergence, bad input, thread counts."""
import itertools

import numpy as np
import pytest

from hmmop import _kernel
from hmmop.emissions import CategoricalEmission
from hmmop.fit.monitor import DivergenceError
from hmmop.models.core import EmissionHMM
from reference import hmmlearn_model as oracle, random_model

CLOSE = dict(rtol=1e-10, atol=1e-12)


def model(A, B, pi, mask=None, emission_prior=None, emission_mask=None, fused=True):
    """A float64 core with a CategoricalEmission holding copies of A, B, pi; fused=False: the Python loop."""
    em = CategoricalEmission(A.shape[0], B.shape[1], emission_prior=emission_prior, mask=emission_mask)
    em.B = B
    m = EmissionHMM(A.shape[0], em, dtype="float64", mask=mask)
    m.set_probabilities(A=A, pi=pi)
    m.initialized = True
    if not fused:
        em.fused_em = None          # the instance attribute hides the method: the core's Python loop
    return m


def data(rng, m, lengths, missing=0.0):
    """(rows int32, lengths, starts) of random symbols in [0, m); a share ``missing`` of them -2."""
    lengths = np.asarray(lengths, dtype=np.int64)
    rows = rng.integers(0, m, int(lengths.sum())).astype(np.int32)
    rows[rng.random(len(rows)) < missing] = -2
    return rows, lengths, np.cumsum(lengths) - lengths


def hmmlearn_fit(start, rows, lengths, n_iter, params="ste", prior=None, tol=-np.inf):
    """hmmlearn's EM from ``start`` (A, B, pi): init_params="", its tol rule."""
    prior = prior or {}
    kwargs = dict(n_iter=n_iter, init_params="", params=params, tol=tol)
    for ours, theirs in (("A", "transmat_prior"), ("B", "emissionprob_prior"), ("pi", "startprob_prior")):
        if ours in prior:
            kwargs[theirs] = prior[ours]
    ref = oracle(*start, **kwargs)
    ref.fit(rows.astype(np.int64).reshape(-1, 1), lengths)
    return ref


def assert_state(m, A, B, pi, **tol):
    tol = tol or CLOSE
    np.testing.assert_allclose(m.A, A, **tol)
    np.testing.assert_allclose(m.emission.B, B, **tol)
    np.testing.assert_allclose(m.pi, pi, **tol)


def core_prior(prior):
    return {k: v for k, v in (prior or {}).items() if k != "B"} or None


# -- against hmmlearn and the Python loop ---------------------------------------------------------------------

CASES = [
    ("ste", None),
    ("st", None),
    ("e", None),
    ("t", {"A": 2.0}),
    ("se", {"pi": 1.5, "B": 3.0}),
    ("ste", {"A": 1.2, "B": 1.7, "pi": 2.5}),
]


@pytest.mark.parametrize("params,prior", CASES)
@pytest.mark.parametrize("shape", [(4, 3, [30]), (3, 5, [40, 7, 25, 60])])
def test_equals_hmmlearn_and_python_loop(params, prior, shape):
    n, m, lengths = shape
    rng = np.random.default_rng(len(params) + 10 * n)
    start = random_model(rng, n, m)
    rows, lengths, starts = data(rng, m, lengths)
    k = 12
    ref = hmmlearn_fit(start, rows, lengths, k, params, prior)
    ours, theirs = (model(*start, emission_prior=(prior or {}).get("B"), fused=f) for f in (True, False))
    h_c, conv_c = ours.em_iterations(rows, lengths, starts, k, params=params, prior=core_prior(prior),
                                     objective="loglik")
    h_py, conv_py = theirs.em_iterations(rows, lengths, starts, k, params=params, prior=core_prior(prior),
                                         objective="loglik")
    assert len(h_c) == len(h_py) == k and not conv_c and not conv_py
    np.testing.assert_allclose(h_c, ref.monitor_.history, **CLOSE)
    np.testing.assert_allclose(h_py, ref.monitor_.history, **CLOSE)
    assert_state(ours, ref.transmat_, ref.emissionprob_, ref.startprob_)
    assert_state(theirs, ref.transmat_, ref.emissionprob_, ref.startprob_)
    if "t" not in params:
        np.testing.assert_array_equal(ours.A, start[0])       # not learned: untouched
    if "e" not in params:
        np.testing.assert_array_equal(ours.emission.B, start[1])


def test_map_objective_adds_the_log_prior():
    """objective="map": the log-likelihood plus sum((a - 1) log p) of A and pi at each E-step."""
    rng = np.random.default_rng(3)
    start = random_model(rng, 3, 4)
    rows, lengths, starts = data(rng, 4, [20, 30])
    prior = {"A": rng.uniform(1, 3, (3, 3)), "pi": 2.0}
    loglik = model(*start).em_iterations(rows, lengths, starts, 5, prior=prior, objective="loglik")[0]
    a, b = model(*start), model(*start, fused=False)
    expected = []
    for _ in range(5):
        expected.append(np.sum((prior["A"] - 1) * np.log(b.A)) + np.sum((prior["pi"] - 1) * np.log(b.pi)))
        b.em_iterations(rows, lengths, starts, 1, prior=prior)
    h = a.em_iterations(rows, lengths, starts, 5, prior=prior)[0]
    np.testing.assert_allclose(h, loglik + np.array(expected), **CLOSE)


def test_fit_goes_through_the_c_loop_and_keeps_its_results():
    """EmissionHMM.fit(method="em") without bar or callback equals the Python loop, with and without a
    progress bar and a callback (those report every iteration)."""
    rng = np.random.default_rng(5)
    start = random_model(rng, 4, 3)
    rows, lengths, _ = data(rng, 3, [30, 50])
    fast, slow = model(*start), model(*start, fused=False)
    h_fast = fast.fit(rows, lengths, epochs=20, progress=False)
    seen = []
    h_slow = slow.fit(rows, lengths, epochs=20, progress=False, callback=lambda e, v: seen.append((e, v)))
    np.testing.assert_allclose(h_fast, h_slow, **CLOSE)
    assert [e for e, _ in seen] == list(range(20)) and np.allclose([v for _, v in seen], h_slow)
    assert_state(fast, slow.A, slow.emission.B, slow.pi)
    bar = model(*start)
    np.testing.assert_allclose(bar.fit(rows, lengths, epochs=20, progress=True), h_fast, **CLOSE)


# -- brute force: missing symbols ------------------------------------------------------------------------------

def brute_force_em_step(A, B, pi, seqs):
    """(ll, A', B', pi') of one EM iteration by enumerating every state path; -2 steps emit 1."""
    n, m = B.shape
    ll, trans, emit, first = 0.0, np.zeros((n, n)), np.zeros((n, m)), np.zeros(n)
    for seq in seqs:
        paths, weights = list(itertools.product(range(n), repeat=len(seq))), []
        for path in paths:
            p = pi[path[0]]
            for t, s in enumerate(path):
                p *= (A[path[t - 1], s] if t else 1.0) * (B[s, seq[t]] if seq[t] != -2 else 1.0)
            weights.append(p)
        total = sum(weights)
        ll += np.log(total)
        for path, w in zip(paths, weights):
            w /= total
            first[path[0]] += w
            for t, s in enumerate(path):
                if t:
                    trans[path[t - 1], s] += w
                if seq[t] != -2:
                    emit[s, seq[t]] += w
    norm = lambda x: x / x.sum(axis=-1, keepdims=True)          # noqa: E731
    return ll, norm(trans), norm(emit), norm(first)


def test_missing_symbols_against_brute_force():
    rng = np.random.default_rng(7)
    A, B, pi = random_model(rng, 2, 3)
    seqs = [[0, -2, 2, 1, -2, 0], [-2, -2, 1], [2, 0, 0, -2, 1, 1, 2]]
    lengths = np.array([len(s) for s in seqs])
    rows = np.concatenate(seqs).astype(np.int32)
    starts = np.cumsum(lengths) - lengths
    ll, A1, B1, pi1 = brute_force_em_step(A, B, pi, seqs)
    for fused in (True, False):
        m = model(A, B, pi, fused=fused)
        h, _ = m.em_iterations(rows, lengths, starts, 1)
        np.testing.assert_allclose(h, [ll], **CLOSE)
        assert_state(m, A1, B1, pi1)


def test_all_missing_sequence_adds_no_emission_count():
    """A sequence of missing steps only changes A and pi, never B (its B counts are 0)."""
    rng = np.random.default_rng(8)
    start = random_model(rng, 3, 4)
    rows, lengths, starts = np.full(9, -2, dtype=np.int32), np.array([9]), np.array([0])
    m = model(*start)
    h, _ = m.em_iterations(rows, lengths, starts, 3)
    np.testing.assert_allclose(h, 0.0, atol=1e-12)
    np.testing.assert_array_equal(m.emission.B, start[1])


# -- structural zeros ------------------------------------------------------------------------------------------

def test_masks_keep_zeros_and_match_hmmlearn():
    """Masked entries of A, pi and B stay exactly 0; hmmlearn from the same zeros (no emission prior: a
    zero of B gets no count) gives the same fit."""
    rng = np.random.default_rng(11)
    n, m = 4, 3
    mask_A = np.triu(np.ones((n, n), dtype=bool))                      # left-to-right
    mask_pi = np.array([True, True, False, False])
    mask_B = np.ones((n, m), dtype=bool)
    mask_B[0, 2] = mask_B[3, 0] = False
    A, B, pi = random_model(rng, n, m)
    A, B, pi = A * mask_A, B * mask_B, pi * mask_pi
    A, B, pi = A / A.sum(1, keepdims=True), B / B.sum(1, keepdims=True), pi / pi.sum()
    rows, lengths, starts = data(rng, m, [25, 40, 33])
    prior = {"A": 1.5, "pi": 2.0}
    ref = hmmlearn_fit((A, B, pi), rows, lengths, 15, prior=prior)
    for fused in (True, False):
        ours = model(A, B, pi, mask={"A": mask_A, "pi": mask_pi}, emission_mask=mask_B, fused=fused)
        h, _ = ours.em_iterations(rows, lengths, starts, 15, prior=prior, objective="loglik")
        np.testing.assert_allclose(h, ref.monitor_.history, **CLOSE)
        assert_state(ours, ref.transmat_, ref.emissionprob_, ref.startprob_)
        assert (ours.A[~mask_A] == 0).all() and (ours.pi[~mask_pi] == 0).all()
        assert (ours.emission.B[~mask_B] == 0).all()


def test_mask_of_b_holds_against_an_emission_prior():
    """An emission prior would revive a zero of B (hmmlearn's M-step); the mask keeps it 0."""
    rng = np.random.default_rng(12)
    A, B, pi = random_model(rng, 3, 3)
    mask_B = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    B = B * mask_B
    B /= B.sum(1, keepdims=True)
    rows, lengths, starts = data(rng, 3, [50])
    fast, slow = (model(A, B, pi, emission_prior=3.0, emission_mask=mask_B, fused=f) for f in (True, False))
    for m in (fast, slow):
        m.em_iterations(rows, lengths, starts, 10)
        assert (m.emission.B[~mask_B] == 0).all()
    assert_state(fast, slow.A, slow.emission.B, slow.pi)


# -- convergence -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-6])
def test_stops_where_hmmlearn_stops(tol):
    rng = np.random.default_rng(13)
    start = random_model(rng, 3, 4)
    rows, lengths, starts = data(rng, 4, [60, 45])
    ref = hmmlearn_fit(start, rows, lengths, 500, tol=tol)
    assert 2 <= len(ref.monitor_.history) < 500
    for fused in (True, False):
        m = model(*start, fused=fused)
        h, converged = m.em_iterations(rows, lengths, starts, 500, tol=tol, objective="loglik")
        assert converged and len(h) == len(ref.monitor_.history)
        np.testing.assert_allclose(h, ref.monitor_.history, **CLOSE)
        assert_state(m, ref.transmat_, ref.emissionprob_, ref.startprob_)


def test_a_falling_objective_stops_as_hmmlearn_stops():
    """hmmlearn's test is signed: a log-likelihood that falls (a strong prior pulling a fitted model
    away from its maximum) stops at tol=0 after the second iteration; tol_rule="abs" does not stop."""
    rng = np.random.default_rng(18)
    start = random_model(rng, 3, 3)
    rows, lengths, starts = data(rng, 3, [80])
    fitted = model(*start)
    fitted.em_iterations(rows, lengths, starts, 100)
    begin = (fitted.A, fitted.emission.B, fitted.pi)
    ref = hmmlearn_fit(begin, rows, lengths, 50, prior={"A": 50.0}, tol=0.0)
    assert len(ref.monitor_.history) == 2 and ref.monitor_.history[1] < ref.monitor_.history[0]
    for fused in (True, False):
        m = model(*begin, fused=fused)
        h, converged = m.em_iterations(rows, lengths, starts, 50, tol=0.0, prior={"A": 50.0}, objective="loglik")
        assert converged and len(h) == 2
        np.testing.assert_allclose(h, ref.monitor_.history, **CLOSE)
        assert_state(m, ref.transmat_, ref.emissionprob_, ref.startprob_)
        h, converged = model(*begin, fused=fused).em_iterations(rows, lengths, starts, 5, tol=0.0, tol_rule="abs",
                                                               prior={"A": 50.0}, objective="loglik")
        assert not converged and len(h) == 5


def test_tol_none_runs_every_iteration_and_fit_tol_is_per_observed_row():
    rng = np.random.default_rng(14)
    start = random_model(rng, 3, 3)
    rows, lengths, starts = data(rng, 3, [40, 40], missing=0.2)
    h, converged = model(*start).em_iterations(rows, lengths, starts, 200, tol=None)
    assert len(h) == 200 and not converged
    n_observed = int((rows != -2).sum())
    tol = 1e-4
    expected = next(k for k in range(1, 200) if abs(h[k] - h[k - 1]) / n_observed < tol) + 1
    assert expected < 100
    for fused in (True, False):
        assert len(model(*start, fused=fused).fit(rows, lengths, epochs=200, tol=tol, progress=False)) == expected
    assert len(model(*start).fit(rows, lengths, epochs=200, tol=tol, progress=True)) == expected


# -- divergence and bad input ----------------------------------------------------------------------------------

def test_impossible_data_raises_divergence_and_keeps_the_parameters():
    A, B, pi = np.full((2, 2), 0.5), np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0.5, 0.5])
    rows, lengths, starts = np.array([0, 1, 0], dtype=np.int32), np.array([3]), np.array([0])
    messages = []
    for fused in (True, False):
        m = model(A, B, pi, fused=fused)
        with pytest.raises(DivergenceError, match="at the first step") as info:
            m.em_iterations(rows, lengths, starts, 5)
        assert info.value.epoch == 0 and len(info.value.history) == 0
        assert_state(m, A, B, pi, rtol=0, atol=0)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_bad_symbol_is_a_clear_error():
    rng = np.random.default_rng(15)
    start = random_model(rng, 2, 3)
    m = model(*start)
    rows = np.array([0, 1, 2, 3, 1], dtype=np.int32)
    with pytest.raises(ValueError, match=r"rows\[3\] = 3 is not a symbol in \[0, 3\) or -2"):
        m.em_iterations(rows, np.array([5]), np.array([0]), 3)
    with pytest.raises(ValueError, match=r"rows\[1\] = -1 is not a symbol"):
        m.em_iterations(np.array([0, -1], dtype=np.int32), np.array([2]), np.array([0]), 3)
    with pytest.raises(ValueError, match="sequence 1 .* is not inside rows"):
        m.em_iterations(rows, np.array([3, 4]), np.array([0, 3]), 3)
    assert_state(m, *start, rtol=0, atol=0)             # untouched by an error
    with pytest.raises(ValueError, match="objective"):
        m.em_iterations(rows[:3], np.array([3]), np.array([0]), 3, objective="ll")


# -- the C loop's own properties -------------------------------------------------------------------------------

def test_threads_and_grouping_do_not_change_results():
    """Results equal for 1 and 2 threads bit for bit (the C loop, the dense step); very unequal lengths
    (several padded groups) equal the Python loop."""
    rng = np.random.default_rng(16)
    A, B, pi = random_model(rng, 4, 3)
    rows, lengths, starts = data(rng, 3, [300] * 100)
    out = []
    for threads in (1, 2):
        a, b, p = A.copy(), B.copy(), pi.copy()
        h, stop, _ = _kernel.em_categorical(a, b, p, rows, starts, lengths, 5, num_threads=threads)
        out.append((h, a, b, p))
    for x, y in zip(*out):
        np.testing.assert_array_equal(x, y)
    logE = np.log(B.T[rows])                                       # the dense E-step's plan alike
    dense = []
    for threads in (1, 2):
        a, p, gamma = A.copy(), pi.copy(), np.empty((len(rows), 4))
        core = _kernel.EMDense(4, len(rows), starts, lengths, ("A", "pi"), num_threads=threads)
        dense.append((core.step(a, p, logE, gamma), a, p, gamma))
    for x, y in zip(*dense):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(dense[0][0], out[0][0][0], **CLOSE)
    rows, lengths, starts = data(rng, 3, [2000, 3, 5, 0, 1, 7, 400] + [2] * 40)
    fast, slow = model(A, B, pi), model(A, B, pi, fused=False)
    h1, _ = fast.em_iterations(rows, lengths, starts, 8)
    h2, _ = slow.em_iterations(rows, lengths, starts, 8)
    np.testing.assert_allclose(h1, h2, **CLOSE)
    assert_state(fast, slow.A, slow.emission.B, slow.pi)


def test_callback_runs_the_python_loop_with_the_same_results():
    rng = np.random.default_rng(17)
    start = random_model(rng, 3, 3)
    rows, lengths, starts = data(rng, 3, [30])
    seen = []
    a, b = model(*start), model(*start)
    h1, _ = a.em_iterations(rows, lengths, starts, 6, prior={"A": 2.0})
    h2, _ = b.em_iterations(rows, lengths, starts, 6, prior={"A": 2.0}, callback=lambda i, v: seen.append((i, v)))
    np.testing.assert_allclose(h1, h2, **CLOSE)
    assert [i for i, _ in seen] == list(range(6)) and [v for _, v in seen] == list(h2)
    assert_state(a, b.A, b.emission.B, b.pi)
