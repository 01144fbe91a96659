"""hmm_forward with a model axis (issue 18): K models in one call against K separate calls."""
import re

import mxnet as mx
import numpy as np
import pytest

import hmmop
from reference import random_model, random_padded, under_thread_counts, with_grads

NATIVE = hmmop.native.many_available()       # libhmmop_op.so's hmm_forward_many, hmm_forward_by_model
BACKENDS = ["cython", "ndarray"] + (["native"] if NATIVE else [])
CUSTOM_BACKENDS = ["cython", "ndarray"]


def stacked(rng, k, n, m):
    """K random models stacked: A (K, n, n), B (K, n, m), pi (K, n) NumPy float64."""
    models = [random_model(rng, n, m) for _ in range(k)]
    return tuple(np.stack([x[i] for x in models]) for i in range(3))


def separate(params, obs, model, head, dtype, backend):
    """ll and gradients by one rank-2 call per model (on the model's sequences; the model-index
    form) or on all of them (every model, every sequence): what the model axis must give."""
    A, B, pi = params
    k = A.shape[0]
    ll = np.zeros(head.shape, dtype=dtype)
    grads = [np.zeros(x.shape, dtype=dtype) for x in params]
    for q in range(k):
        rows = np.arange(len(obs)) if model is None else np.flatnonzero(model == q)
        if rows.size == 0:
            continue
        h = head[q] if model is None else head[rows]
        out = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs[rows], backend=backend),
                         (A[q], B[q], pi[q]), dtype, h)
        if model is None:
            ll[q] = out[0]
        else:
            ll[rows] = out[0]
        for g, d in zip(grads, out[1:]):
            g[q] = d
    return [ll] + grads


def data(seed=0, k=4, n=3, m=4, lengths=(60, 0, 33, 1, 47, 60, 12, 58, 5, 41, 60, 29, 3, 55)):
    """A mixed batch: long and short sequences, an empty one, missing steps; in the model-index
    form model 1 gets no sequence."""
    rng = np.random.default_rng(seed)
    params = stacked(rng, k, n, m)
    obs = random_padded(rng, m, list(lengths))
    for b, t in [(0, 3), (4, 10), (9, 0), (3, 0)]:
        if b < len(lengths) and t < lengths[b]:
            obs[b, t] = -2
    model = rng.choice([q for q in range(k) if q != 1], size=len(lengths))
    return rng, params, obs, model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["every", "indexed"])
def test_equals_separate_calls_bit_for_bit(form, dtype, backend):
    rng, params, obs, model = data()
    model = model if form == "indexed" else None
    k, batch = params[0].shape[0], len(obs)
    head = rng.normal(size=(k, batch) if model is None else batch)

    def together():
        return with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model, backend=backend),
                          params, dtype, head)

    want = separate(params, obs, model, head, dtype, backend)
    for got in under_thread_counts([1, 2], together):
        assert got[0].shape == ((k, batch) if model is None else (batch,))
        for name, g, w in zip(["ll", "dA", "dB", "dpi"], got, want):
            assert g.dtype == np.dtype(dtype), name
            np.testing.assert_array_equal(g, w, err_msg=name)
    if model is not None:
        assert not want[1][1].any()         # model 1 has no sequence: the test sees its zero gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_without_sequences_gets_zero_gradient(backend):
    rng, params, obs, _ = data(seed=3, k=3)
    model = np.zeros(len(obs), dtype=np.int64)          # models 1 and 2: nothing
    model[::3] = 2
    head = rng.normal(size=len(obs))
    ll, dA, dB, dpi = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model, backend=backend),
                                 params, np.float64, head)
    for g in (dA, dB, dpi):
        assert not g[1].any()
        assert g[0].any() and g[2].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_model_per_entity_against_a_loop(backend):
    """Ten entities, each its own model and a few sequences, in one call: each entity's total
    log-likelihood and gradients as a loop over the entities gives them."""
    rng = np.random.default_rng(5)
    k, n, m = 10, 4, 3
    params = stacked(rng, k, n, m)
    lengths = rng.integers(0, 31, size=35)
    obs = random_padded(rng, m, list(lengths), T=30)
    entity = rng.integers(0, k, size=35)
    ones = np.ones(35)
    ll, dA, dB, dpi = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=entity, backend=backend),
                                 params, np.float64, ones)
    for q in range(k):
        mine = entity == q
        want = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs[mine], backend=backend),
                          tuple(x[q] for x in params), np.float64, np.ones(mine.sum()))
        assert ll[mine].sum() == want[0].sum()
        for g, w in zip((dA, dB, dpi), want[1:]):
            np.testing.assert_array_equal(g[q], w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["every", "indexed"])
def test_empty_sequences(form, backend):
    rng = np.random.default_rng(7)
    params = stacked(rng, 3, 2, 3)
    obs = np.full((4, 5), -1)
    model = np.array([0, 2, 2, 0]) if form == "indexed" else None
    shape = (4,) if model is not None else (3, 4)
    ll, dA, dB, dpi = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model, backend=backend),
                                 params, np.float64, rng.normal(size=shape))
    assert ll.shape == shape and not ll.any()
    assert not dA.any() and not dB.any() and not dpi.any()


@pytest.mark.parametrize("form", ["every", "indexed"])
def test_matches_the_unroll(form):
    rng, params, obs, model = data(seed=9, lengths=(20, 0, 7, 13, 1))
    model = model if form == "indexed" else None
    head = rng.normal(size=(4, 5) if model is None else 5)
    fused = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model), params, np.float64, head)
    unroll = with_grads(lambda a, b, p: hmmop.unroll_forward(a, b, p, obs, model=model), params, np.float64, head)
    for f, u in zip(fused, unroll):
        np.testing.assert_allclose(f, u, rtol=1e-9, atol=1e-12)


def test_custom_op_and_symbols():
    """The CustomOps directly (op 'hmm_forward' with rank-3 parameters; 'hmm_forward_by_model'
    with the model input), grad_req 'add', and the shapes symbols infer."""
    rng, params, obs, model = data(seed=11, lengths=(9, 4, 0, 6))
    A, B, pi = (mx.nd.array(x) for x in params)
    every = mx.nd.Custom(A, B, pi, mx.nd.array(obs), op_type="hmm_forward")
    assert every.shape == (4, 4)
    np.testing.assert_array_equal(every.asnumpy(), hmmop.hmm_forward(A, B, pi, obs).asnumpy())
    by_model = mx.nd.Custom(A, B, pi, mx.nd.array(obs), mx.nd.array(model), op_type="hmm_forward_by_model")
    np.testing.assert_array_equal(by_model.asnumpy(), every.asnumpy()[model, np.arange(4)])

    A.attach_grad(grad_req="add")
    for _ in range(2):
        with mx.autograd.record():
            ll = hmmop.hmm_forward(A, B, pi, obs, model=model)
        ll.backward()
    once = with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model), params, np.float32,
                      np.ones(4))[1]
    np.testing.assert_array_equal(A.grad.asnumpy(), 2 * once)

    names = [mx.sym.var(x) for x in ("A", "B", "pi", "obs", "model")]
    out = hmmop.hmm_forward(*names[:4])
    _, shapes, _ = out.infer_shape(A=(5, 3, 3), B=(5, 3, 4), pi=(5, 3), obs=(7, 11))
    assert shapes == [(5, 7)]
    out = hmmop.hmm_forward(*names[:4], model=names[4])
    _, shapes, _ = out.infer_shape(A=(5, 3, 3), B=(5, 3, 4), pi=(5, 3), obs=(7, 11), model=(7,))
    assert shapes == [(7,)]


@pytest.mark.parametrize("backend", CUSTOM_BACKENDS)
def test_out_of_range_model_index_in_the_op(capfd, backend):
    """Unchecked values reaching the CustomOp itself: MXNet refuses, the reason is printed, and the
    process stays usable."""
    _, params, obs, model = data(seed=13, lengths=(3, 2))
    A, B, pi = (mx.nd.array(x) for x in params)
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, B, pi, mx.nd.array(obs), mx.nd.array([0, 4]), op_type="hmm_forward_by_model",
                     backend=backend).asnumpy()
    out, err = capfd.readouterr()
    assert re.search(r"ValueError: model\[1\] = 4 is not a model index in \[0, K\) = \[0, 4\)", out + err)
    good = mx.nd.Custom(A, B, pi, mx.nd.array(obs), mx.nd.array([0, 3]), op_type="hmm_forward_by_model",
                        backend=backend)
    assert np.isfinite(good.asnumpy()).all()


def test_bad_input_errors():
    rng = np.random.default_rng(17)
    A3, B3, pi3 = (mx.nd.array(x) for x in stacked(rng, 3, 2, 4))
    A2, B2, pi2 = A3[0], B3[0], pi3[0]
    obs = random_padded(rng, 4, [5, 3])
    with pytest.raises(ValueError, match=r"model\[1\] = 3 is not a model index in \[0, K\) = \[0, 3\)"):
        hmmop.hmm_forward(A3, B3, pi3, obs, model=[0, 3])
    with pytest.raises(ValueError, match=r"model\[0\] = -1 is not a model index"):
        hmmop.hmm_forward(A3, B3, pi3, obs, model=np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"model\[1\] = 1.5 is not an integer"):
        hmmop.hmm_forward(A3, B3, pi3, obs, model=np.array([0, 1.5]))
    with pytest.raises(ValueError, match=r"model must have shape \(batch,\) = \(2,\)"):
        hmmop.hmm_forward(A3, B3, pi3, obs, model=[0, 1, 2])
    with pytest.raises(ValueError, match="same number of models.*A: 3, B: 2, pi: 3"):
        hmmop.hmm_forward(A3, B3[:2], pi3, obs)
    with pytest.raises(ValueError, match="same number of models.*A: 3, B: 3, pi: 1"):
        hmmop.hmm_forward(A3, B3, pi3[:1], obs, model=[0, 0])
    with pytest.raises(ValueError, match="model axis on some parameters and not others: A has one, B and pi do not"):
        hmmop.hmm_forward(A3, B2, pi2, obs)
    with pytest.raises(ValueError, match="model axis on some parameters and not others: A and B have one, pi does not"):
        hmmop.hmm_forward(A3, B3, pi2, obs, model=[0, 1])
    with pytest.raises(ValueError, match="model axis on some parameters and not others: pi has one"):
        hmmop.unroll_forward(A2, B2, pi3, obs)
    with pytest.raises(ValueError, match="a model input .* needs parameters with a leading model axis"):
        hmmop.hmm_forward(A2, B2, pi2, obs, model=[0, 0])
    with pytest.raises(TypeError, match="model has dtype"):
        hmmop.hmm_forward(A3, B3, pi3, obs, model=np.array(["a", "b"]))
    if not NATIVE:
        with pytest.raises(RuntimeError, match="'native' is not available for a model axis"):
            hmmop.hmm_forward(A3, B3, pi3, obs, backend="native")
    with pytest.raises(ValueError, match=r"obs\[0, 1\]"):
        hmmop.hmm_forward(A3, B3, pi3, [[0, 9]], model=[1])


def test_rank_two_contract_unchanged():
    """Rank-2 parameters: the same op, results and shape as before (ll (batch,))."""
    rng = np.random.default_rng(19)
    A, B, pi = (mx.nd.array(x) for x in random_model(rng, 3, 4))
    obs = random_padded(rng, 4, [6, 2, 0])
    for backend in ("cython", "ndarray"):
        ll = hmmop.hmm_forward(A, B, pi, obs, backend=backend)
        assert ll.shape == (3,)
        np.testing.assert_array_equal(ll.asnumpy(), mx.nd.Custom(A, B, pi, mx.nd.array(obs), op_type="hmm_forward",
                                                                 backend=backend).asnumpy())


@pytest.mark.parametrize("form", ["every", "indexed"])
def test_models_side_by_side_in_threads(form):
    """Enough work for the driver to run models side by side in threads (csrc/hmm_many.c): the same
    bits with 1 and 2 threads, and as separate calls."""
    rng = np.random.default_rng(23)
    k, n, m = 8, 8, 6
    params = stacked(rng, k, n, m)
    lengths = rng.integers(0, 120, size=48)
    obs = random_padded(rng, m, list(lengths), T=120)
    model = rng.integers(0, k, size=48) if form == "indexed" else None
    head = rng.normal(size=48 if model is not None else (k, 48))

    def together():
        return with_grads(lambda a, b, p: hmmop.hmm_forward(a, b, p, obs, model=model, backend="cython"),
                          params, np.float32, head)

    want = separate(params, obs, model, head, np.float32, "cython")
    for got in under_thread_counts([1, 2, 3], together):
        for name, g, w in zip(["ll", "dA", "dB", "dpi"], got, want):
            np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.skipif(not NATIVE, reason="libhmmop_op.so without the model-axis operators")
def test_native_ops_directly():
    """mx.nd.hmm_forward_many / hmm_forward_by_model: the CustomOp's bits, its shapes, its refusal
    of a bad model index (the message in MXNet's error)."""
    _, params, obs, model = data(seed=29, lengths=(9, 4, 0, 6))
    A, B, pi = (mx.nd.array(x) for x in params)
    o = mx.nd.array(obs)
    every = mx.nd.hmm_forward_many(A, B, pi, o)
    assert every.shape == (4, 4)
    np.testing.assert_array_equal(every.asnumpy(), mx.nd.Custom(A, B, pi, o, op_type="hmm_forward").asnumpy())
    by_model = mx.nd.hmm_forward_by_model(A, B, pi, o, mx.nd.array(model))
    np.testing.assert_array_equal(by_model.asnumpy(), every.asnumpy()[model, np.arange(4)])
    with pytest.raises(mx.MXNetError, match=r"model\[2\] = 7 is not a model index in \[0, K\) = \[0, 4\)"):
        mx.nd.hmm_forward_by_model(A, B, pi, o, mx.nd.array([0, 1, 7, 2])).asnumpy()
    with pytest.raises(mx.MXNetError, match="same number of models"):
        mx.nd.hmm_forward_many(A, B[:2], pi, o)
    mx.nd.hmm_forward_many(A, B, pi, o).asnumpy()        # a good call clears the message list
    assert hmmop.native.error_count() == 0
    names = [mx.sym.var(x) for x in ("A", "B", "pi", "obs", "model")]
    _, shapes, _ = mx.sym.hmm_forward_by_model(*names).infer_shape(A=(5, 3, 3), B=(5, 3, 4), pi=(5, 3),
                                                                   obs=(7, 11), model=(7,))
    assert shapes == [(7,)]
    _, shapes, _ = mx.sym.hmm_forward_many(*names[:4]).infer_shape(A=(5, 3, 3), B=(5, 3, 4), pi=(5, 3),
                                                                   obs=(7, 11))
    assert shapes == [(5, 7)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_dimensional_obs_and_float_model_indices(backend):
    """obs (T,) is a batch of one (ll (K, 1), or (1,) with model); model may be an NDArray of
    floats holding integers."""
    rng = np.random.default_rng(31)
    params = stacked(rng, 3, 2, 3)
    A, B, pi = (mx.nd.array(x) for x in params)
    obs = rng.integers(0, 3, size=8)
    every = hmmop.hmm_forward(A, B, pi, obs, backend=backend).asnumpy()
    assert every.shape == (3, 1)
    for q in range(3):
        one = hmmop.hmm_forward(A[q], B[q], pi[q], obs, backend=backend).asnumpy()
        np.testing.assert_array_equal(every[q], one)
    picked = hmmop.hmm_forward(A, B, pi, obs, model=mx.nd.array([2.0]), backend=backend).asnumpy()
    np.testing.assert_array_equal(picked, every[2])
