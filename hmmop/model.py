"""HMM: a discrete hidden Markov model trained by gradient descent with hmmop.

    model = HMM(n_states=4, n_symbols=3, seed=0)          # random, seeded
    model = HMM.from_probabilities(A, B, pi)              # or given
    history = model.fit(sequences, epochs=1000)           # the gist's SGD loop
    model.score(sequences)                                # per-sequence log-likelihood
    model.save("model.npz"); HMM.load("model.npz")

A (N, N) row-stochastic transitions, B (N, M) emissions (states x symbols,
like hmmlearn's emissionprob_), pi (N,) initial probabilities.

Model file format (version 1): a NumPy .npz archive that loads with
allow_pickle=False, holding
  format   0-d str  "hmmop.HMM"
  version  0-d int  1
  A, B, pi          the probabilities, in the model's dtype
  meta     0-d str  JSON: {"n_states": N, "n_symbols": M, "dtype": "float32",
                           "symbols": [token, ...] or null, "fixed": [names]}
"""
import json
import os

import mxnet as mx
import numpy as np

from .block import NAMES, HMMBlock
from .data import encode, pad
from .trainer import Trainer

FORMAT, VERSION = "hmmop.HMM", 1
# Probabilities below this become this before their log is taken for the
# logits: no -inf logits (an optimizer's weight decay would turn them to NaN).
_FLOOR = 1e-30


class HMM:
    """A discrete HMM whose A, B and pi live in an HMMBlock as softmax logits.

    n_states, n_symbols: N >= 1, M >= 1 (M may be left out when ``symbols``,
    the vocabulary of tokens, is given).  Random initialisation draws each
    row from a flat Dirichlet with ``seed``.  fixed: names among 'A', 'B',
    'pi' held as given probabilities and never learned (see from_probabilities).
    """

    def __init__(self, n_states, n_symbols=None, symbols=None, seed=None, dtype="float32",
                 engine="fused", fixed=(), ctx=None):
        if symbols is not None:
            symbols = list(symbols)
            if len(set(symbols)) != len(symbols):
                raise ValueError("symbols: the vocabulary has repeated tokens")
            if n_symbols is None:
                n_symbols = len(symbols)
            elif n_symbols != len(symbols):
                raise ValueError(f"n_symbols = {n_symbols} but the vocabulary has {len(symbols)} symbols")
        if n_symbols is None:
            raise ValueError("give n_symbols or a symbol vocabulary (symbols=...)")
        for label, value in (("n_states", n_states), ("n_symbols", n_symbols)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
        self.n_states, self.n_symbols = int(n_states), int(n_symbols)
        self.symbols = symbols
        self.dtype = np.dtype(dtype)
        self.ctx = ctx or mx.cpu()
        self.history_ = np.array([])
        self.block = HMMBlock(self.n_states, self.n_symbols, engine=engine, dtype=self.dtype.name,
                              fixed=fixed)
        self.block.initialize(ctx=self.ctx)
        rng = np.random.default_rng(seed)
        n, m = self.n_states, self.n_symbols
        self.set_probabilities(A=rng.dirichlet(np.ones(n), size=n), B=rng.dirichlet(np.ones(m), size=n),
                               pi=rng.dirichlet(np.ones(n)))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_probabilities(cls, A, B, pi, symbols=None, **kwargs):
        """A model with the given A (N, N), B (N, M), pi (N,).  Learned ones must be
        distributions (rows summing to 1); fixed ones need only be non-negative."""
        A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
        if A.ndim != 2 or B.ndim != 2:
            raise ValueError(f"A and B must be 2-D, got shapes {A.shape} and {B.shape}")
        model = cls(A.shape[0], B.shape[1], symbols=symbols, **kwargs)
        model.set_probabilities(A=A, B=B, pi=pi)
        return model

    @classmethod
    def from_logits(cls, A, B, pi=None, **kwargs):
        """A model whose learned parameters start at the given softmax logits
        (the seed gist's style); pi may be left out for a fixed one set later."""
        A, B = np.asarray(A), np.asarray(B)
        model = cls(A.shape[0], B.shape[1], **kwargs)
        model.set_logits(A=A, B=B, pi=pi)
        return model

    def set_probabilities(self, A=None, B=None, pi=None):
        """Set any of A, B, pi from probabilities (checked)."""
        for name, value in (("A", A), ("B", B), ("pi", pi)):
            if value is None:
                continue
            value = self._checked(name, value, distribution=name not in self.block.fixed)
            if name not in self.block.fixed:
                value = np.log(np.maximum(value, _FLOOR))
            self._param(name).set_data(mx.nd.array(value, dtype=self.dtype, ctx=self.ctx))

    def set_logits(self, A=None, B=None, pi=None):
        """Set any of the learned A, B, pi from softmax logits."""
        for name, value in (("A", A), ("B", B), ("pi", pi)):
            if value is None:
                continue
            if name in self.block.fixed:
                raise ValueError(f"{name} is fixed: set it with set_probabilities")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != self._shape(name) or not np.isfinite(value).all():
                raise ValueError(f"{name} logits must be finite with shape {self._shape(name)}, "
                                 f"got shape {value.shape}")
            self._param(name).set_data(mx.nd.array(value, dtype=self.dtype, ctx=self.ctx))

    # -- the probabilities ----------------------------------------------------------------------
    def probabilities(self):
        """(A, B, pi) as float64 NumPy arrays."""
        params = {self.block.param_name(n): self._param(n).data(self.ctx) for n in NAMES}
        return tuple(x.asnumpy().astype(np.float64) for x in self.block.probabilities(mx.nd, params))

    A = property(lambda self: self.probabilities()[0], doc="(N, N) transition probabilities")
    B = property(lambda self: self.probabilities()[1], doc="(N, M) emission probabilities")
    pi = property(lambda self: self.probabilities()[2], doc="(N,) initial probabilities")

    # -- training and scoring -------------------------------------------------------------------
    def fit(self, sequences, epochs=1000, optimizer="sgd", learning_rate=1e-2, optimizer_params=None,
            batch_size=None, learn=None, normalize=True, tol=None, seed=None, progress=None,
            callback=None, hybridize=True):
        """Train by gradient descent; returns (and keeps in history_) the log-likelihood
        of the data before each epoch's updates.  See Trainer and Trainer.fit."""
        rows = encode(sequences, self.n_symbols, self.symbols)
        trainer = Trainer(self.block, optimizer, learning_rate, optimizer_params, learn=learn,
                          normalize=normalize, ctx=self.ctx)
        if hybridize and self.block.engine != "unroll":
            self.block.hybridize()
        self.history_ = trainer.fit(rows, epochs=epochs, batch_size=batch_size, tol=tol, seed=seed,
                                    progress=progress, callback=callback)
        return self.history_

    def score(self, sequences):
        """Per-sequence log-likelihoods, float64 array (number of sequences,)."""
        rows = encode(sequences, self.n_symbols, self.symbols)
        obs = mx.nd.array(pad(rows), ctx=self.ctx, dtype=np.int32)
        return self.block(obs).asnumpy().astype(np.float64)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to ``path`` (.npz, format in the module docstring)."""
        if self.symbols is not None and not all(isinstance(s, (str, int)) for s in self.symbols):
            raise TypeError("only str or int symbols can be saved")
        A, B, pi = (x.astype(self.dtype) for x in self.probabilities())
        meta = {"n_states": self.n_states, "n_symbols": self.n_symbols, "dtype": self.dtype.name,
                "symbols": self.symbols, "fixed": list(self.block.fixed)}
        with open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT), version=np.array(VERSION), A=A, B=B, pi=pi,
                     meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path, engine="fused", ctx=None):
        """Read a model written by save(); ValueError if ``path`` is not one."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                fields = {k: f[k] for k in f.files}
        except Exception as exc:
            raise ValueError(f"{path!r} is not an hmmop model file (not a readable .npz: {exc})") from None
        missing = {"format", "version", "A", "B", "pi", "meta"} - set(fields)
        if missing or str(fields["format"]) != FORMAT:
            raise ValueError(f"{path!r} is not an hmmop model file (format {FORMAT!r} with A, B, pi, meta)")
        if int(fields["version"]) != VERSION:
            raise ValueError(f"{path!r} has model file version {int(fields['version'])}; "
                             f"this hmmop reads version {VERSION}")
        meta = json.loads(str(fields["meta"]))
        return cls.from_probabilities(fields["A"], fields["B"], fields["pi"], symbols=meta["symbols"],
                                      dtype=meta["dtype"], fixed=tuple(meta.get("fixed", ())),
                                      engine=engine, ctx=ctx)

    # -- helpers --------------------------------------------------------------------------------
    def _param(self, name):
        return getattr(self.block, self.block.param_name(name))

    def _shape(self, name):
        n, m = self.n_states, self.n_symbols
        return {"A": (n, n), "B": (n, m), "pi": (n,)}[name]

    def _checked(self, name, value, distribution):
        value = np.asarray(value, dtype=np.float64)
        if value.shape != self._shape(name):
            raise ValueError(f"{name} must have shape {self._shape(name)}, got {value.shape}")
        if not np.isfinite(value).all() or (value < 0).any():
            raise ValueError(f"{name} must hold finite non-negative probabilities")
        if distribution:
            sums = value.sum(axis=-1)
            if not np.allclose(sums, 1.0, atol=1e-6):
                raise ValueError(f"{name} must sum to 1 along its last axis, got sums {np.round(sums, 6)}")
        return value

    def __repr__(self):
        return (f"HMM(n_states={self.n_states}, n_symbols={self.n_symbols}, dtype={self.dtype.name}, "
                f"engine={self.block.engine!r}, fixed={self.block.fixed})")
