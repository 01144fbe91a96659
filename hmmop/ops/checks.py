"""Input checks shared by the operator, its Python wrapper and the unroll.

Every check raises ValueError (wrong shape or value) or TypeError (wrong
dtype) with a message that names the input, what it is and what was expected.
This module sits below categorical.py (categorical imports checks, never the reverse).
``check_sizes`` is the models' check that their parameters can be allocated at all.
"""
import os

import mxnet as mx
import numpy as np

from .. import _kernel
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


def _float_inputs_dtype(named, index, index_dtype, holding):
    """The common dtype of the float inputs ``named`` ({name: dtype}, float32 or float64), after
    checking them and the index-like input ``index`` (int32, int64 or floats holding integers)."""
    named = {name: np.dtype(dt) for name, dt in named.items()}
    names = list(named)
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    for name, dt in named.items():
        if dt not in PARAM_DTYPES:
            raise TypeError(f"{name} has dtype {dt}; {listed} must be float32 or float64")
    if len(set(named.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in named.items())
        raise TypeError(f"{listed} must share one dtype, got {listing}")
    if np.dtype(index_dtype) not in OBS_DTYPES:
        raise TypeError(f"{index} has dtype {np.dtype(index_dtype)}; expected int32, int64, "
                        f"float32 or float64 holding {holding}")
    return named[names[0]]


def check_dtypes(A_dtype, B_dtype, pi_dtype, obs_dtype):
    """Validate dtypes; return the parameters' common dtype (float32 or float64)."""
    return _float_inputs_dtype({"A": A_dtype, "B": B_dtype, "pi": pi_dtype}, "obs", obs_dtype,
                               "integer symbols")


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


def _one_context(named):
    """The context of the NDArrays ``named`` ({name: value}, the first one naming the context),
    after checking that they are NDArrays on one context (TypeError / ValueError naming them)."""
    for name, x in named.items():
        if not isinstance(x, mx.nd.NDArray):
            raise TypeError(f"{name} must be an mxnet NDArray, got {type(x).__name__}")
    names = list(named)
    first, ctx = names[0], named[names[0]].context
    for name in names[1:]:
        if named[name].context != ctx:
            listed = ", ".join(names[:-1]) + " and " + names[-1]
            raise ValueError(f"{name} is on {named[name].context} but {first} is on {ctx}; "
                             f"{listed} must share one context")
    return ctx


def _on_host(x):
    """An index-like input (symbols, lengths) as a NumPy array: an NDArray copied, other integer
    dtypes (bool, uint8, int16, ...) widened to int64."""
    if isinstance(x, mx.nd.NDArray):
        return x.asnumpy()
    x = np.asarray(x)
    return x.astype(np.int64) if x.dtype.kind in "iub" and x.dtype not in OBS_DTYPES else x


def checked_inputs(A, B, pi, obs):
    """Validate NDArray inputs of hmm_forward and the like.

    A, B, pi: NDArrays on one context; obs: NDArray, NumPy array or nested
    list of symbols (-1 padding, -2 missing).  Returns (A, B, pi, obs NDArray
    on A's context, obs NumPy as given).
    """
    ctx = _one_context({"A": A, "B": B, "pi": pi})
    obs_np = _on_host(obs)
    check_dtypes(A.dtype, B.dtype, pi.dtype, obs_np.dtype)
    _, m, _, _ = check_shapes(A.shape, B.shape, pi.shape, obs_np.shape)
    prepare_obs(obs_np, m)
    if not isinstance(obs, mx.nd.NDArray):
        obs = from_host(obs_np, obs_np.dtype, ctx)
    elif obs.context != ctx:
        obs = obs.as_in_context(ctx)
    return A, B, pi, obs, obs_np


# -- a model axis on hmm_forward (hmmop.ops.model_axis) -----------------------------------------


def has_model_axis(A_shape, B_shape, pi_shape):
    """True where any of A, B, pi has a leading model axis (A rank 3, B rank 3, pi rank 2);
    check_many_shapes then says whether they all do."""
    return len(tuple(A_shape)) == 3 or len(tuple(B_shape)) == 3 or len(tuple(pi_shape)) == 2


def _model_count(shapes, model_shape=None, hint=""):
    """K, the leading model axis that every one of ``shapes`` ({name: (shape, its rank with the axis, its
    form)}) must have, the same on all; ValueError naming them otherwise (none has one, only some, different
    counts, K = 0).  model_shape: the model input's shape, or None without one; hint: added to the message
    on a model axis on some only."""
    shapes = {name: (tuple(shape), rank, form) for name, (shape, rank, form) in shapes.items()}
    names = list(shapes)
    forms = ", ".join(f"{name} {form}" for name, (_, _, form) in shapes.items())
    got = ", ".join(f"{name} {shape}" for name, (shape, _, _) in shapes.items())
    with_axis = [name for name, (shape, rank, _) in shapes.items() if len(shape) == rank]
    if len(with_axis) != len(shapes):
        without = [name for name in names if name not in with_axis]
        if not with_axis:
            if model_shape is not None:
                raise ValueError(f"a model input (one model index per sequence) needs parameters with a leading "
                                 f"model axis: {forms}; got {got} (without model, rank-2 parameters are one model)")
            raise ValueError(f"{_listed(names)} must be {forms} for a model axis, got {got}")
        raise ValueError(
            f"a model axis on some parameters and not others: {_listed(with_axis)} "
            f"{'has' if len(with_axis) == 1 else 'have'} one, {_listed(without)} "
            f"{'does' if len(without) == 1 else 'do'} not ({got}); give all of {forms} a leading model axis, "
            f"or none{hint}")
    counts = {name: shape[0] for name, (shape, _, _) in shapes.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise ValueError(f"{_listed(names)} must hold the same number of models (their leading axis), got {listing}")
    k = counts[names[0]]
    if k < 1:
        raise ValueError(f"{_listed(names)} must hold at least one model, got {names[0]} {shapes[names[0]][0]}")
    return k


def _check_model_shape(model_shape, batch, of):
    if model_shape is not None and tuple(model_shape) != (batch,):
        raise ValueError(f"model must have shape (batch,) = ({batch},), one model index per sequence of {of}, "
                         f"got shape {tuple(model_shape)}")


def check_many_shapes(A_shape, B_shape, pi_shape, obs_shape, model_shape=None):
    """Validate the shapes of hmm_forward with a model axis; return (K, n_states, n_symbols, batch, T).

    A (K, N, N), B (K, N, M), pi (K, N): K models; obs (T,) or (batch, T); model (batch,) or None.
    """
    A_shape, B_shape, pi_shape = tuple(A_shape), tuple(B_shape), tuple(pi_shape)
    k = _model_count({"A": (A_shape, 3, "(K, N, N)"), "B": (B_shape, 3, "(K, N, M)"), "pi": (pi_shape, 2, "(K, N)")},
                     model_shape)
    n, m, batch, T = check_shapes(A_shape[1:], B_shape[1:], pi_shape[1:], obs_shape)
    _check_model_shape(model_shape, batch, "obs")
    return k, n, m, batch, T


def check_model_dtype(model_dtype):
    """TypeError unless model's dtype is int32, int64, float32 or float64."""
    if np.dtype(model_dtype) not in OBS_DTYPES:
        raise TypeError(f"model has dtype {np.dtype(model_dtype)}; expected int32, int64, float32 or "
                        f"float64 holding model indices")


def prepare_model(model, k, params="A, B and pi"):
    """model (batch,) NumPy as int64, checked: integers in [0, K).  ValueError names the first bad one
    (params: the parameters whose leading axis K is, for the message)."""
    model = np.asarray(model).reshape(-1)
    if model.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(model) & (model == np.floor(model))
        if not whole.all():
            b = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"model[{b}] = {model[b]!r} is not an integer model index")
    as_int = model.astype(np.int64)
    bad = np.flatnonzero((as_int < 0) | (as_int >= k))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"model[{b}] = {as_int[b]} is not a model index in [0, K) = [0, {k}) "
                         f"(K: the leading axis of {params})")
    return np.ascontiguousarray(as_int)


def _model_on_host(model):
    """model's host copy (as _on_host makes it), its dtype checked; None stays None."""
    if model is None:
        return None
    model_np = _on_host(model)
    check_model_dtype(model_np.dtype)
    return model_np


def checked_many_inputs(A, B, pi, obs, model=None):
    """Validate NDArray inputs of hmm_forward with a model axis.

    Returns (A, B, pi, obs NDArray on A's context, obs NumPy, model NDArray on A's context or None,
    model int64 NumPy or None).
    """
    ctx = _one_context({"A": A, "B": B, "pi": pi})
    obs_np = _on_host(obs)
    check_dtypes(A.dtype, B.dtype, pi.dtype, obs_np.dtype)
    model_np = _model_on_host(model)
    k, _, m, _, _ = check_many_shapes(A.shape, B.shape, pi.shape, obs_np.shape,
                                      None if model_np is None else model_np.shape)
    prepare_obs(obs_np, m)
    model64 = None if model_np is None else prepare_model(model_np, k)
    return A, B, pi, _on(ctx, obs, obs_np), obs_np, _on(ctx, model, model_np), model64


def _on(ctx, x, x_np):
    """An index-like input as an NDArray on ctx: x itself (moved there if need be), or x_np (its host
    copy, as _on_host made it) copied there; None stays None."""
    if x is None:
        return None
    if not isinstance(x, mx.nd.NDArray):
        return from_host(x_np, x_np.dtype, ctx)
    return x if x.context == ctx else x.as_in_context(ctx)


# -- hmm_forward_dense ------------------------------------------------------------------------


def check_dense_shapes(A_shape, pi_shape, le_shape, lengths_shape):
    """Validate the shapes of hmm_forward_dense's inputs; return (n_states, batch, T).

    A (N, N), pi (N,), log_emission (batch, T, N), lengths (batch,).
    """
    A_shape, pi_shape = tuple(A_shape), tuple(pi_shape)
    le_shape, lengths_shape = tuple(le_shape), tuple(lengths_shape)
    if len(A_shape) != 2 or A_shape[0] != A_shape[1]:
        raise ValueError(f"A must be a square (N, N) transition matrix, got shape {A_shape}")
    n = A_shape[0]
    if n < 1:
        raise ValueError(f"A must have at least one state, got shape {A_shape}")
    if pi_shape != (n,):
        raise ValueError(f"pi must have shape (N,) = ({n},), got shape {pi_shape}")
    if len(le_shape) != 3 or le_shape[2] != n:
        raise ValueError(f"log_emission must have shape (batch, T, N) = (batch, T, {n}) with one "
                         f"column per state of A, got shape {le_shape}")
    batch, T = le_shape[0], le_shape[1]
    if batch < 1 or T < 1:
        raise ValueError(f"log_emission must hold at least one sequence and one time step, "
                         f"got shape {le_shape} (give empty sequences length 0 instead)")
    if lengths_shape != (batch,):
        raise ValueError(f"lengths must have shape (batch,) = ({batch},), one length per sequence "
                         f"of log_emission, got shape {lengths_shape}")
    return n, batch, T


def check_dense_dtypes(A_dtype, pi_dtype, le_dtype, lengths_dtype):
    """Validate hmm_forward_dense's dtypes; return the common dtype of A, pi and log_emission."""
    return _float_inputs_dtype({"A": A_dtype, "pi": pi_dtype, "log_emission": le_dtype}, "lengths",
                               lengths_dtype, "integer lengths")


def prepare_lengths(lengths, T):
    """lengths (batch,) as int64, checked: integers in [0, T].  ValueError names the first bad one."""
    lengths = np.asarray(lengths)
    as_int = lengths.astype(np.int64) if lengths.dtype.kind in "iu" else None
    if as_int is None:
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(lengths) & (lengths == np.floor(lengths))
        if not whole.all():
            b = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"lengths[{b}] = {lengths[b]!r} is not an integer")
        as_int = lengths.astype(np.int64)
    bad = np.flatnonzero((as_int < 0) | (as_int > T))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"lengths[{b}] = {as_int[b]} is outside [0, T] = [0, {T}] "
                         f"(T: the steps of log_emission)")
    return np.ascontiguousarray(as_int)


def check_log_emission_values(le, lengths):
    """ValueError naming the first NaN or +inf of log_emission inside a sequence (-inf is allowed:
    an impossible emission).  le (batch, T, N) NumPy, or (K, batch, T, N) (a model axis); lengths
    (batch,) int64."""
    bad = np.isnan(le) | (le == np.inf)
    if not bad.any():
        return
    inside = np.arange(le.shape[-2])[None, :] < lengths[:, None]         # (batch, T)
    where = np.argwhere(bad & inside[..., None])
    if len(where):
        at = tuple(int(v) for v in where[0])
        raise ValueError(f"log_emission[{', '.join(map(str, at))}] = {le[at]!r}: log-emissions must be real "
                         f"numbers or -inf (an impossible emission), not NaN or +inf")


def checked_dense_inputs(A, pi, log_emission, lengths, check_values=True):
    """Validate NDArray inputs of hmm_forward_dense and the like.

    A, pi, log_emission: NDArrays on one context; lengths: NDArray, NumPy
    array or list of integers.  Returns (A, pi, log_emission, lengths NDArray
    on A's context, lengths NumPy int64).
    """
    ctx = _one_context({"A": A, "pi": pi, "log_emission": log_emission})
    lengths_np = _on_host(lengths)
    check_dense_dtypes(A.dtype, pi.dtype, log_emission.dtype, lengths_np.dtype)
    _, _, T = check_dense_shapes(A.shape, pi.shape, log_emission.shape, lengths_np.shape)
    lengths64 = prepare_lengths(lengths_np, T)
    if check_values:
        check_log_emission_values(log_emission.asnumpy(), lengths64)
    return A, pi, log_emission, _on(ctx, lengths, lengths64), lengths64


# -- a model axis on hmm_forward_dense (hmmop.ops.model_axis) -------------------------------------

DENSE_PARAMS = "A and pi"       # whose leading axis K is (prepare_model's message)


def has_dense_model_axis(A_shape, pi_shape=(), le_shape=()):
    """True where A has a leading model axis (rank 3), or pi (rank 2) and log_emission (rank 4) both
    have one; check_dense_many_shapes then says whether the shapes fit one of the two forms.  With a
    rank-2 A, pi (K, N) alone or log_emission (K, batch, T, N) alone is a wrong shape of the rank-2 op
    (check_dense_shapes names it: hmm_forward_dense's contract for rank-2 parameters is as before)."""
    A_shape, pi_shape, le_shape = tuple(A_shape), tuple(pi_shape), tuple(le_shape)
    return len(A_shape) == 3 or (len(pi_shape) == 2 and len(le_shape) == 4)


def check_dense_many_shapes(A_shape, pi_shape, le_shape, lengths_shape, model_shape=None):
    """Validate the shapes of hmm_forward_dense with a model axis; return (K, n_states, batch, T).

    A (K, N, N), pi (K, N): K models; without model, log_emission (K, batch, T, N) (each model's own
    scores of the sequences), with model (batch,), log_emission (batch, T, N); lengths (batch,).
    """
    A_shape, pi_shape, le_shape = tuple(A_shape), tuple(pi_shape), tuple(le_shape)
    shapes = {"A": (A_shape, 3, "(K, N, N)"), "pi": (pi_shape, 2, "(K, N)")}
    if model_shape is None:
        shapes["log_emission"] = (le_shape, 4, "(K, batch, T, N)")
    k = _model_count(shapes, model_shape, hint=" (with model, one index per sequence: log_emission (batch, T, N))")
    if model_shape is None:
        n = A_shape[-1]
        if le_shape[-1] != n:
            raise ValueError(f"log_emission must have shape (K, batch, T, N) = ({k}, batch, T, {n}) with one "
                             f"column per state of A, got shape {le_shape}")
        le_shape = le_shape[1:]
    elif len(le_shape) != 3:
        raise ValueError(f"log_emission must have shape (batch, T, N) with model (each sequence's scores under "
                         f"its own model), got shape {le_shape}; without model, (K, batch, T, N)")
    n, batch, T = check_dense_shapes(A_shape[1:], pi_shape[1:], le_shape, lengths_shape)
    _check_model_shape(model_shape, batch, "log_emission")
    return k, n, batch, T


def checked_dense_many_inputs(A, pi, log_emission, lengths, model=None, check_values=True):
    """Validate NDArray inputs of hmm_forward_dense with a model axis.

    Returns (A, pi, log_emission, lengths NDArray on A's context, lengths int64 NumPy, model NDArray on
    A's context or None, model int64 NumPy or None).
    """
    ctx = _one_context({"A": A, "pi": pi, "log_emission": log_emission})
    lengths_np = _on_host(lengths)
    check_dense_dtypes(A.dtype, pi.dtype, log_emission.dtype, lengths_np.dtype)
    model_np = _model_on_host(model)
    k, _, _, T = check_dense_many_shapes(A.shape, pi.shape, log_emission.shape, lengths_np.shape,
                                         None if model_np is None else model_np.shape)
    lengths64 = prepare_lengths(lengths_np, T)
    model64 = None if model_np is None else prepare_model(model_np, k, DENSE_PARAMS)
    if check_values:
        check_log_emission_values(log_emission.asnumpy(), lengths64)
    return (A, pi, log_emission, _on(ctx, lengths, lengths64), lengths64, _on(ctx, model, model_np), model64)


# -- sizes that cannot be allocated ------------------------------------------------------------

# MXNet 1.9.1's wheels are built without large-tensor support (USE_INT64_TENSOR_SIZE): an NDArray must have
# fewer than 2^31 - 1 entries (its check is `Size() < (1 << 31) - 1`), whatever its dtype.
MAX_ENTRIES = 2**31 - 2


def physical_memory():
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def _bytes(n):
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _listed(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_sizes(shapes, dtype, memory=None):
    """ValueError, before anything is allocated, when parameters of these shapes cannot be held.

    shapes: {name: shape} of the arrays a model is about to make, e.g. {"A": (N, N), "pi": (N,)};
    dtype: their dtype (float32, float64).  Refused, with one line naming the parameter, its shape,
    entries and bytes and the limit: a parameter of 2^31 - 1 entries or more (MAX_ENTRIES: MXNet 1.9.1
    without large-tensor support cannot make such an NDArray, and gradient training makes one of every
    parameter), or all of them together larger than ``memory`` (default: this machine's memory,
    physical_memory()).  Shapes whose dimensions are not all positive integers, and a dtype that is not
    one, are left to the caller's own checks (this one only ever refuses sizes).
    """
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        return
    sizes = {}
    for name, shape in shapes.items():
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            continue
        if any(isinstance(d, bool) or d != int(d) or int(d) < 1 for d in shape):
            continue
        sizes[name] = (dims, int(np.prod(dims, dtype=object)))       # exact, no int64 overflow
    type_name = np.dtype(dtype).name
    for name, (dims, entries) in sizes.items():
        if entries > MAX_ENTRIES:
            raise ValueError(
                f"{name} of shape {dims} would have {entries:,} entries ({_bytes(entries * itemsize)} in "
                f"{type_name}): MXNet 1.9.1 (built without large-tensor support) holds at most "
                f"{MAX_ENTRIES:,} (2^31 - 2) entries in one array")
    memory = physical_memory() if memory is None else memory
    total = sum(entries for _, entries in sizes.values()) * itemsize
    if memory is not None and total > memory:
        largest = max(sizes, key=lambda k: sizes[k][1])
        dims, entries = sizes[largest]
        if len(sizes) == 1:
            what, alone = f"{largest} of shape {dims} ({entries:,} entries)", ""
        else:
            what, alone = _listed(list(sizes)), f" ({largest} of shape {dims} alone {_bytes(entries * itemsize)})"
        raise ValueError(f"{what} would take {_bytes(total)} in {type_name}{alone}: more than the "
                         f"{_bytes(memory)} of memory this machine has")
