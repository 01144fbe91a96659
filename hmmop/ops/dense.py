"""The ``hmm_forward_dense`` MXNet CustomOp and its checked Python wrapper.

    ll = mx.nd.Custom(A, pi, log_emission, lengths, op_type='hmm_forward_dense')

The HMM forward recursion on emissions from anywhere: a Gaussian density, a
network's scores, a CRF's emission potentials.

A (N, N) transitions and pi (N,) initial weights - any non-negative values
(a CRF passes exp of its scores); log_emission (batch, T, N): the
log-likelihood of step t's observation under each state, any real number or
-inf (impossible); a row of zeros is an observation that tells nothing (a
missing one).  A, pi and log_emission share one dtype, float32 or float64.
lengths (batch,): int32/int64/float holding integers in [0, T]; steps at or
past a sequence's length are ignored.  ll (batch,) has A's dtype:

    ll[b] = log sum_paths pi[s_0] prod_t A[s_{t-1}, s_t] prod_t exp(log_emission[b, t, s_t])

0 for an empty sequence, -inf for an impossible one (its gradient is zero).
Each step works from its largest log-emission, so scores of any scale give
finite results.  Backward: dA and dpi as hmm_forward's; d ll / d log_emission
is the state posteriors P(s_t = i | obs) (0 past the length); lengths gets 0.

Attribute backend: 'auto' (the Cython kernel on a CPU context, the NDArray
path on any other), 'cython' (CPU only) or 'ndarray' (any context).  This
module only adapts MXNet's contract; the C batch driver (csrc/hmm_batch.h,
through hmmop._kernel) and hmmop.ops.dense_ndarray do the work.

A model axis (hmmop.ops.model_axis): A (K, N, N), pi (K, N) with log_emission
(K, batch, T, N) - each model's own scores of the sequences - give ll (K, batch),
every sequence under every model (this op type takes them); with model (batch,)
of model indices as well, log_emission (batch, T, N) and ll (batch,), sequence b
under model model[b] (op type 'hmm_forward_dense_by_model').
"""
import mxnet as mx
import numpy as np
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

from .. import _kernel
from . import checks, native
from .ndview import view
from . import model_axis
from .categorical import BACKENDS, WRAPPER_BACKENDS, HMMOpProp, StatefulNDArrayOp, _is_symbol, _shape
from .dense_ndarray import NDArrayForwardDense
from .threads import get_num_threads

OP_TYPE = "hmm_forward_dense"


class HMMForwardDense(mx.operator.CustomOp):
    """Runs on the CPU kernel.  The forward keeps its plan; the backward also reads
    log_emission again (declared as a backward dependency), for the sequences
    that the driver recomputes in double."""

    def __init__(self, in_shapes, in_dtypes):
        super().__init__()
        self._shapes = [tuple(s) for s in in_shapes]
        self._dtypes = [np.dtype(_DTYPE_MX_TO_NP[d]) for d in in_dtypes]
        self._ws = None

    def _views(self, arrays):
        return [view(x, s, d) for x, s, d in zip(arrays, self._shapes, self._dtypes)]

    def forward(self, is_train, req, in_data, out_data, aux):
        A, pi, le, lengths = self._views(in_data)
        batch, T, n = le.shape
        lengths = checks.prepare_lengths(lengths, T)
        self._ws = _kernel.forward_dense(A, pi, le.reshape(batch * T, n), np.arange(batch) * T, lengths,
                                         get_num_threads())
        _kernel.store(view(out_data[0], self._ws.ll.shape, self._dtypes[0]), self._ws.ll,
                      _kernel.REQ_CODES[req[0]])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        codes = [_kernel.REQ_CODES[r] for r in req]
        dA, dpi, dle, dlengths = self._views(in_grad)
        le = view(in_data[2], self._shapes[2], self._dtypes[2])
        batch, T, n = le.shape
        gll = view(out_grad[0], self._ws.ll.shape, self._dtypes[0])
        _kernel.backward_dense(self._ws, gll, le.reshape(batch * T, n), dA, dpi, dle.reshape(batch * T, n),
                               codes[0], codes[1], codes[2], get_num_threads())
        if codes[3] in (1, 2):
            dlengths[...] = 0


class HMMForwardDenseNDArray(StatefulNDArrayOp):
    """Runs as NDArray operations on the inputs' context (the GPU route)."""

    def state(self, in_data):
        A, pi, le, lengths = in_data
        return NDArrayForwardDense(A, pi, le, checks.prepare_lengths(lengths.asnumpy(), le.shape[1]))


@mx.operator.register(OP_TYPE)
class HMMForwardDenseProp(HMMOpProp):
    """Shapes, dtypes and dependencies of hmm_forward_dense; attribute backend."""

    OP_NAME, ARGUMENTS, INDEX_DTYPE = OP_TYPE, ("A", "pi", "log_emission", "lengths"), np.int64
    CPU_OP, NDARRAY_OP = HMMForwardDense, HMMForwardDenseNDArray

    def batch_of(self, in_shape):
        return checks.check_dense_shapes(*in_shape)[1]

    def infer_shape(self, in_shape):
        if checks.has_dense_model_axis(*in_shape[:3]):      # K models: ll (K, batch) (model_axis.py)
            if self.backend not in BACKENDS:
                raise ValueError(f"{self.OP_NAME}: backend must be one of {BACKENDS}, got {self.backend!r}")
            k, _, batch, _ = checks.check_dense_many_shapes(*in_shape)
            return in_shape, [(k, batch)], []
        return super().infer_shape(in_shape)

    def create_operator(self, ctx, in_shapes, in_dtypes):
        if len(in_shapes[0]) == 3:
            return model_axis.create_many_operator(self, ctx, in_shapes, in_dtypes, indexed=False, dense=True)
        return super().create_operator(ctx, in_shapes, in_dtypes)

    def dtype_of(self, in_type):
        return checks.check_dense_dtypes(*in_type)


def _native_dense():
    """Whether the native hmm_forward_dense is loaded."""
    return native.load() and getattr(native, "dense_available", lambda: False)()


def hmm_forward_dense(A, pi, log_emission, lengths, model=None, backend="auto", check_values=True):
    """Per-sequence log-likelihood on dense log-emissions, inputs checked first.

    Many models in one call (hmmop.ops.model_axis): A (K, N, N), pi (K, N) and log_emission
    (K, batch, T, N), each model's own scores, give ll (K, batch), every sequence under every model;
    with model (batch,) of model indices in [0, K) as well, log_emission (batch, T, N) (each
    sequence's scores under its own model) and ll (batch,), sequence b under model model[b].  Each
    model's ll and gradients are, bit for bit, those of a call with its parameters on its sequences
    (the C routes; the NDArray route to rounding).

    A (N, N), pi (N,), log_emission (batch, T, N): NDArrays of one dtype
    (float32/float64) on one context.  lengths (batch,): NDArray, NumPy array
    or list of integers in [0, T].  Returns ll (batch,) NDArray of A's dtype,
    differentiable with autograd (see the module docstring).

    backend: 'auto' (the native operator on a CPU context where it is loaded,
    else the CustomOp's 'auto'; symbols: the CustomOp), 'native' (CPU only,
    through hmmop.ops.native.forward_dense, so that no gradient request can make it
    wrong), 'cython' or 'ndarray' (the CustomOp on that backend).
    check_values: also check that log_emission holds no NaN or +inf inside a
    sequence (one pass over it on the host, which waits for log_emission;
    False skips it: a NaN then gives that sequence ll = NaN and NaN gradients).  Bad input
    raises ValueError/TypeError naming it before MXNet sees it.
    """
    if backend not in WRAPPER_BACKENDS:
        raise ValueError(f"backend must be one of {WRAPPER_BACKENDS}, got {backend!r}")
    if model is not None or (not any(_is_symbol(x) for x in (A, pi, log_emission)) and checks.has_dense_model_axis(
            _shape(A), _shape(pi), _shape(log_emission))):
        return model_axis.hmm_forward_dense_many(A, pi, log_emission, lengths, model, backend, check_values)
    if backend == "native" and not _native_dense():
        raise RuntimeError(f"backend 'native' is not available: {native.unavailable_reason()}")
    if any(_is_symbol(x) for x in (A, pi, log_emission, lengths)):
        if backend == "native":
            return native.forward_dense(mx.sym, A, pi, log_emission, lengths)
        return mx.sym.Custom(A, pi, log_emission, lengths, op_type=OP_TYPE, backend=backend)
    A, pi, log_emission, lengths, _ = checks.checked_dense_inputs(A, pi, log_emission, lengths,
                                                                  check_values=check_values)
    on_cpu = A.context.device_type == "cpu"
    if backend == "auto" and on_cpu and _native_dense():
        backend = "native"
    if backend in ("native", "cython") and not on_cpu:
        raise ValueError(f"backend {backend!r} runs on the CPU only, but A, pi and log_emission are on "
                         f"{A.context}; use backend='auto' or 'ndarray' there")
    if backend == "native":
        return native.forward_dense(mx.nd, A, pi, log_emission, lengths)
    return mx.nd.Custom(A, pi, log_emission, lengths, op_type=OP_TYPE, backend=backend)
