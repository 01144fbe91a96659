"""CategoricalEmission: symbols from a finite alphabet, B[i, k] = P(symbol k | state i).

The categorical family as an emission component of hmmop.EmissionHMM (its
log-emissions go through hmm_forward_dense).  hmmop.HMM models the same family
on hmm_forward, which gathers from B instead of reading a dense array (faster
there); this component serves the core, e.g. to compare families or to
decode categorical data with the core's API.

Observations are rows of symbol indices: rows (n,) int32 in [0, M), MISSING
(-2) for a missing observation (log-emission 0 in every state).  prepare()
encodes user data as hmmop.HMM does (data.encode_flat: integer symbols, or
tokens with a vocabulary ``symbols``; None or -2 for a missing one).
"""
import numpy as np

from .. import _kernel
from ..data import MISSING, encode_flat
from ..fit.priors import m_step
from ..ops.checks import check_sizes
from .base import Emission

_FLOOR = 1e-30


class CategoricalEmission(Emission):
    """Categorical emissions of an N-state HMM over M symbols.

    emission_prior: Dirichlet concentrations of B's rows (scalar or (N, M);
    hmmlearn's emissionprob_prior), used by the M-step as pseudo-counts.
    mask: bool (N, M), False at structural zeros of B.  symbols: an optional
    vocabulary (M distinct tokens).  Until initialize or an assignment, B is
    uniform.
    """

    family = "categorical"
    state_fields = ("B", "mask")
    params_letters = "e"            # hmmlearn's letter for emissionprob_
    raw_letters = {"logits": "e"}   # the letter that learns each raw parameter (gradient training)

    def __init__(self, n_states, n_symbols, emission_prior=None, mask=None, symbols=None):
        check_sizes({"B": (n_states, n_symbols)}, np.float64)      # before any allocation
        for name, value in (("n_states", n_states), ("n_symbols", n_symbols)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.n_states, self.n_symbols = N, M = int(n_states), int(n_symbols)
        self.symbols = None if symbols is None else list(symbols)
        if self.symbols is not None and len(self.symbols) != M:
            raise ValueError(f"symbols has {len(self.symbols)} tokens but n_symbols = {M}")
        self.emission_prior = None if emission_prior is None else \
            np.broadcast_to(np.asarray(emission_prior, dtype=np.float64), (N, M)).copy()
        if self.emission_prior is not None and not (self.emission_prior > 0).all():
            raise ValueError("emission_prior must hold Dirichlet concentrations > 0")
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        if self.mask is not None and (self.mask.shape != (N, M) or not self.mask.any(axis=1).all()):
            raise ValueError(f"mask must be a boolean (N, M) = ({N}, {M}) array allowing a symbol in every row")
        self._B = self._restricted(np.full((N, M), 1.0 / M))

    # -- parameters ------------------------------------------------------
    @property
    def B(self):
        """(N, M) float64 emission probabilities."""
        return self._B.copy()

    @B.setter
    def B(self, value):
        value = np.array(value, dtype=np.float64)
        if value.shape != (self.n_states, self.n_symbols):
            raise ValueError(f"B must have shape ({self.n_states}, {self.n_symbols}), got {value.shape}")
        if not np.isfinite(value).all() or (value < 0).any() or not np.allclose(value.sum(axis=1), 1, atol=1e-6):
            raise ValueError("B must hold non-negative probabilities whose rows sum to 1")
        if self.mask is not None and (value[~self.mask] != 0).any():
            raise ValueError("B has non-zero probabilities where its mask holds structural zeros")
        self._B = value

    def _restricted(self, value):
        if self.mask is None:
            return value
        value = np.where(self.mask, value, 0.0)
        return value / value.sum(axis=1, keepdims=True)

    @property
    def n_free_parameters(self):
        free = self.n_states * self.n_symbols if self.mask is None else int(self.mask.sum())
        return free - self.n_states

    # -- data ------------------------------------------------------------
    def prepare(self, X, lengths=None):
        """(rows (n,) int32 symbols, MISSING for a missing one; lengths (n_sequences,) int64), from any
        form hmmop.HMM takes (data.encode_flat: ValueError naming the sequence and position)."""
        return encode_flat(X, self.n_symbols, self.symbols, lengths)

    def check_data(self, X, name="X"):
        rows = np.asarray(X)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 1-D array of symbol indices, got {rows.dtype} of shape {rows.shape}")
        bad = np.flatnonzero(((rows < 0) | (rows >= self.n_symbols)) & (rows != MISSING))
        if bad.size:
            raise ValueError(f"{name}[{int(bad[0])}] = {int(rows[bad[0]])} is not a symbol in [0, {self.n_symbols}) "
                             f"or {MISSING} (missing)")
        return np.ascontiguousarray(rows, dtype=np.int32)

    def missing_rows(self, X):
        return np.asarray(X) == MISSING

    # -- estimation ------------------------------------------------------
    def initialize(self, X, rng=None, init="random", params="e"):
        """B's rows drawn as hmmlearn 0.3.3's CategoricalHMM draws them - RandomState(rng).rand(N, M),
        rows normalised (restricted to the mask) - for an int rng; a Generator draws its uniforms
        itself.  The data are not needed ("kmeans" is taken as "random").  params: "e" or ""."""
        if "e" not in params:
            return self
        shape = (self.n_states, self.n_symbols)
        u = rng.random(shape) if isinstance(rng, np.random.Generator) else np.random.RandomState(rng).rand(*shape)
        u = self._restricted(u) if self.mask is not None else u / u.sum(axis=1, keepdims=True)
        self._B = u
        return self

    def log_likelihood(self, X, out=None):
        """float64 (n, N): log B[i, x_t]; 0 on missing steps (-inf for a symbol a state cannot emit)."""
        rows = np.asarray(X)
        with np.errstate(divide="ignore"):
            table = np.vstack([np.log(self._B.T), np.zeros((1, self.n_states))])     # row M: missing
        return np.take(table, np.where(rows == MISSING, self.n_symbols, rows), axis=0, out=out)

    def empty_stats(self):
        """{"obs": (N, M)}: expected emission counts (hmmlearn's stats['obs'])."""
        return {"obs": np.zeros((self.n_states, self.n_symbols))}

    def accumulate(self, stats, X, gamma):
        rows = np.asarray(X)
        seen = rows != MISSING
        symbols, weights = rows[seen], np.asarray(gamma)[seen]
        for i in range(self.n_states):
            stats["obs"][i] += np.bincount(symbols, weights=weights[:, i], minlength=self.n_symbols)

    def m_step(self, stats, params="e"):
        """hmmlearn's M-step for emissionprob_: rows of max(counts + prior - 1, 0), normalised."""
        if "e" in params:
            self._B = m_step("B", stats["obs"], self._B, self.emission_prior, self.mask)

    def fused_em(self, A, pi, rows, lengths, starts, n_iter, learn, prior, mask, objective_prior, tol, tol_rule,
                 num_threads):
        """The whole EM loop of a core holding this emission, in C (_kernel.em_categorical): A (N, N),
        pi (N,) float64 updated in place, B (with this emission's prior and mask) kept here.  learn,
        objective_prior: names among "A", "B", "pi"; prior, mask: {name: array} for A and pi.
        Returns em_categorical's (history, stop, last)."""
        B = self._B.copy()
        rows = np.ascontiguousarray(rows, dtype=np.int32)
        result = _kernel.em_categorical(A, B, pi, rows, starts, lengths, n_iter, learn,
                                        {**prior, "B": self.emission_prior}, {**mask, "B": self.mask},
                                        objective_prior, tol, tol_rule, num_threads)
        self._B = B
        return result

    def fused_em_arrays(self):
        """(B copy, its Dirichlet prior or None, its mask or None): this emission's part of a task of
        _kernel.em_categorical_many (EmissionHMM._em_task); fused_em_result(B) takes the result."""
        return self._B.copy(), self.emission_prior, self.mask

    def fused_em_result(self, B):
        self._B = np.array(B, dtype=np.float64)

    def sample(self, states, rng=None):
        """int32 (len(states),): one symbol per state index, by inverse CDF."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        states = np.asarray(states, dtype=np.intp)
        cum = np.cumsum(self._B, axis=1)[states]
        picks = (rng.random(len(states))[:, None] >= cum).sum(axis=1)
        return np.minimum(picks, self.n_symbols - 1).astype(np.int32)

    # -- model files -----------------------------------------------------
    def fields(self):
        out = {"B": self._B.copy()}
        if self.mask is not None:
            out["mask"] = self.mask.astype(np.float64)
        return out

    def meta(self):
        prior = None if self.emission_prior is None else self.emission_prior.tolist()
        return {"n_symbols": self.n_symbols, "symbols": self.symbols, "emission_prior": prior}

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        if "B" not in fields or "n_symbols" not in meta:
            raise ValueError("categorical emission fields need 'B' and meta 'n_symbols'")
        mask = fields.get("mask")
        em = cls(n_states, meta["n_symbols"], emission_prior=meta.get("emission_prior"),
                 mask=None if mask is None else mask > 0, symbols=meta.get("symbols"))
        B = np.asarray(fields["B"], dtype=np.float64)
        em.B = B / B.sum(axis=1, keepdims=True)
        return em

    # -- gradient training -----------------------------------------------
    def raw_parameters(self):
        """{"logits": (N, M)}: B = softmax(logits) over each row (masked entries held at 0)."""
        logits = np.log(np.maximum(self._B, _FLOOR))
        return {"logits": logits if self.mask is None else np.where(self.mask, logits, 0.0)}

    def set_raw_parameters(self, raw):
        logits = np.asarray(raw["logits"], dtype=np.float64)
        if self.mask is not None:
            logits = np.where(self.mask, logits, -np.inf)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self._B = e / e.sum(axis=1, keepdims=True)

    def raw_masks(self):
        """{"logits": (N, M) float 1/0}: where the raw parameters are free (the gradient block pushes the
        others to -1e30 before log_likelihood_nd); {} without structural zeros."""
        return {} if self.mask is None else {"logits": self.mask.astype(np.float64)}

    def log_likelihood_nd(self, F, X, logits):
        """log B[:, x] as an MXNet expression: X (..., 1) symbol indices (as floats) -> (..., N); logits
        with structural zeros already at -1e30 (raw_masks)."""
        logB = F.log_softmax(logits, axis=-1)                         # (N, M)
        return F.take(F.transpose(logB), F.squeeze(X, axis=-1))     # (..., N)
