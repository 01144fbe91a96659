"""Gaussian emissions: hmmlearn 0.3.3's ``GaussianHMM`` parametrisation as an hmmop component.

Each state i emits x in R^D from N(means[i], Sigma_i), with Sigma_i of one of
four covariance types (hmmlearn's names and storage):

=========  =====================  ==========================================
type       stored (``_covars``)   Sigma_i
=========  =====================  ==========================================
spherical  (N,)                   _covars[i] * I
diag       (N, D)                 diag(_covars[i])
full       (N, D, D)              _covars[i]
tied       (D, D)                 _covars (shared by all states)
=========  =====================  ==========================================

The log-densities and the E-step sums are one pass over the data each in C
(csrc/hmm_gauss.c, threads and wide SIMD; this module prepares their small
per-state arrays from the Cholesky factors), and the M-step is hmmlearn's,
priors included.  NumPy otherwise: scikit-learn is imported by
``initialize(init="kmeans")`` alone and MXNet by ``log_likelihood_nd`` alone.
"""
import math
import numbers

import numpy as np

from .. import _kernel
from ..data import feature_rows
from ..ops.checks import check_sizes
from ..ops.threads import get_num_threads
from .base import Emission

__all__ = ["GaussianEmission", "COVARIANCE_TYPES"]

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")

_LOG_2PI = math.log(2 * math.pi)
# hmmlearn's fallback for a covariance that fails its Cholesky factorisation
# (after an M-step): factor Sigma + 1e-7 I instead.
_CHOLESKY_JITTER = 1e-7


def cholesky(m, label):
    """Lower Cholesky factor of covariance ``m`` (D, D), retried with
    ``_CHOLESKY_JITTER`` on the diagonal (hmmlearn's fallback); ValueError
    naming the matrix (``label``) when that fails too."""
    try:
        return np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        try:
            return np.linalg.cholesky(m + _CHOLESKY_JITTER * np.eye(len(m)))
        except np.linalg.LinAlgError:
            raise ValueError(f"{label} is not symmetric positive definite") from None


def _label(i, kind):
    return f"covars[{i}]" if kind == "full" else "covars (tied)"


def _output(out, shape):
    """out if it is a C-contiguous float64 array of ``shape``, a new one for None; else ValueError."""
    if out is None:
        return np.empty(shape)
    if out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {shape}")
    return out


def _as_rng(rng):
    """A numpy Generator or RandomState from a Generator, RandomState, int seed or None."""
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    return np.random.default_rng(rng)


def _jsonable(value):
    """A prior as meta() stores it: a float, or nested lists of floats."""
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.tolist()


class GaussianEmission(Emission):
    """Gaussian emissions of an N-state HMM over D-dimensional rows (hmmlearn's GaussianHMM).

    Parameters (hmmlearn's names and defaults)
    ------------------------------------------
    n_states, n_features : int
        N states, D features per observation.
    covariance_type : "spherical", "diag" (default), "full" or "tied".
    min_covar : float >= 0
        Added to the diagonal of the data covariance by ``initialize``
        (as hmmlearn, it is not a floor in the M-step).
    means_prior, means_weight :
        Normal prior on the means: prior mean (scalar or (N, D)) and its
        weight (scalar or (N,) one per state, >= 0).
    covars_prior, covars_weight :
        Inverse-gamma (spherical, diag) or inverse-Wishart (full, tied)
        prior: ``covars_prior`` is a scalar or an array shaped like the
        M-step's numerator - (N, D) for spherical and diag, (N, D, D) for
        full, (D, D) for tied (a scalar is added to *every* entry of a full
        or tied matrix, as hmmlearn does); ``covars_weight`` a scalar, or
        (N,) one per state for all types but tied.

    Attributes
    ----------
    means : float64 (N, D)
    covars : float64 (N, D, D), the full matrices for every type (hmmlearn's
        ``covars_``); assigning it calls ``set_covars``.
    compact_covars : float64, the stored form per type (hmmlearn's ``_covars_``).

    Until ``initialize`` or an assignment, means are 0 and covariances I.
    """

    family = "gaussian"
    state_fields = ("means", "covars")

    def __init__(self, n_states, n_features, covariance_type="diag", min_covar=1e-3,
                 means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1):
        N, D, kind = n_states, n_features, covariance_type          # sizes, before any allocation
        check_sizes({"means": (N, D), "covars": (N, D, D) if kind == "full" else (D, D) if kind == "tied" else
                     (N,) if kind == "spherical" else (N, D)}, np.float64)
        for name, value in (("n_states", n_states), ("n_features", n_features)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}; "
                             f"got {covariance_type!r}")
        min_covar = float(min_covar)
        if not (np.isfinite(min_covar) and min_covar >= 0):
            raise ValueError(f"min_covar must be a finite number >= 0; got {min_covar!r}")
        self.n_states = N = int(n_states)
        self.n_features = D = int(n_features)
        self.covariance_type = covariance_type
        self.min_covar = min_covar

        # The priors as given (for meta) and as the M-step broadcasts them.
        self.means_prior = self._prior(means_prior, "means_prior", [(N, D)])
        self.means_weight = self._prior(means_weight, "means_weight", [(N,)], nonnegative=True)
        cp_shape = {"spherical": (N, D), "diag": (N, D), "full": (N, D, D), "tied": (D, D)}[covariance_type]
        self.covars_prior = self._prior(covars_prior, "covars_prior", [cp_shape])
        self.covars_weight = self._prior(covars_weight, "covars_weight",
                                         [] if covariance_type == "tied" else [(N,)])
        self._mw = np.reshape(self.means_weight, (N, 1)) if np.ndim(self.means_weight) else self.means_weight
        cw = self.covars_weight
        if np.ndim(cw):
            cw = cw.reshape((N, 1, 1) if covariance_type == "full" else (N, 1))
        self._cw = cw

        self._means = np.zeros((N, D))
        self._covars = {"spherical": np.ones(N), "diag": np.ones((N, D)),
                        "full": np.tile(np.eye(D), (N, 1, 1)), "tied": np.eye(D)}[covariance_type]
        self._factor_cache = None

    @staticmethod
    def _prior(value, name, shapes, nonnegative=False):
        """A float, or a float64 array of one of ``shapes``; ValueError otherwise."""
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array of numbers; got {value!r}") from None
        if arr.ndim and arr.shape not in shapes:
            allowed = " or ".join(["a scalar", *(f"shape {s}" for s in shapes)])
            raise ValueError(f"{name} must be {allowed}; got shape {arr.shape}")
        if not np.isfinite(arr).all() or (nonnegative and (arr < 0).any()):
            raise ValueError(f"{name} must be finite{' and >= 0' if nonnegative else ''}; got {value!r}")
        return float(arr) if arr.ndim == 0 else arr

    def __repr__(self):
        return (f"GaussianEmission(n_states={self.n_states}, n_features={self.n_features}, "
                f"covariance_type={self.covariance_type!r})")

    # -- parameters ------------------------------------------------------

    @property
    def means(self):
        """float64 (N, D): the state means."""
        return self._means

    @means.setter
    def means(self, value):
        arr = np.array(value, dtype=np.float64)
        if arr.shape != (self.n_states, self.n_features):
            raise ValueError(f"means must have shape ({self.n_states}, {self.n_features}); got {arr.shape}")
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise ValueError(f"means[{int(np.flatnonzero(bad)[0])}] has non-finite values")
        self._means = arr

    @property
    def compact_covars(self):
        """A copy of the stored covariances: spherical (N,), diag (N, D), full (N, D, D), tied (D, D)."""
        return self._covars.copy()

    @property
    def covars(self):
        """float64 (N, D, D): every state's covariance matrix (a new array; hmmlearn's ``covars_``)."""
        N, D, c = self.n_states, self.n_features, self._covars
        kind = self.covariance_type
        if kind == "full":
            return c.copy()
        if kind == "tied":
            return np.tile(c, (N, 1, 1))
        full = np.zeros((N, D, D))
        idx = np.arange(D)
        full[:, idx, idx] = c[:, None] if kind == "spherical" else c
        return full

    @covars.setter
    def covars(self, value):
        self.set_covars(value)

    def set_covars(self, value):
        """Set the covariances from hmmlearn's ``covars_`` shapes, validated.

        spherical (N,) (or hmmlearn's internal (N, D) with equal entries per
        row), diag (N, D), full (N, D, D), tied (D, D).  Values must be
        positive (spherical, diag) or symmetric positive definite (full,
        tied; symmetric to numpy.allclose, then stored symmetrised; a singular
        one whose Sigma + 1e-7 I factors is taken, as hmmlearn evaluates it).
        ValueError naming the state otherwise.
        """
        N, D, kind = self.n_states, self.n_features, self.covariance_type
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"covars must be an array of numbers; got {type(value).__name__}") from None
        shape = {"spherical": (N,), "diag": (N, D), "full": (N, D, D), "tied": (D, D)}[kind]
        if kind == "spherical" and arr.shape == (N, D) and (arr == arr[:, :1]).all():
            arr = arr[:, 0].copy()                   # hmmlearn stores spherical covars tiled to (N, D)
        if arr.shape != shape:
            raise ValueError(f"covars must have shape {shape} for covariance_type {kind!r}; got {arr.shape}")
        if kind in ("spherical", "diag"):
            bad = ~(np.isfinite(arr) & (arr > 0)).reshape(N, -1).all(axis=1)
            if bad.any():
                raise ValueError(f"covars[{int(np.flatnonzero(bad)[0])}] must be positive and finite "
                                 f"(covariance_type {kind!r})")
            self._covars = arr
            self._factor_cache = None
            return
        mats = arr if kind == "full" else arr[None]
        for i, m in enumerate(mats):
            label = _label(i, kind)
            if not np.isfinite(m).all():
                raise ValueError(f"{label} has non-finite values")
            if not np.allclose(m, m.T):
                raise ValueError(f"{label} is not symmetric positive definite (not symmetric)")
        arr = 0.5 * (arr + np.swapaxes(arr, -1, -2))
        # What the density can evaluate is accepted: a singular matrix (a state
        # an M-step collapsed onto one point) factors with the jitter, as in
        # hmmlearn, so a fitted model can always be set back and scored.
        L = np.stack([cholesky(m, _label(i, kind)) for i, m in enumerate(arr if kind == "full" else arr[None])])
        self._covars = arr
        self._set_factors(L if kind == "full" else L[0])

    def _factors(self):
        """Cholesky factors of the full/tied covariances: (L, inv(L), sum(log diag L)), cached.

        L (N, D, D) or (D, D) lower; the log-determinant of Sigma is 2 * the
        third entry.  A matrix that fails the factorisation is retried with
        1e-7 added to its diagonal (hmmlearn's fallback), then ValueError.
        """
        if self._factor_cache is None:
            kind = self.covariance_type
            mats = self._covars if kind == "full" else self._covars[None]
            L = np.stack([cholesky(m, _label(i, kind)) for i, m in enumerate(mats)])
            self._set_factors(L if kind == "full" else L[0])
        return self._factor_cache

    def _set_factors(self, L):
        U = _lower_inverse(L)
        half_logdet = np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
        self._factor_cache = (L, U, half_logdet)

    @property
    def n_free_parameters(self):
        """int: N*D means + spherical N, diag N*D, full N*D(D+1)/2, tied D(D+1)/2 (hmmlearn's count)."""
        N, D = self.n_states, self.n_features
        return N * D + {"spherical": N, "diag": N * D, "full": N * D * (D + 1) // 2,
                        "tied": D * (D + 1) // 2}[self.covariance_type]

    # -- data ------------------------------------------------------------

    def _rows(self, X, name="X"):
        """X as float64 (n, D), shape-checked only (no scan of the values)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have shape (n, {self.n_features}); got {X.shape}")
        return X

    def _scannable(self, X):
        """X itself if it is a float64 C-contiguous (n, D) ndarray with n, D > 0 (what the C scan
        reads as it is), else None."""
        if (isinstance(X, np.ndarray) and X.dtype == np.float64 and X.ndim == 2 and X.flags.c_contiguous
                and X.shape[1] == self.n_features and X.size):
            return X
        return None

    def check_data(self, X, name="X"):
        """The base class's check_data (see Emission.check_data); data already float64 and
        C-contiguous, the usual case, is scanned in one pass in C on hmmop's threads, and anything
        else - other dtypes and layouts, and every error message - is the base class's."""
        arr = self._scannable(X)
        if arr is not None and _kernel.gauss_scan(arr, True, get_num_threads())[0] < 0:
            return arr
        return super().check_data(X, name)

    def prepare_counted(self, X, lengths=None):
        """(rows, lengths, n_missing) as Emission.prepare_counted gives them; float64 C-contiguous
        data is checked and its missing rows counted in the same C pass."""
        rows, lengths = feature_rows(X, lengths)
        arr = self._scannable(rows)
        if arr is not None:
            bad, n_missing = _kernel.gauss_scan(arr, True, get_num_threads())
            if bad < 0:
                return arr, lengths, int(n_missing)
        rows = self.check_data(rows)
        return rows, lengths, int(np.count_nonzero(self.missing_rows(rows)))

    def prepare_scored(self, X, lengths=None):
        """(rows, lengths, n_missing, log_emission) - prepare_counted's result and log_likelihood(rows)
        (n, N) from one C pass: the log-densities check every value as the scan does (a row neither
        finite nor wholly NaN raises check_data's ValueError) and count the missing rows.  For EM from
        parameters already set (fit's first E-step takes the log-emissions): X read once, not twice.
        None where the C pass does not take X as it is (not float64 C-contiguous, or empty): then
        prepare_counted."""
        rows, lengths = feature_rows(X, lengths)
        arr = self._scannable(rows)
        if arr is None:
            return None
        out = _kernel.big_empty(len(arr), self.n_states)
        bad, n_missing = _kernel.gauss_loglik(self._kernel_kind(), arr, *self._loglik_plan(), out,
                                              get_num_threads(), count_missing=True)
        if bad >= 0:
            self.check_data(arr)            # its ValueError, naming the row
        return arr, lengths, int(n_missing), out

    def _observed_mask(self, X):
        """None when no row of X is missing, else bool (n,) True on the observed rows.

        A missing row is NaN everywhere, so column 0 finds the candidates
        without scanning all of X.
        """
        if len(X) == 0:
            return None
        cand = np.isnan(X[:, 0])
        if not cand.any():
            return None
        idx = np.flatnonzero(cand)
        rows = X[idx]
        partial = ~np.isnan(rows).all(axis=1)
        if partial.any():
            raise ValueError(f"X[{int(idx[partial][0])}] is NaN in some but not all columns; "
                             f"check it with check_data (only a whole NaN row is a missing observation)")
        mask = np.ones(len(X), dtype=bool)
        mask[idx] = False
        return mask

    # -- log-likelihood --------------------------------------------------

    def _center(self):
        """A reference point c (D,): the mean of the means.

        The products are taken on x - c and means - c (the density is the
        same): the expanded square |x|^2/v - 2 x.m/v + |m|^2/v then loses
        digits only with (x - c)^2 / v, not with x^2 / v, when the data sit
        far from 0 relative to their spread.
        """
        return self._means.mean(axis=0)

    def _kernel_kind(self):
        return "diag" if self.covariance_type in ("spherical", "diag") else self.covariance_type

    def _loglik_plan(self):
        """(c, P, a, b, cst) for _kernel.gauss_loglik (csrc/hmm_gauss.h), float64 C-contiguous.

        All on y = x - c (c: the mean of the means): diag and spherical
        a = -1/(2 var), b = (m - c)/var and the constant; full P = L_i^-1,
        b = P (m_i - c); tied P = L^-1, a = -1/2, b = P (m_i - c).
        """
        N, D, kind = self.n_states, self.n_features, self.covariance_type
        c = self._center()
        mc = self._means - c
        if kind in ("spherical", "diag"):
            var = np.maximum(self._covars, np.finfo(float).tiny)      # hmmlearn's guard against log(0)
            var = np.broadcast_to(var[:, None], (N, D)) if kind == "spherical" else var
            b = mc / var
            cst = -0.5 * (D * _LOG_2PI + np.log(var).sum(axis=1) + (mc * b).sum(axis=1))
            return c, None, -0.5 / var, b, cst
        _, U, half_logdet = self._factors()
        if kind == "full":
            return c, U, None, np.einsum("nij,nj->ni", U, mc), -0.5 * D * _LOG_2PI - half_logdet
        V = mc @ U.T                                                     # (N, D): U (m_i - c)
        cst = -0.5 * (D * _LOG_2PI + (V * V).sum(axis=1)) - half_logdet
        return c, U, np.full((N, D), -0.5), V, cst

    def log_likelihood(self, X, out=None):
        """float64 (n, N): log N(x_t; means[i], Sigma_i); 0 on missing (all-NaN) rows.

        X (n, D) should have passed ``check_data``; a row with some but not
        all NaN, or an infinite value, raises ValueError naming the row.
        out: None or a C-contiguous float64 (n, N) array to write into.
        """
        X = self._rows(X)
        n = len(X)
        out = _output(out, (n, self.n_states))
        if n == 0:
            return out
        bad = _kernel.gauss_loglik(self._kernel_kind(), X, *self._loglik_plan(), out, get_num_threads())
        if bad >= 0:
            raise ValueError(f"X[{bad}] has non-finite values but is not a whole NaN row "
                             f"(a missing observation); check it with check_data")
        return out

    # -- EM --------------------------------------------------------------

    def empty_stats(self):
        """Zero statistics: 'post' (N,), 'obs' (N, D), and 'obs**2' (N, D) for spherical/diag,
        'obs*obs.T' (N, D, D) for full or (D, D) summed over the states for tied."""
        N, D = self.n_states, self.n_features
        stats = {"post": np.zeros(N), "obs": np.zeros((N, D))}
        if self.covariance_type in ("spherical", "diag"):
            stats["obs**2"] = np.zeros((N, D))
        elif self.covariance_type == "full":
            stats["obs*obs.T"] = np.zeros((N, D, D))
        else:
            stats["obs*obs.T"] = np.zeros((D, D))
        return stats

    def accumulate(self, stats, X, gamma):
        """Add X's E-step statistics to ``stats`` in place (hmmlearn's sums).

        X (n, D) float64, gamma (n, N) float64 posteriors.  post += sum_t gamma[t],
        obs += gamma.T @ X, obs**2 += gamma.T @ X**2 (spherical, diag) or
        obs*obs.T[i] += sum_t gamma[t, i] x_t x_t^T (full; tied keeps the sum
        over i only, all its M-step needs).  Missing rows are skipped.
        """
        X = self._rows(X)
        N, D = self.n_states, self.n_features
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.shape != (len(X), N):
            raise ValueError(f"gamma must have shape ({len(X)}, {N}) for X of {len(X)} rows; got {gamma.shape}")
        kind = self.covariance_type
        post, obs = np.zeros(N), np.zeros((N, D))
        key, second = ("obs**2", np.zeros((N, D))) if kind in ("spherical", "diag") else \
            ("obs*obs.T", np.zeros((D, D) if kind == "tied" else (N, D, D)))
        # one pass in C over X and gamma (csrc/hmm_gauss.c), all three sums, the missing rows skipped
        bad = _kernel.gauss_stats(self._kernel_kind(), np.ascontiguousarray(X), np.ascontiguousarray(gamma), post,
                                  obs, second, get_num_threads())
        if bad >= 0:
            raise ValueError(f"X[{bad}] is NaN in some but not all columns; check it with check_data "
                             f"(only a whole NaN row is a missing observation)")
        for name, value in (("post", post), ("obs", obs), (key, second)):
            if not np.isfinite(value).all():
                with np.errstate(invalid="ignore"):
                    rows = ~np.isfinite(X).all(axis=1) & ~np.isnan(X).all(axis=1)     # not the missing rows
                if rows.any():
                    raise ValueError(f"X[{int(np.argmax(rows))}] has non-finite values but is not a whole NaN row "
                                     f"(a missing observation); check it with check_data")
                raise ValueError(f"non-finite E-step statistics ({name}): gamma must be finite")
        stats["post"] += post
        stats["obs"] += obs
        stats[key] += second

    def m_step(self, stats, params="mc"):
        """Update means ('m' in params) then covariances ('c') in place: hmmlearn's GaussianHMM M-step.

        Unlike hmmlearn, a state whose update has a zero denominator (no
        posterior mass and zero prior weight) keeps its old mean (and, for
        full/tied, its old covariance) instead of becoming NaN.
        """
        N, D, kind = self.n_states, self.n_features, self.covariance_type
        need = ["post", "obs", "obs**2" if kind in ("spherical", "diag") else "obs*obs.T"]
        shapes = {"post": (N,), "obs": (N, D), "obs**2": (N, D),
                  "obs*obs.T": (D, D) if kind == "tied" else (N, D, D)}
        for key in need:
            if key not in stats:
                raise ValueError(f"stats has no {key!r} entry (make it with empty_stats and accumulate)")
            if np.shape(stats[key]) != shapes[key]:
                raise ValueError(f"stats[{key!r}] must have shape {shapes[key]}; got {np.shape(stats[key])}")
        bad = set(params) - set("mc")
        if bad:
            raise ValueError(f"params may hold 'm' (means) and 'c' (covars); got {params!r}")
        post = np.asarray(stats["post"], dtype=np.float64)
        obs = np.asarray(stats["obs"], dtype=np.float64)
        denom = post[:, None]
        mp, mw = self.means_prior, self._mw

        if "m" in params:
            d = mw + denom                                                 # (N, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = (mw * mp + obs) / d
            self._means = np.where(d > 0, new, self._means)

        if "c" in params:
            cp, cw = self.covars_prior, self._cw
            m = self._means
            meandiff = m - mp
            if kind in ("spherical", "diag"):
                c_n = mw * meandiff ** 2 + stats["obs**2"] - 2 * m * obs + m ** 2 * denom
                c_d = np.maximum(cw - 1, 0) + denom
                var = (cp + c_n) / np.maximum(c_d, 1e-5)                    # hmmlearn's guard
                self._covars = var.mean(axis=1) if kind == "spherical" else var
            else:
                # c_n[i] = w (m_i - mp_i)(..)^T + sum_t g x x^T - obs_i m_i^T - m_i obs_i^T + post_i m_i m_i^T
                om = obs[:, :, None] * m[:, None, :]
                c_n = (np.reshape(mw, (-1, 1, 1)) * meandiff[:, :, None] * meandiff[:, None, :]
                       - om - om.transpose(0, 2, 1) + m[:, :, None] * m[:, None, :] * post[:, None, None])
                cvweight = np.maximum(cw - D, 0)
                if kind == "full":
                    c_n += stats["obs*obs.T"]
                    d = cvweight + post[:, None, None]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        new = (cp + c_n) / d
                    new = np.where(d > 0, new, self._covars)
                else:
                    d = cvweight + post.sum()
                    new = (cp + c_n.sum(axis=0) + stats["obs*obs.T"]) / d if d > 0 else self._covars
                self._covars = 0.5 * (new + np.swapaxes(new, -1, -2))
            self._factor_cache = None

    # -- initialisation --------------------------------------------------

    def initialize(self, X, rng=None, init="kmeans", params="mc"):
        """Data-driven start from X (n, D), missing rows excluded (hmmlearn's GaussianHMM._init).

        'm' in params: means = the N centres of
            init="kmeans": sklearn.cluster.KMeans(n_clusters=N, n_init=10, random_state=seed);
            init="random": N distinct observed rows drawn with rng (no scikit-learn needed).
        'c' in params: Sigma = np.cov(X.T) + min_covar * I, given to every state
            as its type keeps it: spherical the mean of all D*D entries of Sigma,
            diag its diagonal, full and tied Sigma itself (hmmlearn's rule).

        Seeds: an int rng is KMeans's random_state as it is, so
        ``initialize(X, 7)`` gives the means of hmmlearn's
        ``GaussianHMM(random_state=7)._init(X)``; a Generator gives
        seed = rng.integers(2**31 - 1) (one draw); a RandomState is passed to
        KMeans as it is; None is unseeded.  Returns self.
        """
        X = self.check_data(X)
        mask = self._observed_mask(X)
        if mask is not None:
            X = X[mask]
        N, D = self.n_states, self.n_features
        if set(params) - set("mc"):
            raise ValueError(f"params may hold 'm' (means) and 'c' (covars); got {params!r}")
        if "m" in params:
            if len(X) < N:
                raise ValueError(f"initialize needs at least {N} observed rows of X (one per state); got {len(X)}")
            if init == "kmeans":
                try:
                    from sklearn.cluster import KMeans
                except ImportError:
                    raise ImportError('initialize(init="kmeans") needs scikit-learn (pip install scikit-learn); '
                                      'init="random" does without') from None
                if isinstance(rng, np.random.Generator):
                    seed = int(rng.integers(2 ** 31 - 1))
                elif rng is None or isinstance(rng, (numbers.Integral, np.random.RandomState)):
                    seed = rng
                else:
                    raise ValueError(f"rng must be a numpy Generator, RandomState, int seed or None; got {rng!r}")
                self.means = KMeans(n_clusters=N, random_state=seed, n_init=10).fit(X).cluster_centers_
            elif init == "random":
                idx = _as_rng(rng).choice(len(X), size=N, replace=False)
                self.means = X[np.sort(idx)]
            else:
                raise ValueError(f'init must be "kmeans" or "random"; got {init!r}')
        if "c" in params:
            if len(X) < 2:
                raise ValueError(f"initialize needs at least 2 observed rows of X for the covariances; got {len(X)}")
            cv = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(D)
            kind = self.covariance_type
            value = {"spherical": lambda: np.full(N, cv.mean()),
                     "diag": lambda: np.tile(np.diag(cv), (N, 1)),
                     "full": lambda: np.tile(cv, (N, 1, 1)),
                     "tied": lambda: cv}[kind]()
            self.set_covars(value)
        return self

    # -- sampling --------------------------------------------------------

    def sample(self, states, rng=None):
        """float64 (len(states), D): x_k ~ N(means[states[k]], Sigma_states[k]), drawn with rng.

        states: 1-D ints in [0, N); rng: Generator, RandomState, int seed or None.
        Draws: means + (Cholesky factor or standard deviations) @ standard normals.
        """
        states = np.asarray(states)
        if states.ndim != 1 or (states.size and states.dtype.kind not in "iu"):
            raise ValueError(f"states must be a 1-D array of state indices; got shape {states.shape}, "
                             f"dtype {states.dtype}")
        states = states.astype(np.intp)
        if states.size and (states.min() < 0 or states.max() >= self.n_states):
            raise ValueError(f"states must lie in [0, {self.n_states}); got values from "
                             f"{states.min()} to {states.max()}")
        z = _as_rng(rng).standard_normal((len(states), self.n_features))
        kind = self.covariance_type
        if kind == "spherical":
            z *= np.sqrt(self._covars)[states, None]
        elif kind == "diag":
            z *= np.sqrt(self._covars)[states]
        elif kind == "full":
            z = np.einsum("kij,kj->ki", self._factors()[0][states], z)
        else:
            z = z @ self._factors()[0].T
        return self._means[states] + z

    # -- model files -----------------------------------------------------

    def fields(self):
        """{"means": (N, D), "covars": the stored form (spherical (N,), diag (N, D), full (N, D, D), tied (D, D))}."""
        return {"means": self._means.copy(), "covars": self._covars.copy()}

    def meta(self):
        """JSON-able settings: covariance_type, n_features, min_covar and the four priors (floats or lists)."""
        return {"covariance_type": self.covariance_type, "n_features": self.n_features,
                "min_covar": self.min_covar,
                "means_prior": _jsonable(self.means_prior), "means_weight": _jsonable(self.means_weight),
                "covars_prior": _jsonable(self.covars_prior), "covars_weight": _jsonable(self.covars_weight)}

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        """The GaussianEmission that ``fields()`` and ``meta()`` describe; ValueError on a missing or bad entry."""
        for key in ("covariance_type", "n_features"):
            if key not in meta:
                raise ValueError(f"gaussian emission meta has no {key!r}")
        for key in ("means", "covars"):
            if key not in fields:
                raise ValueError(f"gaussian emission fields have no {key!r} array")
        options = {k: meta[k] for k in ("min_covar", "means_prior", "means_weight", "covars_prior",
                                        "covars_weight") if k in meta}
        em = cls(n_states, meta["n_features"], meta["covariance_type"], **options)
        em.means = fields["means"]
        em.set_covars(fields["covars"])
        return em

    # -- gradient training -----------------------------------------------

    def raw_parameters(self):
        """Unconstrained float64 arrays: {"means": (N, D)} plus

        spherical {"log_vars": (N,)}, diag {"log_vars": (N, D)},
        full {"cholesky": (N, D, D)}, tied {"cholesky": (D, D)}: the lower
        Cholesky factor L of Sigma with log(L_jj) on its diagonal (the strict
        upper triangle is 0 and ignored).
        """
        raw = {"means": self._means.copy()}
        if self.covariance_type in ("spherical", "diag"):
            raw["log_vars"] = np.log(self._covars)
        else:
            L = self._factors()[0]
            C = np.tril(L, -1)
            idx = np.arange(self.n_features)
            C[..., idx, idx] = np.log(L[..., idx, idx])
            raw["cholesky"] = C
        return raw

    def set_raw_parameters(self, raw):
        """Set means and covariances from a dict shaped as ``raw_parameters()`` returns (numpy values)."""
        N, D, kind = self.n_states, self.n_features, self.covariance_type
        key = "log_vars" if kind in ("spherical", "diag") else "cholesky"
        shape = {"spherical": (N,), "diag": (N, D), "full": (N, D, D), "tied": (D, D)}[kind]
        if set(raw) != {"means", key}:
            raise ValueError(f"raw parameters for covariance_type {kind!r} are 'means' and {key!r}; "
                             f"got {sorted(raw)}")
        value = np.array(raw[key], dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"raw {key!r} must have shape {shape}; got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"raw {key!r} has non-finite values")
        idx = np.arange(D)
        with np.errstate(over="ignore", under="ignore"):
            if kind in ("spherical", "diag"):
                L, variances = None, np.exp(value)
            else:
                L = np.tril(value, -1)
                L[..., idx, idx] = np.exp(value[..., idx, idx])
                variances = L[..., idx, idx]
        if not (np.isfinite(variances) & (variances > 0)).all():
            raise ValueError(f"raw {key!r} gives variances that are 0 or infinite (exp under/overflow)")
        if L is not None and not np.isfinite(L).all():
            raise ValueError(f"raw {key!r} has non-finite values")
        self.means = raw["means"]
        if L is None:
            self._covars = variances
            self._factor_cache = None
        else:
            cov = L @ np.swapaxes(L, -1, -2)
            self._covars = 0.5 * (cov + np.swapaxes(cov, -1, -2))
            self._set_factors(L)        # the exact factor, so log_likelihood matches log_likelihood_nd

    def log_likelihood_nd(self, F, X, **raw):
        """``log_likelihood`` as an MXNet expression: F = mx.nd or mx.sym, X (..., D) -> (..., N).

        raw: NDArrays or Symbols named and shaped as ``raw_parameters()``
        ("means" and "log_vars" or "cholesky"), of X's dtype; the result is
        differentiable in them.  Missing rows are not handled here: the
        caller replaces them by 0 and masks the result.  X is centred on the
        mean of the means (with its gradient blocked, which changes nothing:
        the density does not depend on the centre).
        """
        kind, N, D = self.covariance_type, self.n_states, self.n_features
        key = "log_vars" if kind in ("spherical", "diag") else "cholesky"
        if set(raw) != {"means", key}:
            raise ValueError(f"log_likelihood_nd for covariance_type {kind!r} takes means= and {key}=; "
                             f"got {sorted(raw)}")
        means, P = raw["means"], raw[key]
        c = F.BlockGrad(F.mean(means, axis=0))                         # (D,)
        xc = F.broadcast_sub(X, c)                                     # (..., D)
        mc = F.broadcast_sub(means, c)                                 # (N, D)
        if kind == "diag":
            prec = F.exp(-P)                                           # (N, D)
            q = (F.dot(F.square(xc), prec, transpose_b=True)
                 - 2 * F.dot(xc, mc * prec, transpose_b=True))         # (..., N)
            const = F.sum(F.square(mc) * prec, axis=1) + F.sum(P, axis=1) + D * _LOG_2PI
            return -0.5 * F.broadcast_add(q, const)
        if kind == "spherical":
            prec = F.exp(-P)                                           # (N,)
            q = (F.broadcast_mul(F.sum(F.square(xc), axis=-1, keepdims=True), prec)
                 - 2 * F.dot(xc, F.broadcast_mul(mc, F.reshape(prec, (-1, 1))), transpose_b=True))
            const = prec * F.sum(F.square(mc), axis=1) + D * P + D * _LOG_2PI
            return -0.5 * F.broadcast_add(q, const)
        # full / tied: L = strict lower triangle of P + diag(exp(diag P)); U = L^-1 by a triangular solve
        if D == 1:
            L = F.exp(P)
        else:
            L = (F.linalg.maketrian(F.linalg.extracttrian(P, offset=-1), offset=-1)
                 + F.linalg.makediag(F.exp(F.linalg.extractdiag(P))))
        eye = F.linalg.makediag(F.ones_like(F.linalg.extractdiag(L)))
        U = F.linalg.trsm(L, eye, lower=True)
        half_logdet = F.sum(F.linalg.extractdiag(P), axis=-1)         # (N,) full, (1,) or () tied
        if kind == "full":
            W = F.reshape(F.transpose(U, axes=(2, 0, 1)), (D, N * D))  # W[d, i*D+e] = U_i[e, d]
            b = F.reshape(F.batch_dot(U, F.expand_dims(mc, axis=2)), (N * D,))
            z = F.broadcast_sub(F.dot(xc, W), b)                       # (..., N*D): U_i (x - m_i)
            # S^T (N, N*D): ones where column block i belongs to state i, built from means (dtype, context)
            ones = F.reshape(F.ones_like(F.slice_axis(means, axis=1, begin=0, end=1)), (-1,))
            St = F.reshape(F.broadcast_axis(F.expand_dims(F.linalg.makediag(ones), axis=2), axis=2, size=D),
                           (N, N * D))
            q = F.dot(F.square(z), St, transpose_b=True)               # (..., N)
            return F.broadcast_sub(-0.5 * q, half_logdet + 0.5 * D * _LOG_2PI)
        z = F.dot(xc, U, transpose_b=True)                             # (..., D): U (x - c)
        V = F.dot(mc, U, transpose_b=True)                             # (N, D): U (m_i - c)
        q = F.broadcast_add(F.broadcast_sub(F.sum(F.square(z), axis=-1, keepdims=True),
                                            2 * F.dot(z, V, transpose_b=True)),
                            F.sum(F.square(V), axis=1))                # (..., N)
        return F.broadcast_sub(-0.5 * q, F.reshape(half_logdet, (1,)) + 0.5 * D * _LOG_2PI)


def _lower_inverse(L):
    """Inverses of lower-triangular matrices L (..., D, D), by forward substitution row by row.  For the
    small D of most models this replaces np.linalg.inv, whose LAPACK call (and BLAS threads) cost
    a few hundred microseconds on a busy machine for a few 3 x 3 factors - more than an EM
    iteration's arithmetic on thousands of rows; large D keeps LAPACK."""
    D = L.shape[-1]
    if D > 32:
        return np.linalg.inv(L)
    U = np.zeros_like(L)
    for i in range(D):
        d = L[..., i, i]
        if i:
            U[..., i, :i] = -np.einsum("...k,...kj->...j", L[..., i, :i], U[..., :i, :i]) / d[..., None]
        U[..., i, i] = 1.0 / d
    return U
