"""The ``hmm_forward`` MXNet CustomOp and its checked Python wrapper.

    ll = mx.nd.Custom(A, B, pi, obs, op_type='hmm_forward')   # also mx.sym.Custom

A (N, N) transitions, A[i, j] = P(next = j | current = i); B (N, M)
emissions, B[i, k] = P(symbol k | state i); pi (N,) initial probabilities;
A, B and pi share one dtype, float32 or float64, and are used as given.
obs (T,) or (batch, T), int32/int64/float holding symbols in [0, M) or -2
for a missing observation (marginalised out: emission probability 1 in every
state; it counts as a step), rows padded at the end with -1.  ll (batch,)
(1-D obs: (1,)) has A's dtype: ll[b] = log P(obs[b]) under hmmlearn's
scaled-forward convention, 0 for an empty row, -inf for an impossible one
(its gradient is zero).

Attribute backend: 'auto' (default: the Cython kernel on a CPU context, the
NDArray path on any other), 'cython' (CPU only) or 'ndarray' (any context).

This module only adapts MXNet's contract: zero-copy views of the NDArray
buffers go to the Cython kernel (hmmop._kernel), or the NDArrays go to the
NDArray path (hmmop.ops.ndarray_path); those do all the work.
"""
import mxnet as mx
import numpy as np
from mxnet.ndarray.ndarray import _DTYPE_MX_TO_NP

from .. import _kernel
from . import checks, native
from .ndarray_path import NDArrayForward
from .ndview import view
from .threads import get_num_threads

OP_TYPE = "hmm_forward"
BACKENDS = ("auto", "cython", "ndarray")
# The checked wrapper also offers the native operator (hmmop/ops/native.py), CPU only.
WRAPPER_BACKENDS = BACKENDS + ("native",)


class HMMForward(mx.operator.CustomOp):
    """Runs on the CPU kernel.  The forward keeps, in arrays of its own, all the
    backward needs, so the backward depends on nothing but the output gradient."""

    def __init__(self, in_shapes, in_dtypes):
        super().__init__()
        self._shapes = [tuple(s) for s in in_shapes]
        # create_operator hands over MXNet's integer dtype codes.
        self._dtypes = [np.dtype(_DTYPE_MX_TO_NP[d]) for d in in_dtypes]
        self._ws = None

    def _views(self, arrays):
        """Views of arrays laid out like the inputs (A, B, pi, obs)."""
        return [view(x, s, d) for x, s, d in zip(arrays, self._shapes, self._dtypes)]

    def forward(self, is_train, req, in_data, out_data, aux):
        A, B, pi, obs = self._views(in_data)
        obs32, lengths = checks.prepare_obs(obs, B.shape[1])
        # The state is kept even when is_train is False: autograd.record(train_mode=False)
        # still allows a backward, and a callback cannot tell whether one will follow.
        self._ws = _kernel.forward(A, B, pi, obs32, lengths, get_num_threads())
        _kernel.store(view(out_data[0], self._ws.ll.shape, self._dtypes[0]), self._ws.ll,
                      _kernel.REQ_CODES[req[0]])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        codes = [_kernel.REQ_CODES[r] for r in req]
        dA, dB, dpi, dobs = self._views(in_grad)
        gll = view(out_grad[0], self._ws.ll.shape, self._dtypes[0])
        _kernel.backward(self._ws, gll, dA, dB, dpi, codes[0], codes[1], codes[2], get_num_threads())
        if codes[3] in (1, 2):
            dobs[...] = 0


class StatefulNDArrayOp(mx.operator.CustomOp):
    """The NDArray route of an HMM operator (the GPU route): the forward builds a state from the
    inputs (``state(in_data)``: an object with ``ll`` and ``backward(gll)`` -> the gradients of the
    first three inputs); the fourth input (symbols or lengths) gets a zero gradient."""

    def __init__(self):
        super().__init__()
        self._state = None

    def state(self, in_data):
        raise NotImplementedError

    def forward(self, is_train, req, in_data, out_data, aux):
        self._state = self.state(in_data)
        self.assign(out_data[0], req[0], self._state.ll.astype(out_data[0].dtype, copy=False))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        grads = self._state.backward(out_grad[0])
        for i, g in enumerate(grads):
            self.assign(in_grad[i], req[i], g.astype(in_grad[i].dtype, copy=False))
        if req[3] in ("write", "inplace"):
            in_grad[3][:] = 0


class HMMForwardNDArray(StatefulNDArrayOp):
    """Runs as NDArray operations on the inputs' context (the GPU route)."""

    def state(self, in_data):
        A, B, pi, obs = in_data
        # One copy of the symbols to the host: checks, and where padding is.
        _, lengths = checks.prepare_obs(obs.asnumpy(), B.shape[1])
        return NDArrayForward(A, B, pi, obs, lengths)


class HMMOpProp(mx.operator.CustomOpProp):
    """What the props of hmm_forward and hmm_forward_dense share: attribute backend ('auto',
    'cython', 'ndarray'), one output ll (batch,) of the parameters' dtype, the choice of the
    CustomOp by context.  A subclass names its op (OP_NAME), its inputs (ARGUMENTS: three float
    inputs, then an index-like one whose dtype defaults to INDEX_DTYPE), its CPU and NDArray
    CustomOps, and checks its shapes (batch_of) and dtypes (dtype_of)."""

    OP_NAME = ARGUMENTS = INDEX_DTYPE = CPU_OP = NDARRAY_OP = None

    def __init__(self, backend="auto"):
        # Never raise here: an exception in a CustomOpProp constructor crashes
        # MXNet 1.9 (segfault).  The attribute is checked in infer_shape.
        super().__init__(need_top_grad=True)
        self.backend = backend

    # declare_backward_dependency: CustomOpProp's default (every input and output), on purpose, although
    # the backward reads only ll's gradient (and the dense ops log_emission).  MXNet 1.9's Python layer
    # keeps the last declared dependencies in ONE process-wide set (mxnet.operator._registry.result_deps)
    # and reads it when any CustomOp's backward runs, later and on another thread: an array an op did not
    # declare is passed empty, and where the set (another op's, declared meanwhile) names its place,
    # MXNet reads its storage type, -1, and the backward fails ("unknown storage type: -1").  Declaring
    # every array keeps them all valid whatever the set holds (tests/test_dense_op.py).

    def list_arguments(self):
        return list(self.ARGUMENTS)

    def list_outputs(self):
        return ["ll"]

    def infer_shape(self, in_shape):
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.OP_NAME}: backend must be one of {BACKENDS}, got {self.backend!r}")
        return in_shape, [(self.batch_of(in_shape),)], []

    def infer_type(self, in_type):
        known = [t for t in in_type[:3] if t is not None]
        param = known[0] if known else np.float32
        in_type = [param if t is None else t for t in in_type[:3]] + \
                  [self.INDEX_DTYPE if in_type[3] is None else in_type[3]]
        return in_type, [self.dtype_of(in_type).type], []

    def create_operator(self, ctx, in_shapes, in_dtypes):
        on_cpu = ctx.device_type == "cpu"
        backend = self.backend
        if backend == "auto":
            backend = "cython" if on_cpu else "ndarray"
        if backend == "ndarray":
            return self.NDARRAY_OP()
        if not on_cpu:
            raise ValueError(f"{self.OP_NAME}: backend 'cython' runs on the CPU only, but the inputs "
                             f"are on {ctx}; use backend='auto' or 'ndarray' there")
        return self.CPU_OP(in_shapes, in_dtypes)


@mx.operator.register(OP_TYPE)
class HMMForwardProp(HMMOpProp):
    """Shapes, dtypes and dependencies of hmm_forward; attribute backend (see module doc)."""

    OP_NAME, ARGUMENTS, INDEX_DTYPE = OP_TYPE, ("A", "B", "pi", "obs"), np.float32
    CPU_OP, NDARRAY_OP = HMMForward, HMMForwardNDArray

    def batch_of(self, in_shape):
        return checks.check_shapes(*in_shape)[2]

    def infer_shape(self, in_shape):
        if checks.has_model_axis(*in_shape[:3]):        # K models: ll (K, batch) (model_axis.py)
            if self.backend not in BACKENDS:
                raise ValueError(f"{self.OP_NAME}: backend must be one of {BACKENDS}, got {self.backend!r}")
            k, _, _, batch, _ = checks.check_many_shapes(*in_shape)
            return in_shape, [(k, batch)], []
        return super().infer_shape(in_shape)

    def create_operator(self, ctx, in_shapes, in_dtypes):
        if len(in_shapes[0]) == 3:
            return model_axis.create_many_operator(self, ctx, in_shapes, in_dtypes, indexed=False)
        return super().create_operator(ctx, in_shapes, in_dtypes)

    def dtype_of(self, in_type):
        return checks.check_dtypes(*in_type)


def _is_symbol(x):
    return isinstance(x, mx.sym.Symbol)


def _shape(x):
    return tuple(getattr(x, "shape", ()) or ())


def hmm_forward(A, B, pi, obs, model=None, backend="auto"):
    """Per-sequence log-likelihood with the fused operator, inputs checked first.

    Many models in one call (hmmop.ops.model_axis): A (K, N, N), B (K, N, M), pi (K, N) give
    ll (K, batch), every sequence under every model; with model (batch,) of model indices in
    [0, K) as well, ll (batch,), sequence b under model model[b].  Each model's ll and gradients
    are, bit for bit, those of a call with its parameters on its sequences (every backend).

    backend: 'auto' (default: the native operator on a CPU context where it is
    loaded, else the CustomOp's 'auto'; for symbols, whose context is not
    known yet, the CustomOp), 'native' (the operator of hmmop/libhmmop_op.so,
    hmmop.ops.native; CPU only; a RuntimeError naming the reason where it could
    not be loaded), fed through hmmop.ops.native.forward so that no gradient
    request can make it wrong, or 'cython' / 'ndarray': the CustomOp on that
    backend.

    A (N, N), B (N, M), pi (N,): NDArrays of one dtype (float32/float64) on one
    context.  obs (T,) or (batch, T): NDArray, NumPy array or nested list of
    integer symbols, -2 for a missing observation (marginalised out), -1
    padded at the end of rows.  Returns ll (batch,)
    NDArray of A's dtype, differentiable with autograd.  Bad input raises
    ValueError/TypeError naming it before MXNet sees it.  Symbols are passed
    through to mx.sym.Custom unchecked (their values are not known yet).
    """
    if backend not in WRAPPER_BACKENDS:
        raise ValueError(f"backend must be one of {WRAPPER_BACKENDS}, got {backend!r}")
    if model is not None or (not any(_is_symbol(x) for x in (A, B, pi))
                             and checks.has_model_axis(_shape(A), _shape(B), _shape(pi))):
        return model_axis.hmm_forward_many(A, B, pi, obs, model, backend)
    if backend == "native" and not native.load():
        raise RuntimeError(f"backend 'native' is not available: {native.unavailable_reason()}")
    if any(_is_symbol(x) for x in (A, B, pi, obs)):
        if backend == "native":
            return native.forward(mx.sym, A, B, pi, obs)
        return mx.sym.Custom(A, B, pi, obs, op_type=OP_TYPE, backend=backend)
    A, B, pi, obs, _ = checks.checked_inputs(A, B, pi, obs)
    if backend == "auto" and A.context.device_type == "cpu" and native.load():
        backend = "native"
    if backend == "native":
        if A.context.device_type != "cpu":
            raise ValueError(f"backend 'native' runs on the CPU only, but A, B and pi are on "
                             f"{A.context}; use backend='auto' or 'ndarray' there")
        return native.forward(mx.nd, A, B, pi, obs)
    if backend == "cython" and A.context.device_type != "cpu":
        raise ValueError(f"backend 'cython' runs on the CPU only, but A, B and pi are on {A.context}; "
                         f"use backend='auto' or 'ndarray' there")
    return mx.nd.Custom(A, B, pi, obs, op_type=OP_TYPE, backend=backend)


from . import model_axis  # noqa: E402  (the model-axis ops build on the classes above)
