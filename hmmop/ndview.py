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

from . import _kernel

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

    On a CPU context the NDArray takes over a fresh NumPy copy without another
    copy (mx.nd.from_numpy, zero_copy): mx.nd.array would copy it once more
    through a synchronous engine call, about 150 us whatever the size.
    """
    data = np.array(value, dtype=dtype, order="C")        # always a fresh array
    if ctx.device_type == "cpu" and data.size:
        return mx.nd.from_numpy(data, zero_copy=True)
    return mx.nd.array(data, ctx=ctx, dtype=dtype)
