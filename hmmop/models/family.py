"""FamilyHMM: what the model classes of the vector families (Gaussian, GMM, Poisson, multinomial) share.

Each family's class is the core with its emission component built by its
constructor: it adds the component's settings as constructor arguments,
``from_parameters`` and read-only properties of the parameters, and registers
itself in core.FAMILIES for model files.
"""
import numpy as np

from .core import EmissionHMM


class FamilyHMM(EmissionHMM):
    """EmissionHMM with the family's defaults: this model's seed for fit, epochs 100 (EM) or 1000
    (gradient), ``n_features``; subclasses set EMISSION (their component's class)."""

    EMISSION = None
    n_features = property(lambda self: self.emission.n_features)

    @classmethod
    def _with_emission(cls, n_states, emission, **kwargs):
        """A model of this class around an existing component (model files)."""
        model = cls.__new__(cls)
        EmissionHMM.__init__(model, n_states, emission, **kwargs)
        return model

    @classmethod
    def _given(cls, A, pi, args, keep_zeros, kwargs):
        """cls(*args, **kwargs) with A (N, N) and pi (N,) set - keep_zeros: their zeros structural - and
        marked initialised; the caller then sets the emission's parameters."""
        A, pi = np.asarray(A, dtype=np.float64), np.asarray(pi, dtype=np.float64)
        if keep_zeros and "mask" not in kwargs:
            kwargs["mask"] = {"A": A > 0, "pi": pi > 0}
        model = cls(*args, **kwargs)
        model.set_probabilities(A=A, pi=pi)
        model.initialized = True
        return model

    def fit(self, X, lengths=None, method="em", epochs=None, tol=None, n_init=1, seed=None, **kwargs):
        """EmissionHMM.fit with this model's seed as the default; epochs default 100 (EM) or 1000 (gradient)."""
        if epochs is None:
            epochs = 100 if method == "em" else 1000
        return super().fit(X, lengths, method=method, epochs=epochs, tol=tol, n_init=n_init,
                           seed=self.seed if seed is None else seed, **kwargs)


def array_of(name, value, ndim, shape_text):
    """value as a float64 array of ``ndim`` dimensions (ValueError naming ``name`` otherwise)."""
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != ndim:
        raise ValueError(f"{name} must be an {shape_text} array, got shape {value.shape}")
    return value
