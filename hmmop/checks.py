"""Input checks shared by the operator, its Python wrapper and the unroll.

Every check raises ValueError (wrong shape or value) or TypeError (wrong
dtype) with a message that names the input, what it is and what was expected.
This module sits below op.py (op imports checks, never the reverse).
"""
import mxnet as mx
import numpy as np

from . import _kernel
from .ndview import from_host

PARAM_DTYPES = (np.float32, np.float64)
OBS_DTYPES = (np.int32, np.int64, np.float32, np.float64)


def check_shapes(A_shape, B_shape, pi_shape, obs_shape):
    """Validate shapes; return (n_states, n_symbols, batch, T).

    A (N, N), B (N, M), pi (N,), obs (T,) or (batch, T).  A 1-D obs counts
    as a batch of one.
    """
    A_shape, B_shape = tuple(A_shape), tuple(B_shape)
    pi_shape, obs_shape = tuple(pi_shape), tuple(obs_shape)
    if len(A_shape) != 2 or A_shape[0] != A_shape[1]:
        raise ValueError(f"A must be a square (N, N) transition matrix, got shape {A_shape}")
    n = A_shape[0]
    if n < 1:
        raise ValueError(f"A must have at least one state, got shape {A_shape}")
    if len(B_shape) != 2 or B_shape[0] != n:
        raise ValueError(f"B must have shape (N, M) = ({n}, M) with one row per state of A, "
                         f"got shape {B_shape}")
    m = B_shape[1]
    if m < 1:
        raise ValueError(f"B must have at least one symbol column, got shape {B_shape}")
    if pi_shape != (n,):
        raise ValueError(f"pi must have shape (N,) = ({n},), got shape {pi_shape}")
    if len(obs_shape) == 1:
        batch, T = 1, obs_shape[0]
    elif len(obs_shape) == 2:
        batch, T = obs_shape
    else:
        raise ValueError(f"obs must have shape (T,) or (batch, T), got shape {obs_shape} "
                         f"(rank {len(obs_shape)})")
    if batch < 1 or T < 1:
        raise ValueError(f"obs must hold at least one row and one time step, got shape {obs_shape} "
                         f"(pad empty sequences with -1 instead)")
    return n, m, batch, T


def check_dtypes(A_dtype, B_dtype, pi_dtype, obs_dtype):
    """Validate dtypes; return the parameters' common dtype (float32 or float64)."""
    named = {"A": np.dtype(A_dtype), "B": np.dtype(B_dtype), "pi": np.dtype(pi_dtype)}
    for name, dt in named.items():
        if dt not in PARAM_DTYPES:
            raise TypeError(f"{name} has dtype {dt}; A, B and pi must be float32 or float64")
    if len(set(named.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in named.items())
        raise TypeError(f"A, B and pi must share one dtype, got {listing}")
    if np.dtype(obs_dtype) not in OBS_DTYPES:
        raise TypeError(f"obs has dtype {np.dtype(obs_dtype)}; expected int32, int64, "
                        f"float32 or float64 holding integer symbols")
    return named["A"]


def prepare_obs(obs, n_symbols):
    """Validate observation values.

    obs: NumPy array (T,) or (batch, T) of an OBS_DTYPES dtype.  Returns
    (obs32 (batch, T) int32, lengths (batch,) int64); raises ValueError naming
    the first bad element (not an integer, out of [0, M) and neither -1 nor
    -2, or a symbol or -2 after -1 padding).  -2 marks a missing observation:
    obs32 holds n_symbols there (see _kernel.prepare_obs) and it counts in
    the length.
    """
    obs = np.ascontiguousarray(obs)
    return _kernel.prepare_obs(obs.reshape(-1, obs.shape[-1]) if obs.ndim == 1 else obs, n_symbols)


def checked_inputs(A, B, pi, obs):
    """Validate NDArray inputs of hmm_forward and the like.

    A, B, pi: NDArrays on one context; obs: NDArray, NumPy array or nested
    list of symbols (-1 padding, -2 missing).  Returns (A, B, pi, obs NDArray
    on A's context, obs NumPy as given).
    """
    for name, x in (("A", A), ("B", B), ("pi", pi)):
        if not isinstance(x, mx.nd.NDArray):
            raise TypeError(f"{name} must be an mxnet NDArray, got {type(x).__name__}")
    ctx = A.context
    for name, x in (("B", B), ("pi", pi)):
        if x.context != ctx:
            raise ValueError(f"{name} is on {x.context} but A is on {ctx}; "
                             f"A, B and pi must share one context")
    if isinstance(obs, mx.nd.NDArray):
        obs_np = obs.asnumpy()
    else:
        obs_np = np.asarray(obs)
        if obs_np.dtype.kind in "iub" and obs_np.dtype not in OBS_DTYPES:
            obs_np = obs_np.astype(np.int64)
    check_dtypes(A.dtype, B.dtype, pi.dtype, obs_np.dtype)
    _, m, _, _ = check_shapes(A.shape, B.shape, pi.shape, obs_np.shape)
    prepare_obs(obs_np, m)
    if not isinstance(obs, mx.nd.NDArray):
        obs = from_host(obs_np, obs_np.dtype, ctx)
    elif obs.context != ctx:
        obs = obs.as_in_context(ctx)
    return A, B, pi, obs, obs_np
