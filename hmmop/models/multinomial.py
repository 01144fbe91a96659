"""MultinomialHMM: an HMM core with multinomial emissions (hmmlearn 0.3.3's MultinomialHMM).

    model = MultinomialHMM(2, n_features=4, n_trials=5, seed=0)
    model.fit(X, lengths)                       # EM from hmmlearn's random start; method="gradient" too
    model.emissionprob                          # (N, M)
    model = MultinomialHMM.from_parameters(A, pi, emissionprob, n_trials=5)

X: (n, M) non-negative integer counts, each observed row summing to n_trials
when it is set (see hmmop.emissions.multinomial).
"""
import numpy as np

from ..emissions.multinomial import MultinomialEmission
from .core import FAMILIES, EmissionHMM


class MultinomialHMM(EmissionHMM):
    """An N-state HMM over rows of M counts with multinomial emissions.

    n_states, n_features: N, M.  n_trials: None or every row's total count
    (needed to sample).  emissionprob_prior: Dirichlet concentrations of the
    rows of emissionprob (default 1: hmmlearn's M-step).  seed: the default
    seed of fit's start (hmmlearn's random_state).  dtype, ctx, mask, engine:
    as EmissionHMM's.
    """

    EMISSION = MultinomialEmission

    def __init__(self, n_states, n_features, n_trials=None, seed=None, dtype="float32", emissionprob_prior=1.0,
                 ctx=None, mask=None, engine="fused"):
        emission = MultinomialEmission(n_states, n_features, n_trials=n_trials, emissionprob_prior=emissionprob_prior)
        super().__init__(n_states, emission, seed=seed, dtype=dtype, ctx=ctx, mask=mask, engine=engine)

    @classmethod
    def _with_emission(cls, n_states, emission, **kwargs):
        model = cls.__new__(cls)
        EmissionHMM.__init__(model, n_states, emission, **kwargs)
        return model

    @classmethod
    def from_parameters(cls, A, pi, emissionprob, n_trials=None, keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,) and emissionprob (N, M).  keep_zeros=True makes every
        exact zero of A and pi a structural zero."""
        B = np.asarray(emissionprob, dtype=np.float64)
        if B.ndim != 2:
            raise ValueError(f"emissionprob must be an (N, M) array, got shape {B.shape}")
        A, pi = np.asarray(A, dtype=np.float64), np.asarray(pi, dtype=np.float64)
        if keep_zeros and "mask" not in kwargs:
            kwargs["mask"] = {"A": A > 0, "pi": pi > 0}
        model = cls(B.shape[0], B.shape[1], n_trials=n_trials, **kwargs)
        model.set_probabilities(A=A, pi=pi)
        model.emission.emissionprob = B
        model.initialized = True
        return model

    n_features = property(lambda self: self.emission.n_features)
    n_trials = property(lambda self: self.emission.n_trials)

    @property
    def emissionprob(self):
        """(N, M) float64 outcome probabilities per state (hmmlearn's emissionprob_)."""
        return self.emission.emissionprob

    def fit(self, X, lengths=None, method="em", epochs=None, tol=None, n_init=1, seed=None, **kwargs):
        """EmissionHMM.fit with this model's seed as the default; epochs default 100 (EM) or 1000 (gradient)."""
        if epochs is None:
            epochs = 100 if method == "em" else 1000
        return super().fit(X, lengths, method=method, epochs=epochs, tol=tol, n_init=n_init,
                           seed=self.seed if seed is None else seed, **kwargs)

    def __repr__(self):
        return (f"MultinomialHMM(n_states={self.n_states}, n_features={self.n_features}, "
                f"n_trials={self.n_trials}, dtype={self.dtype.name})")


FAMILIES[MultinomialEmission.family] = MultinomialHMM
