"""Gaussian-mixture emissions: hmmlearn 0.3.3's ``GMMHMM`` parametrisation as an hmmop component.

Each state i emits x in R^D from a mixture of K = n_mix Gaussians:

    p(x | i) = sum_k weights[i, k] N(x; means[i, k], Sigma_ik)

with Sigma of one of four covariance types (hmmlearn's names and storage;
note that "tied" ties the K components *of a state*, not all states):

=========  ==============  ======================================
type       covars          Sigma_ik
=========  ==============  ======================================
spherical  (N, K)          covars[i, k] * I
diag       (N, K, D)       diag(covars[i, k])
full       (N, K, D, D)    covars[i, k]
tied       (N, D, D)       covars[i] (shared by the K components)
=========  ==============  ======================================

The N*K component log-densities of a block of rows, on the rows centred on
the mean of the means, are a few BLAS products (full, tied) or computed in C
(diag, spherical); the state log-densities are a log-sum-exp over the K
components in C (csrc/hmm_mix.h, on hmmop.get_num_threads() threads, fewer
for little data), which also gives each component's responsibility within
its state.  ``log_likelihood`` keeps those responsibilities for the next
``accumulate`` of the same rows array at the same parameters, once that
array has been through ``accumulate`` (an EM loop; the array checked by
identity and value, the parameters by value; otherwise, or beyond
_CACHE_ELEMENTS values, ``accumulate`` recomputes them).  The E-step
statistics are summed in C (diag, spherical) or with BLAS products (full,
tied); no Python loop over rows.  The M-step is hmmlearn's, priors and their
defaults per covariance type included; the start is hmmlearn's k-means
start.  NumPy and hmmop's C kernel only: scikit-learn is imported by
``initialize`` and MXNet is only used through the ``F`` that
``log_likelihood_nd`` is handed.
"""
import math
import numbers

import numpy as np

from .. import _kernel
from ..ops.threads import get_num_threads
from .base import Emission
from .gaussian import GaussianEmission, cholesky
from .poisson import RowCache, check_size, check_states, jsonable, numpy_rng, output

__all__ = ["GMMEmission", "COVARIANCE_TYPES"]

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")

_LOG_2PI = math.log(2 * math.pi)
# Values per block of temporaries (rows x components x ...): they stay in cache.
_BLOCK_ELEMENTS = 1 << 17
_FLOOR = 1e-30
# The responsibilities log_likelihood keeps for accumulate: at most this many values (n * N * K).
_CACHE_ELEMENTS = 1 << 24
# Rows x components per thread of the C log-sum-exp (fewer threads for less work).
_WORK_PER_THREAD = 1 << 15


def _block_rows(width):
    return max(256, _BLOCK_ELEMENTS // max(int(width), 1))


def _outer(x):
    """x (..., D) -> (..., D, D): x x^T."""
    return x[..., :, None] * x[..., None, :]


class GMMEmission(Emission):
    """Gaussian-mixture emissions of an N-state HMM over D-dimensional rows (hmmlearn's GMMHMM).

    Parameters (hmmlearn's names and defaults)
    ------------------------------------------
    n_states, n_features, n_mix : int
        N states, D features, K mixture components per state.
    covariance_type : "spherical", "diag" (default), "full" or "tied".
    min_covar : float >= 0
        Added to the diagonal of the data covariance by ``initialize``.
    weights_prior :
        Dirichlet concentrations of each state's mixture weights (anything
        broadcastable to (N, K)).
    means_prior, means_weight :
        Normal prior on the means: mean (broadcastable to (N, K, D)) and
        weight (broadcastable to (N, K), >= 0).
    covars_prior, covars_weight :
        hmmlearn's covariance prior (inverse gamma for spherical and diag,
        inverse Wishart for full and tied), broadcastable to
        spherical (N, K) and (N, K); diag (N, K, D) and (N, K, D);
        full (N, K, D, D) and (N, K); tied (N, D, D) and (N,).  None takes
        hmmlearn's default for the type, which makes the M-step the maximum
        likelihood one: full 0 and -(D + 2); tied 0 and -(K + D + 1);
        diag -1.5 and 0; spherical -(K + 2) / 2 and 0.

    Attributes
    ----------
    weights : float64 (N, K); means : float64 (N, K, D); covars : float64,
    shaped per type as above (hmmlearn's ``covars_``).  Until ``initialize``
    or an assignment, weights are uniform, means 0 and covariances I.
    """

    family = "gmm"
    state_fields = ("weights", "means", "covars")
    params_letters = "wmc"                      # hmmlearn's letters: weights_, means_, covars_
    supervised_init = "kmeans"                  # a mixture's start needs centres (EmissionHMM.fit_supervised)
    raw_letters = {"weight_logits": "w", "means": "m", "log_vars": "c", "cholesky": "c"}

    def __init__(self, n_states, n_features, n_mix=1, covariance_type="diag", min_covar=1e-3,
                 weights_prior=1.0, means_prior=0.0, means_weight=0.0, covars_prior=None, covars_weight=None):
        self.n_states = N = check_size(n_states, "n_states")
        self.n_features = D = check_size(n_features, "n_features")
        self.n_mix = K = check_size(n_mix, "n_mix")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}; "
                             f"got {covariance_type!r}")
        self.covariance_type = kind = covariance_type
        try:
            min_covar = float(min_covar)
        except (TypeError, ValueError):
            raise ValueError(f"min_covar must be a number; got {min_covar!r}") from None
        if not (np.isfinite(min_covar) and min_covar >= 0):
            raise ValueError(f"min_covar must be a finite number >= 0; got {min_covar!r}")
        self.min_covar = min_covar
        self.weights_prior, self.means_prior, self.means_weight = weights_prior, means_prior, means_weight
        self.covars_prior, self.covars_weight = covars_prior, covars_weight
        default_prior, default_weight = {"full": (0.0, -(1.0 + D + 1.0)), "tied": (0.0, -(K + D + 1.0)),
                                         "diag": (-1.5, 0.0), "spherical": (-(K + 2.0) / 2.0, 0.0)}[kind]
        cp_shape, cw_shape = {"spherical": ((N, K), (N, K)), "diag": ((N, K, D), (N, K, D)),
                              "full": ((N, K, D, D), (N, K)), "tied": ((N, D, D), (N,))}[kind]
        self._wp = self._prior(weights_prior, "weights_prior", (N, K))
        self._mp = self._prior(means_prior, "means_prior", (N, K, D))
        self._mw = self._prior(means_weight, "means_weight", (N, K), nonnegative=True)
        self._cp = self._prior(default_prior if covars_prior is None else covars_prior, "covars_prior", cp_shape)
        self._cw = self._prior(default_weight if covars_weight is None else covars_weight, "covars_weight",
                               cw_shape)

        self._weights = np.full((N, K), 1.0 / K)
        self._means = np.zeros((N, K, D))
        self._covars = {"spherical": np.ones((N, K)), "diag": np.ones((N, K, D)),
                        "full": np.tile(np.eye(D), (N, K, 1, 1)), "tied": np.tile(np.eye(D), (N, 1, 1))}[kind]
        self._factor_cache = None
        self._row_cache = RowCache()

    @staticmethod
    def _prior(value, name, shape, nonnegative=False):
        """value broadcast to ``shape`` as float64 (hmmlearn's _fix_priors_shape); ValueError otherwise."""
        try:
            arr = np.array(value, dtype=np.float64)
            arr = np.broadcast_to(arr, shape).copy()
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array broadcastable to {shape}; got "
                             f"{np.shape(value) if np.ndim(value) else repr(value)}") from None
        if not np.isfinite(arr).all() or (nonnegative and (arr < 0).any()):
            raise ValueError(f"{name} must be finite{' and >= 0' if nonnegative else ''}")
        return arr

    def __repr__(self):
        return (f"GMMEmission(n_states={self.n_states}, n_features={self.n_features}, n_mix={self.n_mix}, "
                f"covariance_type={self.covariance_type!r})")

    # -- parameters ------------------------------------------------------

    @property
    def weights(self):
        """float64 (N, K): mixture weights per state (a copy; rows sum to 1)."""
        return self._weights.copy()

    @weights.setter
    def weights(self, value):
        arr = np.array(value, dtype=np.float64)
        if arr.shape != (self.n_states, self.n_mix):
            raise ValueError(f"weights must have shape ({self.n_states}, {self.n_mix}); got {arr.shape}")
        bad = ~(np.isfinite(arr) & (arr >= 0)).all(axis=1) | ~np.isclose(arr.sum(axis=1), 1.0, rtol=0, atol=1e-6)
        if bad.any():
            raise ValueError(f"weights[{int(np.flatnonzero(bad)[0])}] must hold non-negative weights summing to 1")
        self._weights = arr

    @property
    def means(self):
        """float64 (N, K, D): component means (a copy)."""
        return self._means.copy()

    @means.setter
    def means(self, value):
        arr = np.array(value, dtype=np.float64)
        shape = (self.n_states, self.n_mix, self.n_features)
        if arr.shape != shape:
            raise ValueError(f"means must have shape {shape}; got {arr.shape}")
        bad = ~np.isfinite(arr).reshape(self.n_states, -1).all(axis=1)
        if bad.any():
            raise ValueError(f"means[{int(np.flatnonzero(bad)[0])}] has non-finite values")
        self._means = arr

    @property
    def covars(self):
        """float64, per type: spherical (N, K), diag (N, K, D), full (N, K, D, D), tied (N, D, D) (a copy)."""
        return self._covars.copy()

    @covars.setter
    def covars(self, value):
        self.set_covars(value)

    def _covars_shape(self):
        N, K, D = self.n_states, self.n_mix, self.n_features
        return {"spherical": (N, K), "diag": (N, K, D), "full": (N, K, D, D), "tied": (N, D, D)}[self.covariance_type]

    def set_covars(self, value):
        """Set the covariances (hmmlearn's covars_ shape for the type), validated: positive (spherical,
        diag) or symmetric positive definite (full, tied; symmetric to numpy.allclose, then stored
        symmetrised; a singular one whose Sigma + 1e-7 I factors is taken).  ValueError naming the state
        (and component) otherwise."""
        kind, shape = self.covariance_type, self._covars_shape()
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"covars must be an array of numbers; got {type(value).__name__}") from None
        if arr.shape != shape:
            raise ValueError(f"covars must have shape {shape} for covariance_type {kind!r}; got {arr.shape}")
        if kind in ("spherical", "diag"):
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                idx = np.argwhere(bad)[0]
                raise ValueError(f"covars[{idx[0]}, {idx[1]}] must be positive and finite (covariance_type {kind!r})")
            self._covars = arr
            self._factor_cache = None
            return
        mats = arr.reshape(-1, self.n_features, self.n_features)
        labels = [self._label(f) for f in range(len(mats))]
        for label, m in zip(labels, mats):
            if not np.isfinite(m).all():
                raise ValueError(f"{label} has non-finite values")
            if not np.allclose(m, m.T):
                raise ValueError(f"{label} is not symmetric positive definite (not symmetric)")
        arr = 0.5 * (arr + np.swapaxes(arr, -1, -2))
        # a singular matrix whose Sigma + 1e-7 I factors is taken, as the density evaluates it
        L = np.stack([cholesky(m, label) for label, m in zip(labels, arr.reshape(mats.shape))])
        self._covars = arr
        self._set_factors(L.reshape(arr.shape))

    def _label(self, f):
        """The name of flattened covariance matrix ``f``: covars[state, component] (full) or covars[state] (tied)."""
        return f"covars[{f // self.n_mix}, {f % self.n_mix}]" if self.covariance_type == "full" else f"covars[{f}]"

    def _factors(self):
        """(L, inv(L), sum log diag L) of the full / tied covariances, cached: (N, K, D, D) or (N, D, D).

        A matrix that fails the factorisation is retried with 1e-7 added to
        its diagonal (hmmlearn's fallback), then ValueError.
        """
        if self._factor_cache is None:
            D = self.n_features
            mats = self._covars.reshape(-1, D, D)
            try:
                L = np.linalg.cholesky(mats)
            except np.linalg.LinAlgError:
                L = np.stack([cholesky(m, self._label(f)) for f, m in enumerate(mats)])
            self._set_factors(L.reshape(self._covars.shape))
        return self._factor_cache

    def _set_factors(self, L):
        U = np.linalg.inv(L)
        half_logdet = np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
        self._factor_cache = (L, U, half_logdet)

    @property
    def n_free_parameters(self):
        """int: N (K - 1) weights + N K D means + covariances (spherical N K, diag N K D, full
        N K D (D + 1) / 2, tied N D (D + 1) / 2).  (hmmlearn 0.3.3 counts K - 1 weights in all.)"""
        N, K, D = self.n_states, self.n_mix, self.n_features
        cov = {"spherical": N * K, "diag": N * K * D, "full": N * K * D * (D + 1) // 2,
               "tied": N * D * (D + 1) // 2}[self.covariance_type]
        return N * (K - 1) + N * K * D + cov

    # -- data ------------------------------------------------------------

    def _rows(self, X, name="X"):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have shape (n, {self.n_features}); got {X.shape}")
        return np.ascontiguousarray(X)

    # -- component log-densities -----------------------------------------

    def _plan(self):
        """What every block of rows needs: a dict of the centre c (D,), and per type the arrays of
        the component log-densities (log weights included)."""
        N, K, D, kind = self.n_states, self.n_mix, self.n_features, self.covariance_type
        S = N * K
        c = self._means.reshape(S, D).mean(axis=0)
        mc = self._means.reshape(S, D) - c
        with np.errstate(divide="ignore"):
            log_w = np.log(self._weights).reshape(S)
        plan = {"c": c, "mc": mc}
        if kind in ("diag", "spherical"):
            # -1/2 sum_d (y_d - mc_sd)^2 / var_sd = sum_d (a_sd y_d^2 + b_sd y_d) - 1/2 sum_d mc_sd^2 / var_sd
            var = np.maximum(self._covars, np.finfo(float).tiny).reshape(S, -1)     # hmmlearn's guard
            var = np.broadcast_to(var, (S, D))
            plan["a"] = np.ascontiguousarray((-0.5 / var).T)               # (D, S)
            plan["b"] = np.ascontiguousarray((mc / var).T)                  # (D, S)
            plan["cst"] = -0.5 * (D * _LOG_2PI + np.log(var).sum(axis=1) + (mc * mc / var).sum(axis=1)) + log_w
        elif kind == "full":
            _, U, half_logdet = self._factors()
            U = U.reshape(S, D, D)
            plan["W"] = U.transpose(2, 0, 1).reshape(D, S * D)             # W[d, s*D+e] = U_s[e, d]
            plan["b"] = np.einsum("sij,sj->si", U, mc).ravel()
            plan["ind"] = np.repeat(np.eye(S), D, axis=0)                  # (S*D, S)
            plan["cst"] = -0.5 * D * _LOG_2PI - half_logdet.reshape(S) + log_w
        else:
            _, U, half_logdet = self._factors()                            # (N, D, D), (N,)
            plan["W"] = U.transpose(2, 0, 1).reshape(D, N * D)
            V = np.einsum("nij,nkj->nki", U, mc.reshape(N, K, D))          # V[i, k] = U_i (m_ik - c)
            Vb = np.zeros((N * D, S))
            for i in range(N):
                Vb[i * D:(i + 1) * D, i * K:(i + 1) * K] = V[i].T
            plan["V"] = Vb
            plan["ind"] = np.repeat(np.eye(N), D, axis=0)                  # (N*D, N)
            plan["cst"] = (-0.5 * (D * _LOG_2PI + (V * V).sum(axis=-1)) - half_logdet[:, None]).reshape(S) + log_w
        return plan

    def _components(self, plan, xc, out):
        """out (b, S) = log weights[s] + log N(x; means[s], Sigma_s) for the centred rows xc = X - c (b, D),
        full and tied (diag and spherical: _diag_pass, in C); NaN rows give NaN."""
        kind, K = self.covariance_type, self.n_mix
        with np.errstate(invalid="ignore", over="ignore"):
            Z = xc @ plan["W"]
            if kind == "full":
                Z -= plan["b"]
                Z *= Z
                np.dot(Z, plan["ind"], out=out)
                out *= -0.5
            else:
                np.dot(Z, plan["V"], out=out)
                Z *= Z
                zz = Z @ plan["ind"]                                       # (b, N): |U_i (x - c)|^2
                out -= 0.5 * np.repeat(zz, K, axis=1)
            out += plan["cst"]
        return out

    def _logsumexp(self, comp, out, keep=False):
        """out (b, N) = log sum_k exp(comp[:, i*K + k]) (csrc/hmm_mix.h); keep=True also overwrites
        comp (b, S) with exp(comp - out), each component's responsibility within its state (0 for
        a state of density 0 and on NaN rows), and returns it."""
        _kernel.mix_logsumexp(comp, self.n_mix, out, comp if keep else None, self._threads(comp.size))
        return comp if keep else None

    def _diag_pass(self, plan, X, out, resp):
        """out (n, N) and resp (None or (n, S)) of hmm_mix_logsumexp for the rows X (n, D), diag and
        spherical: the component log-densities computed in C too (NaN rows give NaN)."""
        _kernel.mix_loglik_diag(X, plan["c"], plan["a"], plan["b"], plan["cst"], self.n_mix, out, resp,
                                self._threads(out.shape[0] * self.n_states * self.n_mix))

    @staticmethod
    def _threads(work):
        """hmmop.get_num_threads(), fewer for little work (values to pass over)."""
        return max(1, min(get_num_threads(), work // _WORK_PER_THREAD))

    def _params_key(self):
        return (self._weights.copy(), self._means.copy(), self._covars.copy())

    def _cache(self, X):
        """The RowCache dict of X (float64 (n, D)): "resp" holds (parameters, responsibilities (n, S))
        of the last log_likelihood of X, kept once "em" is set (by accumulate of X)."""
        return self.__dict__.setdefault("_row_cache", RowCache()).get(X)

    def _cached_resp(self, X):
        """The responsibilities (n, S) log_likelihood kept for X (the same array, same values) at the
        current parameters (compared by value), or None; the entry is handed over (removed)."""
        key, resp = self._cache(X).pop("resp", (None, None))
        if resp is None or len(resp) != len(X):
            return None
        if not all(np.array_equal(a, b) for a, b in zip(key, (self._weights, self._means, self._covars))):
            return None
        return resp

    # -- log-likelihood --------------------------------------------------

    def log_likelihood(self, X, out=None):
        """float64 (n, N): log sum_k weights[i, k] N(x_t; means[i, k], Sigma_ik); 0 on missing rows.

        X (n, D) should have passed ``check_data``.  out: None or a
        C-contiguous float64 (n, N) array to write into.
        """
        X = self._rows(X)
        n, N, S = len(X), self.n_states, self.n_states * self.n_mix
        out = output(out, (n, N))
        if n == 0:
            return out
        plan = self._plan()
        step = _block_rows(S * (self.n_features + 2) if self.covariance_type == "full" else S + 2 * self.n_features)
        cache = self._cache(X)
        cache.pop("resp", None)
        keep = n * S <= _CACHE_ELEMENTS and cache.get("em", False)    # (X is in an EM loop: accumulated before)
        if self.covariance_type in ("diag", "spherical"):        # one pass in C (csrc/hmm_mix.h)
            comp = np.empty((n, S)) if keep else None
            self._diag_pass(plan, X, out, comp)
        else:
            comp = np.empty((n if keep else min(step, n), S))
            for s in range(0, n, step):
                xb = X[s:s + step]
                cb = comp[s:s + len(xb)] if keep else comp[:len(xb)]
                self._components(plan, xb - plan["c"], cb)
                self._logsumexp(cb, out[s:s + step], keep=keep)
        if keep:
            cache["resp"] = (self._params_key(), comp)
        bad = np.isnan(out[:, 0])
        if bad.any():
            idx = np.flatnonzero(bad)
            rows = X[idx]
            missing = np.isnan(rows).all(axis=1)
            out[idx[missing]] = 0.0
            invalid = ~missing & ~np.isfinite(rows).all(axis=1)
            if invalid.any():
                raise ValueError(f"X[{int(idx[invalid][0])}] has non-finite values but is not a whole NaN row "
                                 f"(a missing observation); check it with check_data")
        return out

    # -- EM --------------------------------------------------------------

    def empty_stats(self):
        """Zero statistics (hmmlearn's names): 'post_sum' (N,), 'post_mix_sum' (N, K), 'm_n' (N, K, D)
        (without the prior's term, which m_step adds) and 'c_n' shaped as covars: sum_t r_tik
        (x_t - m_ik)^2 (diag; summed over features for spherical), (x_t - m_ik)(..)^T (full; summed
        over k for tied), about the means at the time of ``accumulate``."""
        N, K, D = self.n_states, self.n_mix, self.n_features
        return {"post_sum": np.zeros(N), "post_mix_sum": np.zeros((N, K)), "m_n": np.zeros((N, K, D)),
                "c_n": np.zeros(self._covars_shape())}

    def accumulate(self, stats, X, gamma):
        """Add X's E-step statistics to ``stats`` in place.

        X (n, D) float64, gamma (n, N) float64 state posteriors.  The
        responsibility of component k of state i is r_tik = gamma[t, i] *
        w_ik N(x_t; m_ik, S_ik) / p(x_t | i), from the stored parameters
        (hmmlearn's post_comp_mix).  Missing rows are skipped.
        """
        X = self._rows(X)
        N, K, D, kind = self.n_states, self.n_mix, self.n_features, self.covariance_type
        S = N * K
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.shape != (len(X), N):
            raise ValueError(f"gamma must have shape ({len(X)}, {N}) for X of {len(X)} rows; got {gamma.shape}")
        resp = self._cached_resp(X)
        self._cache(X)["em"] = True             # from now on log_likelihood(X) keeps its responsibilities
        diag = kind in ("spherical", "diag")
        plan = self._plan()
        c, mc = plan["c"], plan["mc"]
        post, s0, s1 = np.zeros(N), np.zeros(S), np.zeros((S, D))
        s2 = np.zeros({"spherical": (S, D), "diag": (S, D), "full": (S * D, D), "tied": (N * D, D)}[kind])
        if diag:                                # in C (csrc/hmm_mix.h), which skips the missing rows
            gamma = np.ascontiguousarray(gamma)
            n = len(X)
            if resp is not None:
                _kernel.mix_stats_diag(X, c, resp, gamma, post, s0, s1, s2, self._threads(resp.size))
            else:
                step = _block_rows(2 * S + 2 * D)
                comp, ll = np.empty((min(step, n), S)), np.empty((min(step, n), N))
                for s in range(0, n, step):
                    xb, b = X[s:s + step], min(step, n - s)
                    self._diag_pass(plan, xb, ll[:b], comp[:b])
                    _kernel.mix_stats_diag(xb, c, comp[:b], gamma[s:s + step], post, s0, s1, s2,
                                           self._threads(b * S))
        else:
            missing = self.missing_rows(X)
            if missing.any():
                X, gamma = X[~missing], gamma[~missing]
                resp = None if resp is None else resp[~missing]
            n = len(X)
            post += gamma.sum(axis=0)
            step = _block_rows(S * (2 * D + 3) if kind == "full" else 3 * S + 2 * D)
            if resp is None:
                comp = np.empty((min(step, n), S))
                ll = np.empty((min(step, n), N))
            for s in range(0, n, step):
                xc, gb = X[s:s + step] - c, gamma[s:s + step]
                b = len(xc)
                if resp is not None:
                    rb = resp[s:s + step]
                else:
                    self._components(plan, xc, comp[:b])
                    rb = self._logsumexp(comp[:b], ll[:b], keep=True)
                rb.reshape(b, N, K)[...] *= gb[:, :, None]                 # r_tik, (b, S)
                s0 += rb.sum(axis=0)
                s1 += rb.T @ xc
                if kind == "full":
                    s2 += (rb[:, :, None] * xc[:, None, :]).reshape(b, S * D).T @ xc
                else:
                    g = rb.reshape(b, N, K).sum(axis=2)
                    s2 += (g[:, :, None] * xc[:, None, :]).reshape(b, N * D).T @ xc
        # about the means m = c + mc: sum r (x - m)(x - m)^T = s2 - mc s1^T - s1 mc^T + s0 mc mc^T
        if kind in ("spherical", "diag"):
            c_n = (s2 - 2 * mc * s1 + mc * mc * s0[:, None]).reshape(N, K, D)
            c_n = c_n.sum(axis=2) if kind == "spherical" else c_n
        else:
            cross = mc[:, :, None] * s1[:, None, :]
            per = -cross - cross.transpose(0, 2, 1) + _outer(mc) * s0[:, None, None]      # (S, D, D)
            if kind == "full":
                c_n = (s2.reshape(S, D, D) + per).reshape(N, K, D, D)
            else:
                c_n = s2.reshape(N, D, D) + per.reshape(N, K, D, D).sum(axis=1)
            c_n = 0.5 * (c_n + np.swapaxes(c_n, -1, -2))
        stats["post_sum"] += post
        stats["post_mix_sum"] += s0.reshape(N, K)
        stats["m_n"] += (s1 + s0[:, None] * c).reshape(N, K, D)
        stats["c_n"] += c_n

    def m_step(self, stats, params="wmc"):
        """Update weights ('w'), means ('m'), then covariances ('c') in place: hmmlearn's GMMHMM M-step.

        Unlike hmmlearn, a quantity whose update has a zero or negative
        denominator (a component with no responsibility and no prior mass;
        hmmlearn: NaN or a negative variance) keeps its old value, and
        weights below 0 (a weights_prior < 1) are clipped to 0 before the
        row is normalised (hmmlearn: negative weights).
        """
        N, K, D, kind = self.n_states, self.n_mix, self.n_features, self.covariance_type
        if set(params) - set("wmc"):
            raise ValueError(f"params may hold 'w' (weights), 'm' (means) and 'c' (covars); got {params!r}")
        shapes = {"post_sum": (N,), "post_mix_sum": (N, K), "m_n": (N, K, D), "c_n": self._covars_shape()}
        for key, shape in shapes.items():
            if key not in stats:
                raise ValueError(f"stats has no {key!r} entry (make it with empty_stats and accumulate)")
            if np.shape(stats[key]) != shape:
                raise ValueError(f"stats[{key!r}] must have shape {shape}; got {np.shape(stats[key])}")
        post_mix = np.asarray(stats["post_mix_sum"], dtype=np.float64)
        post = np.asarray(stats["post_sum"], dtype=np.float64)

        if "w" in params:
            w_n = np.maximum(post_mix + self._wp - 1, 0.0)
            total = w_n.sum(axis=1, keepdims=True)
            self._weights = np.where(total > 0, w_n / np.where(total > 0, total, 1.0), self._weights)

        lam, mus = self._mw, self._mp
        if "m" in params:
            m_n = lam[:, :, None] * mus + stats["m_n"]
            m_d = post_mix + lam
            m_d = np.where((self._weights == 0) & (m_n == 0).all(axis=-1), 1.0, m_d)     # hmmlearn's rule
            with np.errstate(divide="ignore", invalid="ignore"):
                new = m_n / m_d[:, :, None]
            self._means = np.where((m_d > 0)[:, :, None], new, self._means)

        if "c" in params:
            cm = self._means - mus
            c_stat = np.asarray(stats["c_n"], dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                if kind == "full":
                    c_n = np.swapaxes(self._cp, -1, -2) + lam[:, :, None, None] * _outer(cm) + c_stat
                    c_d = post_mix + 1 + self._cw + D + 1
                    new = c_n / c_d[:, :, None, None]
                    ok = (c_d > 0)[:, :, None, None]
                elif kind == "diag":
                    c_n = lam[:, :, None] * cm ** 2 + 2 * self._cw + c_stat
                    c_d = post_mix[:, :, None] + 1 + 2 * (self._cp + 1)
                    new = c_n / c_d
                    ok = (c_d > 0) & (new > 0) & np.isfinite(new)
                elif kind == "spherical":
                    c_n = lam * np.einsum("...i,...i", cm, cm) + 2 * self._cw + c_stat
                    c_d = D * (post_mix + 1) + 2 * (self._cp + 1)
                    new = c_n / c_d
                    ok = (c_d > 0) & (new > 0) & np.isfinite(new)
                else:
                    c_n = np.einsum("ij,ijkl->ikl", lam, _outer(cm)) + np.swapaxes(self._cp, -1, -2) + c_stat
                    c_d = post + K + self._cw + D + 1
                    new = c_n / c_d[:, None, None]
                    ok = (c_d > 0)[:, None, None]
            new = np.where(ok, new, self._covars)
            if kind in ("full", "tied"):
                new = 0.5 * (new + np.swapaxes(new, -1, -2))
            self._covars = new
            self._factor_cache = None

    # -- initialisation --------------------------------------------------

    def initialize(self, X, rng=None, init="kmeans", params="wmc"):
        """hmmlearn's GMMHMM._init from X (n, D), missing rows excluded.

        'w': uniform weights 1/K.  'm': sklearn KMeans(n_clusters=N,
        n_init=10, random_state=seed) on X, then KMeans(n_clusters=K, ...,
        random_state=seed) on each cluster's rows, whose centres are the
        state's means; a cluster with fewer than K rows gets K draws from
        N(mean of the N centres, cv) instead.  'c': cv = cov(X) + min_covar I
        for every component, as the type keeps it (spherical: the mean of
        cv's entries, diag: its diagonal, full and tied: cv).

        rng: an int seed (KMeans's random_state, as hmmlearn's
        GMMHMM(random_state=seed)), a Generator (seed = one draw of it), a
        RandomState (given to KMeans) or None.  The draws for a small cluster
        come from RandomState(seed) (hmmlearn takes them from NumPy's global
        generator).  ``init`` must be "kmeans" (scikit-learn needed).  Returns self.
        """
        if set(params) - set("wmc"):
            raise ValueError(f"params may hold 'w' (weights), 'm' (means) and 'c' (covars); got {params!r}")
        if init != "kmeans":
            raise ValueError(f'init must be "kmeans" for GMM emissions; got {init!r}')
        X = self.check_data(X)
        X = X[~self.missing_rows(X)]
        N, K, D = self.n_states, self.n_mix, self.n_features
        if isinstance(rng, np.random.Generator):
            seed = int(rng.integers(2 ** 31 - 1))
        elif rng is None or isinstance(rng, np.random.RandomState) or \
                (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
            seed = rng
        else:
            raise ValueError(f"rng must be a numpy Generator, RandomState, int seed or None; got {rng!r}")
        cv = None

        def data_cov():
            if len(X) < 2:
                raise ValueError(f"initialize needs at least 2 observed rows of X for the covariances; got {len(X)}")
            return np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(D)

        if "w" in params:
            self._weights = np.full((N, K), 1.0 / K)
        if "m" in params:
            if len(X) < N:
                raise ValueError(f"initialize needs at least {N} observed rows of X (one per state); got {len(X)}")
            try:
                from sklearn.cluster import KMeans
            except ImportError:
                raise ImportError("GMM emissions' initialize needs scikit-learn (pip install scikit-learn)") from None
            main = KMeans(n_clusters=N, random_state=seed, n_init=10)
            labels = main.fit_predict(X)
            centre = main.cluster_centers_.mean(axis=0)
            means, fallback = [], None
            for i in range(N):
                rows = X[labels == i]
                if len(rows) >= K:
                    means.append(KMeans(n_clusters=K, random_state=seed, n_init=10).fit(rows).cluster_centers_)
                else:
                    cv = data_cov() if cv is None else cv
                    fallback = numpy_rng(seed) if fallback is None else fallback
                    means.append(fallback.multivariate_normal(centre, cv, size=K))
            self.means = np.stack(means)
        if "c" in params:
            cv = data_cov() if cv is None else cv
            shape = self._covars_shape()
            value = {"spherical": lambda: np.full(shape, cv.mean()),
                     "diag": lambda: np.broadcast_to(np.diag(cv), shape),
                     "full": lambda: np.broadcast_to(cv, shape),
                     "tied": lambda: np.broadcast_to(cv, shape)}[self.covariance_type]()
            self.set_covars(value)
        return self

    # -- sampling --------------------------------------------------------

    def sample(self, states, rng=None):
        """float64 (len(states), D): for each state index, a component drawn by its weights, then
        x ~ N(that component's mean, covariance).  rng: Generator, RandomState, int seed or None."""
        states = check_states(states, self.n_states)
        r = numpy_rng(rng)
        n, K, D, kind = len(states), self.n_mix, self.n_features, self.covariance_type
        u = r.random(n)
        comps = np.minimum((u[:, None] >= np.cumsum(self._weights, axis=1)[states]).sum(axis=1), K - 1)
        z = r.standard_normal((n, D))
        if kind == "spherical":
            z *= np.sqrt(self._covars[states, comps])[:, None]
        elif kind == "diag":
            z *= np.sqrt(self._covars[states, comps])
        elif kind == "full":
            z = np.einsum("nij,nj->ni", self._factors()[0][states, comps], z)
        else:
            z = np.einsum("nij,nj->ni", self._factors()[0][states], z)
        return self._means[states, comps] + z

    # -- model files -----------------------------------------------------

    def fields(self):
        """{"weights": (N, K), "means": (N, K, D), "covars": per type}."""
        return {"weights": self._weights.copy(), "means": self._means.copy(), "covars": self._covars.copy()}

    def meta(self):
        """JSON-able settings: n_features, n_mix, covariance_type, min_covar and the priors as given."""
        return {"n_features": self.n_features, "n_mix": self.n_mix, "covariance_type": self.covariance_type,
                "min_covar": self.min_covar,
                **{k: jsonable(getattr(self, k)) for k in ("weights_prior", "means_prior", "means_weight",
                                                            "covars_prior", "covars_weight")}}

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        for key in ("n_features", "n_mix", "covariance_type"):
            if key not in meta:
                raise ValueError(f"gmm emission meta has no {key!r}")
        for key in ("weights", "means", "covars"):
            if key not in fields:
                raise ValueError(f"gmm emission fields have no {key!r} array")
        options = {k: meta[k] for k in ("min_covar", "weights_prior", "means_prior", "means_weight",
                                        "covars_prior", "covars_weight") if k in meta}
        em = cls(n_states, meta["n_features"], meta["n_mix"], meta["covariance_type"], **options)
        w = np.asarray(fields["weights"], dtype=np.float64)
        if w.ndim == 2 and not np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12):
            w = w / w.sum(axis=1, keepdims=True)        # (a float32 file's rows)
        em.weights = w
        em.means = fields["means"]
        em.set_covars(fields["covars"])
        return em

    # -- gradient training -----------------------------------------------

    def _cov_key(self):
        return "log_vars" if self.covariance_type in ("spherical", "diag") else "cholesky"

    def raw_parameters(self):
        """Unconstrained float64 arrays: "weight_logits" (N, K) (weights = softmax over each row),
        "means" (N, K, D), and "log_vars" (spherical (N, K), diag (N, K, D)) or "cholesky" (full
        (N, K, D, D), tied (N, D, D)): the lower Cholesky factor with log of its diagonal on the
        diagonal."""
        raw = {"weight_logits": np.log(np.maximum(self._weights, _FLOOR)), "means": self._means.copy()}
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
        """Set weights, means and covariances from a dict shaped as ``raw_parameters()`` returns."""
        key, shape = self._cov_key(), self._covars_shape()
        if set(raw) != {"weight_logits", "means", key}:
            raise ValueError(f"raw parameters are 'weight_logits', 'means' and {key!r}; got {sorted(raw)}")
        value = np.array(raw[key], dtype=np.float64)
        if value.shape != shape or not np.isfinite(value).all():
            raise ValueError(f"raw {key!r} must be finite of shape {shape}; got shape {value.shape}")
        logits = np.array(raw["weight_logits"], dtype=np.float64)
        if logits.shape != self._weights.shape or not np.isfinite(logits).all():
            raise ValueError(f"raw 'weight_logits' must be finite of shape {self._weights.shape}")
        idx = np.arange(self.n_features)
        with np.errstate(over="ignore", under="ignore"):
            if key == "log_vars":
                L, variances = None, np.exp(value)
            else:
                L = np.tril(value, -1)
                L[..., idx, idx] = np.exp(value[..., idx, idx])
                variances = L[..., idx, idx]
        if not (np.isfinite(variances) & (variances > 0)).all():
            raise ValueError(f"raw {key!r} gives variances that are 0 or infinite (exp under/overflow)")
        self.means = raw["means"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self._weights = e / e.sum(axis=1, keepdims=True)
        if L is None:
            self._covars = variances
            self._factor_cache = None
        else:
            cov = L @ np.swapaxes(L, -1, -2)
            self._covars = 0.5 * (cov + np.swapaxes(cov, -1, -2))
            self._set_factors(L)

    def log_likelihood_nd(self, F, X, **raw):
        """``log_likelihood`` as an MXNet expression: F = mx.nd or mx.sym, X (..., D) -> (..., N).

        raw: NDArrays or Symbols named and shaped as ``raw_parameters()``.
        The N*K component densities are GaussianEmission's expression for
        N*K states (a tied state's factor repeated over its K components);
        the log-sum-exp over each state's components subtracts their
        maximum (its gradient blocked, which changes nothing).
        """
        N, K, D, kind = self.n_states, self.n_mix, self.n_features, self.covariance_type
        key = self._cov_key()
        if set(raw) != {"weight_logits", "means", key}:
            raise ValueError(f"log_likelihood_nd takes weight_logits=, means= and {key}=; got {sorted(raw)}")
        S = N * K
        P = raw[key]
        if kind == "spherical":
            P = F.reshape(P, (S,))
        elif kind == "diag":
            P = F.reshape(P, (S, D))
        elif kind == "full":
            P = F.reshape(P, (S, D, D))
        else:
            P = F.reshape(F.broadcast_axis(F.expand_dims(P, axis=1), axis=1, size=K), (S, D, D))
        gauss = GaussianEmission(S, D, "full" if kind == "tied" else kind)
        comp = gauss.log_likelihood_nd(F, X, means=F.reshape(raw["means"], (S, D)), **{key: P})   # (..., S)
        comp = F.broadcast_add(comp, F.reshape(F.log_softmax(raw["weight_logits"], axis=-1), (S,)))
        if K == 1:
            return comp
        parts = []
        for i in range(N):
            c = F.slice_axis(comp, axis=-1, begin=i * K, end=(i + 1) * K)
            top = F.BlockGrad(F.max(c, axis=-1, keepdims=True))
            parts.append(F.broadcast_add(F.log(F.sum(F.exp(F.broadcast_sub(c, top)), axis=-1, keepdims=True)), top))
        return parts[0] if N == 1 else F.concat(*parts, dim=-1)
