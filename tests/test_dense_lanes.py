"""The dense driver's lane kernel (csrc/hmm_batch_lanes.h): float64 plans of at most 16 states whose A
and pi are not weak run with a sequence in each SIMD lane, the forward keeping alpha_hat every 32 steps
and the backward recomputing each segment from there.

Checked against a log-space forward-backward written here in NumPy (float64, no scaling): ll, the
posteriors (the log_emission gradient), and the gradients of A and pi, on batches that exercise
what the kernel's layout does - groups of lanes partly filled, sequences ending at different steps
(lengths 1, 31, 32, 33, 64, ...: segment boundaries), many blocks - and its special rows (scores of
scale 1e4 and a row of NaN, which it leaves to the double reference; an impossible row; gll = 0).
Also bit for bit: each sequence alone and in the batch, and 1, 2 and 3 threads.  Beside it, the
states just past the kernel's reach (17) and a weak plan of 10 states (zeros in A), which run the
state-lane kernel, against the same oracle.
"""
import numpy as np
import pytest
from scipy.special import logsumexp

from hmmop import _kernel

N_LANES = [1, 2, 3, 8, 10, 16]          # lane plans (at most 16 states)


def log_space(A, pi, le, starts, lengths, gll):
    """(ll (batch,), dA, dpi, dle (size, n)) of sum_b gll[b] ll[b], in log space (the oracle)."""
    n = A.shape[0]
    with np.errstate(divide="ignore"):
        lA, lpi = np.log(A), np.log(pi)
    ll = np.zeros(len(lengths))
    dA, dpi, dle = np.zeros((n, n)), np.zeros(n), np.zeros_like(le)
    for b, (s, L) in enumerate(zip(starts, lengths)):
        if L == 0:
            continue
        x = le[s:s + L]
        la = np.empty((L, n))
        la[0] = lpi + x[0]
        for t in range(1, L):
            la[t] = logsumexp(la[t - 1][:, None] + lA, axis=0) + x[t]
        ll[b] = logsumexp(la[-1])
        if gll[b] == 0 or not np.isfinite(ll[b]):
            continue
        lb = np.zeros((L, n))
        for t in range(L - 1, 0, -1):
            lb[t - 1] = logsumexp(lA + (x[t] + lb[t])[None, :], axis=1)
        dle[s:s + L] = gll[b] * np.exp(la + lb - ll[b])
        dpi += gll[b] * np.exp(x[0] + lb[0] - ll[b])       # d ll / d pi = sum over paths from each start / P
        for t in range(1, L):
            dA += gll[b] * np.exp(la[t - 1][:, None] + (x[t] + lb[t])[None, :] - ll[b])
    return ll, dA, dpi, dle


def driver(A, pi, le, starts, lengths, gll, threads=2):
    """(ll, dA, dpi, dle) of the batch driver (_kernel.forward_dense + backward_dense), float64."""
    ws = _kernel.forward_dense(A, pi, le, starts, lengths, threads)
    dA, dpi, dle = np.empty_like(A), np.empty_like(pi), np.full_like(le, np.nan)
    _kernel.backward_dense(ws, gll, le, dA, dpi, dle, 1, 1, 1, threads)
    return ws.ll.copy(), dA, dpi, dle


def problem(n, seed, batch=41, special=False, weak=False):
    """A, pi (entries within a factor ~100 of each other: not weak), log-emissions in hmmlearn's
    concatenated layout with gaps between sequences, and lengths that end inside and on segments."""
    rng = np.random.default_rng([n, seed])
    A = rng.uniform(0.2, 1.0, (n, n)) + 2.0 * np.eye(n)
    if weak:
        A[0, 1:] = 0.0
        A[n - 1, 0] = 0.0
    A /= A.sum(axis=1, keepdims=True)
    pi = rng.uniform(0.2, 1.0, n)
    pi /= pi.sum()
    lengths = rng.integers(1, 140, batch)
    lengths[:8] = [1, 31, 32, 33, 64, 65, 2, 97][:min(8, batch)]
    lengths = lengths.astype(np.int64)
    gaps = rng.integers(0, 3, batch)
    starts = (np.cumsum(lengths + gaps) - lengths).astype(np.int64)
    size = int(starts[-1] + lengths[-1] + 2)
    le = rng.normal(-3.0, 2.0, (size, n))
    gll = rng.uniform(0.5, 2.0, batch)
    if special:
        s, L = starts[9], lengths[9]
        le[s:s + L] *= 5e3                              # scale 1e4: the double reference
        le[starts[10] + lengths[10] // 2] = -np.inf     # an impossible step
        gll[11] = 0.0                                   # no gradient
    return A, pi, le, starts, lengths, gll


def check(got, want, lengths, starts, rtol=1e-9):
    ll, dA, dpi, dle = got
    wll, wdA, wdpi, wdle = want
    finite = np.isfinite(wll)
    np.testing.assert_allclose(ll[finite], wll[finite], rtol=rtol, atol=rtol)
    assert np.array_equal(np.isfinite(ll), finite)
    np.testing.assert_allclose(dA, wdA, rtol=rtol, atol=rtol * np.abs(wdA).max())
    np.testing.assert_allclose(dpi, wdpi, rtol=rtol, atol=rtol * np.abs(wdpi).max())
    inside = np.zeros(len(dle), dtype=bool)
    for s, L in zip(starts, lengths):
        inside[s:s + L] = True
    np.testing.assert_allclose(dle[inside], wdle[inside], rtol=rtol, atol=1e-12)
    assert not dle[~inside].any(), "rows outside the sequences must be 0"


@pytest.mark.parametrize("n", N_LANES + [17])
@pytest.mark.parametrize("special", [False, True])
def test_matches_log_space(n, special):
    A, pi, le, starts, lengths, gll = problem(n, 1, special=special)
    check(driver(A, pi, le, starts, lengths, gll), log_space(A, pi, le, starts, lengths, gll), lengths, starts)


@pytest.mark.parametrize("n", [3, 10])
def test_weak_plan_matches_log_space(n):
    """Zeros in A: the state-lane kernel with its guard, on the lane plan's blocks."""
    A, pi, le, starts, lengths, gll = problem(n, 2, weak=True)
    check(driver(A, pi, le, starts, lengths, gll), log_space(A, pi, le, starts, lengths, gll), lengths, starts)


def test_nan_row_gives_nan_to_its_sequence_only():
    A, pi, le, starts, lengths, gll = problem(10, 3)
    clean = driver(A, pi, le, starts, lengths, gll)
    le[starts[4] + 7, 3] = np.nan
    got = driver(A, pi, le, starts, lengths, gll)
    assert np.isnan(got[0][4]) and np.isnan(got[3][starts[4]:starts[4] + lengths[4]]).all()
    others = np.arange(len(lengths)) != 4
    np.testing.assert_array_equal(got[0][others], clean[0][others])
    for b in np.flatnonzero(others):
        s, L = starts[b], lengths[b]
        np.testing.assert_array_equal(got[3][s:s + L], clean[3][s:s + L])


@pytest.mark.parametrize("n", [2, 10, 16])
def test_bit_identical_alone_and_across_threads(n):
    A, pi, le, starts, lengths, gll = problem(n, 4, batch=45, special=True)
    full = driver(A, pi, le, starts, lengths, gll)
    for threads in (1, 3):
        for got, want, name in zip(driver(A, pi, le, starts, lengths, gll, threads), full, ("ll", "dA", "dpi", "dle")):
            np.testing.assert_array_equal(got, want, err_msg=f"{name}, {threads} threads")
    for b in (0, 1, 3, 4, 9, 10, 17, 44):
        s, L = starts[b], lengths[b]
        alone = driver(A, pi, np.ascontiguousarray(le[s:s + L]), np.zeros(1, np.int64), lengths[b:b + 1],
                       gll[b:b + 1])
        assert alone[0][0] == full[0][b] or (np.isnan(alone[0][0]) and np.isnan(full[0][b]))
        np.testing.assert_array_equal(alone[3], full[3][s:s + L], err_msg=f"sequence {b}")


def test_long_sequences_many_segments():
    """Sequences of thousands of steps (checkpoints every 32): the E-step core (EMDense) against the
    oracle's posteriors and expected counts."""
    n = 6
    A, pi, _, _, _, _ = problem(n, 5)
    rng = np.random.default_rng(5)
    lengths = np.array([3000, 2999, 1000, 33, 2048], dtype=np.int64)
    starts = (np.cumsum(lengths) - lengths).astype(np.int64)
    le = rng.normal(0.0, 3.0, (int(lengths.sum()), n))
    want = log_space(A, pi, le, starts, lengths, np.ones(len(lengths)))
    got = driver(A, pi, le, starts, lengths, np.ones(len(lengths)))
    check(got, want, lengths, starts, rtol=1e-8)
    core = _kernel.EMDense(n, len(le), starts, lengths, ["A", "pi"], {}, {}, (), 2)
    gamma = np.empty_like(le)
    value = core.step(A.copy(), pi.copy(), le, gamma)
    assert value == pytest.approx(want[0].sum(), rel=1e-10)
    np.testing.assert_allclose(gamma, want[3], rtol=1e-8, atol=1e-12)


def test_one_plan_switching_between_lane_and_weak_parameters():
    """One plan (EMDense, kept across calls) given parameters that are not weak, then weak ones (zeros in A: the
    state-lane kernel, whose arrays are larger), then the first again: each step as the oracle says."""
    n = 5
    A1, pi, le, starts, lengths, _ = problem(n, 6, batch=20)
    A2 = A1.copy()
    A2[0, 1:] = 0.0
    A2 /= A2.sum(axis=1, keepdims=True)
    core = _kernel.EMDense(n, len(le), starts, lengths, ["A", "pi"], {}, {}, (), 2)
    ones = np.ones(len(lengths))
    first = None
    for A in (A1, A2, A1):
        want = log_space(A, pi, le, starts, lengths, ones)
        gamma = np.full_like(le, np.nan)
        value = core.step(A.copy(), pi.copy(), le, gamma)
        assert value == pytest.approx(want[0].sum(), rel=1e-10)
        inside = np.zeros(len(le), dtype=bool)
        for s, L in zip(starts, lengths):
            inside[s:s + L] = True
        np.testing.assert_allclose(gamma[inside], want[3][inside], rtol=1e-9, atol=1e-12)
        if first is None:
            first = gamma.copy()
        elif A is A1:
            np.testing.assert_array_equal(gamma, first)
