"""HMMBlock: a gluon HybridBlock holding softmax logits of A, B and pi.

    block = HMMBlock(n_states, n_symbols)
    ll = block(obs)            # obs (batch, T) symbols, -1 padded -> ll (batch,)

Parameters (gluon Parameters, all of the block's dtype):
  A_logits (N, N)  A  = softmax(A_logits, axis=1), rows: P(next | current)
  B_logits (N, M)  B  = softmax(B_logits, axis=1), rows: P(symbol | state)
  pi_logits (N,)   pi = softmax(pi_logits)
Every parameter is learned unless named in ``fixed``; a fixed parameter holds
probabilities, used as given (not softmaxed), so it can be any non-negative
array - e.g. the seed gist's pi = ones.

mask: {name: boolean array of the parameter's shape} for learned parameters
with structural zeros.  Where the mask is False the probability is exactly 0:
the softmax runs over the free entries only (exp of the shifted logits times
the mask), the masked logits get an exactly zero gradient, so they never
move.  The masks are held as gluon Constants NAME_mask, inputs of the graph.

n_models=K stacks K models on a leading axis (hmm_forward's model axis): every
parameter gets shape (K, ...) - fixed ones too, each model's copy - and
block(obs) gives ll (K, batch), every sequence under every model, or
block(obs, model) with model (batch,) int32 indices, ll (batch,), sequence b
under model model[b].  A mask (the parameter's unstacked shape) holds for every model.
log_prior gives one value per model, (K,).  Each model's numbers are those of
an unstacked block with its parameters (the operator's model axis is bit for
bit K separate calls; softmax and the optimizers act elementwise).

engine: 'fused' (the hmm_forward op: the native operator on a CPU context
where it is loaded, else the CustomOp), 'native' (the native operator, CPU
only), 'custom' (the CustomOp: Cython kernel on the CPU, NDArray path
elsewhere), 'ndarray' (the CustomOp forced onto its NDArray path) or 'unroll'
(the autograd baseline, which cannot hybridize).  A hybridized graph holds the
operator chosen for the context of the first call; a call on another kind of
context rebuilds it.
"""
import warnings

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data import pad
from ..ops import native
from ..ops.categorical import OP_TYPE
from ..ops.model_axis import OP_TYPE_BY_MODEL
from ..ops.ndview import from_host, view
from ..ops.unroll import unroll_forward

ENGINES = ("fused", "native", "custom", "ndarray", "unroll")
NAMES = ("A", "B", "pi")
# A probability that underflowed to 0 gives a large finite log-prior term rather than -inf
# (structural zeros have weight 0, see fit/priors.py).
_TINY = 1e-300


def check_settings(engine, fixed):
    """HMMBlock's checks of ``engine`` and ``fixed`` (without making a block); returns fixed's names
    in NAMES' order."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    unknown = set(fixed) - set(NAMES)
    if unknown:
        raise ValueError(f"fixed may only name {NAMES}, got {sorted(unknown)}")
    if engine == "native" and not native.load():
        raise RuntimeError(f"engine 'native' is not available: {native.unavailable_reason()}")
    return tuple(name for name in NAMES if name in fixed)


def learnable(fixed, learn=None):
    """Checked tuple of the names to learn (default: every one not in ``fixed``), in NAMES' order."""
    learn = tuple(n for n in NAMES if n not in fixed) if learn is None else tuple(learn)
    bad = [n for n in learn if n not in NAMES]
    if bad:
        raise ValueError(f"learn may only name {NAMES}, got {bad}")
    held = [n for n in learn if n in fixed]
    if held:
        raise ValueError(f"cannot learn {held}: the model holds them as fixed probabilities")
    if not learn:
        raise ValueError("learn names no parameter: there is nothing to train")
    return tuple(n for n in NAMES if n in learn)


def param_name(name, fixed):
    """The gluon parameter name of 'A', 'B' or 'pi' in a block holding ``fixed``: NAME_probs when fixed,
    else NAME_logits."""
    return f"{name}_probs" if name in fixed else f"{name}_logits"


def learn_names(params):
    """The names that hmmlearn's letters ``params`` learn ('s' pi, 't' A, 'e' B)."""
    return tuple(n for n, letter in zip(NAMES, "tes") if letter in params)


class HMMBlock(gluon.HybridBlock):
    def __init__(self, n_states, n_symbols, engine="fused", dtype="float32", fixed=(), mask=None, n_models=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.fixed = check_settings(engine, fixed)
        self.n_states, self.n_symbols = int(n_states), int(n_symbols)
        self.engine = engine
        self._native = self._native_for(mx.cpu())    # what a graph built from symbols holds
        if n_models is not None and (isinstance(n_models, bool) or int(n_models) != n_models or n_models < 1):
            raise ValueError(f"n_models must be a positive integer or None, got {n_models!r}")
        self.n_models = None if n_models is None else int(n_models)
        stack = () if n_models is None else (self.n_models,)
        shapes = {"A": stack + (n_states, n_states), "B": stack + (n_states, n_symbols), "pi": stack + (n_states,)}
        with self.name_scope():
            for name in NAMES:
                param = self.params.get(self.param_name(name), shape=shapes[name], dtype=dtype,
                                        init=mx.init.Zero(),
                                        grad_req="null" if name in self.fixed else "write")
                setattr(self, self.param_name(name), param)
            # Only parameters with a structural zero get a mask (and the masked softmax).
            self.masked = tuple(name for name in NAMES if name not in self.fixed and mask is not None
                                and mask.get(name) is not None and not np.all(mask[name]))
            for name in self.masked:
                value = mx.nd.array(np.broadcast_to(mask[name], shapes[name]), dtype=dtype)
                setattr(self, f"{name}_mask", self.params.get_constant(f"{name}_mask", value))

    def param_name(self, name):
        """Gluon parameter name of 'A', 'B' or 'pi': NAME_logits, or NAME_probs when fixed."""
        return param_name(name, self.fixed)

    def _native_for(self, ctx):
        """Whether this block runs the native operator on context ctx."""
        if self.engine == "native":
            if ctx.device_type != "cpu":
                raise ValueError(f"engine 'native' runs on the CPU only, not on {ctx}; use 'fused'")
            return True
        return self.engine == "fused" and ctx.device_type == "cpu" and native.load()

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray) and self.engine in ("fused", "native"):
            use = self._native_for(x.context)
            if use != self._native:          # a graph built for the other operator
                self._native = use
                self._clear_cached_op()
        return super().forward(x, *args)

    def hybridize(self, active=True, **kwargs):
        if self.engine == "unroll" and active:
            warnings.warn("HMMBlock: the 'unroll' engine runs imperatively; hybridize() ignored")
            return
        super().hybridize(active, **kwargs)

    def values(self, ctx):
        """{name: NDArray} of every parameter and mask constant, as hybrid_forward receives them."""
        return {name: p.data(ctx) for name, p in self._reg_params.items()}

    def set_stack(self, k, values):
        """Model k's parameters (n_models) from values {gluon parameter name: NumPy array of the unstacked
        shape}, e.g. an unstacked block's: written straight into its slice (CPU)."""
        self._stacked_probabilities = None
        mx.nd.waitall()
        for name, value in values.items():
            view(self._reg_params[name].data())[k] = value

    def stacked(self, k):
        """{gluon parameter name: NumPy copy} of model k's parameters (n_models; CPU)."""
        mx.nd.waitall()
        return {name: view(p.data())[k].copy() for name, p in self._reg_params.items() if name in self._names()}

    def stacked_probabilities(self, k):
        """(A, B, pi) of model k (n_models) as float64 NumPy, from one softmax of the whole stack (bit for
        bit what an unstacked block with model k's parameters gives: softmax works row by row); kept
        until set_stack."""
        if getattr(self, "_stacked_probabilities", None) is None:
            ctx = self._reg_params[self.param_name("A")].list_ctx()[0]
            self._stacked_probabilities = [p.asnumpy() for p in self.probabilities(mx.nd, self.values(ctx))]
        return [np.asarray(p[k], dtype=np.float64) for p in self._stacked_probabilities]

    def _names(self):
        return tuple(self.param_name(n) for n in NAMES)

    def probabilities(self, F, params):
        """(A, B, pi) as used by the model, from the parameter values in ``params``."""
        out = []
        for name in NAMES:
            value = params[self.param_name(name)]
            if name in self.fixed:
                out.append(value)
            elif name in self.masked:
                out.append(_masked_softmax(F, value, params[f"{name}_mask"]))
            else:
                out.append(F.softmax(value, axis=-1))
        return out

    def learnable(self, learn=None):
        """Checked tuple of the names to learn (default: every one not fixed)."""
        return learnable(self.fixed, learn)

    # -- what hmmop.Trainer asks of a block (see fit/trainer.py) ----------------------------------
    def learn_names(self, params):
        """The names that hmmlearn's letters ``params`` learn ('s' pi, 't' A, 'e' B)."""
        return learn_names(params)

    def trainable(self, learn):
        """[Parameter] of the names in ``learn`` (checked), with grad_req set: "write" for
        them, "null" for the other learned parameters (fixed ones have "null" always)."""
        learn = self.learnable(learn)
        out = []
        for name in NAMES:
            if name in self.fixed:
                continue
            p = getattr(self, self.param_name(name))
            p.grad_req = "write" if name in learn else "null"
            if name in learn:
                out.append(p)
        return out

    def state(self):
        """[Parameter] of A, B, pi: what a worker of a distributed job takes from rank 0."""
        return [getattr(self, self.param_name(n)) for n in NAMES]

    def inputs(self, rows, chosen, ctx):
        """(obs,): rows[i] for i in chosen (every row for None) as (batch, T) int32, -1 padded."""
        return (from_host(pad(rows, chosen), np.int32, ctx),)

    def empty_inputs(self, ctx):
        """(obs,) of one sequence of padding: ll 0, gradient 0."""
        return (mx.nd.full((1, 1), -1, dtype="int32", ctx=ctx),)

    def log_prior(self, weights, ctx):
        """sum over names of sum(w * log(max(p, 1e-300))): the Dirichlet log-prior (up to a
        constant) of weights {name: NDArray of a - 1, the parameter's unstacked shape}; (1,),
        or (K,) one per model with n_models."""
        probs = dict(zip(NAMES, self.probabilities(mx.nd, self.values(ctx))))
        if self.n_models is None:
            return sum(mx.nd.sum(w * mx.nd.log(mx.nd.maximum(probs[name], _TINY))) for name, w in weights.items())
        return sum(mx.nd.sum(mx.nd.broadcast_mul(w.expand_dims(0), mx.nd.log(mx.nd.maximum(probs[name], _TINY))),
                             axis=tuple(range(1, w.ndim + 1))) for name, w in weights.items())

    def hybrid_forward(self, F, obs, *model, **params):
        """ll (batch,) of obs (batch, T) symbols (-1 padding, -2 missing); with n_models, (K, batch),
        or given model (batch,) int32 indices, (batch,)."""
        return self.loglik(F, *self.probabilities(F, params), obs, *model)

    def loglik(self, F, A, B, pi, obs, model=None):
        """ll of obs under probabilities A, B, pi (with a model axis: model as for hmm_forward), by this
        block's engine."""
        if self.engine == "unroll":
            if F is not mx.nd:
                raise TypeError("the 'unroll' engine cannot be hybridized")
            return unroll_forward(A, B, pi, obs, model=model)
        if self._native_for(A.context) if F is mx.nd else self._native:
            if self.n_models is not None:
                return native.forward_many(F, A, B, pi, obs, model)
            return native.forward(F, A, B, pi, obs)
        backend = "ndarray" if self.engine == "ndarray" else "auto"
        if model is not None:
            return F.Custom(A, B, pi, obs, F.BlockGrad(model), op_type=OP_TYPE_BY_MODEL, backend=backend)
        return F.Custom(A, B, pi, obs, op_type=OP_TYPE, backend=backend)


def _masked_softmax(F, x, mask):
    """softmax over the last axis restricted to mask == 1; exactly 0 where mask == 0.

    The shift is the largest free logit (masked ones pushed down by 1e30) and
    is treated as a constant (BlockGrad: softmax does not depend on it), so
    the gradient of a masked logit is exactly zero rather than rounding noise.
    """
    shift = F.BlockGrad(F.max(x + (mask - 1) * 1e30, axis=-1, keepdims=True))
    e = F.exp(F.broadcast_sub(x, shift)) * mask
    return F.broadcast_div(e, F.sum(e, axis=-1, keepdims=True))
