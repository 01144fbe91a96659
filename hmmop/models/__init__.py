"""HMM models: one core (initial and transition probabilities, the fit loops, inference, files)
and one emission component per family (hmmop.emissions).  hmmop.HMM, the categorical model,
lives in hmmop.models.hmm."""
from .core import EmissionHMM, load
from .gaussian import GaussianHMM
from .gmm import GMMHMM
from .many import Selection, fit_many, select
from .multinomial import MultinomialHMM
from .poisson import PoissonHMM

__all__ = ["EmissionHMM", "GaussianHMM", "GMMHMM", "MultinomialHMM", "PoissonHMM", "Selection", "fit_many", "load",
           "select"]
