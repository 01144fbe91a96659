"""The CPU kernel's batch path (issue 8): blocks of sequences advanced together, float32 compute for
float32 parameters (log-likelihood sums in double), float64 for float64.

Compared against independent references: the float64 result on the same (float32-representable)
parameters, the old per-sequence double kernel kept as _kernel.forward_sequential /
_kernel.backward_sequential, hmmlearn, a NumPy float64 forward written here, and the same sequence
scored alone.  Norm-wise relative errors are max|got - want| / max|want| over a whole array.
"""
import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop import _kernel
from hmmop.ops import checks
from reference import grads_of, hmmlearn_score, params, random_model, random_padded, under_thread_counts

MISSING, PAD = -2, -1
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------- helpers

def f32(*arrays):
    """The arrays rounded to float32 (so float32 and float64 runs see the same values)."""
    return [np.asarray(a, dtype=np.float32) for a in arrays]


def f64(*arrays):
    """The arrays as float64 (exactly: float32 values stay what they are)."""
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def normwise(got, want):
    """Norm-wise relative error max|got - want| / max|want| (0 when both are all zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want))
    diff = np.max(np.abs(got - want))
    return diff if scale == 0 else diff / scale


def add_missing(rng, obs, frac):
    """obs with about frac of its symbols (not its padding) replaced by -2; a new array."""
    obs = obs.copy()
    hit = (obs >= 0) & (rng.random(obs.shape) < frac)
    obs[hit] = MISSING
    return obs


def sample_padded(rng, A, B, pi, lengths, T=None):
    """(batch, T) int64 sequences drawn from the model (inverse CDF, vectorised over rows), -1 padded.
    An entry of probability 0 is never drawn, so with structural zeros every row stays possible."""
    lengths = np.asarray(lengths)
    T = int(max(lengths.max(), 1)) if T is None else T
    batch = len(lengths)

    def draw(p):                   # one index per row of p (batch, k), with probability p[r, i]
        cum = np.cumsum(p, axis=1)
        u = rng.random(len(p)) * cum[:, -1]
        last = p.shape[1] - 1 - np.argmax(p[:, ::-1] > 0, axis=1)     # last index of nonzero probability
        return np.minimum((cum <= u[:, None]).sum(axis=1), last)

    obs = np.full((batch, T), PAD, dtype=np.int64)
    s = draw(np.broadcast_to(pi, (batch, len(pi))))
    for t in range(int(lengths.max(initial=0))):
        if t:
            s = draw(A[s])
        o = draw(B[s])
        live = t < lengths
        obs[live, t] = o[live]
    return obs


def np_forward_scales(A, B, pi, seq):
    """The scale factors c_t (per-step probabilities) of a plain NumPy float64 scaled forward
    (-2: emission 1); it stops after a c_t = 0 (impossible sequence)."""
    A, B, pi = f64(A, B, pi)
    scales = []
    alpha = None
    for t, o in enumerate(seq):
        e = np.ones(A.shape[0]) if o == MISSING else B[:, o]
        alpha = (pi if t == 0 else alpha @ A) * e
        c = alpha.sum()
        scales.append(c)
        if c == 0:
            break
        alpha /= c
    return np.array(scales)


def np_forward_ll(A, B, pi, seq):
    """log P(seq) = sum_t log c_t by np_forward_scales (-inf for an impossible sequence)."""
    with np.errstate(divide="ignore"):
        return float(np.sum(np.log(np_forward_scales(A, B, pi, seq))))


def f32_forward_hits_zero(A, B, pi, seq, rescale_every=1):
    """Whether a plain float32 forward that rescales alpha every rescale_every steps gets an
    all-zero alpha (underflow) - used to show that a float32 test case really is one."""
    A, B, pi = f32(A, B, pi)
    alpha = None
    for t, o in enumerate(seq):
        e = np.ones(A.shape[0], np.float32) if o == MISSING else B[:, o]
        alpha = (pi if t == 0 else alpha @ A) * e
        assert alpha.dtype == np.float32
        if not alpha.any():
            return True
        if (t + 1) % rescale_every == 0:
            alpha = alpha / alpha.sum()
    return False


def op_ll(A, B, pi, obs, dtype):
    """ll of hmmop.hmm_forward as a NumPy array."""
    return hmmop.hmm_forward(*(mx.nd.array(x, dtype=dtype) for x in (A, B, pi)), obs).asnumpy()


def kernel_run(forward, backward, A, B, pi, obs, head, num_threads):
    """(ll, dA, dB, dpi) from _kernel-level forward/backward functions, gradients of sum_b head[b] * ll[b]
    written (req 'write') over NaN so that an entry left unwritten shows."""
    obs32, lengths = checks.prepare_obs(np.asarray(obs), B.shape[1])
    ws = forward(A, B, pi, obs32, lengths, num_threads)
    grads = [np.full(x.shape, np.nan, dtype=A.dtype) for x in (A, B, pi)]
    backward(ws, np.asarray(head, dtype=A.dtype), *grads, 1, 1, 1, num_threads)
    return [np.array(ws.ll)] + grads


def weighted_loss_grads(A, B, pi, obs, w, dtype):
    """(ll, dA, dB, dpi) of the loss (ll * w).sum() by autograd through hmmop.hmm_forward."""
    a, b, p = params(A, B, pi, dtype)
    with mx.autograd.record():
        ll = hmmop.hmm_forward(a, b, p, obs)
        loss = (ll * mx.nd.array(w, dtype=dtype)).sum()
    loss.backward()
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in (a, b, p)]


def alone_ll(A, B, pi, row, dtype):
    """ll of one padded row scored on its own, as a 1-D obs ([-1] for the empty row)."""
    seq = row[row != PAD]
    return op_ll(A, B, pi, seq if len(seq) else np.array([PAD]), dtype)[0]


def structural_zero_model(rng, n, m):
    """A random model with exact zeros in A, B and pi, every row of A and B keeping a nonzero entry."""
    A, B, pi = random_model(rng, n, m)
    for X in (A, B):
        keep = rng.random(X.shape) > 0.3
        keep[np.arange(X.shape[0]), rng.integers(0, X.shape[1], X.shape[0])] = True
        X *= keep
        X /= X.sum(axis=1, keepdims=True)
    if n > 1:
        pi[rng.random(n) < 0.4] = 0.0
        pi[rng.integers(0, n)] = 0.5
        pi /= pi.sum()
    return A, B, pi


# ---------------------------------------------------------------- 1. float32 accuracy bars

# (n, m, lengths, missing fraction): n not a multiple of 8 or 16 too (the driver pads states).
ACCURACY_CASES = [
    (3, 4, [10_000, 2_500, 1, 0, 613], 0.0),
    (17, 6, [10_000, 4_000, 999, 17, 2], 0.05),
    (64, 12, [6_000, 3_000, 1_500, 10], 0.0),
    (128, 20, [10_000, 2_000, 333], 0.0),
]


@pytest.mark.parametrize("n,m,lengths,missing", ACCURACY_CASES, ids=[f"N{c[0]}" for c in ACCURACY_CASES])
def test_float32_accuracy_against_float64(n, m, lengths, missing):
    """float32 vs float64 on the same parameters: ll within 1e-5 relative, gradients within 1e-4 norm-wise."""
    rng = np.random.default_rng(100 + n)
    A, B, pi = f32(*random_model(rng, n, m))
    obs = add_missing(rng, random_padded(rng, m, lengths), missing)
    head = rng.uniform(0.5, 2.0, len(lengths))
    g64 = grads_of(hmmop.hmm_forward, *f64(A, B, pi), obs, head, dtype=np.float64)
    g32 = grads_of(hmmop.hmm_forward, A, B, pi, obs, head, dtype=np.float32)
    ll32, ll64 = g32[0], g64[0]
    assert ll32.dtype == np.float32 and np.isfinite(ll64).all()
    np.testing.assert_array_equal(ll64[np.array(lengths) == 0], 0.0)
    # the float64 result itself against hmmlearn, on a short row without missing steps
    b = int(np.argmin(np.where(np.array(lengths) > 0, lengths, np.inf)))
    if missing == 0:
        np.testing.assert_allclose(ll64[b], hmmlearn_score(*f64(A, B, pi), obs[b, :lengths[b]]), rtol=1e-10)
    # ll: element-wise relative error
    np.testing.assert_allclose(ll32, ll64, rtol=1e-5, atol=0)
    # gradients: norm-wise relative error max|g32 - g64| / max|g64| per array
    for name, a, w in zip(("dA", "dB", "dpi"), g32[1:], g64[1:]):
        assert a.dtype == np.float32 and np.isfinite(a).all(), name
        assert normwise(a, w) < 1e-4, (name, normwise(a, w))


def test_float32_accuracy_long_sequence():
    """One float32 sequence of T=10^5, N=8: ll within 1e-5 relative, gradients within 1e-4 norm-wise of float64."""
    rng = np.random.default_rng(101)
    A, B, pi = f32(*random_model(rng, 8, 5))
    seq = rng.integers(0, 5, 100_000)
    g64 = grads_of(hmmop.hmm_forward, *f64(A, B, pi), seq, dtype=np.float64)
    g32 = grads_of(hmmop.hmm_forward, A, B, pi, seq, dtype=np.float32)
    assert g32[0].shape == (1,) and np.isfinite(g32[0]).all()
    np.testing.assert_allclose(g32[0], g64[0], rtol=1e-5, atol=0)
    for name, a, w in zip(("dA", "dB", "dpi"), g32[1:], g64[1:]):
        assert np.isfinite(a).all() and normwise(a, w) < 1e-4, (name, normwise(a, w))


# ---------------------------------------------------------------- 2. float64 against the sequential kernel

# (batch, n, m, longest, structural zeros)
SEQUENTIAL_CASES = [
    (1, 17, 5, 257, False),
    (1, 3, 2, 1, True),
    (5, 3, 4, 60, True),
    (5, 1, 3, 40, False),
    (37, 17, 6, 150, True),
    (37, 8, 3, 120, False),
    (100, 33, 7, 100, True),
    (100, 5, 4, 200, False),
]


@pytest.mark.parametrize("batch,n,m,longest,zeros", SEQUENTIAL_CASES)
def test_float64_matches_sequential_kernel(batch, n, m, longest, zeros):
    """float64 batch path vs _kernel.forward_sequential/backward_sequential on ragged batches with missing
    steps and structural zeros: ll within 1e-13 relative, gradients within 1e-12 norm-wise."""
    rng = np.random.default_rng(200 + batch * 7 + n)
    A, B, pi = structural_zero_model(rng, n, m) if zeros else random_model(rng, n, m)
    lengths = rng.integers(0, longest + 1, batch)
    if batch >= 5:
        lengths[:4] = [0, 1, longest, 1]
        rng.shuffle(lengths)
    T = int(max(lengths.max(), 1)) + int(rng.integers(0, 9))        # sometimes wider than needed
    obs = add_missing(rng, sample_padded(rng, A, B, pi, lengths, T), 0.1)
    if batch >= 37:                 # a few all-missing rows and, with zeros, rows of random symbols
        rows = rng.integers(0, batch, 2)
        obs[rows] = np.where(obs[rows] != PAD, MISSING, PAD)
        if zeros:
            rows = rng.integers(0, batch, 5)
            obs[rows] = np.where(obs[rows] != PAD, rng.integers(0, m, obs[rows].shape), PAD)
    head = rng.normal(size=batch) * (rng.random(batch) > 0.2)
    new = kernel_run(_kernel.forward, _kernel.backward, A, B, pi, obs, head, 3)
    ref = kernel_run(_kernel.forward_sequential, _kernel.backward_sequential, A, B, pi, obs, head, 1)
    ll, want = new[0], ref[0]
    assert ll.dtype == np.float64 and ll.shape == (batch,)
    np.testing.assert_array_equal(np.isneginf(ll), np.isneginf(want))
    fin = np.isfinite(want)
    assert fin.sum() >= batch - 5
    np.testing.assert_allclose(ll[fin], want[fin], rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(ll[lengths == 0], 0.0)
    for name, g, w in zip(("dA", "dB", "dpi"), new[1:], ref[1:]):
        assert np.isfinite(g).all() and np.isfinite(w).all(), name
        assert normwise(g, w) <= 1e-12, (name, normwise(g, w))


# ---------------------------------------------------------------- 3. thread count

@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_bitwise_identical(dtype):
    """ll AND gradients bit-for-bit the same with 1, 2, 3 and 4 threads, on a batch of many different lengths."""
    rng = np.random.default_rng(300)
    n, m = 17, 5
    A, B, pi = f32(*random_model(rng, n, m))
    lengths = list(rng.permutation(61) * 5 + rng.integers(0, 5, 61))     # 61 distinct lengths, 0..304
    obs = add_missing(rng, random_padded(rng, m, lengths, T=310), 0.05)
    head = rng.normal(size=len(lengths))
    results = under_thread_counts((1, 2, 3, 4), lambda: grads_of(hmmop.hmm_forward, A, B, pi, obs, head,
                                                                 dtype=dtype))
    for r in results[1:]:
        for name, got, want in zip(("ll", "dA", "dB", "dpi"), r, results[0]):
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want, err_msg=name)


# ---------------------------------------------------------------- 4. alone or in a batch

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 17])
def test_sequence_scores_same_alone_or_in_any_batch(n, dtype):
    """Each sequence's ll inside batches (shuffled, other companions, wider padding) equals its ll alone, bit for
    bit."""
    rng = np.random.default_rng(400 + n)
    m = 4
    A, B, pi = f32(*random_model(rng, n, m))
    lengths = rng.integers(0, 300, 100)
    lengths[:6] = [0, 1, 2, 299, 0, 1]
    pool = add_missing(rng, random_padded(rng, m, list(lengths), T=300), 0.05)
    alone = np.array([alone_ll(A, B, pi, row, dtype) for row in pool])
    # alone but padded to the pool's width, as a (1, T) batch
    for k in (0, 1, 3, 50):
        assert op_ll(A, B, pi, pool[k:k + 1], dtype)[0] == alone[k]

    def check(rows, width=300):
        obs = np.full((len(rows), width), PAD, dtype=np.int64)
        obs[:, :300] = pool[rows]
        np.testing.assert_array_equal(op_ll(A, B, pi, obs, dtype), alone[rows], err_msg=f"rows {rows}")

    check(np.arange(100))                                   # the whole pool
    check(rng.permutation(100), width=337)                  # shuffled, wider padding
    for size in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 37, 64):   # other companions, in other block positions
        check(rng.choice(100, size, replace=False))
    check(np.array([3, 0, 1, 4, 5, 2, 3]))                  # the longest among empty and length-1 rows
    check(np.array([7] * 20))                               # one sequence in every lane of a block


# ---------------------------------------------------------------- 5. impossible rows and zero gll

def impossible_model(rng):
    """N=6, M=4: state 5 is unreachable and alone emits symbol 3 (so 3 is impossible anywhere); state 0
    is only ever a start state and alone emits symbol 2 (so 2 is impossible after t=0)."""
    A, B, pi = random_model(rng, 6, 4)
    pi[5] = 0.0
    A[:, 0] = 0.0
    A[:5, 5] = 0.0
    B[:5, 3] = 0.0
    B[1:, 2] = 0.0
    B[5] = [0.0, 0.0, 0.0, 1.0]
    A /= A.sum(axis=1, keepdims=True)
    B /= B.sum(axis=1, keepdims=True)
    pi /= pi.sum()
    return f32(A, B, pi)


def impossible_batch(rng, A, B, pi):
    """(obs (40, T), bad rows): rows drawn from the model, 8 of them made impossible in different places."""
    lengths = rng.integers(2, 120, 40)
    lengths[:3] = [1, 0, 119]
    obs = add_missing(rng, sample_padded(rng, *f64(A, B, pi), lengths, T=125), 0.05)
    bad = np.array([2, 5, 11, 12, 19, 26, 33, 39])
    for j, b in enumerate(bad):
        L = lengths[b]
        if j % 4 == 0:
            obs[b, 0] = 3                       # impossible from the first step
        elif j % 4 == 1:
            obs[b, L // 2] = 3                  # in the middle
        elif j % 4 == 2:
            obs[b, L - 1] = 3                   # at the last step
        else:
            obs[b, max(1, L - 3)] = 2           # a start-only symbol later on
    return obs, bad


@pytest.mark.parametrize("dtype", DTYPES)
def test_impossible_rows_inside_a_block(dtype):
    """Impossible rows give -inf and zero gradient; the other rows' ll equal their ll alone, gradients equal the
    batch without them."""
    rng = np.random.default_rng(500)
    A, B, pi = impossible_model(rng)
    obs, bad = impossible_batch(rng, A, B, pi)
    good = np.setdiff1d(np.arange(len(obs)), bad)
    for b in bad:
        assert np_forward_ll(A, B, pi, obs[b][obs[b] != PAD]) == -np.inf
    head = rng.uniform(0.5, 2.0, len(obs))           # the impossible rows get a nonzero weight too
    ll, dA, dB, dpi = grads_of(hmmop.hmm_forward, A, B, pi, obs, head, dtype=dtype)
    assert np.all(ll[bad] == -np.inf)
    assert np.isfinite(ll[good]).all()
    np.testing.assert_array_equal(ll[good], [alone_ll(A, B, pi, obs[b], dtype) for b in good])
    np.testing.assert_allclose(ll[good], [np_forward_ll(A, B, pi, obs[b][obs[b] != PAD]) for b in good],
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    _, gA, gB, gpi = grads_of(hmmop.hmm_forward, A, B, pi, obs[good], head[good], dtype=dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, g, w in zip(("dA", "dB", "dpi"), (dA, dB, dpi), (gA, gB, gpi)):
        assert np.isfinite(g).all(), name
        assert normwise(g, w) <= tol, (name, normwise(g, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weight_rows_contribute_no_gradient(dtype):
    """(ll * w).sum() with w = 0 on some finite rows (and on an impossible row): gradients equal the batch without
    them."""
    rng = np.random.default_rng(501)
    A, B, pi = impossible_model(rng)
    obs, bad = impossible_batch(rng, A, B, pi)
    w = rng.uniform(0.5, 2.0, len(obs))
    zero = np.array([0, 3, 4, 9, 10, 20, 21, 22, 30, 38])       # finite rows, some next to each other
    assert not np.isin(zero, bad).any()
    w[zero] = 0.0
    w[bad[0]] = 0.0                                              # an impossible row with weight 0
    ll, dA, dB, dpi = weighted_loss_grads(A, B, pi, obs, w, dtype)
    assert np.isfinite(ll[zero]).all()
    keep = np.setdiff1d(np.arange(len(obs)), zero)
    _, gA, gB, gpi = weighted_loss_grads(A, B, pi, obs[keep], w[keep], dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, g, want in zip(("dA", "dB", "dpi"), (dA, dB, dpi), (gA, gB, gpi)):
        assert np.isfinite(g).all(), name
        assert normwise(g, want) <= tol, (name, normwise(g, want))
    # and all weights 0: exactly zero gradients
    _, zA, zB, zpi = weighted_loss_grads(A, B, pi, obs, np.zeros(len(obs)), dtype)
    for g in (zA, zB, zpi):
        np.testing.assert_array_equal(g, 0.0)


# ---------------------------------------------------------------- 6. float32 underflow

def underflow_case(kind):
    """(A, B, pi) float32 and obs (4, T): rows 0-2 meet symbol 2, whose emission is tiny in every state.

    rare_runs:   B[:, 2] = 1e-25, runs of up to 40 symbols 2: each step is fine in float32 with
                 rescaling every step, two steps without rescaling underflow (1e-50).
    rare_1e-30:  the same with B[:, 2] = 1e-30 (near 2^-100, where float32 keeps few steps in hand)
    subnormal:   B[:, 2] = 2^-149 (float32's smallest subnormal) and every pred_j < 1/2: pred_j * e_j
                 rounds to 0 in float32 at every step that sees a 2; ~1.4e-45 in double.
    tiny_A:      A = 1e-20 * a stochastic matrix (the op takes parameters as given), B[:, 2] = 1e-30:
                 pred_j * e_j ~ 1e-51, 0 in float32.
    Row 3 has only ordinary symbols."""
    rng = np.random.default_rng({"rare_runs": 600, "subnormal": 601, "tiny_A": 602, "rare_1e-30": 603}[kind])
    n, m = 8, 3
    A, B, pi = random_model(rng, n, m)
    B[:, :2] /= B[:, :2].sum(axis=1, keepdims=True)
    B[:, 2] = {"rare_runs": 1e-25, "rare_1e-30": 1e-30, "subnormal": 2.0 ** -149, "tiny_A": 1e-30}[kind]
    if kind == "subnormal":
        assert A.max() < 0.5 and pi.max() < 0.5
    if kind == "tiny_A":
        A *= 1e-20
    A, B, pi = f32(A, B, pi)
    rows = []
    for r in range(3):
        seq = []
        while len(seq) < 600 + 300 * r:
            seq += list(rng.integers(0, 2, rng.integers(1, 30)))
            seq += [2] * int(rng.integers(1, 40) if r != 1 else 1)
        rows.append(seq)
    rows.append(list(rng.integers(0, 2, 500)))
    T = max(map(len, rows))
    obs = np.full((4, T), PAD, dtype=np.int64)
    for b, seq in enumerate(rows):
        obs[b, :len(seq)] = seq
    obs[1, 5] = MISSING
    return A, B, pi, obs


UNDERFLOW_KINDS = ["rare_runs", "rare_1e-30", "subnormal", "tiny_A"]


@pytest.mark.parametrize("kind", UNDERFLOW_KINDS)
def test_float32_tiny_probabilities_do_not_underflow(kind):
    """float32 model whose steps underflow float32 (but not double) still gives a finite ll within 1e-5 of float64."""
    A, B, pi, obs = underflow_case(kind)
    seqs = [row[row != PAD] for row in obs]
    # the case is what it claims: finite in double, underflowing in a plain float32 forward
    want = np.array([np_forward_ll(A, B, pi, s) for s in seqs])
    assert np.isfinite(want).all()
    if kind.startswith("rare"):
        assert not any(f32_forward_hits_zero(A, B, pi, s, 1) for s in seqs)
        assert all(f32_forward_hits_zero(A, B, pi, seqs[r], 2) for r in (0, 2))   # row 1: isolated 2s
    else:
        assert all(f32_forward_hits_zero(A, B, pi, s, 1) for s in seqs[:3])
    assert not f32_forward_hits_zero(A, B, pi, seqs[3], 1)
    ll64 = op_ll(A, B, pi, obs, np.float64)
    np.testing.assert_allclose(ll64, want, rtol=1e-12)
    ll32 = op_ll(A, B, pi, obs, np.float32)
    assert np.isfinite(ll32).all(), ll32
    np.testing.assert_allclose(ll32, ll64, rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", UNDERFLOW_KINDS)
def test_float32_tiny_probabilities_gradients(kind):
    """The same float32 cases: gradients finite and within 1e-4 norm-wise of float64 (where float32 can hold them)."""
    A, B, pi, obs = underflow_case(kind)
    head = np.array([1.0, 0.5, 2.0, 1.0])
    g64 = grads_of(hmmop.hmm_forward, *f64(A, B, pi), obs, head, dtype=np.float64)
    g32 = grads_of(hmmop.hmm_forward, A, B, pi, obs, head, dtype=np.float32)
    pairs = list(zip(("dA", "dB", "dpi"), g32[1:], g64[1:]))
    if kind == "subnormal":
        # d ll / d B[:, 2] ~ 1/2^-149 ~ 1e44 is beyond float32's range: compare B's other columns only
        pairs[1] = ("dB[:, :2]", g32[2][:, :2], g64[2][:, :2])
    for name, g, w in pairs:
        assert np.isfinite(g).all(), name
        assert normwise(g, w) < 1e-4, (name, normwise(g, w))


def test_float32_huge_probabilities_do_not_overflow():
    """Unnormalised float32 parameters whose step probability passes float32's maximum (at the first, a middle
    or only the last step) still give a finite ll within 1e-5 of float64, and finite gradients within 1e-4."""
    rng = np.random.default_rng(604)
    A, B, pi = random_model(rng, 4, 2)
    # a step probability is ~1e25 for symbol 0, ~1e40 (> float32's 3.4e38) for symbol 1
    A, B, pi = f32(A * 1e20, B * [1e5, 1e20], pi * 1e20)
    obs = np.array([[0, 0, 0, 1], [1, -1, -1, -1], [0, 1, 0, 0], [0, 0, -1, -1]])
    seqs = [row[row != PAD] for row in obs]
    want = np.array([np_forward_ll(A, B, pi, s) for s in seqs])
    assert np.isfinite(want).all()
    big = np.finfo(np.float32).max
    over = [np_forward_scales(A, B, pi, s) > big for s in seqs]      # steps beyond float32 (not double)
    assert [list(o) for o in over] == [[False, False, False, True], [True], [False, True, False, False],
                                       [False, False]]
    head = np.array([1.0, 2.0, 0.5, 1.0])
    g64 = grads_of(hmmop.hmm_forward, *f64(A, B, pi), obs, head, dtype=np.float64)
    np.testing.assert_allclose(g64[0], want, rtol=1e-12)
    g32 = grads_of(hmmop.hmm_forward, A, B, pi, obs, head, dtype=np.float32)
    assert np.isfinite(g32[0]).all(), g32[0]
    np.testing.assert_allclose(g32[0], g64[0], rtol=1e-5, atol=0)
    for name, g, w in zip(("dA", "dB", "dpi"), g32[1:], g64[1:]):
        assert np.isfinite(g).all(), name
        assert normwise(g, w) < 1e-4, (name, normwise(g, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_parameters_give_nan_without_error(dtype):
    """A NaN parameter gives NaN for the rows that use it (no exception), the other rows their value, and a
    backward runs."""
    A, B, pi = f32(*random_model(np.random.default_rng(605), 3, 2))
    A[1, 2] = np.nan
    obs = [[0, 1, 1, 0], [1, -1, -1, -1], [-1, -1, -1, -1]]
    ll, dA, dB, dpi = grads_of(hmmop.hmm_forward, A, B, pi, obs, dtype=dtype)
    assert np.isnan(ll[0])
    pi64, B64 = f64(pi, B)
    np.testing.assert_allclose(ll[1], np.log(pi64 @ B64[:, 1]), rtol=1e-6)
    assert ll[2] == 0.0
    assert np.isnan(dA).any()


# ---------------------------------------------------------------- 7. padding and req

@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_req_add_accumulates(dtype):
    """grad_req='add' adds each backward to what the gradient holds; 'write' keeps only the last."""
    rng = np.random.default_rng(700)
    A, B, pi = f32(*random_model(rng, 17, 5))
    obs1 = random_padded(rng, 5, [40, 0, 17, 1, 33])
    obs2 = random_padded(rng, 5, [25])
    g1 = grads_of(hmmop.hmm_forward, A, B, pi, obs1, dtype=dtype)[1:]
    g2 = grads_of(hmmop.hmm_forward, A, B, pi, obs2, dtype=dtype)[1:]
    start = [rng.normal(size=x.shape).astype(dtype) for x in (A, B, pi)]
    a, b, p = params(A, B, pi, dtype, grad_req="add")
    p.attach_grad(grad_req="write")
    for x, s in zip((a, b), start):
        x.grad[:] = s
    for obs in (obs1, obs2):
        with mx.autograd.record():
            ll = hmmop.hmm_forward(a, b, p, obs)
        ll.backward()
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for x, s, u, v in zip((a, b), start, g1, g2):
        assert x.grad.dtype == dtype
        np.testing.assert_allclose(x.grad.asnumpy(), s.astype(np.float64) + u + v, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(p.grad.asnumpy(), g2[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_backward_honours_req_codes(dtype):
    """_kernel.backward: req 0 leaves a gradient untouched, 1/2 overwrite, 3 adds (checked against req 1)."""
    rng = np.random.default_rng(701)
    A, B, pi = f32(*random_model(rng, 9, 4))
    A, B, pi = (x.astype(dtype) for x in (A, B, pi))
    obs32, lengths = checks.prepare_obs(random_padded(rng, 4, [30, 0, 12, 1, 29, 30, 7]), 4)
    gll = rng.normal(size=len(lengths)).astype(dtype)
    ws = _kernel.forward(A, B, pi, obs32, lengths, 2)
    written = [np.full(x.shape, np.nan, dtype=dtype) for x in (A, B, pi)]
    _kernel.backward(ws, gll, *written, 1, 1, 1, 2)
    assert all(np.isfinite(g).all() for g in written)
    sentinel = [np.full(x.shape, 7.0, dtype=dtype) for x in (A, B, pi)]
    for codes in [(0, 3, 2), (3, 0, 1), (2, 1, 0), (0, 0, 0)]:
        out = [s.copy() for s in sentinel]
        _kernel.backward(ws, gll, *out, *codes, 2)
        for code, got, w, s in zip(codes, out, written, sentinel):
            if code == 0:
                np.testing.assert_array_equal(got, s)
            elif code == 3:
                np.testing.assert_allclose(got, s + w, rtol=1e-6 if dtype == np.float32 else 1e-14)
            else:
                np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_1d_obs_gives_shape_1(dtype):
    """1-D obs is a batch of one: ll shape (1,), the same number as the row in a 2-D batch."""
    rng = np.random.default_rng(702)
    A, B, pi = f32(*random_model(rng, 17, 5))
    seq = rng.integers(0, 5, 77)
    ll = op_ll(A, B, pi, seq, dtype)
    assert ll.shape == (1,) and ll.dtype == dtype
    batch = random_padded(rng, 5, [5, 77, 0, 3], T=90)
    batch[1, :77] = seq
    assert op_ll(A, B, pi, batch, dtype)[1] == ll[0]
    np.testing.assert_allclose(ll[0], hmmlearn_score(*f64(A, B, pi), seq),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    g = grads_of(hmmop.hmm_forward, A, B, pi, seq, dtype=dtype)
    assert g[0].shape == (1,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_padding_rows(dtype):
    """An all-padding row scores exactly 0 and adds no gradient; a batch of only padding rows gives zero gradients."""
    rng = np.random.default_rng(703)
    A, B, pi = f32(*random_model(rng, 17, 5))
    lengths = [0, 12, 0, 0, 40, 1, 0]
    obs = random_padded(rng, 5, lengths, T=45)
    head = rng.uniform(0.5, 2.0, len(lengths))
    ll, dA, dB, dpi = grads_of(hmmop.hmm_forward, A, B, pi, obs, head, dtype=dtype)
    empty = np.array(lengths) == 0
    np.testing.assert_array_equal(ll[empty], 0.0)
    _, gA, gB, gpi = grads_of(hmmop.hmm_forward, A, B, pi, obs[~empty], head[~empty], dtype=dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for g, w in zip((dA, dB, dpi), (gA, gB, gpi)):
        assert normwise(g, w) <= tol
    # only padding: ll all 0, and the written gradients are exactly 0 (over a nonzero start)
    pad = np.full((5, 8), PAD)
    a, b, p = params(A, B, pi, dtype)
    for x in (a, b, p):
        x.grad[:] = 3.0
    with mx.autograd.record():
        ll = hmmop.hmm_forward(a, b, p, pad)
    ll.backward(mx.nd.array(head[:5], dtype=dtype))
    np.testing.assert_array_equal(ll.asnumpy(), 0.0)
    for x in (a, b, p):
        np.testing.assert_array_equal(x.grad.asnumpy(), 0.0)
