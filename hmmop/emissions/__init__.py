"""Emission components of hmmop's HMMs: the interface (``Emission``) and its families.

``GaussianEmission`` is hmmlearn's GaussianHMM emission (covariance types
``COVARIANCE_TYPES``).  Importing this package imports NumPy only.
"""
from .base import Emission
from .gaussian import COVARIANCE_TYPES, GaussianEmission

__all__ = ["Emission", "GaussianEmission", "COVARIANCE_TYPES"]
