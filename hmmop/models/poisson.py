"""PoissonHMM: an HMM core with Poisson emissions (hmmlearn 0.3.3's parametrisation and M-step).

    model = PoissonHMM(3, n_features=2, seed=0)
    model.fit(X, lengths)                       # EM from hmmlearn's gamma start; method="gradient" too
    model.lambdas                               # (N, D)
    model = PoissonHMM.from_parameters(A, pi, lambdas)

X: (n, D) non-negative integer counts (see hmmop.emissions.poisson).
"""
import numpy as np

from ..emissions.poisson import PoissonEmission
from .core import FAMILIES, EmissionHMM


class PoissonHMM(EmissionHMM):
    """An N-state HMM over rows of D counts with Poisson emissions.

    n_states, n_features: N, D.  lambdas_prior, lambdas_weight: hmmlearn's
    PoissonHMM gamma prior (defaults 0).  seed: the default seed of fit's
    start (hmmlearn's random_state).  dtype, ctx, mask, engine: as EmissionHMM's.
    """

    EMISSION = PoissonEmission

    def __init__(self, n_states, n_features, seed=None, dtype="float32", lambdas_prior=0.0, lambdas_weight=0.0,
                 ctx=None, mask=None, engine="fused"):
        emission = PoissonEmission(n_states, n_features, lambdas_prior=lambdas_prior, lambdas_weight=lambdas_weight)
        super().__init__(n_states, emission, seed=seed, dtype=dtype, ctx=ctx, mask=mask, engine=engine)

    @classmethod
    def _with_emission(cls, n_states, emission, **kwargs):
        model = cls.__new__(cls)
        EmissionHMM.__init__(model, n_states, emission, **kwargs)
        return model

    @classmethod
    def from_parameters(cls, A, pi, lambdas, keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,) and lambdas (N, D).  keep_zeros=True makes every
        exact zero of A and pi a structural zero."""
        lambdas = np.asarray(lambdas, dtype=np.float64)
        if lambdas.ndim != 2:
            raise ValueError(f"lambdas must be an (N, D) array, got shape {lambdas.shape}")
        A, pi = np.asarray(A, dtype=np.float64), np.asarray(pi, dtype=np.float64)
        if keep_zeros and "mask" not in kwargs:
            kwargs["mask"] = {"A": A > 0, "pi": pi > 0}
        model = cls(lambdas.shape[0], lambdas.shape[1], **kwargs)
        model.set_probabilities(A=A, pi=pi)
        model.emission.lambdas = lambdas
        model.initialized = True
        return model

    n_features = property(lambda self: self.emission.n_features)

    @property
    def lambdas(self):
        """(N, D) float64 Poisson rates (hmmlearn's lambdas_)."""
        return self.emission.lambdas

    def fit(self, X, lengths=None, method="em", epochs=None, tol=None, n_init=1, seed=None, **kwargs):
        """EmissionHMM.fit with this model's seed as the default; epochs default 100 (EM) or 1000 (gradient)."""
        if epochs is None:
            epochs = 100 if method == "em" else 1000
        return super().fit(X, lengths, method=method, epochs=epochs, tol=tol, n_init=n_init,
                           seed=self.seed if seed is None else seed, **kwargs)

    def __repr__(self):
        return f"PoissonHMM(n_states={self.n_states}, n_features={self.n_features}, dtype={self.dtype.name})"


FAMILIES[PoissonEmission.family] = PoissonHMM
