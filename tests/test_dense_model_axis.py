"""hmm_forward_dense with a model axis (issue 18): K models in one call against K separate rank-2 calls
(bit for bit on the C routes, to rounding on the NDArray route and the unroll), its gradients (also by
finite differences), and its refusals of bad input."""
import re

import mxnet as mx
import numpy as np
import pytest

import hmmop
from reference import under_thread_counts, with_grads

NATIVE = hmmop.native.many_available()   # libhmmop_op.so's hmm_forward_dense_many, hmm_forward_dense_by_model
C_BACKENDS = ["cython"] + (["native"] if NATIVE else [])
BACKENDS = C_BACKENDS + ["ndarray"]


def data(seed=0, k=4, n=3, lengths=(20, 0, 13, 1, 17, 20, 6, 19, 3), T=None, scale=2.0):
    """K random models and a mixed batch (an empty sequence, padding holding NaN): A (K, n, n), pi (K, n),
    le (K, batch, T, n) (each model's scores), lengths, and model indices that leave model 1 without a
    sequence; NumPy float64."""
    rng = np.random.default_rng(seed)
    A = rng.random((k, n, n)) + 0.1
    A /= A.sum(axis=2, keepdims=True)
    pi = rng.random((k, n)) + 0.1
    pi /= pi.sum(axis=1, keepdims=True)
    lengths = np.array(lengths, dtype=np.int64)
    le = rng.normal(scale=scale, size=(k, len(lengths), T or int(lengths.max()), n))
    for b, L in enumerate(lengths):
        le[:, b, L:] = np.nan                           # padding may hold anything
    model = rng.choice([q for q in range(k) if q != 1], size=len(lengths))
    return rng, A, pi, le, lengths, model


def call(backend, lengths, model=None, **kw):
    return lambda a, p, x: hmmop.hmm_forward_dense(a, p, x, lengths, model=model, backend=backend, **kw)


def separate(A, pi, le, lengths, model, head, dtype, backend):
    """ll and gradients by one rank-2 call per model (on its own sequences and its own scores): what
    the model axis must give.  le: (K, batch, T, n) without model, (batch, T, n) with it."""
    ll = np.zeros(head.shape, dtype=dtype)
    grads = [np.zeros(x.shape, dtype=dtype) for x in (A, pi, le)]
    for q in range(A.shape[0]):
        rows = np.arange(len(lengths)) if model is None else np.flatnonzero(model == q)
        if rows.size == 0:
            continue
        scores = le[q] if model is None else le
        out = with_grads(call(backend, lengths[rows]), (A[q], pi[q], scores[rows]), dtype,
                         head[q] if model is None else head[rows])
        if model is None:
            ll[q], grads[2][q] = out[0], out[3]
        else:
            ll[rows], grads[2][rows] = out[0], out[3]
        grads[0][q], grads[1][q] = out[1], out[2]
    return [ll] + grads


def forms(form, le, model):
    """(le, model) of the form: every model on every sequence, or each sequence by its model index."""
    if form == "every":
        return le, None
    return le[model, np.arange(len(model))], model


@pytest.mark.parametrize("backend", C_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["every", "indexed"])
def test_equals_separate_calls_bit_for_bit(form, dtype, backend):
    rng, A, pi, le, lengths, model = data()
    le, model = forms(form, le, model)
    k, batch = A.shape[0], len(lengths)
    head = rng.normal(size=(k, batch) if model is None else batch)
    want = separate(A, pi, le, lengths, model, head, dtype, backend)
    got_all = under_thread_counts([1, 2], lambda: with_grads(call(backend, lengths, model), (A, pi, le), dtype, head))
    for got in got_all:
        assert got[0].shape == ((k, batch) if model is None else (batch,))
        for name, g, w in zip(["ll", "dA", "dpi", "dlog_emission"], got, want):
            assert g.dtype == np.dtype(dtype), name
            np.testing.assert_array_equal(g, w, err_msg=name)
    if model is not None:
        assert not want[1][1].any() and not want[2][1].any()     # model 1: no sequence, zero gradient


@pytest.mark.parametrize("form", ["every", "indexed"])
def test_ndarray_route_and_unroll_agree_to_rounding(form):
    rng, A, pi, le, lengths, model = data(seed=1, lengths=(9, 0, 4, 7, 1))
    le, model = forms(form, le, model)
    head = rng.normal(size=(4, 5) if model is None else 5)
    fused = with_grads(call("cython", lengths, model), (A, pi, le), np.float64, head)
    nd = with_grads(call("ndarray", lengths, model), (A, pi, le), np.float64, head)
    le0 = np.where(np.isnan(le), 0.0, le)            # the unroll's gradient through NaN padding would be NaN
    unroll = with_grads(lambda a, p, x: hmmop.unroll_forward_dense(a, p, x, lengths, model=model),
                        (A, pi, le0), np.float64, head)
    for name, f, x, u in zip(["ll", "dA", "dpi", "dlog_emission"], fused, nd, unroll):
        assert x.shape == f.shape == u.shape, name
        np.testing.assert_allclose(x, f, rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(u, f, rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_without_sequences_gets_zero_gradient(backend):
    rng, A, pi, le, lengths, _ = data(seed=3, k=3)
    model = np.zeros(len(lengths), dtype=np.int64)      # models 1 and 2: nothing, then 2 some
    model[::3] = 2
    le, model = forms("indexed", le, model)
    ll, dA, dpi, dle = with_grads(call(backend, lengths, model), (A, pi, le), np.float64,
                                  rng.normal(size=len(lengths)))
    assert not dA[1].any() and not dpi[1].any()
    assert dA[0].any() and dA[2].any() and dpi[0].any() and dpi[2].any()
    assert np.isfinite(dle).all() and dle[lengths > 0].any()


@pytest.mark.parametrize("form", ["every", "indexed"])
def test_models_side_by_side_in_threads(form):
    """Enough work for the driver to run the models side by side in threads (csrc/hmm_many.c): the same
    bits with 1, 2 and 3 threads, and as separate calls."""
    rng = np.random.default_rng(23)
    lengths = rng.integers(0, 60, size=40)
    _, A, pi, le, lengths, _ = data(seed=23, k=8, n=8, lengths=lengths, T=60)
    model = rng.integers(0, 8, size=40)
    le, model = forms(form, le, model)
    head = rng.normal(size=40 if model is not None else (8, 40))
    want = separate(A, pi, le, lengths, model, head, np.float32, "cython")
    got_all = under_thread_counts([1, 2, 3], lambda: with_grads(call("cython", lengths, model), (A, pi, le),
                                                                 np.float32, head))
    for got in got_all:
        for name, g, w in zip(["ll", "dA", "dpi", "dlog_emission"], got, want):
            np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("form", ["every", "indexed"])
def test_gradients_by_finite_differences(form):
    """float64 central differences of the op's own ll: every entry of A, pi and log_emission."""
    rng, A, pi, le, lengths, model = data(seed=5, k=2, n=2, lengths=(3, 2, 0), scale=1.0)
    le, model = forms(form, le, np.array([1, 0, 1]))
    le = np.where(np.isnan(le), 0.0, le)
    head = rng.normal(size=(2, 3) if model is None else 3)
    _, *grads = with_grads(call("cython", lengths, model), (A, pi, le), np.float64, head)

    def f(a, p, x):
        ll = hmmop.hmm_forward_dense(mx.nd.array(a, dtype=np.float64), mx.nd.array(p, dtype=np.float64),
                                     mx.nd.array(x, dtype=np.float64), lengths, model=model, backend="cython")
        return float((ll.asnumpy() * head).sum())

    params, h = [A, pi, le], 1e-6
    for i, (x, g) in enumerate(zip(params, grads)):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            up = [p.copy() for p in params]
            down = [p.copy() for p in params]
            up[i][idx] += h
            down[i][idx] -= h
            numeric[idx] = (f(*up) - f(*down)) / (2 * h)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8, err_msg=["dA", "dpi", "dle"][i])


def test_custom_ops_and_symbols():
    """The CustomOps directly (op 'hmm_forward_dense' with a rank-3 A; 'hmm_forward_dense_by_model' with
    the model input), grad_req 'add', and the shapes symbols infer."""
    _, A, pi, le, lengths, model = data(seed=11, lengths=(5, 4, 0, 6))
    le = np.nan_to_num(le)
    A, pi, le_all = (mx.nd.array(x) for x in (A, pi, le))
    L = mx.nd.array(lengths, dtype=np.int64)
    every = mx.nd.Custom(A, pi, le_all, L, op_type="hmm_forward_dense")
    assert every.shape == (4, 4)
    np.testing.assert_array_equal(every.asnumpy(), hmmop.hmm_forward_dense(A, pi, le_all, lengths).asnumpy())
    le_own = mx.nd.array(le[model, np.arange(4)])
    by_model = mx.nd.Custom(A, pi, le_own, L, mx.nd.array(model), op_type="hmm_forward_dense_by_model")
    np.testing.assert_array_equal(by_model.asnumpy(), every.asnumpy()[model, np.arange(4)])

    for backend in ["cython"] + (["native"] if NATIVE else []):     # the native op: fed through identity
        A.attach_grad(grad_req="add")
        le_own.attach_grad(grad_req="add")
        for _ in range(2):
            with mx.autograd.record():
                ll = hmmop.hmm_forward_dense(A, pi, le_own, lengths, model=model, backend=backend)
            ll.backward()
        once = with_grads(call(backend, lengths, model), (A.asnumpy(), pi.asnumpy(), le_own.asnumpy()), np.float32,
                          np.ones(4))
        np.testing.assert_array_equal(A.grad.asnumpy(), 2 * once[1])
        np.testing.assert_array_equal(le_own.grad.asnumpy(), 2 * once[3])

    names = [mx.sym.var(x) for x in ("A", "pi", "log_emission", "lengths", "model")]
    out = hmmop.hmm_forward_dense(*names[:4])
    _, shapes, _ = out.infer_shape(A=(5, 3, 3), pi=(5, 3), log_emission=(5, 7, 11, 3), lengths=(7,))
    assert shapes == [(5, 7)]
    out = hmmop.hmm_forward_dense(*names[:4], model=names[4])
    _, shapes, _ = out.infer_shape(A=(5, 3, 3), pi=(5, 3), log_emission=(7, 11, 3), lengths=(7,), model=(7,))
    assert shapes == [(7,)]


@pytest.mark.skipif(not NATIVE, reason="libhmmop_op.so without the dense model-axis operators")
def test_native_ops_directly():
    """mx.nd.hmm_forward_dense_many / hmm_forward_dense_by_model: the CustomOp's bits, shapes, errors."""
    _, A, pi, le, lengths, model = data(seed=29, lengths=(5, 4, 0, 6))
    le = np.nan_to_num(le)
    A, pi, le_all = (mx.nd.array(x) for x in (A, pi, le))
    L = mx.nd.array(lengths, dtype=np.int64)
    every = mx.nd.hmm_forward_dense_many(A, pi, le_all, L)
    assert every.shape == (4, 4)
    custom = mx.nd.Custom(A, pi, le_all, L, op_type="hmm_forward_dense")
    np.testing.assert_array_equal(every.asnumpy(), custom.asnumpy())
    le_own = mx.nd.array(le[model, np.arange(4)])
    by_model = mx.nd.hmm_forward_dense_by_model(A, pi, le_own, L, mx.nd.array(model))
    np.testing.assert_array_equal(by_model.asnumpy(), every.asnumpy()[model, np.arange(4)])
    with pytest.raises(mx.MXNetError, match=r"model\[2\] = 7 is not a model index in \[0, K\) = \[0, 4\)"):
        mx.nd.hmm_forward_dense_by_model(A, pi, le_own, L, mx.nd.array([0, 1, 7, 2])).asnumpy()
    with pytest.raises(mx.MXNetError, match="same number of models"):
        mx.nd.hmm_forward_dense_many(A, pi[:2], le_all, L)
    mx.nd.hmm_forward_dense_many(A, pi, le_all, L).asnumpy()      # a good call clears the message list
    assert hmmop.native.error_count() == 0
    names = [mx.sym.var(x) for x in ("A", "pi", "log_emission", "lengths", "model")]
    _, shapes, _ = mx.sym.hmm_forward_dense_by_model(*names).infer_shape(A=(5, 3, 3), pi=(5, 3),
                                                                         log_emission=(7, 11, 3), lengths=(7,),
                                                                         model=(7,))
    assert shapes == [(7,)]
    _, shapes, _ = mx.sym.hmm_forward_dense_many(*names[:4]).infer_shape(A=(5, 3, 3), pi=(5, 3),
                                                                         log_emission=(5, 7, 11, 3), lengths=(7,))
    assert shapes == [(5, 7)]


@pytest.mark.parametrize("backend", ["cython", "ndarray"])
def test_out_of_range_model_index_in_the_op(capfd, backend):
    """Unchecked values reaching the CustomOp itself: MXNet refuses, the reason is printed, and the
    process stays usable."""
    _, A, pi, le, lengths, _ = data(seed=13, lengths=(3, 2))
    A, pi, le = (mx.nd.array(x) for x in (A, pi, np.nan_to_num(le[0])))
    L = mx.nd.array(lengths, dtype=np.int64)
    with pytest.raises(mx.MXNetError):
        mx.nd.Custom(A, pi, le, L, mx.nd.array([0, 4]), op_type="hmm_forward_dense_by_model",
                     backend=backend).asnumpy()
    out, err = capfd.readouterr()
    assert re.search(r"ValueError: model\[1\] = 4 is not a model index in \[0, K\) = \[0, 4\) "
                     r"\(K: the leading axis of A and pi\)", out + err)
    good = mx.nd.Custom(A, pi, le, L, mx.nd.array([0, 3]), op_type="hmm_forward_dense_by_model", backend=backend)
    assert np.isfinite(good.asnumpy()).all()


def test_bad_input_errors():
    _, A, pi, le, lengths, _ = data(seed=17, k=3, n=2, lengths=(5, 3))
    A3, pi3, le4 = (mx.nd.array(x) for x in (A, pi, np.nan_to_num(le)))
    A2, pi2, le3 = A3[0], pi3[0], le4[0]
    f = hmmop.hmm_forward_dense
    with pytest.raises(ValueError, match=r"model\[1\] = 3 is not a model index in \[0, K\) = \[0, 3\)"):
        f(A3, pi3, le3, lengths, model=[0, 3])
    with pytest.raises(ValueError, match=r"model\[0\] = -1 is not a model index"):
        f(A3, pi3, le3, lengths, model=np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"model\[1\] = 1.5 is not an integer"):
        f(A3, pi3, le3, lengths, model=np.array([0, 1.5]))
    with pytest.raises(ValueError, match=r"model must have shape \(batch,\) = \(2,\)"):
        f(A3, pi3, le3, lengths, model=[0, 1, 2])
    with pytest.raises(ValueError, match="same number of models.*A: 3, pi: 2, log_emission: 3"):
        f(A3, pi3[:2], le4, lengths)
    with pytest.raises(ValueError, match="same number of models.*A: 3, pi: 3, log_emission: 1"):
        f(A3, pi3, le4[:1], lengths)
    with pytest.raises(ValueError, match="same number of models.*A: 3, pi: 1"):
        f(A3, pi3[:1], le3, lengths, model=[0, 0])
    with pytest.raises(ValueError, match="model axis on some parameters and not others: A has one, pi and "
                                         "log_emission do not"):
        f(A3, pi2, le3, lengths)
    with pytest.raises(ValueError, match="model axis on some parameters and not others: A and pi have one, "
                                         "log_emission does not.*with model"):
        f(A3, pi3, le3, lengths)
    with pytest.raises(ValueError, match="model axis on some parameters and not others: pi and log_emission have "
                                         "one, A does not"):
        hmmop.unroll_forward_dense(A2, pi3, le4, lengths)
    with pytest.raises(ValueError, match=r"log_emission must have shape \(batch, T, N\) with model"):
        f(A3, pi3, le4, lengths, model=[0, 0])
    with pytest.raises(ValueError, match=r"log_emission must have shape \(K, batch, T, N\) = \(3, batch, T, 2\)"):
        f(A3, pi3, mx.nd.zeros((3, 2, 5, 4)), lengths)
    with pytest.raises(ValueError, match="a model input .* needs parameters with a leading model axis"):
        f(A2, pi2, le3, lengths, model=[0, 0])
    with pytest.raises(TypeError, match="model has dtype"):
        f(A3, pi3, le3, lengths, model=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"lengths\[1\] = 9 is outside \[0, T\]"):
        f(A3, pi3, le4, [5, 9])
    bad = le4.asnumpy()
    bad[2, 1, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"log_emission\[2, 1, 0, 1\] = nan"):
        f(A3, pi3, mx.nd.array(bad), lengths)
    if not NATIVE:
        with pytest.raises(RuntimeError, match="'native' is not available for a model axis"):
            f(A3, pi3, le4, lengths, backend="native")
    assert f(A3, pi3, le4, lengths).shape == (3, 2)          # usable after


def test_rank_two_contract_unchanged():
    """Rank-2 parameters: the same op, results and shape as before (ll (batch,))."""
    _, A, pi, le, lengths, _ = data(seed=19)
    A, pi, le = (mx.nd.array(x) for x in (A[0], pi[0], le[0]))
    for backend in ("cython", "ndarray"):
        ll = hmmop.hmm_forward_dense(A, pi, le, lengths, backend=backend)
        assert ll.shape == (len(lengths),)
        np.testing.assert_array_equal(ll.asnumpy(), mx.nd.Custom(A, pi, le, mx.nd.array(lengths), backend=backend,
                                                                 op_type="hmm_forward_dense").asnumpy())
