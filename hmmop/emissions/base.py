"""The interface every emission component follows.

An HMM in hmmop is one core (initial and transition probabilities, the fit
loops, decoding, sampling of the state path, model files) plus one emission
component, which knows only its family: the log-density of an observation
under each state, its E-step statistics and M-step, its starting point, its
sampler, and its parameters for model files and for gradient training.

Conventions shared by all components:

- observations are rows: ``X`` is (n, D) float64 for vector families;
- a row that is entirely NaN is a *missing* observation: its log-likelihood
  is 0 under every state and it adds nothing to the E-step statistics;
- ``N = n_states``; state arrays are indexed by the state first;
- statistics dictionaries are additive: the statistics of a data set are the
  sums of those of its parts, so the core may accumulate sequences (or
  workers) separately and add the dictionaries entry by entry.
"""
import numpy as np

from ..data import feature_rows

__all__ = ["Emission"]


class Emission:
    """Base class of the emission components: the interface and, for
    real-valued (n, D) rows, the shared data checks.

    A family sets ``family`` (the string recorded in model files) and
    supplies every method below that raises NotImplementedError.
    ``check_data`` and ``missing_rows`` here serve families whose rows are
    ``n_features`` real numbers; a family with other data overrides them.
    """

    #: the family's name, as recorded in model files (e.g. "gaussian")
    family = None
    #: N, the number of hidden states
    n_states = None
    #: D, the number of values per observation (for vector families)
    n_features = None

    # -- data ------------------------------------------------------------

    def prepare(self, X, lengths=None):
        """(rows, lengths (n_sequences,) int64): user data in hmmlearn's concatenated form, checked.

        X: a list of (T_i, D) arrays, one (T, D) array, or the concatenated
        (n, D) rows with ``lengths``; rows as check_data returns them.  A
        family with other data (symbols) overrides it.
        """
        rows, lengths = feature_rows(X, lengths)
        return self.check_data(rows), lengths

    def prepare_counted(self, X, lengths=None):
        """(rows, lengths, n_missing): prepare's result and how many of the rows are missing.

        Here prepare, then missing_rows; a family whose checking pass can
        count the missing rows as it goes overrides it (one read of X).
        """
        rows, lengths = self.prepare(X, lengths)
        return rows, lengths, int(np.count_nonzero(self.missing_rows(rows)))

    def check_data(self, X, name="X"):
        """X (n, D) real -> float64 C-contiguous (a view when X already is one).

        ValueError, naming ``name`` and the row, for: not 2-D, the wrong D,
        non-numeric or complex values, a non-finite value in a row that is
        not entirely NaN (a whole NaN row is a missing observation).
        """
        D = self.n_features
        try:
            arr = np.asarray(X)
        except Exception as exc:                 # ragged lists and the like
            raise ValueError(f"{name} must be an (n, {D}) array of numbers: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers (an (n, {D}) array); got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n rows of {D} features); got shape {arr.shape}")
        if arr.shape[1] != D:
            raise ValueError(f"{name} has {arr.shape[1]} features per row but the model has {D}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            total = arr.sum()           # one pass, no temporary: finite unless some value is not (or overflow)
        if np.isfinite(total):
            return arr
        finite = np.isfinite(arr)
        if not finite.all():
            bad_rows = ~finite.all(axis=1) & ~np.isnan(arr).all(axis=1)
            if bad_rows.any():
                t = int(np.flatnonzero(bad_rows)[0])
                j = int(np.flatnonzero(~finite[t])[0])
                raise ValueError(f"{name}[{t}] has a non-finite value ({arr[t, j]!r} in column {j}); only a row "
                                 f"that is entirely NaN is allowed (it marks a missing observation)")
        return arr

    def missing_rows(self, X):
        """bool (n,): True where the row of X (n, D) is entirely NaN (a missing observation)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array; got shape {X.shape}")
        out = np.zeros(len(X), dtype=bool)
        if X.shape[1] == 0 or len(X) == 0:
            return out
        candidates = np.flatnonzero(np.isnan(X[:, 0]))       # a missing row is NaN in column 0 too
        out[candidates] = np.isnan(X[candidates]).all(axis=1)
        return out

    # -- estimation ------------------------------------------------------

    def initialize(self, X, rng, init="kmeans"):
        """Set the parameters from data X (n, D) (missing rows excluded); rng: numpy Generator or int seed."""
        raise NotImplementedError(f"{type(self).__name__} must supply initialize")

    def log_likelihood(self, X, out=None):
        """float64 (n, N): log p(x_t | state i); 0 on missing rows.  out: None or a C-contiguous
        float64 (n, N) array to write into (an EM loop reuses one)."""
        raise NotImplementedError(f"{type(self).__name__} must supply log_likelihood")

    def empty_stats(self):
        """dict of zero float64 arrays: the E-step statistics of no data."""
        raise NotImplementedError(f"{type(self).__name__} must supply empty_stats")

    def accumulate(self, stats, X, gamma):
        """Add to ``stats`` (in place) the statistics of X (n, D) with posteriors gamma (n, N).

        gamma[t, i] = P(s_t = i | data); missing rows contribute nothing.
        """
        raise NotImplementedError(f"{type(self).__name__} must supply accumulate")

    def m_step(self, stats, params=None):
        """Update the parameters in place from ``stats``; ``params`` says which (family letters)."""
        raise NotImplementedError(f"{type(self).__name__} must supply m_step")

    def sample(self, states, rng):
        """float64 (len(states), D): one draw from the emission of each state index in ``states``."""
        raise NotImplementedError(f"{type(self).__name__} must supply sample")

    @property
    def n_free_parameters(self):
        """int: the number of free scalar parameters (for AIC/BIC)."""
        raise NotImplementedError(f"{type(self).__name__} must supply n_free_parameters")

    # the fields() entries indexed by state on their first axis (a tied covariance is not: see permuted)
    state_fields = ()

    def permuted(self, order):
        """A copy whose state k has this emission's state order[k] parameters (fields and meta as they
        are; a tied covariance, shared by all states, stays)."""
        fields = self.fields()
        for name in self.state_fields:
            if name in fields and not (name == "covars" and getattr(self, "covariance_type", None) == "tied"):
                fields[name] = np.asarray(fields[name])[np.asarray(order)]
        return type(self).from_fields(self.n_states, fields, self.meta())

    # -- model files -----------------------------------------------------

    def fields(self):
        """dict[str, np.ndarray]: the parameter arrays a model file stores."""
        raise NotImplementedError(f"{type(self).__name__} must supply fields")

    def meta(self):
        """dict: the JSON-able settings a model file stores beside ``fields``."""
        raise NotImplementedError(f"{type(self).__name__} must supply meta")

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        """The component that ``fields()`` and ``meta()`` describe (ValueError on missing or bad entries)."""
        raise NotImplementedError(f"{cls.__name__} must supply from_fields")

    # -- gradient training -----------------------------------------------

    def raw_parameters(self):
        """dict[str, np.ndarray]: unconstrained float64 arrays equivalent to the parameters."""
        raise NotImplementedError(f"{type(self).__name__} must supply raw_parameters")

    def set_raw_parameters(self, raw):
        """Set the parameters from a dict like ``raw_parameters()`` returns (numpy values)."""
        raise NotImplementedError(f"{type(self).__name__} must supply set_raw_parameters")

    def log_likelihood_nd(self, F, X, **raw):
        """``log_likelihood`` as an MXNet expression (F = mx.nd or mx.sym), differentiable in ``raw``.

        X (..., D) -> (..., N).  ``raw``: NDArrays/Symbols named as ``raw_parameters()``.
        Missing rows are the caller's: it replaces them by 0 and masks the result.
        """
        raise NotImplementedError(f"{type(self).__name__} must supply log_likelihood_nd")
