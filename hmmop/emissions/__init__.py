"""Emission components of hmmop's HMMs: the interface (``Emission``) and its families.

``GaussianEmission`` is hmmlearn's GaussianHMM emission (covariance types
``COVARIANCE_TYPES``); ``CategoricalEmission`` symbols from a finite
alphabet.  Importing this package imports NumPy only.
"""
from .base import Emission
from .categorical import CategoricalEmission
from .gaussian import COVARIANCE_TYPES, GaussianEmission

__all__ = ["Emission", "CategoricalEmission", "GaussianEmission", "COVARIANCE_TYPES"]
