"""hmm_forward and hmm_forward_dense with a model axis: K models in one call.

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

hmm_forward_dense takes the axis the same way, A (K, N, N) and pi (K, N), in the same two forms:

    ll = mx.nd.Custom(A, pi, log_emission, lengths, op_type='hmm_forward_dense')        # ll (K, batch)
    ll = mx.nd.Custom(A, pi, log_emission, lengths, model, op_type='hmm_forward_dense_by_model')

In the first, log_emission (K, batch, T, N) holds each model's own scores of the same sequences (an
emission model's scores depend on the model): ll[k, b] is the rank-2 op's ll on (A[k], pi[k],
log_emission[k], lengths)[b].  In the second, log_emission (batch, T, N) holds each sequence's scores
under its own model model[b], and ll (batch,).  Gradients as the rank-2 op's (dlog_emission: the
posteriors times the head gradient), each model's from its own terms.  The routes are those above: the
same C driver (csrc/hmm_many.c, a plan of dense kind; bit for bit a rank-2 call per model), the native
hmm_forward_dense_many and hmm_forward_dense_by_model, and the NDArray route (dense_ndarray's
NDArrayForwardDenseMany, which agrees with a call per model to rounding).
"""
import mxnet as mx
import numpy as np
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

from .. import _kernel
from . import checks, native
from .categorical import HMMOpProp, StatefulNDArrayOp
from .dense_ndarray import NDArrayForwardDenseMany
from .ndarray_path import NDArrayForwardMany
from .ndview import view
from .threads import get_num_threads

OP_TYPE_BY_MODEL = "hmm_forward_by_model"
DENSE_OP_TYPE = "hmm_forward_dense"
DENSE_OP_TYPE_BY_MODEL = "hmm_forward_dense_by_model"


class HMMForwardMany(mx.operator.CustomOp):
    """The CPU route of hmm_forward's two forms (indexed: the 'hmm_forward_by_model' form).  The forward
    keeps, in arrays of its own, all the backward needs.  A subclass (HMMForwardDenseMany) changes the
    passes: run_forward and run_backward."""

    PARAMS = "A, B and pi"      # whose leading axis K is (messages)

    def __init__(self, in_shapes, in_dtypes, indexed):
        super().__init__()
        self._shapes = [tuple(s) for s in in_shapes]
        self._dtypes = [np.dtype(_DTYPE_MX_TO_NP[d]) for d in in_dtypes]
        self._indexed = indexed
        self._ws = None

    def _views(self, arrays):
        return [view(x, s, d) for x, s, d in zip(arrays, self._shapes, self._dtypes)]

    def _flat(self, arrays, count):
        """Views of the first ``count`` of arrays (laid out as the inputs) flattened."""
        return [view(x, (int(np.prod(s)),), d) for x, s, d in zip(arrays[:count], self._shapes, self._dtypes)]

    def run_forward(self, inputs, model):
        A, B, pi, obs = inputs[:4]
        obs32, lengths = checks.prepare_obs(obs, B.shape[2])
        return _kernel.forward_many(A, B, pi, obs32, lengths, model, get_num_threads())

    def run_backward(self, codes, gll, in_data, in_grad):
        dA, dB, dpi = self._flat(in_grad, 3)
        _kernel.backward_many(self._ws, gll, dA, dB, dpi, codes[0], codes[1], codes[2], get_num_threads())

    def forward(self, is_train, req, in_data, out_data, aux):
        inputs = self._views(in_data)
        model = checks.prepare_model(inputs[4], inputs[0].shape[0], self.PARAMS) if self._indexed else None
        self._ws = ws = self.run_forward(inputs, model)
        _kernel.store(view(out_data[0], (ws.ll.size,), self._dtypes[0]), ws.ll.reshape(-1),
                      _kernel.REQ_CODES[req[0]])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        codes = [_kernel.REQ_CODES[r] for r in req]
        gll = view(out_grad[0], (self._ws.ll.size,), self._dtypes[0])
        self.run_backward(codes, gll, in_data, in_grad)
        for i in range(3, len(in_grad)):
            if codes[i] in (1, 2):
                view(in_grad[i], self._shapes[i], self._dtypes[i])[...] = 0


class HMMForwardDenseMany(HMMForwardMany):
    """The CPU route of hmm_forward_dense's two forms (indexed: 'hmm_forward_dense_by_model'); the
    backward reads log_emission again (declared as a backward dependency)."""

    PARAMS = checks.DENSE_PARAMS

    def _rows(self, x):
        """A (K, batch, T, N) or (batch, T, N) view as (rows, T, N)."""
        return x.reshape((-1,) + x.shape[-2:])

    def run_forward(self, inputs, model):
        A, pi, le, lengths = inputs[:4]
        lengths = checks.prepare_lengths(lengths, le.shape[-2])
        return _kernel.forward_many_dense(A, pi, self._rows(le), lengths, model, get_num_threads())

    def run_backward(self, codes, gll, in_data, in_grad):
        dA, dpi = self._flat(in_grad, 2)
        le = self._rows(view(in_data[2], self._shapes[2], self._dtypes[2]))
        dle = self._rows(view(in_grad[2], self._shapes[2], self._dtypes[2]))
        _kernel.backward_many_dense(self._ws, gll, le, dA, dpi, dle, codes[0], codes[1], codes[2],
                                    get_num_threads())


class HMMForwardManyNDArray(StatefulNDArrayOp):
    """The NDArray route of both forms, of either op (see ndarray_path.NDArrayForwardMany,
    dense_ndarray.NDArrayForwardDenseMany)."""

    def __init__(self, indexed, dense=False):
        super().__init__()
        self._indexed, self._dense = indexed, dense

    def state(self, in_data):
        A = in_data[0]
        params = checks.DENSE_PARAMS if self._dense else HMMForwardMany.PARAMS
        model = checks.prepare_model(in_data[4].asnumpy(), A.shape[0], params) if self._indexed else None
        if self._dense:
            A, pi, le, lengths = in_data[:4]
            return NDArrayForwardDenseMany(A, pi, le, checks.prepare_lengths(lengths.asnumpy(), le.shape[-2]),
                                           model)
        A, B, pi, obs = in_data[:4]
        _, lengths = checks.prepare_obs(obs.asnumpy(), B.shape[2])
        return NDArrayForwardMany(A, B, pi, obs, lengths, model)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        grads = self._state.backward(out_grad[0])
        for i, g in enumerate(grads):
            self.assign(in_grad[i], req[i], g.astype(in_grad[i].dtype, copy=False))
        for i in range(len(grads), len(in_grad)):
            if req[i] in ("write", "inplace"):
                in_grad[i][:] = 0


def create_many_operator(prop, ctx, in_shapes, in_dtypes, indexed, dense=False):
    """The CustomOp of a model-axis call (prop: the calling CustomOpProp, for its backend; dense: of
    hmm_forward_dense)."""
    on_cpu = ctx.device_type == "cpu"
    backend = prop.backend
    if backend == "auto":
        backend = "cython" if on_cpu else "ndarray"
    if backend == "ndarray":
        return HMMForwardManyNDArray(indexed, dense)
    if not on_cpu:
        raise ValueError(f"{prop.OP_NAME}: backend 'cython' runs on the CPU only, but the inputs "
                         f"are on {ctx}; use backend='auto' or 'ndarray' there")
    return (HMMForwardDenseMany if dense else HMMForwardMany)(in_shapes, in_dtypes, indexed)


@mx.operator.register(OP_TYPE_BY_MODEL)
class HMMForwardByModelProp(HMMOpProp):
    """Shapes, dtypes and dependencies of hmm_forward_by_model; attribute backend ('auto', 'cython',
    'ndarray').  HMMForwardDenseByModelProp changes the inputs, their checks and DENSE."""

    OP_NAME, ARGUMENTS, INDEX_DTYPE = OP_TYPE_BY_MODEL, ("A", "B", "pi", "obs", "model"), np.float32
    DENSE = False

    def batch_of(self, in_shape):
        return checks.check_many_shapes(*in_shape)[3]

    def dtype_of(self, in_type):
        return checks.check_dtypes(*in_type)

    def infer_type(self, in_type):
        known = [t for t in in_type[:3] if t is not None]
        param = known[0] if known else np.float32
        in_type = [param if t is None else t for t in in_type[:3]] + \
                  [self.INDEX_DTYPE if t is None else t for t in in_type[3:]]
        dtype = self.dtype_of(in_type[:4])
        checks.check_model_dtype(in_type[4])
        return in_type, [dtype.type], []

    def create_operator(self, ctx, in_shapes, in_dtypes):
        return create_many_operator(self, ctx, in_shapes, in_dtypes, indexed=True, dense=self.DENSE)


@mx.operator.register(DENSE_OP_TYPE_BY_MODEL)
class HMMForwardDenseByModelProp(HMMForwardByModelProp):
    """Shapes, dtypes and dependencies of hmm_forward_dense_by_model; attribute backend."""

    OP_NAME, ARGUMENTS = DENSE_OP_TYPE_BY_MODEL, ("A", "pi", "log_emission", "lengths", "model")
    INDEX_DTYPE, DENSE = np.int64, True

    def batch_of(self, in_shape):
        return checks.check_dense_many_shapes(*in_shape)[2]

    def dtype_of(self, in_type):
        return checks.check_dense_dtypes(*in_type)


def _forward_many(dense, inputs, model, backend, checked):
    """The model-axis call of hmm_forward (inputs A, B, pi, obs) or, dense, of hmm_forward_dense (A, pi,
    log_emission, lengths): symbols passed through unchecked, NDArrays checked (checked() -> the checked
    inputs and model), then the native operator or the CustomOp by backend (see hmm_forward_many)."""
    every, by_model = (DENSE_OP_TYPE, DENSE_OP_TYPE_BY_MODEL) if dense else ("hmm_forward", OP_TYPE_BY_MODEL)
    run_native = native.forward_dense_many if dense else native.forward_many
    if backend == "native" and not native.many_available():
        raise RuntimeError(f"backend 'native' is not available for a model axis: "
                           f"{native.many_unavailable_reason()}; use backend='auto', 'cython' or 'ndarray'")
    F = mx.sym if any(isinstance(x, mx.sym.Symbol) for x in (*inputs, model)) else mx.nd
    if F is mx.nd:
        inputs, model = checked()
        on_cpu = inputs[0].context.device_type == "cpu"
        if backend == "auto" and on_cpu and native.many_available():
            backend = "native"
        if backend in ("cython", "native") and not on_cpu:
            raise ValueError(f"backend {backend!r} runs on the CPU only, but "
                             f"{'A, pi and log_emission' if dense else 'A, B and pi'} are on {inputs[0].context}; "
                             f"use backend='auto' or 'ndarray' there")
    if backend == "native":
        return run_native(F, *inputs, model)
    if model is None:
        return F.Custom(*inputs, op_type=every, backend=backend)
    return F.Custom(*inputs, model, op_type=by_model, backend=backend)


def hmm_forward_many(A, B, pi, obs, model=None, backend="auto"):
    """hmmop.hmm_forward with a model axis (see hmm_forward and this module's doc): checked NDArray
    inputs to the operator, or symbols passed through unchecked.  backend: 'auto' (the native
    operators hmm_forward_many / hmm_forward_by_model on a CPU context where the library has them,
    else the CustomOp's 'auto'; for symbols, the CustomOp), 'native', 'cython' or 'ndarray'."""
    def checked():
        A_, B_, pi_, obs_, _, model_, _ = checks.checked_many_inputs(A, B, pi, obs, model)
        return (A_, B_, pi_, obs_), model_
    return _forward_many(False, (A, B, pi, obs), model, backend, checked)


def hmm_forward_dense_many(A, pi, log_emission, lengths, model=None, backend="auto", check_values=True):
    """hmmop.hmm_forward_dense with a model axis (see hmm_forward_dense and this module's doc), as
    hmm_forward_many: the native operators hmm_forward_dense_many / hmm_forward_dense_by_model, or the
    CustomOps 'hmm_forward_dense' (rank-3 A) and 'hmm_forward_dense_by_model'.  check_values: as for
    hmm_forward_dense (NaN / +inf in log_emission inside a sequence)."""
    def checked():
        A_, pi_, le_, lengths_, _, model_, _ = checks.checked_dense_many_inputs(A, pi, log_emission, lengths, model,
                                                                               check_values=check_values)
        return (A_, pi_, le_, lengths_), model_
    return _forward_many(True, (A, pi, log_emission, lengths), model, backend, checked)
