"""hmm_forward_dense's NDArray path (NDArrayForwardDense) and its autograd baseline
(unroll_forward_dense) against independent oracles: enumeration of every state path in
float64 NumPy (ll, and the posteriors gamma for the log_emission gradient), float64
finite differences of that enumeration (A, pi gradients), and the categorical operator."""
import itertools

import hmmop  # noqa: I001  (first: it restores a numpy alias mxnet needs)
import mxnet as mx
import numpy as np
import pytest
from scipy.special import logsumexp

from hmmop.ops.dense_ndarray import NDArrayForwardDense
from hmmop.ops.unroll import unroll_forward_dense
from reference import random_model, random_padded

F64 = np.float64


# -- oracles ---------------------------------------------------------------------------------
def enumerate_paths(A, pi, le, length):
    """(ll, gamma (length, N), xi (N, N) summed over steps) of one sequence, by enumerating all
    N^length state paths in float64: ll = log sum_paths w * exp(score), w = pi[s_1] prod A (plain
    products, so that finite differences may step a zero parameter below 0) and score the
    path's log-emissions.  le: (T, N) log-emissions of the sequence."""
    n = len(pi)
    if length == 0:
        return 0.0, np.zeros((0, n)), np.zeros((n, n))
    paths = np.array(list(itertools.product(range(n), repeat=length)))       # (P, L)
    A, pi, le = (np.asarray(x, F64) for x in (A, pi, le))
    w = pi[paths[:, 0]] * A[paths[:, :-1], paths[:, 1:]].prod(axis=1)
    score = le[np.arange(length), paths].sum(axis=1)
    ll = logsumexp(score, b=w)                     # w = 0 paths are left out, whatever their score
    gamma, xi = np.zeros((length, n)), np.zeros((n, n))
    if ll == -np.inf or (w < 0).any():
        return ll, gamma, xi
    with np.errstate(divide="ignore"):
        weight = np.exp(np.log(w) + score - ll)    # each path's posterior probability
    for t in range(length):
        np.add.at(gamma[t], paths[:, t], weight)
        if t:
            np.add.at(xi, (paths[:, t - 1], paths[:, t]), weight)
    return ll, gamma, xi


def oracle(A, pi, le, lengths, head):
    """(ll (batch,), dlog_emission (batch, T, N)) float64: head[b] * gamma on each row's steps;
    impossible rows get zero gradient."""
    ll = np.zeros(len(lengths))
    dle = np.zeros(le.shape)
    for b, L in enumerate(lengths):
        ll[b], gamma, _ = enumerate_paths(A, pi, le[b], L)
        dle[b, :L] = head[b] * gamma
    return ll, dle


def total_ll(A, pi, le, lengths, head):
    """sum_b head[b] ll[b] over the possible rows, by enumeration."""
    ll = np.array([enumerate_paths(A, pi, le[b], L)[0] for b, L in enumerate(lengths)])
    keep = ll > -np.inf
    return float(np.dot(head[keep], ll[keep]))


def finite_difference(f, x, rel=1e-6):
    """Central differences of the scalar f at x (float64 array)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        h = rel * max(abs(x[idx]), 1e-3)
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (f(up) - f(down)) / (2 * h)
    return grad


# -- the two implementations under test ------------------------------------------------------
def run_ndarray(A, pi, le, lengths, head, dtype=F64, ctx=None):
    """(ll, dA, dpi, dle) NumPy arrays from NDArrayForwardDense (float64 whatever dtype)."""
    ctx = ctx or mx.cpu()
    A_nd, pi_nd, le_nd = (mx.nd.array(x, dtype=dtype, ctx=ctx) for x in (A, pi, le))
    fwd = NDArrayForwardDense(A_nd, pi_nd, le_nd, np.asarray(lengths, dtype=np.int64))
    dA, dpi, dle = fwd.backward(mx.nd.array(head, dtype=dtype, ctx=ctx))
    return [x.asnumpy() for x in (fwd.ll, dA, dpi, dle)]


def run_unroll(A, pi, le, lengths, head, dtype=F64):
    """(ll, dA, dpi, dle) NumPy arrays from unroll_forward_dense and autograd (in dtype)."""
    arrays = [mx.nd.array(x, dtype=dtype) for x in (A, pi, le)]
    for x in arrays:
        x.attach_grad()
    with mx.autograd.record():
        ll = unroll_forward_dense(*arrays, lengths)
    ll.backward(mx.nd.array(head, dtype=dtype))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in arrays]


IMPLS = {"ndarray": run_ndarray, "unroll": run_unroll}


def random_problem(rng, n, T, lengths, p_neg_inf=0.0, p_missing=0.0, pad=np.nan):
    """Positive, non-stochastic A (n, n) and pi (n,) (exp of random scores); log_emission
    (batch, T, n) with some -inf entries (never a whole row) and some all-zero (missing) rows;
    padding past the lengths filled with pad; a head gradient (batch,)."""
    A = np.exp(rng.normal(size=(n, n)))
    pi = np.exp(rng.normal(size=n))
    le = 2.0 * rng.normal(size=(len(lengths), T, n))
    dead = rng.random(le.shape) < p_neg_inf
    dead[..., rng.integers(0, n)] = False                # one state stays possible at every step
    le[dead] = -np.inf
    le[rng.random(le.shape[:2]) < p_missing] = 0.0
    for b, L in enumerate(lengths):
        le[b, L:] = pad
    head = rng.normal(size=len(lengths))
    return A, pi, le, np.array(lengths, dtype=np.int64), head


CASES = [(1, 3, [3, 0]), (2, 5, [5, 3, 1]), (3, 5, [5, 4, 0, 2]), (4, 4, [4, 1, 4])]


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("n,T,lengths", CASES)
def test_matches_enumeration(impl, n, T, lengths):
    rng = np.random.default_rng(10 * n + T)
    A, pi, le, lengths, head = random_problem(rng, n, T, lengths, p_neg_inf=0.2, p_missing=0.2)
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, lengths, head)
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dle, want_dle, rtol=1e-10, atol=1e-12)
    want_dA = finite_difference(lambda a: total_ll(a, pi, le, lengths, head), A)
    want_dpi = finite_difference(lambda p: total_ll(A, p, le, lengths, head), pi)
    np.testing.assert_allclose(dA, want_dA, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dpi, want_dpi, rtol=1e-6, atol=1e-8)
    assert all(x.dtype == F64 for x in (ll, dA, dpi, dle))
    assert dA.shape == (n, n) and dpi.shape == (n,) and dle.shape == le.shape


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_gradient_at_zero_parameters(impl):
    """Zeros in A and pi (unreachable states, of larger emission): their partial derivatives too,
    against central differences that step the zero below 0 (ll is defined there too)."""
    rng = np.random.default_rng(12)
    A, pi, le, lengths, head = random_problem(rng, 3, 5, [5, 3], p_neg_inf=0.1)
    A[0, 1] = A[2, 1] = A[1, 0] = 0.0
    pi[1] = 0.0
    le[:, :, 1] += 1.0                             # state 1, reachable from itself only
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, lengths, head)
    want_dA = finite_difference(lambda a: total_ll(a, pi, le, lengths, head), A)
    want_dpi = finite_difference(lambda p: total_ll(A, p, le, lengths, head), pi)
    assert abs(want_dA[0, 1]) > 1 and abs(want_dpi[1]) > 1          # not trivially zero
    np.testing.assert_allclose(dA, want_dA, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dpi, want_dpi, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dle, oracle(A, pi, le, lengths, head)[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_padding_is_ignored(impl):
    """Whatever lies past a length (NaN, +-inf, huge) changes nothing and gets zero gradient;
    a row of length 0 has ll 0; the result equals the rows computed alone, unpadded."""
    rng = np.random.default_rng(5)
    lengths = [6, 2, 0, 4]
    A, pi, le, lengths, head = random_problem(rng, 3, 6, lengths)
    outs = []
    for pad in (np.nan, np.inf, -np.inf, 1e30):
        for b, L in enumerate(lengths):
            le[b, L:] = pad
        outs.append(IMPLS[impl](A, pi, le, lengths, head))
    ll, dA, dpi, dle = outs[0]
    for other in outs[1:]:
        for got, want in zip(other, outs[0]):
            np.testing.assert_array_equal(got, want)
    assert ll[2] == 0.0 and not dle[2].any()
    for b, L in enumerate(lengths):
        assert not dle[b, L:].any()
        one = IMPLS[impl](A, pi, le[b:b + 1, :max(L, 1)], [L], head[b:b + 1])
        np.testing.assert_allclose(one[0], ll[b:b + 1], rtol=1e-13)
        np.testing.assert_allclose(one[3][0, :L], dle[b, :L], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_all_lengths_zero(impl):
    A, pi, le, lengths, head = random_problem(np.random.default_rng(2), 3, 4, [0, 0])
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, lengths, head)
    assert ll.tolist() == [0.0, 0.0]
    assert not dA.any() and not dpi.any() and not dle.any()
    assert dle.shape == (2, 4, 3)


def impossible_problem():
    """Row 0 possible (with impossible states at some steps), row 1 impossible through an A
    zero, row 2 through a step whose log-emissions are all -inf, row 3 through pi."""
    rng = np.random.default_rng(8)
    A = np.exp(rng.normal(size=(3, 3)))
    A[0, 2] = A[1, 2] = 0.0                        # state 2 only reachable from itself
    pi = np.array([0.5, 2.0, 0.0])
    le = rng.normal(size=(4, 5, 3))
    le[0, 1, 0] = le[0, 3, 1] = -np.inf
    le[1, 0, 2] = le[1, 2, :2] = -np.inf           # needs state 2 at step 2, unreachable
    le[2, 3, :] = -np.inf
    le[3, 0, :2] = -np.inf                         # pi puts nothing on state 2
    lengths = np.array([5, 4, 5, 3])
    head = np.array([0.7, 1.0, -2.0, 3.0])
    return A, pi, le, lengths, head


def test_impossible_sequences_ndarray():
    A, pi, le, lengths, head = impossible_problem()
    ll, dA, dpi, dle = run_ndarray(A, pi, le, lengths, head)
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    assert np.isfinite(ll[0]) and (ll[1:] == -np.inf).all() and (want_ll[1:] == -np.inf).all()
    np.testing.assert_allclose(ll[0], want_ll[0], rtol=1e-12)
    np.testing.assert_allclose(dle, want_dle, rtol=1e-10, atol=1e-14)
    assert not dle[1:].any()
    # Only row 0 counts in dA, dpi: the same as row 0 alone.
    _, dA0, dpi0, _ = run_ndarray(A, pi, le[:1], lengths[:1], head[:1])
    np.testing.assert_allclose(dA, dA0, rtol=1e-12)
    np.testing.assert_allclose(dpi, dpi0, rtol=1e-12)
    xi0 = enumerate_paths(A, pi, le[0], 5)[2]
    positive = A > 0                               # d ll / d A = xi / A where A > 0
    np.testing.assert_allclose(dA[positive], head[0] * (xi0 / np.where(positive, A, 1))[positive],
                               rtol=1e-10)
    # A batch of impossible rows alone: -inf and all-zero gradients.
    ll, dA, dpi, dle = run_ndarray(A, pi, le[1:], lengths[1:], head[1:])
    assert (ll == -np.inf).all()
    assert not dA.any() and not dpi.any() and not dle.any()


def test_impossible_sequences_unroll():
    """The baseline's forward: -inf for impossible rows (its gradient is NaN, documented)."""
    A, pi, le, lengths, head = impossible_problem()
    want_ll, _ = oracle(A, pi, le, lengths, head)
    ll = unroll_forward_dense(*(mx.nd.array(x, dtype=F64) for x in (A, pi, le)), lengths).asnumpy()
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12)
    assert (ll[1:] == -np.inf).all()


def large_problem(dtype):
    """log-emissions around per-step offsets uniform in +-1e4 (rounded to dtype), one state 2e4
    above the rest at some steps, and A, pi with zeros, so that the state of largest emission is
    sometimes unreachable (a shift by the largest log-emission alone would underflow there).

    Within a step the states differ by a few nats (or by 2e4): the NDArray path's scaled forward
    keeps each step's posterior only down to ~e^-700 (float64) of its largest state, so a state
    that falls below that cannot come back later here (the C driver would recompute it in log
    space).  The oracle works in log space."""
    rng = np.random.default_rng(21)
    n, T, lengths = 3, 5, [5, 4, 2, 5]
    A = np.exp(rng.normal(size=(n, n))) * (rng.random((n, n)) < 0.6)
    np.fill_diagonal(A, 1.5)
    pi = np.array([1.0, 0.0, 0.3])
    batch = len(lengths)
    le = rng.uniform(-1e4, 1e4, size=(batch, T, 1)) + 3.0 * rng.normal(size=(batch, T, n))
    le[1, 1:, 1] += 2e4                            # a hugely likely state, perhaps unreachable
    head = rng.normal(size=len(lengths))
    A, pi, le, head = (x.astype(dtype).astype(F64) for x in (A, pi, le, head))
    return A, pi, le, np.array(lengths), head


def check_large(got, A, pi, le, lengths, head, rtol_ll, atol_gamma, rtol_grad):
    ll, dA, dpi, dle = got
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    assert np.isfinite(want_ll).all() and np.isfinite(ll).all() and np.isfinite(dle).all()
    np.testing.assert_allclose(ll, want_ll, rtol=rtol_ll)
    np.testing.assert_allclose(dle, want_dle, atol=atol_gamma)
    # dA, dpi where A, pi > 0: expected counts over the parameter (the rest may be astronomic).
    xi = sum(head[b] * enumerate_paths(A, pi, le[b], L)[2] for b, L in enumerate(lengths))
    g0 = sum(head[b] * enumerate_paths(A, pi, le[b], L)[1][0] for b, L in enumerate(lengths))
    a_pos, p_pos = A > 0, pi > 0
    assert not np.isnan(dA).any() and not np.isnan(dpi).any()
    np.testing.assert_allclose(dA[a_pos], xi[a_pos] / A[a_pos], rtol=rtol_grad, atol=atol_gamma)
    np.testing.assert_allclose(dpi[p_pos], g0[p_pos] / pi[p_pos], rtol=rtol_grad, atol=atol_gamma)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_scales_ndarray(dtype):
    A, pi, le, lengths, head = large_problem(dtype)
    got = run_ndarray(A, pi, le, lengths, head, dtype=dtype)
    check_large(got, A, pi, le, lengths, head, rtol_ll=1e-13, atol_gamma=1e-9, rtol_grad=1e-9)


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float32, 1e-6, 1e-5), (np.float64, 1e-13, 1e-9)])
def test_large_scales_unroll(dtype, rtol, atol):
    """The baseline computes in the inputs' dtype: float32 within a few float32 roundings."""
    A, pi, le, lengths, head = large_problem(dtype)
    got = run_unroll(A, pi, le, lengths, head, dtype=dtype)
    check_large(got, A, pi, le, lengths, head, rtol_ll=rtol, atol_gamma=atol, rtol_grad=atol)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unreachable_max_state(impl, dtype):
    """The state of largest emission has pred 0 and every other is e^-1e4 below it: the answer
    comes from the others alone (a shift by the largest log-emission underflows to -inf)."""
    A = np.array([[1.0, 0.0], [0.0, 1.0]])
    pi = np.array([1.0, 0.0])
    le = np.array([[[-3.0, 1e4], [-1.0, 1e4], [-2.0, -1e4]]])
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, [3], np.array([1.0]), dtype=dtype)
    np.testing.assert_allclose(ll, [-6.0], rtol=1e-6 if dtype == np.float32 and impl == "unroll"
                               else 1e-14)
    np.testing.assert_allclose(dle[0], [[1, 0], [1, 0], [1, 0]], atol=1e-7)
    np.testing.assert_allclose(dA[0, 0], 2.0, rtol=1e-6)             # 2 transitions 0 -> 0
    np.testing.assert_allclose(dpi[0], 1.0, rtol=1e-6)
    assert dA[1, 0] == 0 and dA[1, 1] == 0
    assert not np.isnan(dA).any() and not np.isnan(dpi).any()


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("dtype,behind", [(np.float32, 60.0), (np.float64, 500.0)])
def test_state_far_behind_comes_back(impl, dtype, behind):
    """A state e^-behind less likely than the other (still a normal number in dtype) that then
    leads by far: its pred is tiny yet it is the step's largest term, with weight exactly 1."""
    A, pi = np.eye(2), np.array([1.0, 1.0])
    le = np.array([[[0.0, -behind], [0.0, 1.6 * behind]]])
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, [2], np.ones(1), dtype=dtype)
    want_ll, want_dle = oracle(A, pi, le, [2], np.ones(1))
    np.testing.assert_allclose(ll, want_ll, rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(dle, want_dle, atol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(dpi, [0, 1], atol=1e-6)              # gamma_1 / pi


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_categorical_equivalence(impl):
    """log_emission[b, t] = log B[:, obs[b, t]] (a zero row for a missing step, -2) gives
    hmm_forward's ll and A, pi gradients, and its B gradient by the chain rule."""
    rng = np.random.default_rng(3)
    n, m, lengths = 4, 3, [7, 3, 6, 1]
    A, B, pi = random_model(rng, n, m)
    obs = random_padded(rng, m, lengths)
    obs[rng.random(obs.shape) < 0.25] = -2
    for b, L in enumerate(lengths):
        obs[b, L:] = -1
    head = rng.normal(size=len(lengths))
    le = np.log(B.T[np.maximum(obs, 0)])                                  # (batch, T, N)
    le[obs == -2] = 0.0
    le[obs == -1] = np.nan
    params = [mx.nd.array(x, dtype=F64) for x in (A, B, pi)]
    for x in params:
        x.attach_grad()
    with mx.autograd.record():
        want = hmmop.hmm_forward(*params, obs, backend="ndarray")
    want.backward(mx.nd.array(head, dtype=F64))
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, lengths, head)
    np.testing.assert_allclose(ll, want.asnumpy(), rtol=1e-12)
    np.testing.assert_allclose(dA, params[0].grad.asnumpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dpi, params[2].grad.asnumpy(), rtol=1e-10, atol=1e-12)
    dB = np.zeros((n, m))
    seen = obs >= 0
    for i in range(n):
        np.add.at(dB[i], obs[seen], dle[..., i][seen] / B[i, obs[seen]])
    np.testing.assert_allclose(dB, params[1].grad.asnumpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_missing_steps_are_marginalised(impl):
    """A zero row adds no information: ll equals the sequence with that step cut out of the
    chain (A^2 across it), and its gamma is the smoothed posterior there."""
    rng = np.random.default_rng(4)
    A, pi, le, lengths, head = random_problem(rng, 3, 4, [4])
    le[0, 2] = 0.0
    ll, dA, dpi, dle = IMPLS[impl](A, pi, le, lengths, head)
    e = np.exp(le[0])
    skipped = np.log((pi * e[0]) @ A * e[1] @ (A @ A) @ e[3])            # no emission at step 2
    np.testing.assert_allclose(ll, [skipped], rtol=1e-12)
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    np.testing.assert_allclose(dle, want_dle, rtol=1e-10)
    np.testing.assert_allclose(dle[0, 2].sum(), head[0], rtol=1e-12)


@pytest.mark.parametrize("impl,rtol", [("ndarray", 1e-5), ("unroll", 1e-5)])
def test_float32_close_to_float64(impl, rtol):
    rng = np.random.default_rng(6)
    A, pi, le, lengths, head = random_problem(rng, 5, 12, [12, 7, 0, 12, 3], p_neg_inf=0.1,
                                              p_missing=0.1)
    A, pi, le, head = (x.astype(np.float32).astype(F64) for x in (A, pi, le, head))
    got = IMPLS[impl](A, pi, le, lengths, head, dtype=np.float32)
    want = IMPLS[impl](A, pi, le, lengths, head, dtype=F64)
    for g, w in zip(got, want):
        assert g.dtype == (F64 if impl == "ndarray" else np.float32)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


def test_backward_survives_input_reuse_and_any_head_dtype():
    """The forward keeps copies: overwriting the inputs before the backward changes nothing;
    a float32 head gradient is accepted for float64 inputs."""
    rng = np.random.default_rng(7)
    A, pi, le, lengths, head = random_problem(rng, 3, 5, [5, 2])
    want = run_ndarray(A, pi, le, lengths, head)
    arrays = [mx.nd.array(x, dtype=F64) for x in (A, pi, le)]
    fwd = NDArrayForwardDense(*arrays, lengths)
    for x in arrays:
        x[:] = 7.0
    got = fwd.backward(mx.nd.array(head, dtype=np.float32))
    np.testing.assert_allclose(fwd.ll.asnumpy(), want[0], rtol=0)
    for g, w in zip(got, want[1:]):
        assert g.dtype == F64
        np.testing.assert_allclose(g.asnumpy(), w, rtol=1e-7)     # head rounded to float32


def test_unroll_checks_its_inputs():
    A, pi, le = (mx.nd.array(x) for x in (np.ones((2, 2)), np.ones(2), np.zeros((1, 3, 2))))
    with pytest.raises(ValueError, match="lengths"):
        unroll_forward_dense(A, pi, le, [4])
    with pytest.raises(TypeError, match="dtype"):
        unroll_forward_dense(A, pi, le.astype(np.float64), [3])
    le[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"log_emission\[0, 1, 0\]"):
        unroll_forward_dense(A, pi, le, [3])
    unroll_forward_dense(A, pi, le, [1])                            # NaN past the length: fine


@pytest.mark.skipif(mx.context.num_gpus() == 0,
                    reason="no GPU visible to this MXNet build (mx.context.num_gpus() == 0)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_matches_cpu(dtype):
    rng = np.random.default_rng(9)
    A, pi, le, lengths, head = random_problem(rng, 6, 30, [30, 11, 0, 29], p_neg_inf=0.1,
                                              p_missing=0.1)
    le[1, :5] *= 5e3
    cpu = run_ndarray(A, pi, le, lengths, head, dtype=dtype)
    gpu = run_ndarray(A, pi, le, lengths, head, dtype=dtype, ctx=mx.gpu(0))
    for g, c in zip(gpu, cpu):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)
