"""The native hmm_forward_dense (hmmop/libhmmop_op.so) against independent oracles: brute-force
enumeration of the state paths in float64 NumPy (ll, the posteriors that are the log-emission
gradient), float64 finite differences (dA, dpi); and against the CustomOp of hmmop/ops/dense.py bit
for bit, in bound graphs, under every gradient request, for any thread count, in its errors."""
import functools
import itertools
import time

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.ops import checks, native

LENGTH_DTYPES = [np.int32, np.int64, np.float32, np.float64]
NAMES = ("A", "pi", "log_emission", "lengths")


@pytest.fixture(scope="module", autouse=True)
def loaded():
    assert native.load(), native.unavailable_reason()
    assert native.OP_NAMES == ("hmm_forward", "hmm_forward_dense") and native.OP_NAME == "hmm_forward"
    assert native._registered() == set(native.OP_NAMES)


# ---- The oracles: float64 NumPy, nothing shared with the operator ----

def logsumexp(w):
    m = np.max(w)
    return m if m == -np.inf else m + np.log(np.sum(np.exp(w - m)))


def brute_force(A, pi, le, length):
    """(ll, gamma (length, N), expected transitions (N, N)) of one sequence (le: its (T, N) rows)
    by enumerating every state path: log weight log pi[s0] + sum log A[s_{t-1}, s_t] + sum le[t, s_t]."""
    n = A.shape[0]
    gamma, trans = np.zeros((length, n)), np.zeros((n, n))
    if length == 0:
        return 0.0, gamma, trans
    paths = np.array(list(itertools.product(range(n), repeat=length)))          # (P, length)
    with np.errstate(divide="ignore"):
        logA, logpi = np.log(A), np.log(pi)
    w = (logpi[paths[:, 0]] + le[np.arange(length)[None, :], paths].sum(axis=1)
         + logA[paths[:, :-1], paths[:, 1:]].sum(axis=1))
    ll = logsumexp(w)
    if ll == -np.inf:
        return ll, gamma, trans
    post = np.exp(w - ll)
    for t in range(length):
        np.add.at(gamma[t], paths[:, t], post)
        if t:
            np.add.at(trans, (paths[:, t - 1], paths[:, t]), post)
    return ll, gamma, trans


def oracle(A, pi, le, lengths, head):
    """ll (batch,) and d(sum_b head[b] ll[b]) / dlog_emission (batch, T, N) by brute force."""
    ll, dle = np.zeros(len(lengths)), np.zeros(le.shape)
    for b, L in enumerate(lengths):
        ll[b], gamma, _ = brute_force(A, pi, le[b], int(L))
        if np.isfinite(ll[b]):
            dle[b, :int(L)] = head[b] * gamma
    return ll, dle


def finite_differences(A, pi, le, lengths, head, h=1e-6):
    """d(sum_b head[b] ll[b]) / dA and / dpi by central differences of the brute force (every
    sequence possible)."""
    def f(A, pi):
        return sum(head[b] * brute_force(A, pi, le[b], int(L))[0] for b, L in enumerate(lengths))
    grads = []
    for x, other in ((A, pi), (pi, A)):
        g = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            up, down = x.copy(), x.copy()
            up[idx] += h
            down[idx] -= h
            args = ((up, other), (down, other)) if x is A else ((other, up), (other, down))
            g[idx] = (f(*args[0]) - f(*args[1])) / (2 * h)
        grads.append(g)
    return grads


def random_case(rng, n, lengths, T, scale=2.0):
    """A (n, n), pi (n,) positive (unnormalised: the op uses them as given), log_emission
    (batch, T, n) with NaN in the padding (never read: it must not leak anywhere)."""
    A = rng.random((n, n)) + 0.05
    A /= A.sum(axis=1, keepdims=True)
    pi = rng.random(n) + 0.05
    le = rng.normal(size=(len(lengths), T, n)) * scale
    for b, L in enumerate(lengths):
        le[b, L:] = np.nan
    return A, pi / pi.sum(), le


# ---- Running the op ----

def raw(A, pi, le, lengths):
    return mx.nd.hmm_forward_dense(A, pi, le, lengths)


guarded = functools.partial(native.forward_dense, mx.nd)


def custom(A, pi, le, lengths):
    return mx.nd.Custom(A, pi, le, lengths, op_type="hmm_forward_dense")


def require_custom_op():
    """The CustomOp lives in hmmop/ops/dense.py, written alongside; skip where it is not there yet."""
    try:
        import hmmop.ops.dense  # noqa: F401  (registers op_type hmm_forward_dense)
    except ImportError as e:
        pytest.skip(f"hmmop.ops.dense (the CustomOp hmm_forward_dense) is not importable: {e}")


def run(fn, A, pi, le, lengths, head, dtype, grad_req="write", passes=1, lengths_dtype=np.int32):
    """(ll, dA, dpi, dlog_emission) as NumPy after `passes` forward+backward passes."""
    a, p, e = (mx.nd.array(x, dtype=dtype) for x in (A, pi, le))
    for x in (a, p, e):
        x.attach_grad(grad_req=grad_req)
    lens = mx.nd.array(lengths, dtype=lengths_dtype)
    for _ in range(passes):
        with mx.autograd.record():
            ll = fn(a, p, e, lens)
        ll.backward(mx.nd.array(head, dtype=dtype))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in (a, p, e)]


def assert_identical(got, expected):
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


# ---- Against the oracles ----

@pytest.mark.parametrize("lengths_dtype", LENGTH_DTYPES)
def test_matches_brute_force_and_finite_differences(lengths_dtype):
    rng = np.random.default_rng(1)
    lengths, T = [5, 0, 3, 1, 4], 5
    A, pi, le = random_case(rng, 3, lengths, T)
    le[0, 2, 1] = le[2, 0, 0] = -np.inf                    # impossible emissions, not sequences
    head = rng.normal(size=len(lengths))
    ll, dA, dpi, dle = run(guarded, A, pi, le, lengths, head, np.float64, lengths_dtype=lengths_dtype)
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12, atol=1e-12)
    assert ll[1] == 0.0                                    # the empty sequence
    np.testing.assert_allclose(dle, want_dle, rtol=1e-10, atol=1e-12)
    assert np.all(dle[1] == 0) and np.all(dle[2, 3:] == 0) and not np.isnan(dle).any()
    want_dA, want_dpi = finite_differences(A, pi, le, lengths, head)
    np.testing.assert_allclose(dA, want_dA, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dpi, want_dpi, rtol=1e-6, atol=1e-8)


def test_impossible_sequence_and_zero_head():
    """ll = -inf for a sequence with no possible path; it and a sequence with head 0 get zero gradients."""
    rng = np.random.default_rng(2)
    lengths = [4, 4, 4]
    A, pi, le = random_case(rng, 3, lengths, 4)
    le[0, 2, :] = -np.inf
    head = np.array([1.0, 0.0, 0.5])
    ll, dA, dpi, dle = run(guarded, A, pi, le, lengths, head, np.float64)
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    assert ll[0] == -np.inf
    np.testing.assert_allclose(ll[1:], want_ll[1:], rtol=1e-12)
    np.testing.assert_allclose(dle, want_dle, rtol=1e-10, atol=1e-12)
    assert np.all(dle[:2] == 0) and np.isfinite(dA).all() and np.isfinite(dpi).all()
    only = run(guarded, A, pi, le[2:], lengths[2:], head[2:], np.float64)
    np.testing.assert_allclose(dA, only[1], rtol=1e-12)             # the others add nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_log_emission_scales(dtype):
    """Scores of +-1e4 (and a common offset of 1e4): finite, and as the brute force says.  dA, dpi
    from the paths' expected transition and initial counts (dll/dA[i, j] = E[i -> j] / A[i, j])."""
    rng = np.random.default_rng(3)
    lengths, T = [5, 4, 5], 5
    A, pi, le = random_case(rng, 3, lengths, T, scale=1e4)
    le[1] += 1e4
    le = le.astype(dtype).astype(np.float64)          # the values the op sees
    head = np.array([1.0, -0.5, 2.0])
    ll, dA, dpi, dle = run(guarded, A, pi, le, lengths, head, dtype)
    assert np.isfinite(ll).all() and np.isfinite(dA).all() and np.isfinite(dpi).all()
    want_ll, want_dle = oracle(A, pi, le, lengths, head)
    want_dA, want_dpi = np.zeros_like(A), np.zeros_like(pi)
    for b, L in enumerate(lengths):
        _, gamma, trans = brute_force(A, pi, le[b], L)
        want_dA += head[b] * trans / A
        want_dpi += head[b] * gamma[0] / pi
    # the oracle's own error: exp(w - ll) with w, ll ~ 5e4 is good to ~1e-11 absolute
    tol = 1e-9 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12 if dtype == np.float64 else 1e-5)
    np.testing.assert_allclose(dle, want_dle, rtol=tol, atol=tol)
    np.testing.assert_allclose(dA, want_dA, rtol=tol, atol=tol * np.abs(want_dA).max())
    np.testing.assert_allclose(dpi, want_dpi, rtol=tol, atol=tol * np.abs(want_dpi).max())


def test_float32_within_1e5_of_float64():
    rng = np.random.default_rng(4)
    lengths = [40, 13, 0, 27, 40, 1]
    A, pi, le = random_case(rng, 5, lengths, 40, scale=3.0)
    head = rng.normal(size=len(lengths))
    f64 = run(guarded, A, pi, le, lengths, head, np.float64)
    f32 = run(guarded, A, pi, le.astype(np.float32), lengths, head, np.float32)
    assert [x.dtype for x in f32] == [np.float32] * 4
    for got, want in zip(f32, f64):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ---- Bit for bit: the CustomOp, the thread count ----

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths_dtype", LENGTH_DTYPES)
@pytest.mark.parametrize("n,lengths", [(3, [10, 3, 0, 7, 25]), (16, [200, 1, 57, 0, 120] * 8)])
def test_bit_identical_to_custom_op(dtype, lengths_dtype, n, lengths):
    require_custom_op()
    rng = np.random.default_rng(n + len(lengths))
    T = max(lengths) + 3
    A, pi, le = random_case(rng, n, lengths, T)
    le = np.nan_to_num(le)              # padding: whatever the CustomOp does with it, not compared here
    head = rng.normal(size=len(lengths))
    expected = run(custom, A, pi, le, lengths, head, dtype, lengths_dtype=lengths_dtype)
    assert_identical(run(raw, A, pi, le, lengths, head, dtype, lengths_dtype=lengths_dtype), expected)
    assert_identical(run(guarded, A, pi, le, lengths, head, dtype, lengths_dtype=lengths_dtype), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_result_for_any_thread_count(dtype):
    rng = np.random.default_rng(5)
    lengths = list(rng.integers(0, 80, 70))
    A, pi, le = random_case(rng, 8, lengths, 80)
    head = rng.normal(size=70)
    results = []
    try:
        for threads in (1, 2, 3, 7):
            hmmop.set_num_threads(threads)
            assert native.num_threads() == threads
            results.append(run(raw, A, pi, le, lengths, head, dtype))
    finally:
        hmmop.set_num_threads(None)
    for r in results[1:]:
        assert_identical(r, results[0])


# ---- Gradient requests: lib_api always overwrites; forward_dense's guards make that right ----

def add_case():
    rng = np.random.default_rng(6)
    lengths = [6, 2, 0, 5]
    A, pi, le = random_case(rng, 3, lengths, 6)
    return A, pi, le, lengths, rng.normal(size=len(lengths))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_requests_accumulate_through_forward_dense(dtype):
    A, pi, le, lengths, head = add_case()
    once = run(guarded, A, pi, le, lengths, head, dtype)
    thrice = run(guarded, A, pi, le, lengths, head, dtype, grad_req="add", passes=3)
    assert_identical(thrice[0:1], once[0:1])
    for got, g in zip(thrice[1:], once[1:]):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, (g + g) + g)
    # the trap forward_dense avoids: fed straight to the op, the third pass overwrote the others
    trapped = run(raw, A, pi, le, lengths, head, dtype, grad_req="add", passes=3)
    np.testing.assert_array_equal(trapped[1], once[1])


# ---- Symbols: inference, bound graphs ----

def dense_symbol(fn=mx.sym.hmm_forward_dense):
    return fn(*(mx.sym.var(name) for name in NAMES))


def test_infer_shape_and_type():
    s = dense_symbol()
    args, out, _ = s.infer_shape(A=(3, 3), pi=(3,), log_emission=(5, 7, 3), lengths=(5,))
    assert args == [(3, 3), (3,), (5, 7, 3), (5,)] and out == [(5,)]
    # 0: an unknown dimension, filled in from what is known, never an error
    args, out, _ = s.infer_shape_partial(A=(0, 3), pi=(0,), log_emission=(0, 7, 0), lengths=(6,))
    assert args == [(3, 3), (3,), (6, 7, 3), (6,)] and out == [(6,)]
    args, out, _ = s.infer_shape_partial(A=(0, 0), pi=(0,), log_emission=(4, 0, 2), lengths=(0,))
    assert args == [(2, 2), (2,), (4, 0, 2), (4,)] and out == [(4,)]
    args, out, _ = s.infer_type(A="float64")
    assert args == [np.float64, np.float64, np.float64, np.int64] and out == [np.float64]   # as the CustomOp
    args, out, _ = s.infer_type(log_emission="float32", lengths="int64")
    assert args == [np.float32, np.float32, np.float32, np.int64] and out == [np.float32]
    args, out, _ = s.infer_type(pi="float64", lengths="float32")
    assert args == [np.float64, np.float64, np.float64, np.float32] and out == [np.float64]


def bind(sym, A, pi, le, lengths, dtype, grad_req):
    ex = sym.simple_bind(mx.cpu(), A=A.shape, pi=pi.shape, log_emission=le.shape, lengths=(len(lengths),),
                         type_dict={"A": dtype, "pi": dtype, "log_emission": dtype, "lengths": np.int32},
                         grad_req={"A": grad_req, "pi": grad_req, "log_emission": grad_req, "lengths": "null"})
    for name, x in zip(NAMES, (A, pi, le, lengths)):
        ex.arg_dict[name][:] = np.asarray(x)
    for g in ex.grad_dict.values():
        if g is not None:
            g[:] = 0
    return ex


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_symbol_equals_imperative(dtype):
    A, pi, le, lengths, head = add_case()
    expected = run(guarded, A, pi, le, lengths, head, dtype)
    sym = dense_symbol(functools.partial(native.forward_dense, mx.sym))
    ex = bind(sym, A, pi, le, lengths, dtype, "write")
    ex.forward(is_train=True)
    ex.backward(mx.nd.array(head, dtype=dtype))
    got = [ex.outputs[0].asnumpy()] + [ex.grad_dict[n].asnumpy() for n in NAMES[:3]]
    assert_identical(got, expected)
    # grad_req='add' in the bound graph: two passes accumulate
    ex = bind(sym, A, pi, le, lengths, dtype, "add")
    for _ in range(2):
        ex.forward(is_train=True)
        ex.backward(mx.nd.array(head, dtype=dtype))
    for name, g in zip(NAMES[:3], expected[1:]):
        np.testing.assert_array_equal(ex.grad_dict[name].asnumpy(), g + g)


def test_bound_graph_with_fan_out_is_right():
    """A feeding the op and 8 other ops: MXNet sums A's gradients with in-place adds, which the raw
    op would overwrite; forward_dense's guard gives the sum."""
    A, pi, le, lengths, head = add_case()
    once = run(guarded, A, pi, le, lengths, np.ones(len(lengths)), np.float64)
    a, p, e, n = (mx.sym.var(name) for name in NAMES)
    out = mx.sym.sum(native.forward_dense(mx.sym, a, p, e, n))
    for k in range(8):
        out = out + mx.sym.sum(a * (k + 1.0))
    ex = bind(out, A, pi, le, lengths, np.float64, "write")
    ex.forward(is_train=True)
    ex.backward(mx.nd.ones((1,), dtype="float64"))
    np.testing.assert_allclose(ex.grad_dict["A"].asnumpy(), once[1] + 36.0, rtol=1e-13)
    np.testing.assert_array_equal(ex.grad_dict["log_emission"].asnumpy(), once[3])


# ---- Errors: named, one message, the process usable, the error list back to empty ----

def small(n=2, batch=4, T=5):
    rng = np.random.default_rng(0)
    A, pi, le = random_case(rng, n, [T] * batch, T)
    return [mx.nd.array(x, dtype="float32") for x in (A, pi, le)]


def lengths_of(values, dtype="int32"):
    return lambda A, pi, le: (A, pi, le, mx.nd.array(values, dtype=dtype))


@pytest.mark.parametrize("make,message", [
    (lengths_of([1, 2, 0, 7]), "lengths[3] = 7 is outside [0, T] = [0, 5] (T: the steps of log_emission)"),
    (lengths_of([1, -1, 0, 2], "int64"), "lengths[1] = -1 is outside [0, T] = [0, 5]"),
    (lengths_of([9, 2, 0, 7.5], "float64"), "lengths[3] = 7.5 is not an integer"),   # integers checked first
    (lengths_of([1, 1.1, 0, 2], "float32"), "lengths[1] = 1.1 is not an integer"),   # float32 1.1, as NumPy prints it
    (lengths_of([1, np.nan, 0, 2], "float32"), "lengths[1] = nan is not an integer"),
    (lengths_of([1, 6.0, 0, 2], "float32"), "lengths[1] = 6 is outside [0, T] = [0, 5]"),
    (lengths_of([1, 2, 0, 2], "uint8"),
     "lengths has dtype uint8; expected int32, int64, float32 or float64 holding integer lengths"),
    (lengths_of([1, 2, 0]), "lengths must have shape (batch,) = (4,), one length per sequence of "
                            "log_emission, got shape (3,)"),
    (lambda A, pi, le: (A.astype("float64"), pi, le, mx.nd.array([1, 2, 3, 4])),
     "A, pi and log_emission must share one dtype, got A: float64, pi: float32, log_emission: float32"),
    (lambda A, pi, le: (A, pi, le.astype("float16"), mx.nd.array([1, 2, 3, 4])),
     "log_emission has dtype float16; A, pi and log_emission must be float32 or float64"),
    (lambda A, pi, le: (mx.nd.ones((2, 3)), pi, le, mx.nd.array([1, 2, 3, 4])),
     "A must be a square (N, N) transition matrix, got shape (2, 3)"),
    (lambda A, pi, le: (A, pi.reshape((1, 2)), le, mx.nd.array([1, 2, 3, 4])),
     "pi must have shape (N,) = (2,), got shape (1, 2)"),
    (lambda A, pi, le: (A, pi, mx.nd.ones((4, 5, 3)), mx.nd.array([1, 2, 3, 4])),
     "log_emission must have shape (batch, T, N) = (batch, T, 2) with one column per state of A, "
     "got shape (4, 5, 3)"),
    (lambda A, pi, le: (A, pi, le[:, :, 0], mx.nd.array([1, 2, 3, 4])),
     "log_emission must have shape (batch, T, N) = (batch, T, 2) with one column per state of A, "
     "got shape (4, 5)"),
])
def test_errors_name_the_input(make, message):
    A, pi, le, lengths = make(*small())
    with pytest.raises(mx.base.MXNetError) as err:
        mx.nd.hmm_forward_dense(A, pi, le, lengths).asnumpy()
    assert "hmm_forward_dense: " + message in str(err.value)
    assert str(err.value).count("hmm_forward_dense: ") == 1
    # the Python checks (hmmop.ops.checks, the wrapper's) say the same
    with pytest.raises((ValueError, TypeError)) as err:
        checks.checked_dense_inputs(A, pi, le, lengths)
    assert message in str(err.value)
    # still usable, and the library's error list empties again
    A, pi, le = small()
    good = mx.nd.array([5, 0, 3, 1], dtype="int32")
    deadline = time.monotonic() + 3.0
    while True:
        ll = mx.nd.hmm_forward_dense(A, pi, le, good).asnumpy()
        if native.error_count() == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert native.error_count() == 0
    assert ll.shape == (4,) and ll[1] == 0.0 and np.isfinite(ll).all()


def test_errors_do_not_accumulate():
    A, pi, le = small()
    bad = mx.nd.array([1, 9, 0, 2], dtype="int32")
    last = None
    for i in range(200):
        try:
            if i % 2:
                mx.nd.hmm_forward_dense(A, pi, le, bad).wait_to_read()
            else:
                mx.nd.hmm_forward_dense(A.astype("float64"), pi, le, bad)
        except mx.base.MXNetError as e:
            last = str(e)
    assert last.count("hmm_forward_dense: ") == 1 and "\t[1] " not in last     # one message, not a list
    good = mx.nd.array([5, 0, 3, 1], dtype="int32")
    deadline = time.monotonic() + 3.0
    while native.error_count() and time.monotonic() < deadline:
        mx.nd.hmm_forward_dense(A, pi, le, good).wait_to_read()
        time.sleep(0.05)
    assert native.error_count() == 0
