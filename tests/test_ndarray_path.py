"""The NDArray path (backend='ndarray'), forced on the CPU, against the Cython kernel;
and the GPU route, where a GPU build of MXNet is present."""
import functools
import re

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.gist import train_gist
from reference import random_model, random_padded


def run(backend, A, B, pi, obs, head=None, dtype=np.float64, ctx=None, record_train=True):
    """(ll, dA, dB, dpi) NumPy arrays of one forward/backward through hmm_forward."""
    ctx = ctx or mx.cpu()
    params = [mx.nd.array(x, dtype=dtype, ctx=ctx) for x in (A, B, pi)]
    for x in params:
        x.attach_grad()
    with mx.autograd.record(train_mode=record_train):
        ll = hmmop.hmm_forward(*params, obs, backend=backend)
    ll.backward(None if head is None else mx.nd.array(head, dtype=dtype, ctx=ctx))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in params]


def assert_same(got, want, rtol, atol=0.0):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


CASES = [(1, 1, [4]), (2, 3, [1]), (4, 3, [30]), (6, 5, [40, 7, 0, 25]), (9, 2, [15, 15, 3]),
         (12, 7, [60, 1, 33, 59, 2, 60])]


@pytest.mark.parametrize("n,m,lengths", CASES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_ndarray_path_equals_kernel(n, m, lengths, dtype, rtol):
    rng = np.random.default_rng(n * 7 + m)
    A, B, pi = random_model(rng, n, m)
    obs = random_padded(rng, m, lengths)
    head = rng.normal(size=len(lengths))
    kernel = run("cython", A, B, pi, obs, head, dtype)
    ndarray = run("ndarray", A, B, pi, obs, head, dtype)
    assert_same(ndarray, kernel, rtol=rtol, atol=1e-12 if dtype == np.float64 else 1e-6)


def test_ndarray_path_reproduces_gist_training():
    steps = 60
    fused = train_gist(steps=steps, dtype=np.float64)
    nd_path = train_gist(functools.partial(hmmop.hmm_forward, backend="ndarray"), steps=steps,
                         dtype=np.float64)
    for f, u in zip(fused, nd_path):
        np.testing.assert_allclose(u, f, rtol=1e-10)


def test_ndarray_path_impossible_and_nan():
    A = np.array([[0.7, 0.3], [0.4, 0.6]])
    B = np.array([[1.0, 0.0], [0.5, 0.5]])
    pi = np.array([1.0, 0.0])
    obs = [[0, 1, 0, -1], [1, 0, 0, 0]]
    ll, dA, dB, dpi = run("ndarray", A, B, pi, obs)
    assert ll[1] == -np.inf
    assert_same([ll, dA, dB, dpi], run("cython", A, B, pi, obs), rtol=1e-12)
    A[0, 0] = np.nan
    ll, dA, _, _ = run("ndarray", A, B, pi, [[0, 1, 0]])
    assert np.isnan(ll[0]) and np.isnan(dA).any()


def test_ndarray_path_req_add_and_obs_gradient():
    rng = np.random.default_rng(30)
    A, B, pi = random_model(rng, 3, 3)
    obs1, obs2 = random_padded(rng, 3, [8, 5]), random_padded(rng, 3, [11])
    params = [mx.nd.array(x, dtype=np.float64) for x in (A, B, pi)]
    for x in params:
        x.attach_grad(grad_req="add")
    obs_nd = mx.nd.array(obs1)
    obs_nd.attach_grad()
    obs_nd.grad[:] = 5
    for obs in (obs_nd, mx.nd.array(obs2)):
        with mx.autograd.record():
            ll = mx.nd.Custom(*params, obs, op_type="hmm_forward", backend="ndarray")
        ll.backward()
    want = [a + b for a, b in zip(run("cython", A, B, pi, obs1)[1:], run("cython", A, B, pi, obs2)[1:])]
    for x, w in zip(params, want):
        np.testing.assert_allclose(x.grad.asnumpy(), w, rtol=1e-10)
    np.testing.assert_array_equal(obs_nd.grad.asnumpy(), 0)


def test_ndarray_path_backward_after_inference_mode_forward():
    rng = np.random.default_rng(31)
    A, B, pi = random_model(rng, 4, 3)
    obs = random_padded(rng, 3, [20, 9])
    assert_same(run("ndarray", A, B, pi, obs, record_train=False), run("cython", A, B, pi, obs), rtol=1e-10)


def test_ndarray_path_rejects_bad_symbols_like_the_kernel(capfd):
    A, B, pi = [mx.nd.array(x) for x in random_model(np.random.default_rng(32), 3, 2)]
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, mx.nd.array([[0, 1, 2]]), op_type="hmm_forward", backend="ndarray").asnumpy()
    assert re.search(r"obs\[0, 2\] = 2(\.0)? is not a valid symbol", "".join(capfd.readouterr()))
    ok = mx.nd.Custom(A, B, pi, mx.nd.array([[0, 1, 1]]), op_type="hmm_forward", backend="ndarray")
    assert np.isfinite(ok.asnumpy()).all()


needs_gpu = pytest.mark.skipif(mx.context.num_gpus() == 0,
                               reason="no GPU visible to this MXNet build (mx.context.num_gpus() == 0)")


@needs_gpu
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_gpu_auto_backend_matches_cpu_kernel(dtype, rtol):
    rng = np.random.default_rng(40)
    A, B, pi = random_model(rng, 8, 5)
    obs = random_padded(rng, 5, [50, 3, 0, 49])
    head = rng.normal(size=4)
    gpu = run("auto", A, B, pi, obs, head, dtype, ctx=mx.gpu(0))
    cpu = run("cython", A, B, pi, obs, head, dtype)
    assert_same(gpu, cpu, rtol=rtol, atol=1e-12 if dtype == np.float64 else 1e-6)


@needs_gpu
def test_gpu_cython_backend_is_a_clear_error(capfd):
    A, B, pi = [mx.nd.array(x, ctx=mx.gpu(0)) for x in random_model(np.random.default_rng(41), 3, 2)]
    obs = mx.nd.array([[0, 1]], ctx=mx.gpu(0))
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, obs, op_type="hmm_forward", backend="cython").asnumpy()
    assert "backend 'cython' runs on the CPU only" in "".join(capfd.readouterr())
    with pytest.raises(ValueError, match="backend 'cython' runs on the CPU only"):
        hmmop.hmm_forward(A, B, pi, obs, backend="cython")
