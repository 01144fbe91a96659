"""GaussianHMM: an HMM core with Gaussian emissions (hmmlearn 0.3.3's parametrisation and M-step).

    model = GaussianHMM(3, n_features=2, covariance_type="full", seed=0)
    model.fit(X, lengths)                          # EM from a k-means start; method="gradient" too
    model.means, model.covars                      # (N, D), (N, D, D) for every covariance type
    model = GaussianHMM.from_parameters(A, pi, means, covars, covariance_type="diag")

Covariance types "spherical", "diag", "full", "tied"; covars given in the
shape hmmlearn's covars_ setter takes for the type: spherical (N,), diag
(N, D), full (N, D, D), tied (D, D).  Priors and min_covar as hmmlearn's
(see hmmop.emissions.GaussianEmission).
"""
import numpy as np

from ..emissions import GaussianEmission
from .core import FAMILIES
from .family import FamilyHMM, array_of


class GaussianHMM(FamilyHMM):
    """An N-state HMM over D-dimensional real observations with Gaussian emissions.

    n_states, n_features: N, D.  covariance_type, min_covar, means_prior,
    means_weight, covars_prior, covars_weight: hmmlearn's GaussianHMM
    settings and defaults.  seed: the default seed of fit's k-means start.
    dtype, ctx, mask, engine: as EmissionHMM's.
    """

    EMISSION = GaussianEmission

    def __init__(self, n_states, n_features, covariance_type="diag", seed=None, dtype="float32",
                 min_covar=1e-3, means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1,
                 ctx=None, mask=None, engine="fused"):
        emission = GaussianEmission(n_states, n_features, covariance_type=covariance_type, min_covar=min_covar,
                                    means_prior=means_prior, means_weight=means_weight,
                                    covars_prior=covars_prior, covars_weight=covars_weight)
        super().__init__(n_states, emission, seed=seed, dtype=dtype, ctx=ctx, mask=mask, engine=engine)

    @classmethod
    def from_parameters(cls, A, pi, means, covars, covariance_type="diag", keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,), means (N, D) and covars (hmmlearn's shape for the
        type).  keep_zeros=True makes every exact zero of A and pi a structural zero."""
        means = array_of("means", means, 2, "(N, D)")
        model = cls._given(A, pi, means.shape, keep_zeros, dict(kwargs, covariance_type=covariance_type))
        model.emission.means = means
        model.emission.set_covars(covars)
        return model

    covariance_type = property(lambda self: self.emission.covariance_type)

    @property
    def means(self):
        """(N, D) float64 means."""
        return np.array(self.emission.means, dtype=np.float64)

    @property
    def covars(self):
        """(N, D, D) float64 covariance matrices, for every covariance type (hmmlearn's covars_)."""
        return np.array(self.emission.covars, dtype=np.float64)

    def __repr__(self):
        return (f"GaussianHMM(n_states={self.n_states}, n_features={self.n_features}, "
                f"covariance_type={self.covariance_type!r}, dtype={self.dtype.name})")


FAMILIES[GaussianEmission.family] = GaussianHMM
