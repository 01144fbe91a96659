"""The native hmm_forward (hmmop/libhmmop_op.so, MXNet's extension library API)
against the CustomOp: bit for bit, in shape and type inference, in its errors,
and in the traps of lib_api (gradient requests, error messages)."""
import functools
import os
import subprocess
import sys
import textwrap
import timeit

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import hmmop
from hmmop.ops import native
from reference import params, random_model, random_padded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def loaded():
    assert native.load(), native.unavailable_reason()


def custom(A, B, pi, obs):
    return mx.nd.Custom(A, B, pi, obs, op_type="hmm_forward")


def raw(A, B, pi, obs):
    return mx.nd.hmm_forward(A, B, pi, obs)


wrapped = functools.partial(hmmop.hmm_forward, backend="native")


def run(fn, A, B, pi, obs, head, dtype, grad_req="write", passes=1):
    """(ll, dA, dB, dpi) as NumPy after `passes` forward+backward passes."""
    a, b, p = params(A, B, pi, dtype, grad_req=grad_req)
    obs = mx.nd.array(obs, dtype=obs.dtype) if isinstance(obs, np.ndarray) else obs
    for _ in range(passes):
        with mx.autograd.record():
            ll = fn(a, b, p, obs)
        ll.backward(mx.nd.array(head, dtype=dtype))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in (a, b, p)]


def assert_identical(got, expected):
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def ragged(rng, m, lengths, T, missing=0.2):
    obs = random_padded(rng, m, lengths, T)
    holes = (rng.random(obs.shape) < missing) & (obs >= 0)
    obs[holes] = -2
    return obs


# ---- Bit for bit against the CustomOp (the Cython build of the same kernel) ----

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("obs_dtype", [np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("n,m,lengths", [(4, 3, [30]), (3, 5, [10, 3, 0, 7, 25]),
                                         (16, 9, [200, 1, 57, 0, 120] * 8)])
def test_bit_identical_to_custom_op(dtype, obs_dtype, n, m, lengths):
    rng = np.random.default_rng(n * 100 + len(lengths))
    A, B, pi = random_model(rng, n, m)
    obs = ragged(rng, m, lengths, max(lengths) + 3).astype(obs_dtype)
    head = rng.normal(size=len(lengths))
    expected = run(custom, A, B, pi, obs, head, dtype)
    assert_identical(run(raw, A, B, pi, obs, head, dtype), expected)
    assert_identical(run(wrapped, A, B, pi, obs, head, dtype), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_dimensional_obs_impossible_and_nan(dtype):
    A, B, pi = random_model(np.random.default_rng(1), 3, 2)
    B[:, 1] = [0.0, 0.0, 0.0]                          # symbol 1 impossible
    obs = np.array([[0, 1, 0], [0, 0, -1]], dtype=np.int32)
    head = np.ones(2)
    got = run(raw, A, B, pi, obs, head, dtype)
    assert_identical(got, run(custom, A, B, pi, obs, head, dtype))
    assert got[0][0] == -np.inf and np.isfinite(got[0][1])
    one = raw(*params(A, B, pi, dtype), mx.nd.array([0, 0, 0], dtype="int64"))
    assert one.shape == (1,) and one.dtype == dtype
    nan_pi = pi.copy()
    nan_pi[0] = np.nan
    assert np.isnan(raw(*params(A, B, nan_pi, dtype), mx.nd.array([0, 0])).asnumpy()).all()


def test_same_result_for_any_thread_count(monkeypatch):
    rng = np.random.default_rng(5)
    A, B, pi = random_model(rng, 8, 4)
    obs = ragged(rng, 4, list(rng.integers(0, 80, 70)), 80)
    head = rng.normal(size=70)
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        assert native.num_threads() == int(threads)
        results.append(run(raw, A, B, pi, obs, head, np.float64))
    for r in results[1:]:
        assert_identical(r, results[0])


def test_set_num_threads_reaches_the_native_op(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default = native.num_threads()
    try:
        hmmop.set_num_threads(3)
        assert native.num_threads() == hmmop.get_num_threads() == 3
    finally:
        hmmop.set_num_threads(None)
    assert native.num_threads() == hmmop.get_num_threads() == default


def test_default_threads_match_hmmop_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import hmmop; from hmmop.ops import native; print(native.num_threads(), hmmop.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    ours, hmmops = map(int, out.stdout.split())
    assert ours == hmmops == os.cpu_count() or ours == hmmops == len(os.sched_getaffinity(0))


# ---- Symbols: shape and type inference ----

def symbol():
    return mx.sym.hmm_forward(*(mx.sym.var(name) for name in ("A", "B", "pi", "obs")))


def test_infer_shape_full_and_partial():
    s = symbol()
    args, out, _ = s.infer_shape(A=(3, 3), B=(3, 4), pi=(3,), obs=(5, 7))
    assert args == [(3, 3), (3, 4), (3,), (5, 7)] and out == [(5,)]
    assert s.infer_shape(A=(3, 3), B=(3, 4), pi=(3,), obs=(7,))[1] == [(1,)]
    # 0 is an unknown dimension: filled in from what is known, never an error
    args, out, _ = s.infer_shape_partial(A=(0, 3), B=(0, 4), pi=(0,), obs=(0, 7))
    assert args == [(3, 3), (3, 4), (3,), (0, 7)] and out == [(0,)]
    args, out, _ = s.infer_shape_partial(A=(0, 0), B=(2, 0), pi=(0,), obs=(6, 0))
    assert args[:3] == [(2, 2), (2, 0), (2,)] and out == [(6,)]
    # unknown ranks, as far as MXNet's adapter copes with them (see hmmop.ops.native)
    args, out, _ = s.infer_shape_partial(B=(3, 4), obs=(5, 7))
    assert args == [(3, 3), (3, 4), (3,), (5, 7)] and out == [(5,)]


def test_infer_type_with_unknown_types():
    s = symbol()
    args, out, _ = s.infer_type(A="float64")
    assert args == [np.float64, np.float64, np.float64, np.float32] and out == [np.float64]
    args, out, _ = s.infer_type(pi="float32", obs="int64")
    assert args == [np.float32, np.float32, np.float32, np.int64] and out == [np.float32]
    assert s.infer_type_partial()[1] == [np.float32]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pi_req", ["write", "null"])
def test_bound_symbol_matches_custom_op(dtype, pi_req):
    rng = np.random.default_rng(7)
    A, B, pi = random_model(rng, 4, 3)
    obs = ragged(rng, 3, [9, 4, 0, 12], 12)
    head = rng.normal(size=4)
    names = ("A", "B", "pi", "obs")

    def bound(fn):
        ex = fn(*(mx.sym.var(n) for n in names)).simple_bind(
            mx.cpu(), A=A.shape, B=B.shape, pi=pi.shape, obs=obs.shape,
            type_dict={"A": dtype, "B": dtype, "pi": dtype, "obs": np.int32},
            grad_req={"A": "write", "B": "write", "pi": pi_req, "obs": "null"})
        for n, x in zip(names, (A, B, pi, obs)):
            ex.arg_dict[n][:] = x
        ex.forward(is_train=True)
        ex.backward(mx.nd.array(head, dtype=dtype))
        return [ex.outputs[0].asnumpy()] + [ex.grad_dict[n].asnumpy() for n in names[:3]
                                             if ex.grad_dict.get(n) is not None]

    expected = bound(lambda *a: mx.sym.Custom(*a, op_type="hmm_forward"))
    assert_identical(bound(mx.sym.hmm_forward), expected)
    assert_identical(bound(wrapped), expected)


# ---- Errors (trap 4): named, at the next synchronisation, process still usable ----

def small():
    A, B, pi = random_model(np.random.default_rng(0), 2, 3)
    return [mx.nd.array(x) for x in (A, B, pi)]


@pytest.mark.parametrize("obs,message", [
    ([[0, 3, 1]], "obs[0, 1] = 3.0 is not a valid symbol: expected an integer in [0, 3) (B has 3 symbol "
                  "columns), -1 padding or -2 missing"),
    ([[0, 1.5, 1]], "obs[0, 1] = 1.5 is not an integer: obs must hold integer symbols (int32, int64, "
                    "or floats with integral values)"),
    ([[0, 1], [-1, 2]], "obs[1, 1] = 2.0 follows -1 padding in row 1: padding must only fill the end of a row"),
    ([[0, np.nan]], "obs[0, 1] = nan is not an integer"),
    ([[0, -3]], "obs[0, 1] = -3.0 is not a valid symbol"),
    ([[0, 1.1]], "obs[0, 1] = 1.100000023841858 is not an integer"),    # float32 1.1, as Cython prints it
])
def test_value_errors_name_the_element(obs, message):
    A, B, pi = small()
    ll = mx.nd.hmm_forward(A, B, pi, mx.nd.array(obs))
    with pytest.raises(mx.base.MXNetError) as err:
        ll.asnumpy()
    assert "hmm_forward: " + message in str(err.value)
    assert str(err.value).count("hmm_forward: ") == 1
    # the wrapper says the same before MXNet runs anything
    with pytest.raises(ValueError) as err:
        hmmop.hmm_forward(A, B, pi, mx.nd.array(obs), backend="native")
    assert message in str(err.value)
    assert mx.nd.hmm_forward(A, B, pi, mx.nd.array([[0, 1, 2]])).asnumpy().shape == (1,)


def test_int_obs_error_values_print_as_integers():
    A, B, pi = small()
    with pytest.raises(mx.base.MXNetError, match=r"obs\[0, 2\] = 9 is not a valid symbol"):
        mx.nd.hmm_forward(A, B, pi, mx.nd.array([[0, 1, 9]], dtype="int64")).asnumpy()


@pytest.mark.parametrize("args,message", [
    (lambda A, B, pi: (A.astype("float64"), B, pi),
     "A, B and pi must share one dtype, got A: float64, B: float32, pi: float32"),
    (lambda A, B, pi: (A.astype("float16"), B, pi), "A has dtype float16; A, B and pi must be float32 or float64"),
    (lambda A, B, pi: (A, B, pi.reshape((1, 2))), "pi must have shape (N,), got shape (1, 2)"),
    (lambda A, B, pi: (A, B.T, pi), "B must have shape (N, M) = (2, M) with one row per state of A, got shape (3, 2)"),
    (lambda A, B, pi: (mx.nd.ones((2, 3)), B, pi), "A must be a square (N, N) transition matrix, got shape (2, 3)"),
])
def test_shape_and_type_errors(args, message):
    with pytest.raises(mx.base.MXNetError) as err:
        mx.nd.hmm_forward(*args(*small()), mx.nd.array([[0, 1]])).asnumpy()
    assert "hmm_forward: " + message in str(err.value)


def test_obs_dtype_and_rank_errors():
    A, B, pi = small()
    with pytest.raises(mx.base.MXNetError, match="obs has dtype uint8; expected int32, int64, float32 or float64"):
        mx.nd.hmm_forward(A, B, pi, mx.nd.array([[0, 1]], dtype="uint8")).asnumpy()
    with pytest.raises(mx.base.MXNetError, match=r"obs must have shape \(T,\) or \(batch, T\), got shape "
                                                  r"\(1, 1, 2\) \(rank 3\)"):
        mx.nd.hmm_forward(A, B, pi, mx.nd.array([[[0, 1]]])).asnumpy()


def test_errors_do_not_accumulate():
    """Trap 2: lib_api.cc keeps error messages in a list it never clears, and MXNet reads all of
    it after every call (1000 failures made a good call ~650x slower here)."""
    A, B, pi = small()
    good, bad = mx.nd.array([[0, 1, 2, 1]]), mx.nd.array([[0, 5, 2, 1]])

    def call():
        mx.nd.hmm_forward(A, B, pi, good).wait_to_read()

    call()
    before = min(timeit.repeat(call, number=50, repeat=5)) / 50
    last = None
    for i in range(1000):
        try:
            if i % 2:
                mx.nd.hmm_forward(A, B, pi, bad).wait_to_read()
            else:
                mx.nd.hmm_forward(A.astype("float64"), B, pi, good)
        except mx.base.MXNetError as e:
            last = str(e)
    assert last.count("hmm_forward: ") == 1 and "[1]" not in last
    call()
    after = min(timeit.repeat(call, number=50, repeat=5)) / 50
    assert native.error_count() == 0            # the list is swept (the cause, checked exactly)
    # and the symptom, with room for a busy machine: the bug made a call ~650x slower
    assert after < 20 * before + 500e-6, (before, after)


# ---- Gradient requests (trap 1): lib_api always overwrites input gradients ----

def model_and_obs(seed=3):
    rng = np.random.default_rng(seed)
    A, B, pi = random_model(rng, 3, 4)
    obs = ragged(rng, 4, [8, 5, 11], 11)
    return A, B, pi, obs, rng.normal(size=3)


def test_raw_op_overwrites_add_requests():
    """The trap itself: with grad_req='add' leaves fed straight into the op, a second backward
    overwrites instead of adding.  Why hmmop never feeds the op that way."""
    A, B, pi, obs, head = model_and_obs()
    once = run(custom, A, B, pi, obs, head, np.float64, "add", passes=1)
    twice_raw = run(raw, A, B, pi, obs, head, np.float64, "add", passes=2)
    np.testing.assert_array_equal(twice_raw[1], once[1])          # not 2 * once: wrong


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wrapper_add_requests_accumulate(dtype):
    A, B, pi, obs, head = model_and_obs()
    expected = run(custom, A, B, pi, obs, head, dtype, "add", passes=3)
    assert_identical(run(wrapped, A, B, pi, obs, head, dtype, "add", passes=3), expected)


def imperative_grad(fn, leaf, req, fan_out, passes):
    """d/dX of sum(fn(A, B, pi, obs)) + sum_k sum((k + 1) * A) under imperative autograd, where X is
    A itself (leaf=True) or the logits of A = softmax(X) (an intermediate A)."""
    A, B, pi, obs, head = model_and_obs()
    x = mx.nd.array(A if leaf else np.log(A), dtype="float64")
    x.attach_grad(grad_req=req)
    b, p = mx.nd.array(B, dtype="float64"), mx.nd.array(pi, dtype="float64")
    o = mx.nd.array(obs, dtype="int32")
    for _ in range(passes):
        with mx.autograd.record():
            a = x if leaf else mx.nd.softmax(x, axis=1)
            out = (fn(a, b, p, o) * mx.nd.array(head, dtype="float64")).sum()
            for k in range(fan_out):
                out = out + mx.nd.sum(a * (k + 1.0))
        out.backward()
    return x.grad.asnumpy()


@pytest.mark.parametrize("leaf", [True, False])
@pytest.mark.parametrize("req,passes", [("write", 1), ("add", 2)])
@pytest.mark.parametrize("fan_out", [0, 3, 8, 20])
def test_wrapper_imperative_any_request_and_fan_out(leaf, req, passes, fan_out):
    """Imperatively the wrapper guards only leaves with a gradient (hmmop.ops.native.guard_nd)."""
    expected = imperative_grad(custom, leaf, req, fan_out, passes)
    np.testing.assert_array_equal(imperative_grad(wrapped, leaf, req, fan_out, passes), expected)


class Likelihood(gluon.HybridBlock):
    """Probabilities held directly as Parameters, read by the op with nothing in between."""

    def __init__(self, A, B, pi, backend, fan_out=0):
        super().__init__()
        self.backend, self.fan_out = backend, fan_out
        with self.name_scope():
            self.A = self.params.get("A", shape=A.shape)
            self.B = self.params.get("B", shape=B.shape)
            self.pi = self.params.get("pi", shape=pi.shape)

    def hybrid_forward(self, F, obs, A, B, pi):
        ll = hmmop.hmm_forward(A, B, pi, obs, backend=self.backend) if self.backend != "raw" \
            else F.hmm_forward(A, B, pi, obs)
        # A also feeds fan_out other ops: MXNet then sums A's gradients with in-place adds
        extra = [F.sum(A * (k + 1.0)) for k in range(self.fan_out)]
        return ll.sum() + (F.add_n(*extra) if extra else 0)


def block_grads(backend, hybridize, grad_req, fan_out=0, passes=2):
    A, B, pi, obs, _ = model_and_obs()
    net = Likelihood(A, B, pi, backend, fan_out)
    net.initialize()
    net.cast("float64")
    for p, value in zip((net.A, net.B, net.pi), (A, B, pi)):
        p.set_data(mx.nd.array(value, dtype="float64"))
    for p in net.collect_params().values():
        p.grad_req = grad_req
    if hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    o = mx.nd.array(obs, dtype="int32")
    for _ in range(passes):
        with mx.autograd.record():
            out = net(o)
        out.backward()
    return [p.grad().asnumpy() for p in (net.A, net.B, net.pi)]


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("grad_req,fan_out", [("add", 0), ("write", 8), ("write", 12), ("add", 9)])
def test_block_parameters_any_request(hybridize, grad_req, fan_out):
    expected = block_grads("cython", hybridize, grad_req, fan_out)
    got = block_grads("native", hybridize, grad_req, fan_out)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-13, atol=0)


def test_raw_op_in_static_graph_with_fan_out_is_wrong():
    """The trap in a bound graph: A feeding the op and 8 other ops, grad_req='write'."""
    expected = block_grads("cython", True, "write", fan_out=8, passes=1)
    got = block_grads("raw", True, "write", fan_out=8, passes=1)
    assert not np.allclose(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-13)   # B, pi feed only the op


# ---- Loading ----

def test_library_path_and_no_libmxnet():
    path = native.library_path()
    assert os.path.isabs(path) and os.path.isfile(path)
    assert path.startswith(os.path.dirname(os.path.abspath(hmmop.__file__)))
    with open(path, "rb") as f:
        assert b"libmxnet.so" not in f.read()          # not linked against libmxnet


def script(body, cwd=ROOT, env=None):
    code = "import warnings\nwarnings.simplefilter('always', RuntimeWarning)\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          cwd=cwd, env=env)


def test_loads_once_quietly():
    """import hmmop loads the library, without a word; loading again is a no-op."""
    out = script("""
        import hmmop, mxnet as mx
        from hmmop.ops import native
        assert hasattr(mx.nd, "hmm_forward")
        assert native.load() and native.load() and native.available()
        assert hmmop.hmm_forward(mx.nd.ones((1, 1)), mx.nd.ones((1, 1)), mx.nd.ones(1), [0, 0],
                                 backend="native").asnumpy()[0] == 0.0
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n" and "hmmop" not in out.stderr


def test_loaded_by_hand_first_is_taken_as_is(tmp_path):
    """An operator hmm_forward already registered (the library loaded by hand, as a process
    running an exported model does) is used as is, not loaded again.  MXNet accepts one more
    library registering the same operator (at a higher priority level) and fails on the next
    ("already registered"), so the copies below show how many loads there were."""
    copies = []
    for k in range(3):
        copies.append(str(tmp_path / f"lib{k}.so"))
        with open(copies[-1], "wb") as f:
            f.write(open(native.library_path(), "rb").read())
    out = script(f"""
        import mxnet as mx
        mx.library.load({copies[0]!r}, verbose=False)
        import hmmop
        from hmmop.ops import native
        assert native.load() and native.available()
        mx.library.load({copies[1]!r}, verbose=False)     # the second load: accepted
        print("second load accepted")
        try:
            mx.library.load({copies[2]!r}, verbose=False)
        except mx.base.MXNetError as e:
            print("third load fails:", "already registered" in str(e))
    """)
    assert out.returncode == 0, out.stderr
    assert "hmmop" not in out.stderr
    assert out.stdout == "second load accepted\nthird load fails: True\n"


def test_missing_library_warns_once_and_falls_back(tmp_path):
    """A build without the library (a copy of the package without it): import hmmop warns once,
    naming the file, and everything runs on the CustomOp."""
    import shutil
    package = os.path.dirname(hmmop.__file__)
    shutil.copytree(package, tmp_path / "hmmop", ignore=shutil.ignore_patterns("libhmmop_op.so", "__pycache__"))
    missing = str(tmp_path / "hmmop" / "libhmmop_op.so")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    out = script(f"""
        import mxnet as mx, hmmop
        from hmmop.ops import native
        assert hmmop.__file__.startswith({str(tmp_path)!r}), hmmop.__file__
        assert not native.load() and not native.available() and not native.load()
        assert not hasattr(mx.nd, "hmm_forward")
        A = mx.nd.ones((1, 1))
        assert hmmop.hmm_forward(A, A, mx.nd.ones(1), [0]).asnumpy()[0] == 0.0      # the CustomOp
        try:
            hmmop.hmm_forward(A, A, mx.nd.ones(1), [0], backend="native")
        except RuntimeError as e:
            print(e)
    """, cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("RuntimeWarning") == 1 and missing in out.stderr
    assert f"backend 'native' is not available: OSError: {missing} does not exist" in out.stdout


# ---- Export: a hybridized block on the native op runs without hmmop ----

class Exportable(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.A = self.params.get("A", shape=(3, 3))
            self.B = self.params.get("B", shape=(3, 4))
            self.pi = self.params.get("pi", shape=(3,))

    def hybrid_forward(self, F, obs, A, B, pi):
        return hmmop.hmm_forward(F.softmax(A), F.softmax(B), F.softmax(pi), obs, backend="native")


def hmm_block():
    """An HMM's own block (float32, a structural zero in A: a mask constant in the graph)."""
    mask = np.ones((3, 3), dtype=bool)
    mask[0, 2] = False
    model = hmmop.HMM(3, 4, seed=3, mask={"A": mask})
    return model.block


@pytest.mark.parametrize("make", [Exportable, hmm_block], ids=["custom-block", "HMMBlock"])
def test_exported_block_runs_in_a_fresh_process_without_hmmop(tmp_path, make):
    """A hybridized block on the native op exports; a fresh process runs it with only mx.library.load."""
    net = make()
    if isinstance(net, Exportable):
        net.initialize(mx.init.Normal(1.0))
    net.hybridize()
    obs = [[0, 1, 2, 3, -2], [1, 1, -1, -1, -1]]
    expected = net(mx.nd.array(obs, dtype="int32")).asnumpy()
    net.export(str(tmp_path / "hmm"))
    code = textwrap.dedent(f"""
        import sys
        import mxnet as mx
        from mxnet import gluon
        mx.library.load({native.library_path()!r}, verbose=False)
        block = gluon.SymbolBlock.imports({str(tmp_path / "hmm-symbol.json")!r}, ["data"],
                                          {str(tmp_path / "hmm-0000.params")!r})
        print(block(mx.nd.array({obs!r}, dtype="int32")).asnumpy().tolist())
        print("hmmop" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    values, imported = out.stdout.splitlines()
    np.testing.assert_array_equal(np.array(eval(values), dtype=np.float32), expected)
    assert imported == "False"


# ---- Defaults: the wrapper, HMMBlock, HMM and the trainer run on the native op on a CPU ----

@pytest.fixture
def native_calls(monkeypatch):
    """How many times hmmop ran the native op through native.forward (counted, then passed on)."""
    calls = []
    real = native.forward

    def counted(F, *args):
        calls.append(F)
        return real(F, *args)
    monkeypatch.setattr(native, "forward", counted)
    return calls


def test_wrapper_defaults_to_native_on_cpu(native_calls):
    """backend='auto' takes the native op for NDArrays on a CPU context, with the CustomOp's numbers."""
    rng = np.random.default_rng(31)
    A, B, pi = params(*random_model(rng, 5, 4))
    obs = random_padded(rng, 4, [9, 3, 0, 7])
    got = hmmop.hmm_forward(A, B, pi, obs).asnumpy()
    assert native_calls == [mx.nd]
    want = mx.nd.Custom(A, B, pi, mx.nd.array(obs), op_type="hmm_forward").asnumpy()
    np.testing.assert_array_equal(got, want)
    hmmop.hmm_forward(A, B, pi, obs, backend="cython")
    assert native_calls == [mx.nd]                      # 'cython' is the CustomOp


@pytest.mark.parametrize("hybridize", [False, True])
def test_block_engines_agree_bit_for_bit(native_calls, hybridize):
    """HMMBlock on 'fused' (native here) and 'custom' (the CustomOp): same ll and logit gradients,
    imperatively and hybridized with static_alloc."""
    rng = np.random.default_rng(32)
    obs = mx.nd.array(random_padded(rng, 6, [12, 30, 5, 1]), dtype=np.int32)
    logits = [rng.normal(size=(4, 4)), rng.normal(size=(4, 6)), rng.normal(size=4)]
    results = []
    for engine in ("fused", "custom"):
        block = hmmop.HMMBlock(4, 6, engine=engine, dtype="float64")
        block.initialize()
        for p, value in zip(block.collect_params().values(), logits):
            p.set_data(mx.nd.array(value, dtype=np.float64))
        if hybridize:
            block.hybridize(static_alloc=True, static_shape=True)
        with mx.autograd.record():
            ll = block(obs)
        ll.backward()
        results.append([ll.asnumpy()] + [p.grad().asnumpy() for p in block.collect_params().values()])
    assert (mx.nd if not hybridize else mx.sym) in native_calls and len(set(map(id, native_calls))) == 1
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_hmm_fit_on_native_equals_customop(native_calls):
    """HMM.fit (the trainer, hybridized block) on the default engine runs the native op and ends
    exactly where the CustomOp ends."""
    rng = np.random.default_rng(33)
    seqs = [rng.integers(0, 5, n) for n in (40, 17, 60, 8)]
    fits = []
    for engine in ("fused", "custom"):
        model = hmmop.HMM(3, 5, seed=1, engine=engine, dtype="float64")
        model.fit(seqs, epochs=15, optimizer="adam", learning_rate=0.1, progress=False)
        fits.append((model.history_, model.A, model.B, model.pi))
    assert native_calls, "the default engine did not run the native op"
    for got, want in zip(*fits):
        np.testing.assert_array_equal(got, want)
