"""The native ``hmm_forward`` and ``hmm_forward_dense``: hmmop/libhmmop_op.so, loaded into MXNet.

    from hmmop import native
    if native.load():                            # once per process; quiet
        ll = mx.nd.hmm_forward(A, B, pi, obs)    # also mx.sym / F.hmm_forward
        ll = mx.nd.hmm_forward_dense(A, pi, log_emission, lengths)

The library (csrc/hmm_op.cc) registers two stateful operators through MXNet's
extension library API, each with the contract of its CustomOp (hmmop/ops/categorical.py,
hmmop/ops/dense.py) and the same C batch driver, so the results are bit-identical;
they run on CPU contexts and skip the CustomOps' Python callbacks.  load()
requires both (OP_NAMES); hmmop feeds them through ``forward`` and
``forward_dense`` (below).  The library also registers their model axis
(MANY_OP_NAMES: hmm_forward_many, hmm_forward_by_model, hmm_forward_dense_many,
hmm_forward_dense_by_model; see hmmop.ops.model_axis), fed through
``forward_many`` and ``forward_dense_many`` with the same guards.

What MXNet's extension API cannot do, and how hmmop copes (see also
hmmop.ops.categorical.hmm_forward's backend="native"):

- Gradient requests: the operator never learns what MXNet asked for and always
  overwrites its input gradients.  Where MXNet asks to add (grad_req='add'
  leaves or Parameters fed straight into the op, or gradients summed in place
  when an input feeds 8 or more ops in a bound graph), that gradient would be
  wrong.  ``forward`` puts an ``identity`` between each parameter and the op
  (and ``BlockGrad`` before obs) where that can happen (``guard``, ``guard_nd``):
  the op's gradients then go to a buffer of their own, always written, and
  identity's backward honours the request.  ``forward_dense`` does the same for
  A, pi, log_emission and lengths (``guard_dense``, ``guard_dense_nd``).
- Errors: lib_api.cc keeps every error message in a list it never clears and
  that MXNet reads back after each call; the library keeps it empty itself
  (``error_count()`` says how many it holds; 0 in steady state).  hmmop's
  wrapper checks inputs first anyway, so the op does not fail in normal use.
- Unknown shapes: MXNet's shape-inference adapter for extension operators
  sizes its buffer by the sum of the inputs' ranks, in which an unknown rank
  counts -1: with inputs of unknown rank (``mx.sym.var`` without a shape)
  ``infer_shape_partial`` can fail with ``std::bad_alloc`` or crash inside
  MXNet, before the library is called.  Unknown dimensions (0) are fine.
- Threads: the library follows hmmop.get_num_threads()'s rule:
  hmmop.set_num_threads()'s value (passed on to it), else OMP_NUM_THREADS, else
  all processors.
"""
import ctypes
import os
import threading
import warnings

import mxnet as mx

from . import threads

LIBRARY = "libhmmop_op.so"
OP_NAME = "hmm_forward"
DENSE_OP_NAME = "hmm_forward_dense"
OP_NAMES = (OP_NAME, DENSE_OP_NAME)       # the library registers both; load() requires both
# The model axis (hmmop.ops.model_axis): A (K, N, N), B (K, N, M), pi (K, N); ll (K, batch), or with a
# model index per sequence (the 5th input) ll (batch,).  Not required by load(): a library without
# them still serves the ops above, and many_available() says whether these are there.
MANY_OP_NAME, BY_MODEL_OP_NAME = "hmm_forward_many", "hmm_forward_by_model"
# The same for hmm_forward_dense: A (K, N, N), pi (K, N), log_emission (K, batch, T, N) -> ll (K, batch), or
# log_emission (batch, T, N) and model (the 5th input) -> ll (batch,).
DENSE_MANY_OP_NAME, DENSE_BY_MODEL_OP_NAME = "hmm_forward_dense_many", "hmm_forward_dense_by_model"
MANY_OP_NAMES = (MANY_OP_NAME, BY_MODEL_OP_NAME, DENSE_MANY_OP_NAME, DENSE_BY_MODEL_OP_NAME)

_lock = threading.Lock()
_loaded = None          # None: not tried yet; then True or False
_reason = None


def library_path():
    """Absolute path of hmmop's operator library (whether or not it exists): hmmop/libhmmop_op.so,
    in the package directory (where setup.py builds it), one above this module's."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), LIBRARY)


def _registered(among=OP_NAMES):
    """Which of ``among`` (OP_NAMES) MXNet already has (a library loaded before), as a set."""
    size = mx.base.mx_uint()
    names = ctypes.POINTER(ctypes.c_char_p)()
    mx.base.check_call(mx.base._LIB.MXListAllOpNames(ctypes.byref(size), ctypes.byref(names)))
    wanted = {name.encode(): name for name in among}
    return {wanted[names[i]] for i in range(size.value) if names[i] in wanted}


def _missing(registered):
    return ", ".join(repr(name) for name in OP_NAMES if name not in registered)


def load():
    """Load the library into MXNet once per process; return whether the native op is there.

    Quiet; if the library is missing or fails to load, warns once with the
    reason, and hmmop keeps running on the CustomOps.  Operators hmm_forward
    and hmm_forward_dense that are already registered (the library loaded by
    hand, e.g. to run an exported model) are taken as they are: loading a
    library twice fails in MXNet.  Only one of them registered (an older
    library loaded by hand) counts as not available: the missing one cannot
    be added.
    """
    global _loaded, _reason
    with _lock:
        if _loaded is not None:
            return _loaded
        path = library_path()
        try:
            before = _registered()
            if len(before) == len(OP_NAMES):
                _loaded = True
                threads.on_change(_push_threads)        # reaches it where loaded from library_path()
                _push_threads(threads._override)
                return True
            if before:
                raise OSError(f"a library loaded before registered {', '.join(map(repr, sorted(before)))} "
                              f"but not {_missing(before)} (an older libhmmop_op.so?)")
            if not os.path.isfile(path):
                raise OSError(f"{path} does not exist (hmmop was built without mxnet's lib_api; "
                              f"rebuild with mxnet installed)")
            mx.library.load(path, verbose=False)
            after = _registered()
            if len(after) < len(OP_NAMES):
                raise OSError(f"{path} loaded but registered no operator {_missing(after)}")
            _loaded = True
            threads.on_change(_push_threads)
            _push_threads(threads._override)
        except Exception as e:          # MXNetError, OSError: anything means "not available"
            _loaded = False
            _reason = f"{type(e).__name__}: {e}".strip()
            warnings.warn(f"hmmop: the native hmm_forward is not available ({_reason}); "
                          f"hmmop uses its CustomOp", RuntimeWarning, stacklevel=2)
        return _loaded


def available():
    """Whether the native operator is loaded (tries to load it the first time)."""
    return load()


def dense_available():
    """Whether the native hmm_forward_dense is loaded: the same as available(), since load()
    requires both operators."""
    return load()


_many = None


def many_available():
    """Whether the loaded library also has the model-axis operators (MANY_OP_NAMES)."""
    global _many
    if _many is None:
        _many = bool(load()) and len(_registered(MANY_OP_NAMES)) == len(MANY_OP_NAMES)
    return _many


def many_unavailable_reason():
    """Why the model-axis native operators are not available, or None."""
    if many_available():
        return None
    return _reason or f"the loaded {LIBRARY} has no {', '.join(map(repr, MANY_OP_NAMES))} (an older build?)"


def unavailable_reason():
    """Why the native operator is not available, or None."""
    load()
    return _reason


def _loaded_library():
    if not load():
        raise RuntimeError(f"the native hmm_forward is not loaded: {_reason}")
    # RTLD_NOLOAD: the copy MXNet loaded, never a second one.
    return ctypes.CDLL(library_path(), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)


def error_count():
    """How many messages lib_api's error list of the loaded library holds (0 normally)."""
    return _loaded_library().hmmop_error_count()


def num_threads():
    """The thread count the native op would use now (as hmmop.get_num_threads())."""
    return _loaded_library().hmmop_num_threads()


def _push_threads(override):
    """Pass hmmop.set_num_threads()'s value (None: not set) on to the loaded library."""
    try:
        lib = ctypes.CDLL(library_path(), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:             # loaded from another path by hand: it keeps its default
        return
    lib.hmmop_set_num_threads(override or 0)


def guard(F, A, B, pi, obs):
    """The op's inputs in a graph (F = mx.sym), made safe for its always-overwritten gradients.

    identity gives each parameter a gradient buffer that only the op writes;
    BlockGrad stops obs's (zero) gradient.  In a bound graph or a block
    hybridized with static_alloc, MXNet sums the gradients of an input that
    feeds 8 or more ops with in-place adds, whatever the input is, so every
    input is guarded there.
    """
    return F.identity(A), F.identity(B), F.identity(pi), F.BlockGrad(obs)


def guard_nd(A, B, pi, obs):
    """The op's inputs under imperative autograd, made safe likewise, guarding only what needs it.

    Imperatively, MXNet asked the op to add only for a leaf with a gradient
    attached (grad_req='add'; measured: intermediates feeding up to 20 other
    ops, and leaves with 'write', always got 'write'), so only leaves with a
    gradient go through identity (obs through BlockGrad): 0.1 ms less per step
    than guarding everything.
    """
    params = [mx.nd.identity(x) if x.grad is not None else x for x in (A, B, pi)]
    return params + [mx.nd.BlockGrad(obs) if obs.grad is not None else obs]


def forward(F, A, B, pi, obs):
    """ll = the native op on guarded inputs (F: mx.nd, under autograd or not, or mx.sym)."""
    op = getattr(F, OP_NAME)
    if F is mx.sym:
        return op(*guard(F, A, B, pi, obs))
    if mx.autograd.is_recording():
        return op(*guard_nd(A, B, pi, obs))
    return op(A, B, pi, obs)


def guard_dense(F, A, pi, log_emission, lengths):
    """guard for hmm_forward_dense's inputs in a graph: identity on A, pi and log_emission,
    BlockGrad on lengths (every input, for the reason given in guard)."""
    return F.identity(A), F.identity(pi), F.identity(log_emission), F.BlockGrad(lengths)


def guard_dense_nd(A, pi, log_emission, lengths):
    """guard_nd for hmm_forward_dense's inputs: only leaves with a gradient attached."""
    params = [mx.nd.identity(x) if x.grad is not None else x for x in (A, pi, log_emission)]
    return params + [mx.nd.BlockGrad(lengths) if lengths.grad is not None else lengths]


def forward_dense(F, A, pi, log_emission, lengths):
    """ll = the native hmm_forward_dense on guarded inputs (F: mx.nd, under autograd or not,
    or mx.sym).  lengths: an NDArray (or Symbol), not a list."""
    op = getattr(F, DENSE_OP_NAME)
    if F is mx.sym:
        return op(*guard_dense(F, A, pi, log_emission, lengths))
    if mx.autograd.is_recording():
        return op(*guard_dense_nd(A, pi, log_emission, lengths))
    return op(A, pi, log_emission, lengths)


def forward_many(F, A, B, pi, obs, model=None):
    """ll = the native model-axis op on guarded inputs: hmm_forward_many (ll (K, batch)), or with
    model hmm_forward_by_model (ll (batch,)); F: mx.nd (under autograd or not) or mx.sym."""
    return _many_op(F, [A, B, pi, obs], model, guard, guard_nd, MANY_OP_NAME, BY_MODEL_OP_NAME)


def forward_dense_many(F, A, pi, log_emission, lengths, model=None):
    """ll = the native model-axis hmm_forward_dense on guarded inputs (as guard_dense):
    hmm_forward_dense_many (ll (K, batch)), or with model hmm_forward_dense_by_model (ll (batch,))."""
    return _many_op(F, [A, pi, log_emission, lengths], model, guard_dense, guard_dense_nd, DENSE_MANY_OP_NAME,
                 DENSE_BY_MODEL_OP_NAME)


def _many_op(F, inputs, model, guard_sym, guard_imperative, every, by_model):
    """A model-axis op (every: without model, by_model: with it) on inputs guarded by guard_sym (F = mx.sym)
    or guard_imperative (mx.nd under autograd); model (no gradient) through BlockGrad likewise."""
    if F is mx.sym:
        inputs = list(guard_sym(F, *inputs))
    elif mx.autograd.is_recording():
        inputs = guard_imperative(*inputs)
    if model is not None:
        if F is mx.sym:
            model = F.BlockGrad(model)
        elif mx.autograd.is_recording() and model.grad is not None:
            model = mx.nd.BlockGrad(model)
        inputs.append(model)
    return getattr(F, by_model if model is not None else every)(*inputs)
