"""How many OpenMP threads the CPU kernel uses for a batch of sequences."""
import os

from .. import _kernel

_override = None
_listeners = []     # called after set_num_threads (the native operator's loader registers one)


def set_num_threads(n):
    """Use ``n`` threads from now on (None: follow OMP_NUM_THREADS again)."""
    global _override
    if n is not None and (int(n) != n or n < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")
    _override = None if n is None else int(n)
    for listener in _listeners:
        listener(_override)


def on_change(listener):
    """Call ``listener(value)`` after each set_num_threads (value: the override or None)."""
    _listeners.append(listener)


def get_num_threads():
    """Threads the kernel will use: set_num_threads' value, else the first
    entry of OMP_NUM_THREADS as it is now, else the cores OpenMP may use.
    (Not OpenMP's own default: importing mxnet sets it to 1 in the main thread.)"""
    if _override is not None:
        return _override
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _kernel.num_procs()
