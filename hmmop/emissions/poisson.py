"""Poisson emissions: hmmlearn 0.3.3's ``PoissonHMM`` parametrisation as an hmmop component.

Each state i emits a row of D independent counts, x_d ~ Poisson(lambdas[i, d]):

    log p(x | i) = sum_d x_d log lambdas[i, d] - lambdas[i, d] - log(x_d!)

Data: (n, D) non-negative integer counts (any integer or float dtype holding
whole numbers); a row entirely NaN is a missing observation.  The
log-likelihood is one BLAS product (on the rows with their log(k!) term kept
per data array), the E-step statistics are hmmlearn's (posterior sums and
posterior-weighted counts, one BLAS product), and the M-step is
hmmlearn's with its gamma prior.  NumPy only (log(k!) comes from
math.lgamma through a table, so SciPy is not needed).

Also the count helpers MultinomialEmission shares: ``check_counts`` and
``log_factorial``.
"""
import math
import numbers
import weakref

import numpy as np

from .base import Emission

__all__ = ["PoissonEmission", "check_counts", "log_factorial", "RowCache", "augmented_rows"]

# log(k!) for k < len(_LOG_FACTORIAL), grown on demand up to _TABLE_LIMIT entries;
# larger counts take math.lgamma of their distinct values.
_LOG_FACTORIAL = np.zeros(1)
_TABLE_LIMIT = 1 << 22
# raw_parameters' floor: log(0) would be -inf, which gradient training cannot hold
_FLOOR = 1e-30


def log_factorial(counts):
    """float64 like ``counts``: log(k!) = lgamma(k + 1) of non-negative whole numbers (NaN gives 0).

    counts: a float64 or integer array of non-negative whole numbers (as
    ``check_counts`` passes them); ValueError for a negative one.
    """
    global _LOG_FACTORIAL
    counts = np.asarray(counts)
    if counts.size == 0:
        return np.zeros(counts.shape)
    if counts.dtype.kind == "f":
        nan = np.isnan(counts)
        if nan.any():
            counts = np.where(nan, 0.0, counts)
    top = counts.max()
    if counts.min() < 0:
        raise ValueError("counts must be non-negative (log(k!) of a negative count)")
    idx = counts.astype(np.int64)
    if top < _TABLE_LIMIT:
        if top >= len(_LOG_FACTORIAL):
            size = int(min(_TABLE_LIMIT, max(2 * len(_LOG_FACTORIAL), top + 1)))
            _LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(size)])
        return _LOG_FACTORIAL[idx]
    values, inverse = np.unique(idx, return_inverse=True)
    table = np.array([math.lgamma(float(k) + 1.0) for k in values])
    return table[inverse].reshape(idx.shape)


class RowCache:
    """Per-row quantities of one data array, kept while the same array holds the same values.

    ``get(X)`` (X float64 (n, D)) returns a dict to read and fill: the one
    filled for X when X is the array of the last call (by identity, C-contiguous)
    and equal to it bit for bit (compared with a copy kept of it), else a new
    empty one.  EM passes the same rows array every iteration, so what is
    computed once per fit (log(k!) terms, the missing rows) is computed once.
    Nothing is kept for arrays of more than LIMIT values, nor once X is freed.
    """

    LIMIT = 1 << 24

    def __init__(self):
        self._ref = self._copy = None
        self._values = {}

    def __reduce__(self):
        return RowCache, ()                     # copies and pickles start empty (a weakref does not pickle)

    def _forget(self, ref):
        if ref is self._ref:
            self._ref = self._copy = None
            self._values = {}

    def get(self, X):
        ok = X.dtype == np.float64 and X.flags.c_contiguous and X.size <= self.LIMIT
        if ok and self._ref is not None and self._ref() is X and self._copy.shape == X.shape \
                and np.array_equal(self._copy.view(np.int64), X.view(np.int64)):
            return self._values
        self._ref = self._copy = None
        self._values = {}
        if not ok:
            return {}                           # filled by the caller, kept by no one
        self._ref, self._copy = weakref.ref(X, self._forget), X.copy()
        return self._values


def augmented_rows(emission, X, row_constant):
    """(Xa, missing) of count rows X float64 (n, D), kept in the emission's RowCache for X.

    Xa float64 (n, D + 2): the rows (missing rows as 0), ``row_constant(rows)`` (n,) (the
    log-likelihood's per-row term; 0 on missing rows) and 1 (0 on missing rows), so that one
    product Xa @ W gives the log-likelihoods (0 on missing rows) and gamma.T @ Xa the
    E-step's weighted counts and posterior sums.  missing: bool (n,), or None when no row is.
    """
    cache = emission.__dict__.setdefault("_row_cache", RowCache()).get(X)
    if "Xa" not in cache:
        n, D = X.shape
        missing = emission.missing_rows(X)
        Xa = np.empty((n, D + 2))
        Xa[:, :D] = X
        Xa[missing, :D] = 0.0
        Xa[:, D] = row_constant(Xa[:, :D])
        Xa[missing, D] = 0.0
        Xa[:, D + 1] = ~missing
        cache.update(Xa=Xa, missing=missing if missing.any() else None)
    return cache["Xa"], cache["missing"]


def augmented_loglik(Xa, P, last, out):
    """out (n, N) = Xa @ W for augmented rows Xa (n, D + 2) - counts, row constant, observed flag (see
    augmented_rows) - with W = [log P^T; 1; last]: sum_d x_d log P[i, d] + the row's constant + last[i]
    (0 on missing rows); -inf where a positive count meets P[i, d] = 0 (x log 0 = 0 for x = 0).
    P (N, D) non-negative, last (N,)."""
    D = P.shape[1]
    zero = P == 0
    W = np.empty((D + 2, P.shape[0]))
    with np.errstate(divide="ignore"):
        W[:D] = np.where(zero, 0.0, np.log(P)).T
    W[D] = 1.0
    W[D + 1] = last
    np.dot(Xa, W, out=out)
    for i in np.flatnonzero(zero.any(axis=1)):
        out[(Xa[:, :D][:, zero[i]] > 0).any(axis=1), i] = -np.inf
    return out


def check_counts(arr, name="X"):
    """arr float64 (n, D) (already through Emission.check_data) -> arr, checked to hold counts.

    ValueError naming ``name``, the row and the column for a negative or
    fractional value in a row that is not missing (entirely NaN).
    """
    with np.errstate(invalid="ignore"):
        ok = arr >= 0
        ok &= arr == np.floor(arr)                  # NaN (missing rows) fails both, sorted out below
    if ok.all():
        return arr
    bad = ~ok.all(axis=1) & ~np.isnan(arr).all(axis=1)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        j = int(np.flatnonzero(~ok[t])[0])
        raise ValueError(f"{name}[{t}] holds {arr[t, j]!r} in column {j}: counts must be non-negative integers "
                         f"(a row that is entirely NaN marks a missing observation)")
    return arr


def output(out, shape):
    """out if it is a C-contiguous float64 array of ``shape``, a new one for None; else ValueError."""
    if out is None:
        return np.empty(shape)
    if out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {shape}")
    return out


def numpy_rng(rng):
    """A Generator or RandomState: itself; an int seed or None: RandomState(rng) (hmmlearn's check_random_state)."""
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.RandomState(rng)
    raise ValueError(f"rng must be a numpy Generator, RandomState, int seed or None; got {rng!r}")


def jsonable(value):
    """A setting as meta() stores it: None, a float, or nested lists of floats."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.tolist()


def check_size(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class PoissonEmission(Emission):
    """Poisson emissions of an N-state HMM over rows of D counts (hmmlearn's PoissonHMM).

    lambdas_prior, lambdas_weight: the gamma prior's alpha and beta of the
    M-step (hmmlearn's, defaults 0: maximum likelihood): a scalar, (N,) one
    per state, or (N, D); >= 0.  The update is hmmlearn's
    ``(alpha + n * obs_i / post_i) / (beta + n)`` with n the posterior mass
    of *all* states (the number of observed rows), as hmmlearn 0.3.3 has it.

    Attributes: lambdas float64 (N, D) (hmmlearn's ``lambdas_``).  Until
    ``initialize`` or an assignment, every lambda is 1.
    """

    family = "poisson"
    state_fields = ("lambdas",)
    params_letters = "l"                        # hmmlearn's letter for lambdas_
    raw_letters = {"log_lambdas": "l"}

    def __init__(self, n_states, n_features, lambdas_prior=0.0, lambdas_weight=0.0):
        self.n_states = N = check_size(n_states, "n_states")
        self.n_features = D = check_size(n_features, "n_features")
        self.lambdas_prior = self._prior(lambdas_prior, "lambdas_prior")
        self.lambdas_weight = self._prior(lambdas_weight, "lambdas_weight")
        self._alpha, self._beta = (np.reshape(p, (N, 1)) if np.shape(p) == (N,) else p
                                   for p in (self.lambdas_prior, self.lambdas_weight))
        self._lambdas = np.ones((N, D))

    def _prior(self, value, name):
        N, D = self.n_states, self.n_features
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array of numbers; got {value!r}") from None
        if arr.ndim and arr.shape not in ((N,), (N, D)):
            raise ValueError(f"{name} must be a scalar, shape ({N},) or shape ({N}, {D}); got shape {arr.shape}")
        if not (np.isfinite(arr) & (arr >= 0)).all():
            raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
        return float(arr) if arr.ndim == 0 else arr

    def __repr__(self):
        return f"PoissonEmission(n_states={self.n_states}, n_features={self.n_features})"

    # -- parameters ------------------------------------------------------

    @property
    def lambdas(self):
        """float64 (N, D): the Poisson rates (a copy)."""
        return self._lambdas.copy()

    @lambdas.setter
    def lambdas(self, value):
        arr = np.array(value, dtype=np.float64)
        if arr.shape != (self.n_states, self.n_features):
            raise ValueError(f"lambdas must have shape ({self.n_states}, {self.n_features}); got {arr.shape}")
        bad = ~(np.isfinite(arr) & (arr >= 0)).all(axis=1)
        if bad.any():
            raise ValueError(f"lambdas[{int(np.flatnonzero(bad)[0])}] must be finite and >= 0")
        self._lambdas = arr

    @property
    def n_free_parameters(self):
        """int: N * D rates (hmmlearn's count)."""
        return self.n_states * self.n_features

    # -- data ------------------------------------------------------------

    def check_data(self, X, name="X"):
        """X (n, D) counts -> float64 C-contiguous; ValueError naming ``name`` and the row for the
        base checks (shape, numbers, non-finite values) and for negative or fractional counts."""
        return check_counts(super().check_data(X, name), name)

    def _rows(self, X, name="X"):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have shape (n, {self.n_features}); got {X.shape}")
        return X

    # -- log-likelihood --------------------------------------------------

    def log_likelihood(self, X, out=None):
        """float64 (n, N): log p(x_t | i) (-inf for a positive count of a zero rate); 0 on missing rows.

        X (n, D) float64 counts (as check_data returns them).  out: None or a
        C-contiguous float64 (n, N) array to write into.
        """
        X = self._rows(X)
        out = output(out, (len(X), self.n_states))
        if len(X) == 0:
            return out
        # sum_d x_d log lam_d - sum log(x_d!) - sum lam_d; 0 if missing
        return augmented_loglik(self._augmented(X)[0], self._lambdas, -self._lambdas.sum(axis=1), out)

    def _augmented(self, X):
        """augmented_rows of X with the row constant -sum_d log(x_d!)."""
        return augmented_rows(self, X, lambda rows: -log_factorial(rows).sum(axis=1))

    # -- EM --------------------------------------------------------------

    def empty_stats(self):
        """{"post": (N,), "obs": (N, D)}: posterior sums and posterior-weighted counts (hmmlearn's)."""
        return {"post": np.zeros(self.n_states), "obs": np.zeros((self.n_states, self.n_features))}

    def accumulate(self, stats, X, gamma):
        """post += sum_t gamma[t], obs += gamma.T @ X over the observed rows of X (n, D); gamma (n, N)."""
        X = self._rows(X)
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.shape != (len(X), self.n_states):
            raise ValueError(f"gamma must have shape ({len(X)}, {self.n_states}); got {gamma.shape}")
        Xa, missing = self._augmented(X)
        if missing is not None:
            Xa, gamma = Xa[~missing], gamma[~missing]
        sums = gamma.T @ Xa                     # (N, D + 2): weighted counts, -, posterior sums
        stats["post"] += sums[:, -1]
        stats["obs"] += sums[:, :self.n_features]

    def m_step(self, stats, params="l"):
        """hmmlearn's update of lambdas ('l' in params): (alpha + n * obs_i / post_i) / (beta + n).

        A state with no posterior mass keeps its rates (hmmlearn: NaN).
        """
        if set(params) - set("l"):
            raise ValueError(f"params may hold 'l' (lambdas); got {params!r}")
        if "l" not in params:
            return
        post = np.asarray(stats["post"], dtype=np.float64)
        obs = np.asarray(stats["obs"], dtype=np.float64)
        n = post.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            new = (self._alpha + n * (obs / post[:, None])) / (self._beta + n)
        ok = (post > 0)[:, None] & np.isfinite(new)
        self._lambdas = np.where(ok, new, self._lambdas)

    def initialize(self, X, rng=None, init="kmeans", params="l"):
        """hmmlearn's start: lambdas ~ Gamma(shape=mean^2/var, scale=var/mean) (N, D) draws, with mean
        and var of all observed counts of X (method of moments).

        rng: an int seed or None (drawn from RandomState(rng), as hmmlearn's
        PoissonHMM(random_state=rng) draws them), a RandomState or a
        Generator.  ``init`` is not used (one start rule).  Returns self.
        """
        if set(params) - set("l"):
            raise ValueError(f"params may hold 'l' (lambdas); got {params!r}")
        if "l" not in params:
            return self
        X = self.check_data(X)
        X = X[~self.missing_rows(X)]
        if X.size == 0:
            raise ValueError("initialize needs at least one observed row of X")
        mean, var = X.mean(), X.var()
        if not (mean > 0 and var > 0):
            raise ValueError(f"initialize needs counts with a positive mean and variance (the gamma start's "
                             f"moments); X has mean {mean} and variance {var}")
        self._lambdas = numpy_rng(rng).gamma(shape=mean ** 2 / var, scale=var / mean,
                                             size=(self.n_states, self.n_features))
        return self

    # -- sampling --------------------------------------------------------

    def sample(self, states, rng=None):
        """int64 (len(states), D): Poisson counts of the given states (states: 1-D ints in [0, N))."""
        states = check_states(states, self.n_states)
        return numpy_rng(rng).poisson(self._lambdas[states]).astype(np.int64).reshape(len(states), -1)

    # -- model files -----------------------------------------------------

    def fields(self):
        """{"lambdas": (N, D)}."""
        return {"lambdas": self._lambdas.copy()}

    def meta(self):
        return {"n_features": self.n_features, "lambdas_prior": jsonable(self.lambdas_prior),
                "lambdas_weight": jsonable(self.lambdas_weight)}

    @classmethod
    def from_fields(cls, n_states, fields, meta):
        if "n_features" not in meta:
            raise ValueError("poisson emission meta has no 'n_features'")
        if "lambdas" not in fields:
            raise ValueError("poisson emission fields have no 'lambdas' array")
        em = cls(n_states, meta["n_features"], **{k: meta[k] for k in ("lambdas_prior", "lambdas_weight")
                                                  if k in meta})
        em.lambdas = fields["lambdas"]
        return em

    # -- gradient training -----------------------------------------------

    def raw_parameters(self):
        """{"log_lambdas": (N, D)}: lambdas = exp(log_lambdas) (a zero rate as log 1e-30)."""
        return {"log_lambdas": np.log(np.maximum(self._lambdas, _FLOOR))}

    def set_raw_parameters(self, raw):
        if set(raw) != {"log_lambdas"}:
            raise ValueError(f"raw parameters are 'log_lambdas'; got {sorted(raw)}")
        value = np.array(raw["log_lambdas"], dtype=np.float64)
        if value.shape != self._lambdas.shape:
            raise ValueError(f"raw 'log_lambdas' must have shape {self._lambdas.shape}; got {value.shape}")
        with np.errstate(over="ignore"):
            lam = np.exp(value)
        if not np.isfinite(lam).all():
            raise ValueError("raw 'log_lambdas' gives rates that are not finite")
        self._lambdas = lam

    def log_likelihood_nd(self, F, X, log_lambdas):
        """``log_likelihood`` as an MXNet expression: X (..., D) counts -> (..., N), differentiable in
        log_lambdas (N, D)."""
        lin = F.dot(X, log_lambdas, transpose_b=True)                           # (..., N)
        const = F.sum(F.gammaln(X + 1), axis=-1, keepdims=True)                  # (..., 1)
        return F.broadcast_sub(F.broadcast_sub(lin, F.sum(F.exp(log_lambdas), axis=1)), const)


def check_states(states, n_states):
    """states as a 1-D intp array in [0, n_states); ValueError otherwise."""
    states = np.asarray(states)
    if states.ndim != 1 or (states.size and states.dtype.kind not in "iu"):
        raise ValueError(f"states must be a 1-D array of state indices; got shape {states.shape}, "
                         f"dtype {states.dtype}")
    states = states.astype(np.intp)
    if states.size and (states.min() < 0 or states.max() >= n_states):
        raise ValueError(f"states must lie in [0, {n_states}); got values from {states.min()} to {states.max()}")
    return states
