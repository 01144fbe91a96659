"""GMMHMM: an HMM core with Gaussian-mixture emissions (hmmlearn 0.3.3's GMMHMM).

    model = GMMHMM(3, n_features=2, n_mix=2, covariance_type="full", seed=0)
    model.fit(X, lengths)                       # EM from hmmlearn's k-means start; method="gradient" too
    model.weights, model.means, model.covars    # (N, K), (N, K, D), per type
    model = GMMHMM.from_parameters(A, pi, weights, means, covars, covariance_type="diag")

covars in hmmlearn's GMMHMM shapes: spherical (N, K), diag (N, K, D), full
(N, K, D, D), tied (N, D, D) (one matrix per state, shared by its
components).  Priors and their defaults as hmmlearn's (see
hmmop.emissions.gmm.GMMEmission).
"""
from ..emissions.gmm import GMMEmission
from .core import FAMILIES
from .family import FamilyHMM, array_of


class GMMHMM(FamilyHMM):
    """An N-state HMM over D-dimensional real observations with K-component Gaussian-mixture emissions.

    n_states, n_features, n_mix: N, D, K.  covariance_type, min_covar,
    weights_prior, means_prior, means_weight, covars_prior, covars_weight:
    hmmlearn's GMMHMM settings and defaults.  seed: the default seed of fit's
    k-means start (hmmlearn's random_state).  dtype, ctx, mask, engine: as
    EmissionHMM's.
    """

    EMISSION = GMMEmission

    def __init__(self, n_states, n_features, n_mix=1, covariance_type="diag", seed=None, dtype="float32",
                 min_covar=1e-3, weights_prior=1.0, means_prior=0.0, means_weight=0.0, covars_prior=None,
                 covars_weight=None, ctx=None, mask=None, engine="fused"):
        emission = GMMEmission(n_states, n_features, n_mix=n_mix, covariance_type=covariance_type,
                               min_covar=min_covar, weights_prior=weights_prior, means_prior=means_prior,
                               means_weight=means_weight, covars_prior=covars_prior, covars_weight=covars_weight)
        super().__init__(n_states, emission, seed=seed, dtype=dtype, ctx=ctx, mask=mask, engine=engine)

    @classmethod
    def from_parameters(cls, A, pi, weights, means, covars, covariance_type="diag", keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,), weights (N, K), means (N, K, D) and covars (hmmlearn's
        shape for the type).  keep_zeros=True makes every exact zero of A and pi a structural zero."""
        means = array_of("means", means, 3, "(N, K, D)")
        N, K, D = means.shape
        model = cls._given(A, pi, (N, D), keep_zeros, dict(kwargs, n_mix=K, covariance_type=covariance_type))
        model.emission.weights = weights
        model.emission.means = means
        model.emission.set_covars(covars)
        return model

    covariance_type = property(lambda self: self.emission.covariance_type)
    n_mix = property(lambda self: self.emission.n_mix)

    @property
    def weights(self):
        """(N, K) float64 mixture weights (hmmlearn's weights_)."""
        return self.emission.weights

    @property
    def means(self):
        """(N, K, D) float64 component means (hmmlearn's means_)."""
        return self.emission.means

    @property
    def covars(self):
        """float64 covariances in hmmlearn's covars_ shape for the type."""
        return self.emission.covars

    def __repr__(self):
        return (f"GMMHMM(n_states={self.n_states}, n_features={self.n_features}, n_mix={self.n_mix}, "
                f"covariance_type={self.covariance_type!r}, dtype={self.dtype.name})")


FAMILIES[GMMEmission.family] = GMMHMM
