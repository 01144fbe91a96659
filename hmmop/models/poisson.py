"""PoissonHMM: an HMM core with Poisson emissions (hmmlearn 0.3.3's parametrisation and M-step).

    model = PoissonHMM(3, n_features=2, seed=0)
    model.fit(X, lengths)                       # EM from hmmlearn's gamma start; method="gradient" too
    model.lambdas                               # (N, D)
    model = PoissonHMM.from_parameters(A, pi, lambdas)

X: (n, D) non-negative integer counts (see hmmop.emissions.poisson).
"""
from ..emissions.poisson import PoissonEmission
from .core import FAMILIES
from .family import FamilyHMM, array_of


class PoissonHMM(FamilyHMM):
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
    def from_parameters(cls, A, pi, lambdas, keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,) and lambdas (N, D).  keep_zeros=True makes every
        exact zero of A and pi a structural zero."""
        lambdas = array_of("lambdas", lambdas, 2, "(N, D)")
        model = cls._given(A, pi, lambdas.shape, keep_zeros, kwargs)
        model.emission.lambdas = lambdas
        return model

    @property
    def lambdas(self):
        """(N, D) float64 Poisson rates (hmmlearn's lambdas_)."""
        return self.emission.lambdas

    def __repr__(self):
        return f"PoissonHMM(n_states={self.n_states}, n_features={self.n_features}, dtype={self.dtype.name})"


FAMILIES[PoissonEmission.family] = PoissonHMM
