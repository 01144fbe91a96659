"""Zero-copy NumPy views of CPU NDArrays, for use inside CustomOp callbacks.

A view aliases the NDArray's memory: it is only valid while MXNet guarantees
that memory (the duration of a forward/backward callback), so never keep one
after the callback returns.  Reading the pointer does not wait on the engine;
inside a callback the engine has already made the inputs ready.
"""
import ctypes
import math

import mxnet as mx
import numpy as np
from mxnet.base import _LIB

from .. import _kernel

_kernel.bind_get_data(ctypes.cast(_LIB.MXNDArrayGetData, ctypes.c_void_p).value)


def view(arr, shape=None, dtype=None):
    """NumPy array sharing memory with the CPU NDArray ``arr``.

    shape and dtype default to the NDArray's own; passing them (as known from
    CustomOpProp.create_operator) saves two calls into MXNet.
    """
    dtype = np.dtype(arr.dtype if dtype is None else dtype)
    shape = tuple(arr.shape if shape is None else shape)
    size = math.prod(shape)
    if size == 0:
        return np.empty(shape, dtype=dtype)
    memory = _kernel.data_memory(arr.handle.value, size * dtype.itemsize)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


def from_host(value, dtype, ctx):
    """An NDArray holding a copy of the NumPy-like ``value`` as ``dtype`` on ``ctx``.

    On a CPU context the value is written straight into a fresh NDArray's
    memory (one NumPy copy, ~10 us): mx.nd.array copies through a synchronous
    engine call, ~150 us whatever the size.  Not mx.nd.from_numpy(zero_copy=True):
    its deleter is a Python callback that MXNet may run on an engine thread,
    and when that happens while the interpreter exits the process aborts
    ("terminate called without an active exception").
    """
    data = np.asarray(value, dtype=dtype)
    if ctx.device_type == "cpu" and data.size and data.ndim:
        out = mx.nd.empty(data.shape, ctx=ctx, dtype=dtype)    # fresh: no engine op can touch it yet
        view(out, data.shape, dtype)[...] = data
        return out
    return mx.nd.array(data, ctx=ctx, dtype=dtype)
