"""The operator through its other doors (symbol, gluon) and its answers to bad input."""
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

import hmmop
from reference import random_model, random_padded


def nd(*arrays, dtype=np.float64):
    return [mx.nd.array(a, dtype=dtype) for a in arrays]


@pytest.fixture
def problem():
    rng = np.random.default_rng(20)
    A, B, pi = random_model(rng, 4, 3)
    obs = random_padded(rng, 3, [12, 4, 9])
    return A, B, pi, obs


def test_symbol_api_matches_ndarray(problem):
    A, B, pi, obs = problem
    expected = mx.nd.Custom(*nd(A, B, pi), mx.nd.array(obs), op_type="hmm_forward").asnumpy()
    syms = [mx.sym.var(name) for name in ("A", "B", "pi", "obs")]
    net = mx.sym.Custom(*syms, op_type="hmm_forward")
    assert hmmop.hmm_forward(*syms).list_arguments() == ["A", "B", "pi", "obs"]
    args = dict(zip(["A", "B", "pi"], nd(A, B, pi)), obs=mx.nd.array(obs))
    grads = {k: mx.nd.zeros_like(v) for k, v in args.items() if k != "obs"}
    exe = net.bind(mx.cpu(), args, args_grad=grads, grad_req={"A": "write", "B": "write", "pi": "write",
                                                              "obs": "null"})
    out = exe.forward(is_train=True)[0].asnumpy()
    np.testing.assert_array_equal(out, expected)
    exe.backward(mx.nd.ones(3, dtype=np.float64))
    a, b, p = nd(A, B, pi)
    for x in (a, b, p):
        x.attach_grad()
    with mx.autograd.record():
        ll = mx.nd.Custom(a, b, p, mx.nd.array(obs), op_type="hmm_forward")
    ll.backward()
    for name, x in zip(("A", "B", "pi"), (a, b, p)):
        np.testing.assert_array_equal(grads[name].asnumpy(), x.grad.asnumpy())


class Likelihood(gluon.HybridBlock):
    def hybrid_forward(self, F, A, B, pi, obs):
        return F.Custom(A, B, pi, obs, op_type="hmm_forward")


def test_hybridized_gluon_block_matches_ndarray(problem):
    A, B, pi, obs = problem
    results = []
    for hybridize in (False, True):
        block = Likelihood()
        if hybridize:
            block.hybridize()
        a, b, p = nd(A, B, pi)
        for x in (a, b, p):
            x.attach_grad()
        for _ in range(2):           # the second call runs the cached graph
            with mx.autograd.record():
                ll = block(a, b, p, mx.nd.array(obs))
            ll.backward()
        results.append([ll.asnumpy()] + [x.grad.asnumpy() for x in (a, b, p)])
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


GOOD = dict(A=np.full((3, 3), 1 / 3), B=np.full((3, 2), 0.5), pi=np.full(3, 1 / 3))

BAD_INPUTS = [
    # (label, overrides, exception, message pattern)
    ("symbol >= M", dict(obs=[[0, 1, 2]]), ValueError, r"obs\[0, 2\] = 2(\.0)? is not a valid symbol.*\[0, 2\)"),
    ("symbol < -1", dict(obs=[[0, -3, 1]]), ValueError, r"obs\[0, 1\] = -3(\.0)? is not a valid symbol"),
    ("symbol after padding", dict(obs=[[0, 1, 1], [1, -1, 0]]), ValueError,
     r"obs\[1, 2\] = 0(\.0)? follows -1 padding in row 1"),
    ("non-integer obs", dict(obs=np.array([[0, 0.5, 1]])), ValueError, r"obs\[0, 1\] = 0.5 is not an integer"),
    ("NaN obs", dict(obs=np.array([[0, np.nan]])), ValueError, r"obs\[0, 1\] = nan is not an integer"),
    ("A not square", dict(A=np.full((3, 2), 0.5)), ValueError, r"A must be a square .*\(3, 2\)"),
    ("B rows != N", dict(B=np.full((2, 2), 0.5)), ValueError, r"B must have shape \(N, M\) = \(3, M\).*\(2, 2\)"),
    ("pi length != N", dict(pi=np.full(4, 0.25)), ValueError, r"pi must have shape \(N,\) = \(3,\).*\(4,\)"),
    ("obs rank 3", dict(obs=np.zeros((2, 2, 2), dtype=np.int32)), ValueError, r"obs must have shape .*rank 3"),
]


def build(overrides, dtypes=None):
    dtypes = dtypes or {}
    arrays = {k: mx.nd.array(overrides.get(k, v), dtype=dtypes.get(k, np.float64)) for k, v in GOOD.items()}
    obs = overrides.get("obs", [[0, 1, 1]])
    return arrays["A"], arrays["B"], arrays["pi"], obs


@pytest.mark.parametrize("label,overrides,exc,pattern", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("fn", [hmmop.hmm_forward, hmmop.unroll_forward], ids=["fused", "unroll"])
def test_wrapper_rejects_bad_input_clearly(fn, label, overrides, exc, pattern):
    A, B, pi, obs = build(overrides)
    with pytest.raises(exc, match=pattern):
        fn(A, B, pi, obs)


@pytest.mark.parametrize("label,overrides,exc,pattern", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_raw_custom_refuses_prints_reason_and_recovers(capfd, label, overrides, exc, pattern):
    A, B, pi, obs = build(overrides)
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, mx.nd.array(np.asarray(obs, dtype=np.float64)), op_type="hmm_forward").asnumpy()
    out, err = capfd.readouterr()
    assert exc.__name__ in out + err
    assert re.search(pattern, out + err)
    # the process stays usable
    good = mx.nd.Custom(*build({})[:3], mx.nd.array([[0, 1, 1]]), op_type="hmm_forward").asnumpy()
    np.testing.assert_allclose(good, [3 * np.log(0.5)])


@pytest.mark.parametrize("dtypes,pattern", [
    (dict(B=np.float32), r"A, B and pi must share one dtype, got A: float64, B: float32, pi: float64"),
    (dict(A=np.int32), r"A has dtype int32; A, B and pi must be float32 or float64"),
])
def test_dtype_errors(capfd, dtypes, pattern):
    A, B, pi, obs = build({}, dtypes)
    with pytest.raises(TypeError, match=pattern):
        hmmop.hmm_forward(A, B, pi, obs)
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, mx.nd.array(obs), op_type="hmm_forward").asnumpy()
    out, err = capfd.readouterr()
    assert re.search(pattern, out + err)


def test_obs_dtype_error():
    A, B, pi, _ = build({})
    with pytest.raises(TypeError, match=r"obs has dtype uint8"):
        hmmop.hmm_forward(A, B, pi, mx.nd.array([[0, 1]], dtype=np.uint8))


def test_non_ndarray_parameter_is_a_type_error():
    _, B, pi, obs = build({})
    with pytest.raises(TypeError, match=r"A must be an mxnet NDArray, got ndarray"):
        hmmop.hmm_forward(GOOD["A"], B, pi, obs)


def test_unknown_backend_is_refused(capfd):
    A, B, pi, obs = build({})
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, mx.nd.array(obs), op_type="hmm_forward", backend="cuda").asnumpy()
    assert "backend must be one of ('auto', 'cython', 'ndarray'), got 'cuda'" in "".join(capfd.readouterr())
    with pytest.raises(ValueError, match="backend must be one of"):
        hmmop.hmm_forward(A, B, pi, obs, backend="cuda")
