"""Emission components of hmmop's HMMs: the interface (``Emission``) and its families.

``GaussianEmission`` is hmmlearn's GaussianHMM emission (covariance types
``COVARIANCE_TYPES``); ``CategoricalEmission`` symbols from a finite
alphabet; ``PoissonEmission``, ``MultinomialEmission`` and ``GMMEmission``
hmmlearn's PoissonHMM, MultinomialHMM and GMMHMM emissions.
"""
from .base import Emission
from .categorical import CategoricalEmission
from .gaussian import COVARIANCE_TYPES, GaussianEmission
from .gmm import GMMEmission
from .multinomial import MultinomialEmission
from .poisson import PoissonEmission

__all__ = ["Emission", "CategoricalEmission", "GaussianEmission", "GMMEmission", "MultinomialEmission",
           "PoissonEmission", "COVARIANCE_TYPES"]
