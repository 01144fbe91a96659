"""Zero-copy NumPy views of CPU NDArrays, for use inside CustomOp callbacks.

A view aliases the NDArray's memory: it is only valid while MXNet guarantees
that memory (the duration of a forward/backward callback), so never keep one
after the callback returns.  Reading the pointer does not wait on the engine;
inside a callback the engine has already made the inputs ready.
"""
import ctypes

import numpy as np
from mxnet.base import _LIB, check_call


def view(arr, shape=None, dtype=None):
    """NumPy array sharing memory with the CPU NDArray ``arr``.

    shape and dtype default to the NDArray's own; passing them (as known from
    CustomOpProp.create_operator) saves two calls into MXNet.
    """
    dtype = np.dtype(arr.dtype if dtype is None else dtype)
    shape = tuple(arr.shape if shape is None else shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        return np.empty(shape, dtype=dtype)
    ptr = ctypes.c_void_p()
    check_call(_LIB.MXNDArrayGetData(arr.handle, ctypes.byref(ptr)))
    buf = (ctypes.c_char * (size * dtype.itemsize)).from_address(ptr.value)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
