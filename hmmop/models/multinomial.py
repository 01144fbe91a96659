"""MultinomialHMM: an HMM core with multinomial emissions (hmmlearn 0.3.3's MultinomialHMM).

    model = MultinomialHMM(2, n_features=4, n_trials=5, seed=0)
    model.fit(X, lengths)                       # EM from hmmlearn's random start; method="gradient" too
    model.emissionprob                          # (N, M)
    model = MultinomialHMM.from_parameters(A, pi, emissionprob, n_trials=5)

X: (n, M) non-negative integer counts, each observed row summing to n_trials
when it is set (see hmmop.emissions.multinomial).
"""
from ..emissions.multinomial import MultinomialEmission
from .core import FAMILIES
from .family import FamilyHMM, array_of


class MultinomialHMM(FamilyHMM):
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
    def from_parameters(cls, A, pi, emissionprob, n_trials=None, keep_zeros=False, **kwargs):
        """A model with the given A (N, N), pi (N,) and emissionprob (N, M).  keep_zeros=True makes every
        exact zero of A and pi a structural zero."""
        B = array_of("emissionprob", emissionprob, 2, "(N, M)")
        model = cls._given(A, pi, B.shape, keep_zeros, dict(kwargs, n_trials=n_trials))
        model.emission.emissionprob = B
        return model

    n_trials = property(lambda self: self.emission.n_trials)

    @property
    def emissionprob(self):
        """(N, M) float64 outcome probabilities per state (hmmlearn's emissionprob_)."""
        return self.emission.emissionprob

    def __repr__(self):
        return (f"MultinomialHMM(n_states={self.n_states}, n_features={self.n_features}, "
                f"n_trials={self.n_trials}, dtype={self.dtype.name})")


FAMILIES[MultinomialEmission.family] = MultinomialHMM
