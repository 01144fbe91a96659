"""Multinomial emissions: hmmlearn 0.3.3's ``MultinomialHMM`` parametrisation as an hmmop component.

Each state i emits a row of M counts, the outcomes of n = sum(x) draws from
the categorical distribution emissionprob[i] (M outcomes):

    log p(x | i) = log(n!) - sum_m log(x_m!) + sum_m x_m log emissionprob[i, m]

Data: (n_rows, M) non-negative integer counts; with ``n_trials`` set, every
observed row must sum to it (hmmlearn's check); a row entirely NaN is a
missing observation.  The E-step statistics are hmmlearn's
(posterior-weighted counts), the M-step normalises them (with a Dirichlet
``emissionprob_prior`` as pseudo-counts, CategoricalHMM's meaning; its
default 1 is hmmlearn's MultinomialHMM, which has no prior).  NumPy only.
"""
import numbers

import numpy as np

from ..fit.priors import m_step
from .base import Emission
from .poisson import (augmented_loglik, augmented_rows, check_counts, check_size, check_states, jsonable,
                      log_factorial, numpy_rng, output)

__all__ = ["MultinomialEmission"]

_FLOOR = 1e-30


class MultinomialEmission(Emission):
    """Multinomial emissions of an N-state HMM over rows of M = n_features counts (hmmlearn's MultinomialHMM).

    n_trials: None (rows may sum to any total) or a positive int every
    observed row must sum to (sampling needs it).  emissionprob_prior:
    Dirichlet concentrations (> 0; scalar or (N, M)) of the rows of
    emissionprob, used as pseudo-counts max(counts + prior - 1, 0) by the
    M-step; 1 (the default) is hmmlearn's plain normalisation.

    Attributes: emissionprob float64 (N, M) (hmmlearn's ``emissionprob_``).
    Until ``initialize`` or an assignment, it is uniform.
    """

    family = "multinomial"
    state_fields = ("emissionprob",)
    params_letters = "e"                        # hmmlearn's letter for emissionprob_
    raw_letters = {"logits": "e"}

    def __init__(self, n_states, n_features, n_trials=None, emissionprob_prior=1.0):
        self.n_states = N = check_size(n_states, "n_states")
        self.n_features = M = check_size(n_features, "n_features")
        if n_trials is not None:
            if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 0:
                raise ValueError(f"n_trials must be None or a non-negative integer (every row's total count); "
                                 f"got {n_trials!r}")
            n_trials = int(n_trials)
        self.n_trials = n_trials
        try:
            prior = np.array(emissionprob_prior, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"emissionprob_prior must be a number or an array; got {emissionprob_prior!r}") from None
        if prior.ndim and prior.shape != (N, M):
            raise ValueError(f"emissionprob_prior must be a scalar or shape ({N}, {M}); got shape {prior.shape}")
        if not (np.isfinite(prior) & (prior > 0)).all():
            raise ValueError(f"emissionprob_prior must hold finite Dirichlet concentrations > 0; "
                             f"got {emissionprob_prior!r}")
        self.emissionprob_prior = float(prior) if prior.ndim == 0 else prior
        # None where every concentration is 1: the plain normalisation, as hmmlearn
        self._prior = None if (prior == 1).all() else np.broadcast_to(prior, (N, M)).copy()
        self._B = np.full((N, M), 1.0 / M)

    def __repr__(self):
        return (f"MultinomialEmission(n_states={self.n_states}, n_features={self.n_features}, "
                f"n_trials={self.n_trials})")

    # -- parameters ------------------------------------------------------

    @property
    def emissionprob(self):
        """float64 (N, M): each state's outcome probabilities (a copy; rows sum to 1)."""
        return self._B.copy()

    @emissionprob.setter
    def emissionprob(self, value):
        arr = np.array(value, dtype=np.float64)
        if arr.shape != (self.n_states, self.n_features):
            raise ValueError(f"emissionprob must have shape ({self.n_states}, {self.n_features}); got {arr.shape}")
        bad = ~(np.isfinite(arr) & (arr >= 0)).all(axis=1) | ~np.isclose(arr.sum(axis=1), 1.0, rtol=0, atol=1e-6)
        if bad.any():
            raise ValueError(f"emissionprob[{int(np.flatnonzero(bad)[0])}] must hold non-negative probabilities "
                             f"summing to 1")
        self._B = arr

    @property
    def n_free_parameters(self):
        """int: N * (M - 1) (hmmlearn's count)."""
        return self.n_states * (self.n_features - 1)

    # -- data ------------------------------------------------------------

    def check_data(self, X, name="X"):
        """X (n, M) counts -> float64 C-contiguous.  ValueError naming ``name`` and the row for the base
        checks (shape, numbers, non-finite values), negative or fractional counts, and (n_trials set)
        a row whose total is not n_trials."""
        arr = check_counts(super().check_data(X, name), name)
        if self.n_trials is not None and len(arr):
            totals = arr.sum(axis=1)
            bad = totals != self.n_trials               # NaN (missing rows) too, sorted out here
            if bad.any():
                bad &= ~np.isnan(arr).all(axis=1)
                if bad.any():
                    t = int(np.flatnonzero(bad)[0])
                    raise ValueError(f"{name}[{t}] sums to {totals[t]:g} but n_trials = {self.n_trials}: the total "
                                     f"count of each row must be the number of trials")
        return arr

    def _rows(self, X, name="X"):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have shape (n, {self.n_features}); got {X.shape}")
        return X

    # -- log-likelihood --------------------------------------------------

    def log_likelihood(self, X, out=None):
        """float64 (n, N): the multinomial log-pmf of each row under each state, with n = the row's total
        (hmmlearn's); -inf for a positive count of a zero probability; 0 on missing rows.  out: None
        or a C-contiguous float64 (n, N) array to write into."""
        X = self._rows(X)
        out = output(out, (len(X), self.n_states))
        if len(X) == 0:
            return out
        # sum_m x_m log B_m + log(n!) - sum log(x_m!); 0 if missing
        return augmented_loglik(self._augmented(X)[0], self._B, np.zeros(self.n_states), out)

    def _augmented(self, X):
        """poisson.augmented_rows of X with the row constant log(n!) - sum_m log(x_m!), n = sum_m x_m."""
        return augmented_rows(self, X, lambda rows: log_factorial(rows.sum(axis=1)) - log_factorial(rows).sum(axis=1))

    # -- EM --------------------------------------------------------------

    def empty_stats(self):
        """{"obs": (N, M)}: posterior-weighted counts (hmmlearn's stats['obs'])."""
        return {"obs": np.zeros((self.n_states, self.n_features))}

    def accumulate(self, stats, X, gamma):
        """obs += gamma.T @ X over the observed rows of X (n, M); gamma (n, N)."""
        X = self._rows(X)
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.shape != (len(X), self.n_states):
            raise ValueError(f"gamma must have shape ({len(X)}, {self.n_states}); got {gamma.shape}")
        Xa, missing = self._augmented(X)
        if missing is not None:
            Xa, gamma = Xa[~missing], gamma[~missing]
        stats["obs"] += (gamma.T @ Xa)[:, :self.n_features]

    def m_step(self, stats, params="e"):
        """emissionprob ('e' in params): rows of max(obs + prior - 1, 0) normalised (hmmlearn's obs / obs.sum
        for the default prior 1).  A row with nothing (a state never visited) keeps its values (hmmlearn: NaN)."""
        if set(params) - set("e"):
            raise ValueError(f"params may hold 'e' (emissionprob); got {params!r}")
        if "e" in params:
            self._B = m_step("B", np.asarray(stats["obs"], dtype=np.float64), self._B, self._prior)

    def initialize(self, X=None, rng=None, init="random", params="e"):
        """hmmlearn's start: emissionprob = rows of RandomState(rng).rand(N, M), normalised (an int seed or
        None; a RandomState or Generator draws its uniforms itself).  X and ``init`` are not used."""
        if set(params) - set("e"):
            raise ValueError(f"params may hold 'e' (emissionprob); got {params!r}")
        if "e" in params:
            r = numpy_rng(rng)
            u = r.random((self.n_states, self.n_features)) if isinstance(r, np.random.Generator) \
                else r.rand(self.n_states, self.n_features)
            self._B = u / u.sum(axis=1, keepdims=True)
        return self

    # -- sampling --------------------------------------------------------

    def sample(self, states, rng=None):
        """int64 (len(states), M): multinomial draws of n_trials outcomes for each state index in ``states``.

        ValueError when n_trials is None (hmmlearn: sampling needs a single n_trials).
        """
        if self.n_trials is None:
            raise ValueError("sampling needs n_trials (the number of trials per row); this emission has None")
        states = check_states(states, self.n_states)
        r = numpy_rng(rng)
        out = np.zeros((len(states), self.n_features), dtype=np.int64)
        for i in np.unique(states):
            where = np.flatnonzero(states == i)
            out[where] = r.multinomial(self.n_trials, self._B[i], size=len(where))
        return out

    # -- model files -----------------------------------------------------

    def fields(self):
        """{"emissionprob": (N, M)}."""
        return {"emissionprob": self._B.copy()}

    def meta(self):
        return {"n_features": self.n_features, "n_trials": self.n_trials,
                "emissionprob_prior": jsonable(self.emissionprob_prior)}

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        if "n_features" not in meta:
            raise ValueError("multinomial emission meta has no 'n_features'")
        if "emissionprob" not in fields:
            raise ValueError("multinomial emission fields have no 'emissionprob' array")
        em = cls(n_states, meta["n_features"], n_trials=meta.get("n_trials"),
                 emissionprob_prior=meta.get("emissionprob_prior", 1.0))
        B = np.asarray(fields["emissionprob"], dtype=np.float64)
        if B.ndim == 2 and not np.allclose(B.sum(axis=1), 1.0, rtol=0, atol=1e-12):
            B = B / B.sum(axis=1, keepdims=True)        # (a float32 file's rows)
        em.emissionprob = B
        return em

    # -- gradient training -----------------------------------------------

    def raw_parameters(self):
        """{"logits": (N, M)}: emissionprob = softmax(logits) over each row (a zero as log 1e-30)."""
        return {"logits": np.log(np.maximum(self._B, _FLOOR))}

    def set_raw_parameters(self, raw):
        if set(raw) != {"logits"}:
            raise ValueError(f"raw parameters are 'logits'; got {sorted(raw)}")
        logits = np.array(raw["logits"], dtype=np.float64)
        if logits.shape != self._B.shape or not np.isfinite(logits).all():
            raise ValueError(f"raw 'logits' must be finite of shape {self._B.shape}; got shape {logits.shape}")
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self._B = e / e.sum(axis=1, keepdims=True)

    def log_likelihood_nd(self, F, X, logits):
        """``log_likelihood`` as an MXNet expression: X (..., M) counts -> (..., N), differentiable in
        logits (N, M)."""
        lin = F.dot(X, F.log_softmax(logits, axis=-1), transpose_b=True)                        # (..., N)
        const = F.gammaln(F.sum(X, axis=-1, keepdims=True) + 1) - F.sum(F.gammaln(X + 1), axis=-1, keepdims=True)
        return F.broadcast_add(lin, const)
