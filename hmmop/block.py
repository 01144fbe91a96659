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

engine: 'fused' (the hmm_forward op, Cython kernel on the CPU, NDArray path
on a GPU), 'ndarray' (the op forced onto its NDArray path) or 'unroll' (the
autograd baseline, which cannot hybridize).
"""
import warnings

import mxnet as mx
from mxnet import gluon

from .op import OP_TYPE
from .unroll import unroll_forward

ENGINES = ("fused", "ndarray", "unroll")
NAMES = ("A", "B", "pi")


class HMMBlock(gluon.HybridBlock):
    def __init__(self, n_states, n_symbols, engine="fused", dtype="float32", fixed=(), **kwargs):
        super().__init__(**kwargs)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        unknown = set(fixed) - set(NAMES)
        if unknown:
            raise ValueError(f"fixed may only name {NAMES}, got {sorted(unknown)}")
        self.n_states, self.n_symbols = int(n_states), int(n_symbols)
        self.engine = engine
        self.fixed = tuple(name for name in NAMES if name in fixed)
        shapes = {"A": (n_states, n_states), "B": (n_states, n_symbols), "pi": (n_states,)}
        with self.name_scope():
            for name in NAMES:
                param = self.params.get(self.param_name(name), shape=shapes[name], dtype=dtype,
                                        init=mx.init.Zero(),
                                        grad_req="null" if name in self.fixed else "write")
                setattr(self, self.param_name(name), param)

    def param_name(self, name):
        """Gluon parameter name of 'A', 'B' or 'pi': NAME_logits, or NAME_probs when fixed."""
        return f"{name}_probs" if name in self.fixed else f"{name}_logits"

    def hybridize(self, active=True, **kwargs):
        if self.engine == "unroll" and active:
            warnings.warn("HMMBlock: the 'unroll' engine runs imperatively; hybridize() ignored")
            return
        super().hybridize(active, **kwargs)

    def probabilities(self, F, params):
        """(A, B, pi) as used by the model, from the parameter values in ``params``."""
        out = []
        for name in NAMES:
            value = params[self.param_name(name)]
            out.append(value if name in self.fixed else F.softmax(value, axis=-1))
        return out

    def hybrid_forward(self, F, obs, **params):
        A, B, pi = self.probabilities(F, params)
        if self.engine == "unroll":
            if F is not mx.nd:
                raise TypeError("the 'unroll' engine cannot be hybridized")
            return unroll_forward(A, B, pi, obs)
        backend = "ndarray" if self.engine == "ndarray" else "auto"
        return F.Custom(A, B, pi, obs, op_type=OP_TYPE, backend=backend)
