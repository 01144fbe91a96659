"""hmm_forward with a model axis: K models in one call.

Parameters with a leading model axis, A (K, N, N), B (K, N, M), pi (K, N), in two forms:

    ll = mx.nd.Custom(A, B, pi, obs, op_type='hmm_forward')                  # ll (K, batch)
    ll = mx.nd.Custom(A, B, pi, obs, model, op_type='hmm_forward_by_model')  # ll (batch,)

The first (op 'hmm_forward' itself, which takes rank-3 parameters) scores every sequence under every
model: ll[k, b] = log P(obs[b] | model k) - restarts, model selection.  The second takes one more
input, model (batch,) of model indices in [0, K) (int32/int64, or floats holding integers), and
scores sequence b under model model[b] only: ll[b] - one model per entity.  Gradients reach each
model's parameters from its own terms only; a model without sequences gets zero.  obs, dtypes,
missing (-2) and padding (-1) as for hmm_forward; ll has A's dtype.

Why a second op type rather than an optional fifth input on 'hmm_forward': a CustomOpProp fixes its
inputs in list_arguments before it sees them, so an optional input would need an attribute saying
it is there; a name of its own says the same, keeps 'hmm_forward''s prop (and its rank-2 path)
as it was, and reads as what it does.

The CPU route (backend 'cython', 'auto' on a CPU context) is csrc/hmm_many.c through
hmmop._kernel.forward_many: one batch plan per model, the models side by side in threads.  Each
model's ll and gradients are bit for bit those of a rank-2 call on its own sequences, whatever the
thread count.  The NDArray route (backend 'ndarray', 'auto' elsewhere) gathers each row's
parameters by its model index and runs the batched recursion of ndarray_path once over all
(model, sequence) rows.  The native operators of libhmmop_op.so, hmm_forward_many (the first
form) and hmm_forward_by_model (the second), run the same C driver as the CPU route (the same bits)
without the CustomOp's Python callbacks; hmmop.hmm_forward takes them for backend 'auto' on a CPU
context where they are loaded (hmmop.ops.native.forward_many guards their gradients).
"""
import mxnet as mx
import numpy as np
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

from .. import _kernel
from . import checks, native
from .categorical import BACKENDS, HMMOpProp, StatefulNDArrayOp
from .ndarray_path import NDArrayForwardMany
from .ndview import view
from .threads import get_num_threads

OP_TYPE_BY_MODEL = "hmm_forward_by_model"


class HMMForwardMany(mx.operator.CustomOp):
    """The CPU route of both forms (indexed: the 'hmm_forward_by_model' form).  The forward keeps,
    in arrays of its own, all the backward needs."""

    def __init__(self, in_shapes, in_dtypes, indexed):
        super().__init__()
        self._shapes = [tuple(s) for s in in_shapes]
        self._dtypes = [np.dtype(_DTYPE_MX_TO_NP[d]) for d in in_dtypes]
        self._indexed = indexed
        self._ws = None

    def _views(self, arrays):
        return [view(x, s, d) for x, s, d in zip(arrays, self._shapes, self._dtypes)]

    def forward(self, is_train, req, in_data, out_data, aux):
        inputs = self._views(in_data)
        A, B, pi, obs = inputs[:4]
        obs32, lengths = checks.prepare_obs(obs, B.shape[2])
        model = checks.prepare_model(inputs[4], A.shape[0]) if self._indexed else None
        self._ws = ws = _kernel.forward_many(A, B, pi, obs32, lengths, model, get_num_threads())
        _kernel.store(view(out_data[0], (ws.ll.size,), self._dtypes[0]), ws.ll.reshape(-1),
                      _kernel.REQ_CODES[req[0]])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        codes = [_kernel.REQ_CODES[r] for r in req]
        sizes = [int(np.prod(s)) for s in self._shapes[:3]]
        dA, dB, dpi = (view(g, (size,), d) for g, size, d in zip(in_grad[:3], sizes, self._dtypes))
        gll = view(out_grad[0], (self._ws.ll.size,), self._dtypes[0])
        _kernel.backward_many(self._ws, gll, dA, dB, dpi, codes[0], codes[1], codes[2], get_num_threads())
        for i in range(3, len(in_grad)):
            if codes[i] in (1, 2):
                view(in_grad[i], self._shapes[i], self._dtypes[i])[...] = 0


class HMMForwardManyNDArray(StatefulNDArrayOp):
    """The NDArray route of both forms (see ndarray_path.NDArrayForwardMany)."""

    def __init__(self, indexed):
        super().__init__()
        self._indexed = indexed

    def state(self, in_data):
        A, B, pi, obs = in_data[:4]
        _, lengths = checks.prepare_obs(obs.asnumpy(), B.shape[2])
        model = checks.prepare_model(in_data[4].asnumpy(), A.shape[0]) if self._indexed else None
        return NDArrayForwardMany(A, B, pi, obs, lengths, model)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        grads = self._state.backward(out_grad[0])
        for i, g in enumerate(grads):
            self.assign(in_grad[i], req[i], g.astype(in_grad[i].dtype, copy=False))
        for i in range(3, len(in_grad)):
            if req[i] in ("write", "inplace"):
                in_grad[i][:] = 0


def create_many_operator(prop, ctx, in_shapes, in_dtypes, indexed):
    """The CustomOp of a model-axis call (prop: the calling CustomOpProp, for its backend)."""
    on_cpu = ctx.device_type == "cpu"
    backend = prop.backend
    if backend == "auto":
        backend = "cython" if on_cpu else "ndarray"
    if backend == "ndarray":
        return HMMForwardManyNDArray(indexed)
    if not on_cpu:
        raise ValueError(f"{prop.OP_NAME}: backend 'cython' runs on the CPU only, but the inputs "
                         f"are on {ctx}; use backend='auto' or 'ndarray' there")
    return HMMForwardMany(in_shapes, in_dtypes, indexed)


@mx.operator.register(OP_TYPE_BY_MODEL)
class HMMForwardByModelProp(HMMOpProp):
    """Shapes, dtypes and dependencies of hmm_forward_by_model; attribute backend ('auto', 'cython',
    'ndarray')."""

    OP_NAME, ARGUMENTS, INDEX_DTYPE = OP_TYPE_BY_MODEL, ("A", "B", "pi", "obs", "model"), np.float32

    def infer_shape(self, in_shape):
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.OP_NAME}: backend must be one of {BACKENDS}, got {self.backend!r}")
        _, _, _, batch, _ = checks.check_many_shapes(*in_shape)
        return in_shape, [(batch,)], []

    def infer_type(self, in_type):
        known = [t for t in in_type[:3] if t is not None]
        param = known[0] if known else np.float32
        in_type = [param if t is None else t for t in in_type[:3]] + \
                  [self.INDEX_DTYPE if t is None else t for t in in_type[3:]]
        dtype = checks.check_dtypes(*in_type[:4])
        checks.check_model_dtype(in_type[4])
        return in_type, [dtype.type], []

    def create_operator(self, ctx, in_shapes, in_dtypes):
        return create_many_operator(self, ctx, in_shapes, in_dtypes, indexed=True)

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        return list(out_grad)


def hmm_forward_many(A, B, pi, obs, model=None, backend="auto"):
    """hmmop.hmm_forward with a model axis (see hmm_forward and this module's doc): checked NDArray
    inputs to the operator, or symbols passed through unchecked.  backend: 'auto' (the native
    operators hmm_forward_many / hmm_forward_by_model on a CPU context where the library has them,
    else the CustomOp's 'auto'; for symbols, the CustomOp), 'native', 'cython' or 'ndarray'."""
    if backend == "native" and not native.many_available():
        raise RuntimeError(f"backend 'native' is not available for a model axis: "
                           f"{native.many_unavailable_reason()}; use backend='auto', 'cython' or 'ndarray'")
    if any(isinstance(x, mx.sym.Symbol) for x in (A, B, pi, obs, model)):
        if backend == "native":
            return native.forward_many(mx.sym, A, B, pi, obs, model)
        if model is None:
            return mx.sym.Custom(A, B, pi, obs, op_type="hmm_forward", backend=backend)
        return mx.sym.Custom(A, B, pi, obs, model, op_type=OP_TYPE_BY_MODEL, backend=backend)
    A, B, pi, obs, _, model, _ = checks.checked_many_inputs(A, B, pi, obs, model)
    on_cpu = A.context.device_type == "cpu"
    if backend == "auto" and on_cpu and native.many_available():
        backend = "native"
    if backend in ("cython", "native") and not on_cpu:
        raise ValueError(f"backend {backend!r} runs on the CPU only, but A, B and pi are on {A.context}; "
                         f"use backend='auto' or 'ndarray' there")
    if backend == "native":
        return native.forward_many(mx.nd, A, B, pi, obs, model)
    if model is None:
        return mx.nd.Custom(A, B, pi, obs, op_type="hmm_forward", backend=backend)
    return mx.nd.Custom(A, B, pi, obs, model, op_type=OP_TYPE_BY_MODEL, backend=backend)
