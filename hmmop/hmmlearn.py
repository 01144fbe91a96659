"""hmmlearn 0.3.3's HMM classes on hmmop's kernels: change one import.

    from hmmop import hmmlearn as hmm            # was: from hmmlearn import hmm
    model = hmm.GaussianHMM(n_components=3, covariance_type="full", n_iter=100, random_state=0)
    model.fit(X, lengths)
    model.score(X, lengths), model.predict(X, lengths), model.sample(100, random_state=1)

Classes: CategoricalHMM, GaussianHMM, GMMHMM, PoissonHMM, MultinomialHMM, with
hmmlearn 0.3.3's constructor parameters, defaults and keyword-only markers
(plus a keyword-only ``dtype``), scikit-learn's estimator protocol (they
subclass sklearn.base.BaseEstimator: get_params, set_params, clone, pickling),
hmmlearn's fitted attributes (``startprob_``, ``transmat_``,
``emissionprob_``, ``means_``, ``covars_``, ``weights_``, ``lambdas_``,
``n_features``, ``monitor_``), its ``init_params`` / ``params`` letters, its EM
(E-step, M-step, then the test ``history[-1] - history[-2] < tol`` on the
log-likelihood), its initialisation from ``random_state``, its random stream
in ``sample`` and its errors' exception types.  Each method runs an hmmop
model core (hmmop.models.core.EmissionHMM, kept between calls while the
parameters are unchanged) on the C batch driver - EM through
``EmissionHMM.em_iterations``, the whole loop in C for CategoricalHMM; the
attributes stay plain NumPy arrays, so models pickle as hmmlearn's do.

hmmlearn behaviours matched on purpose (scripts rely on them):

- ``decode(algorithm="map")`` returns as its "log-probability" the *sum of
  the per-frame maximal posteriors* (not a logarithm), as hmmlearn does;
- Viterbi ties: the last state of lowest index, predecessors of highest index;
- CategoricalHMM, PoissonHMM and MultinomialHMM replace ``random_state`` by a
  RandomState in ``fit`` (so ``sample()`` after ``fit`` continues that stream);
  their emission start is drawn from a fresh RandomState(seed), not after the
  Dirichlet draws of startprob_/transmat_;
- ``monitor_`` is made by ``__init__``: ``set_params(tol=..., n_iter=...)``
  after construction changes the loop's length but not the monitor's test;
  a monitor_ replaced by a subclass (hmmlearn's documented pattern) is asked
  after each iteration;
- MultinomialHMM(n_trials=None) keeps every row's total as n_trials after fit;
  its init_params 'e' initialises without the "is set" warning;
- the logging warnings "... it will be overwritten during initialization",
  "Fitting a model with %d free scalar parameters ...", "Model is not
  converging ..." and the verbose monitor lines on stderr;
- AIC/BIC count hmmlearn's free parameters (GMMHMM's weights: n_mix - 1).

Deliberately different:

- ``covars_`` of a spherical GaussianHMM reads (N, D, D) after fit (hmmlearn
  0.3.3 reads an (N*D, D, D) array there, and samples with another state's
  variance); the other types and ``_covars_`` read as hmmlearn's;
- GaussianHMM with 'c' but not 'm' in params: hmmlearn leaves the posterior
  sums the covariance update needs at 0 (its covariances blow up); here they
  are gathered (the update is hmmlearn's formula with its statistics);
- NaN rows (and -2 symbols for CategoricalHMM) are missing observations, not
  errors; Poisson and multinomial counts must be non-negative integers
  (ValueError; hmmlearn gives -inf log-likelihoods);
- a row of transmat_, emissionprob_ or weights_ whose counts are all zero,
  or a state with no posterior mass, keeps its old values instead of
  becoming zeros or NaN;
- GMMHMM leaves its covars_prior/covars_weight/... constructor parameters as
  given (hmmlearn's fit overwrites them with broadcast arrays); its k-means
  fallback for a cluster smaller than n_mix draws from RandomState(seed),
  not NumPy's global generator; MultinomialHMM does not log hmmlearn's note
  on its 0.2.8 API change at construction;
- ``dtype="float32"`` keeps the fitted arrays (and model files) in float32;
  EM and inference still compute in float64;
- ``save(path)`` / ``hmmop.hmmlearn.load(path)`` write and read hmmop's
  pickle-free model files (``hmmop.load`` reads them as hmmop's own models:
  hmmop.HMM for CategoricalHMM, hmmop.GaussianHMM, ...).

hmmop's addition, absent from hmmlearn's signatures: a last parameter ``labels=None`` of ``fit``,
``score``, ``score_samples``, ``decode``, ``predict`` and ``predict_proba``: the known hidden states
of some samples, one int array (n_samples,) aligned with X (split by ``lengths``), -1 where unknown
(or any form hmmop.fit.labels.check_labels takes: per-sequence arrays, boolean (n_samples,
n_components) masks of the states allowed).  Scores are then log P(X, labels) (-inf where no
state path agrees), posteriors P(state | X, labels), decoding the best path agreeing with the
labels (forced alignment), and fit's EM maximises log P(X, labels) (monitor_.history holds it);
fully labelled data and n_iter=1 give the supervised estimate (normalised counts).  A state
outside [0, n_components), labels of the wrong length, or labels no state path can follow raise
ValueError naming the sequence and step.  labels=None is hmmlearn's behaviour exactly.

scikit-learn (hmmlearn's own dependency) is imported here and, for the
k-means start, by the Gaussian and GMM emissions' initialize; hmmlearn itself
is never imported.
"""
import json
import logging
import sys
from collections import deque

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.exceptions import NotFittedError

from . import _kernel
from .data import MISSING
from .fit.labels import check_labels
from .fit.monitor import DivergenceError
from .emissions import CategoricalEmission, GaussianEmission
from .emissions.gmm import GMMEmission
from .emissions.multinomial import MultinomialEmission
from .emissions.poisson import PoissonEmission
from .models import gmm as _gmm_models, multinomial as _multinomial_models, poisson as _poisson_models  # noqa: F401
from .models.core import EmissionHMM
from .models.hmm import HMM
from .models.core import load as _load_core
from .ops.threads import get_num_threads

__all__ = ["CategoricalHMM", "GaussianHMM", "GMMHMM", "MultinomialHMM", "PoissonHMM", "ConvergenceMonitor", "load"]

_log = logging.getLogger(__name__)
DECODER_ALGORITHMS = frozenset(("viterbi", "map"))
COVARIANCE_TYPES = frozenset(("spherical", "diag", "full", "tied"))
_PARAMS_KEY = "hmmlearn_params"     # the model file's extra field: the estimator's get_params() as JSON


class ConvergenceMonitor:
    """EM's convergence test and report, as hmmlearn's (history, iter, converged; verbose: stderr lines)."""

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol, n_iter, verbose):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history = deque()
        self.iter = 0

    def __repr__(self):
        items = sorted(dict(vars(self), history=list(self.history)).items())
        return f"{type(self).__name__}(\n" + "".join(f"    {k}={v},\n" for k, v in items) + ")"

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def report(self, log_prob):
        """Record one iteration's log-likelihood (a line on stderr when verbose)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta), file=sys.stderr)
        if self.history and log_prob - self.history[-1] < -np.sqrt(np.finfo(float).eps):
            _log.warning(f"Model is not converging.  Current: {log_prob} is not greater than "
                         f"{self.history[-1]}. Delta is {log_prob - self.history[-1]}")
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self):
        """True after n_iter reports or when the last gain is below tol."""
        return self.iter == self.n_iter or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol)


class _SymbolIndexError(ValueError, IndexError):
    """A symbol outside [0, n_features): hmmlearn raises IndexError when scoring it, ValueError in fit."""


class _CovarianceTypeError(ValueError, KeyError):
    """An unknown covariance_type in fit: hmmlearn's fit raises KeyError (a dict lookup), its checks ValueError."""

    __str__ = ValueError.__str__        # (KeyError's would quote the message)


def _normalized(x, current=None):
    """Rows of x divided by their sums; an all-zero row keeps ``current``'s (hmmlearn would give zeros)."""
    total = x.sum(axis=-1, keepdims=True)
    out = x / np.where(total > 0, total, 1)
    if current is not None:
        out = np.where(total > 0, out, current)
    return out


def _dirichlet_m_step(counts, prior, current):
    """hmmlearn's MAP update of startprob_ / transmat_: max(prior - 1 + counts, 0), zeros kept, normalised."""
    x = np.maximum(prior - 1 + counts, 0)
    return _normalized(np.where(current == 0, 0, x), current)


_PARAM_NAMES = {}     # class -> its constructor parameters but random_state (the core cache's key)


def _frozen(value):
    """A value as a comparable key: arrays by dtype, shape and bytes; lists as tuples."""
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if value is None or isinstance(value, (str, int, float, bool, np.generic)):
        return value
    return (type(value).__name__, id(value))


class _BaseHMM(BaseEstimator):
    """What every class shares: hmmlearn's fit/score/decode/sample on an hmmop core made per call.

    fit, score, score_samples, decode, predict and predict_proba take a last ``labels=None``, hmmop's
    addition absent from hmmlearn's signatures (see the module docstring): known states of some samples.

    A subclass sets _EMISSION_LETTERS and supplies _emission (the component from the attributes),
    _prepare_X, _init_emission, _check_emission, _store, _n_fit_scalars_per_param, _sample_states.
    """

    _EMISSION_LETTERS = ""
    _FITTED = ()                        # the emission's fitted attributes (the core cache's key)
    _mutates_random_state = False       # hmmlearn's Categorical/Poisson/Multinomial _init do

    # -- checks -------------------------------------------------------------------------------------------
    def _dtype(self):
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype!r}")
        return dtype

    @staticmethod
    def _check_sum_1(name, value):
        s = value.sum(axis=-1)
        if not (np.abs(s - 1.0) <= 1e-8 + 1e-5).all():       # numpy.allclose(s, 1), without its overhead
            raise ValueError(f"{name} must sum to 1 (got {s:.4f})" if s.ndim == 0
                             else f"{name} rows must sum to 1 (got row sums of {s})")

    def _check(self):
        """hmmlearn's checks of the parameters (ValueError), before scoring or after initialising."""
        if self.implementation not in ("log", "scaling"):
            raise KeyError(self.implementation)         # hmmlearn's dict lookup
        self.startprob_ = np.asarray(self.startprob_)
        if len(self.startprob_) != self.n_components:
            raise ValueError("startprob_ must have length n_components")
        self._check_sum_1("startprob_", self.startprob_)
        self.transmat_ = np.asarray(self.transmat_)
        if self.transmat_.shape != (self.n_components, self.n_components):
            raise ValueError("transmat_ must have shape (n_components, n_components)")
        self._check_sum_1("transmat_", self.transmat_)
        self._check_emission()

    def _lengths(self, n, lengths):
        if lengths is None:
            return np.array([n], dtype=np.int64)
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or (lengths.dtype.kind == "f" and (lengths != np.floor(lengths)).any()) \
                or lengths.dtype.kind not in "iuf" or (lengths < 0).any():
            raise ValueError(f"lengths must be a 1-D array of non-negative integers, got {lengths!r}")
        if lengths.sum() != n:
            raise ValueError(f"lengths array {lengths} doesn't sum to {n} samples")
        return lengths.astype(np.int64)

    @staticmethod
    def _as_2d(X):
        """X as a 2-D array with at least one row (scikit-learn's check_array messages, NaN allowed)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {X.ndim}D array instead. Reshape your data either using "
                             f"array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
                             f"if it contains a single sample.")
        if X.shape[0] < 1:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        if X.dtype.kind not in "biuf":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"X must hold numbers: {exc}") from None
        return X

    def _check_fitted(self, name="startprob_"):
        """scikit-learn's NotFittedError unless ``name`` is set (check_is_fitted's test, without its overhead)."""
        if not hasattr(self, name):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                 f"appropriate arguments before using this estimator.")

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_core_cache", None)          # (rebuilt on demand; it holds an MXNet context)
        return state

    # -- the core ---------------------------------------------------------------------------------------
    def _core(self, emission=None):
        """An hmmop EmissionHMM holding this model's parameters (float64 copies).

        Without ``emission``, the core of the last call is reused while every parameter array and
        constructor parameter is unchanged (compared by value: in-place edits count); fit always
        builds its own, which EM then changes.
        """
        key = None
        if emission is None:
            key = self._core_key()
            cached = self.__dict__.get("_core_cache")
            if cached is not None and cached[0] == key:
                return cached[1]
            emission = self._emission()
        core = EmissionHMM(self.n_components, emission, dtype=self._dtype())
        core._A = np.array(self.transmat_, dtype=np.float64)
        core._pi = np.array(self.startprob_, dtype=np.float64)
        core.initialized = True
        if key is not None:
            self._core_cache = (key, core)
        return core

    def _core_key(self):
        names = _PARAM_NAMES.get(type(self))
        if names is None:
            names = _PARAM_NAMES[type(self)] = [n for n in self._get_param_names() if n != "random_state"]
        arrays = ("startprob_", "transmat_") + self._FITTED
        return (tuple(_frozen(getattr(self, n)) for n in arrays), tuple(_frozen(getattr(self, n)) for n in names),
                getattr(self, "n_features", None))

    def _fitted_core(self, X, lengths, checked=False):
        """(core, data for it, lengths) after hmmlearn's fitted-model checks (unless ``checked``)."""
        if not checked:
            self._check_fitted()
            self._check()
        X = self._prepare_X(X, fit=False)
        return self._core(), X, self._lengths(len(X), lengths)

    # -- fitting ---------------------------------------------------------------------------------------
    def _needs_init(self, code, name):
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning("Even though the %r attribute is set, it will be overwritten during initialization "
                             "because 'init_params' contains %r", name, code)
            return True
        return not hasattr(self, name)

    def _init(self, X, rows):
        """hmmlearn's initialisation of what init_params (or an unset attribute) asks for."""
        N = self.n_components
        rs = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = rs.dirichlet(np.full(N, 1.0 / N))
        if self._needs_init("t", "transmat_"):
            self.transmat_ = rs.dirichlet(np.full(N, 1.0 / N), size=N)
        per_param = self._n_fit_scalars_per_param()
        n_fit_scalars = sum(per_param.get(p, 0) for p in self.params)
        if X.size < n_fit_scalars:
            _log.warning("Fitting a model with %d free scalar parameters with only %d data points will result in "
                         "a degenerate solution.", n_fit_scalars, X.size)
        if self._mutates_random_state:
            self.random_state = check_random_state(self.random_state)
        self._init_emission(X, rows)

    def fit(self, X, lengths=None, labels=None):
        """Estimate the parameters by EM (hmmlearn's: initialisation per init_params, then n_iter
        iterations of E-step, M-step of the letters in params and the monitor's test); returns self.

        labels (hmmop's addition): the known states of some samples, (n_samples,) ints aligned with X,
        -1 where unknown (or any form of hmmop.fit.labels.check_labels); EM then maximises
        log P(X, labels) and monitor_.history holds that objective.  ValueError naming the sequence
        and step where no state path of the starting parameters agrees with the labels."""
        self._dtype()
        X = self._prepare_X(X, fit=True)
        lengths = self._lengths(len(X), lengths)
        core = EmissionHMM(self.n_components, self._emission(blank=True), dtype=self._dtype())
        rows, lengths, starts = core._data(X, lengths)
        labels = self._labels(labels, lengths)
        self._init(X, rows)
        self._check()
        self.monitor_._reset()
        core = self._core(self._emission())       # (its own: EM changes it)
        if labels is not None:
            core._check_possible(core.score_sequences(rows, lengths, labels=labels), labels, rows)
        self._em(core, rows, lengths, starts, labels)
        self._store(core)
        return self

    def _labels(self, labels, lengths):
        """hmmop.fit.labels.Labels of data with ``lengths`` (checked once per call), or None."""
        return check_labels(labels, lengths, self.n_components)

    def _em(self, core, rows, lengths, starts, labels=None):
        """hmmlearn's EM loop: the core's em_iterations (the whole loop in C for CategoricalHMM), the
        history then reported to monitor_; a Python loop reporting each iteration as it ends where
        monitor_ is not this module's or prints (verbose), or where a prior is outside the core's range."""
        monitor = self.monitor_
        prior = {"pi": np.asarray(self.startprob_prior, dtype=np.float64),
                 "A": np.asarray(self.transmat_prior, dtype=np.float64)}
        fast = type(monitor) is ConvergenceMonitor and not monitor.verbose and \
            all((a > 0).all() and np.isfinite(a).all() for a in prior.values())
        if fast:
            params = "".join(c for c in self.params if c in "st" + self._EMISSION_LETTERS)
            prior = {k: a for k, a in prior.items() if not (a == 1).all()}     # (1: no pseudo-counts)
            tol = monitor.tol if isinstance(monitor.tol, (int, float, np.floating, np.integer)) else None
            n_iter = self.n_iter
            if isinstance(monitor.n_iter, (int, np.integer)) and monitor.n_iter >= 1:
                n_iter = min(n_iter, int(monitor.n_iter))      # (the monitor stops hmmlearn's loop at its n_iter)
            try:
                history, _ = core.em_iterations(rows, lengths, starts, n_iter,
                                                tol=None if tol is None else float(tol), params=params,
                                                prior=prior or None, objective="loglik", labels=labels)
            except DivergenceError:
                # hmmlearn carries on through a log-likelihood of -inf or NaN: so does the Python loop
                core._A = np.array(self.transmat_, dtype=np.float64)
                core._pi = np.array(self.startprob_, dtype=np.float64)
                core.emission = self._emission()
            else:
                for value in history:
                    monitor.report(float(value))
                return
        self._em_python(core, rows, lengths, starts, labels)

    def _em_python(self, core, rows, lengths, starts, labels=None):
        """The EM loop in Python on the core's E-step (one C forward-backward) and M-steps, asking
        monitor_ after each iteration (hmmlearn's order: E-step, M-step, report, converged)."""
        emission = core.emission
        letters = "".join(c for c in self._EMISSION_LETTERS if c in self.params)
        prior_s = np.asarray(self.startprob_prior, dtype=np.float64)
        prior_t = np.asarray(self.transmat_prior, dtype=np.float64)
        buffers = tuple(np.empty((len(rows), self.n_components)) for _ in range(2))
        for _ in range(self.n_iter):
            ll, gamma, trans, start = core._posteriors(rows, lengths, starts, buffers, labels=labels)
            if letters:
                stats = emission.empty_stats()
                emission.accumulate(stats, rows, gamma)
            if "s" in self.params:
                core._pi = _dirichlet_m_step(start, prior_s, core._pi)
            if "t" in self.params:
                core._A = _dirichlet_m_step(trans, prior_t, core._A)
            if letters:
                emission.m_step(stats, letters)
            self.monitor_.report(float(ll.sum()))
            if self.monitor_.converged:
                break

    def _store_core(self, core):
        dtype = self._dtype()
        self.startprob_ = core._pi.astype(dtype)
        self.transmat_ = core._A.astype(dtype)

    # -- inference -------------------------------------------------------------------------------------
    def score(self, X, lengths=None, labels=None):
        """Log-likelihood of X (float); with labels (hmmop's addition, as in fit) log P(X, labels),
        -inf where no state path agrees with them."""
        core, X, lengths = self._fitted_core(X, lengths)
        return core.score(X, lengths, labels=self._labels(labels, lengths))

    def score_samples(self, X, lengths=None, labels=None):
        """(log-likelihood, posteriors (n_samples, n_components)); with labels (as in fit)
        (log P(X, labels), P(state | X, labels)), NaN rows for a sequence no agreeing path explains."""
        core, X, lengths = self._fitted_core(X, lengths)
        ll, gammas = core.score_samples(X, lengths, labels=self._labels(labels, lengths))
        return ll, np.concatenate(gammas)

    def predict_proba(self, X, lengths=None, labels=None):
        """State posteriors (n_samples, n_components) (given the labels, as in fit)."""
        return self.score_samples(X, lengths, labels=labels)[1]

    def decode(self, X, lengths=None, algorithm=None, labels=None):
        """(log_prob, states (n_samples,)): "viterbi" the best paths' log-probability; "map" each
        frame's most probable state, with hmmlearn's log_prob: the sum of those posteriors.
        labels (hmmop's addition, as in fit): the best path among those agreeing with them (forced
        alignment; "map": the posteriors given them); ValueError naming the sequence and step where
        no path agrees."""
        self._check_fitted()
        self._check()
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {algorithm!r}")
        core, X, lengths = self._fitted_core(X, lengths, checked=True)
        labels = self._labels(labels, lengths)
        if algorithm == "viterbi":
            log_prob, paths = core.decode(X, lengths, "viterbi", labels=labels)
            return log_prob, np.concatenate(paths).astype(np.int64)
        if labels is None:
            _, gammas = core.score_samples(X, lengths)
            posteriors = np.concatenate(gammas)
        else:
            rows, lengths, starts = core._data(X, lengths)
            ll, posteriors, _, _ = core._posteriors(rows, lengths, starts, labels=labels)
            core._check_possible(ll, labels, rows)
        return float(posteriors.max(axis=1).sum()), posteriors.argmax(axis=1)

    def predict(self, X, lengths=None, labels=None):
        """Most likely state of each sample (decode's path; with labels, the best that agrees)."""
        return self.decode(X, lengths, labels=labels)[1]

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """(X, states) of n_samples steps, drawn from hmmlearn's random stream: for each step
        one uniform picks the state (currstate, if given, is the first), then the state's emission."""
        self._check_fitted()
        self._check()
        rs = check_random_state(self.random_state if random_state is None else random_state)
        return self._sample_states(max(int(n_samples), 1), rs, currstate)

    def _state_stream(self, n, rs, currstate, draw):
        """hmmlearn's loop: a uniform for each state, then draw(state, rs) for its observation."""
        cum_A = np.cumsum(self.transmat_, axis=1)
        state = (np.cumsum(self.startprob_) > rs.rand()).argmax() if currstate is None else currstate
        states, X = [state], [draw(state, rs)]
        for _ in range(n - 1):
            state = (cum_A[state] > rs.rand()).argmax()
            states.append(state)
            X.append(draw(state, rs))
        return np.atleast_2d(X), np.array(states, dtype=int)

    def get_stationary_distribution(self):
        """The stationary distribution of transmat_ (its left eigenvector of eigenvalue 1)."""
        self._check_fitted("transmat_")
        eigvals, eigvecs = linalg.eig(self.transmat_.T)
        vec = np.real_if_close(eigvecs[:, np.argmax(eigvals)])
        return vec / vec.sum()

    def _n_params(self):
        return sum(self._n_fit_scalars_per_param().values())

    def aic(self, X, lengths=None):
        """-2 log-likelihood + 2 (free scalar parameters)."""
        return -2 * self.score(X, lengths) + 2 * self._n_params()

    def bic(self, X, lengths=None):
        """-2 log-likelihood + (free scalar parameters) log(n_samples)."""
        return -2 * self.score(X, lengths) + self._n_params() * np.log(len(X))

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted model to ``path``: hmmop's model file (.npz, no pickle) plus this
        estimator's parameters; read it back with hmmop.hmmlearn.load (hmmop.load gives hmmop's model)."""
        self._check_fitted()
        self._check()
        self._file_model().save(path)
        with np.load(path, allow_pickle=False) as f:
            fields = {k: f[k] for k in f.files}
        params = {k: _jsonable(v) for k, v in self.get_params().items() if k != "random_state"}
        params["class"] = type(self).__name__
        with open(path, "wb") as f:
            np.savez(f, **fields, **{_PARAMS_KEY: np.array(json.dumps(params))})

    def _file_model(self):
        """The hmmop model whose save() writes the file (hmmop.load reads it back as that class)."""
        return self._core(self._emission())

    @classmethod
    def load(cls, path):
        """A model read from a file written by save() (or by hmmop's models of a family this class has)."""
        model = load(path)
        if not isinstance(model, cls):
            raise ValueError(f"{path!r} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def _jsonable(value):
    """A constructor parameter as JSON (arrays as lists, dtypes by name; anything else as None)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool, list)):
        return value
    try:
        return np.dtype(value).name
    except TypeError:
        return None


class CategoricalHMM(_BaseHMM):
    """Hidden Markov model with categorical emissions (hmmlearn.hmm.CategoricalHMM's API on hmmop).

    X is (n_samples, 1) integer symbols; -2 marks a missing observation.
    Attributes: startprob_, transmat_, emissionprob_ (n_components, n_features), n_features, monitor_.
    """

    _EMISSION_LETTERS = "e"
    _FITTED = ("emissionprob_",)
    _mutates_random_state = True

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *, emissionprob_prior=1.0,
                 n_features=None, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="ste", init_params="ste", implementation="log", dtype="float64"):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.dtype = dtype
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    def _prepare_X(self, X, fit):
        X = self._as_2d(X)
        if X.shape[1] != 1:
            raise ValueError(f"CategoricalHMM takes X of shape (n_samples, 1); got {X.shape}")
        symbols = X[:, 0]
        if symbols.dtype.kind not in "iu":
            raise ValueError("Symbols should be integers")
        observed = symbols[symbols != MISSING]
        if observed.size and observed.min() < 0:
            raise ValueError("Symbols should be nonnegative")
        top = int(observed.max()) if observed.size else -1
        if fit:
            if self.n_features is None:
                self.n_features = top + 1
            elif self.n_features - 1 < top:
                raise ValueError(f"Largest symbol is {top} but the model only emits symbols up to "
                                 f"{self.n_features - 1}")
        elif top >= self.n_features:
            raise _SymbolIndexError(f"symbol {top} is out of range for emissionprob_ with {self.n_features} "
                                    f"symbols")
        return symbols

    def _emission(self, blank=False):
        prior = np.asarray(self.emissionprob_prior, dtype=np.float64)
        prior = None if prior.ndim == 0 and prior == 1.0 else prior     # (1: no pseudo-counts, less work)
        em = CategoricalEmission(self.n_components, self.n_features, emission_prior=prior)
        if not blank:
            em._B = np.array(self.emissionprob_, dtype=np.float64)
        return em

    def _init_emission(self, X, rows):
        if self._needs_init("e", "emissionprob_"):
            u = self.random_state.rand(self.n_components, self.n_features)
            self.emissionprob_ = u / u.sum(axis=1, keepdims=True)

    def _check_emission(self):
        self.emissionprob_ = np.atleast_2d(self.emissionprob_)
        if self.n_features is None:
            self.n_features = self.emissionprob_.shape[1]
        if self.emissionprob_.shape != (self.n_components, self.n_features):
            raise ValueError(f"emissionprob_ must have shape({self.n_components}, {self.n_features})")
        self._check_sum_1("emissionprob_", self.emissionprob_)

    def _store(self, core):
        self._store_core(core)
        self._load_emission(core.emission, self._dtype())

    def _load_emission(self, em, dtype):
        self.n_features = em.n_symbols
        self.emissionprob_ = em.B.astype(dtype)

    def _file_model(self):
        # hmmop.HMM's file (version 1): hmmop.load gives the categorical model hmmop users have
        return HMM.from_probabilities(self.transmat_, self.emissionprob_, self.startprob_, dtype=self._dtype())

    def _n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "e": nc * (nf - 1)}

    def _sample_states(self, n, rs, currstate):
        # hmmlearn draws one uniform per state and one per symbol, alternately: all of them at once here,
        # then the C sampler picks with the same inverse-CDF rule (the first index whose cdf exceeds u)
        u = rs.rand(2 * n - (currstate is not None))
        uniforms = np.empty((1, n, 2))
        pi = np.array(self.startprob_, dtype=np.float64)
        if currstate is None:
            uniforms[0] = u.reshape(n, 2)
        else:
            uniforms[0, 0] = (0.0, u[0])
            uniforms[0, 1:] = u[1:].reshape(n - 1, 2)
            pi = np.zeros(self.n_components)
            pi[currstate] = 1.0
        obs, states = _kernel.sample(np.ascontiguousarray(self.transmat_, dtype=np.float64),
                                     np.ascontiguousarray(self.emissionprob_, dtype=np.float64), pi, uniforms,
                                     get_num_threads())
        return obs.reshape(n, 1).astype(int), states[0].astype(int)


class GaussianHMM(_BaseHMM):
    """Hidden Markov model with Gaussian emissions (hmmlearn.hmm.GaussianHMM's API on hmmop).

    X is (n_samples, n_features) real; a row of NaN is a missing observation.
    Attributes: startprob_, transmat_, means_ (N, D), covars_ (read: (N, D, D); assigned in the
    type's shape: spherical (N,), diag (N, D), full (N, D, D), tied (D, D)), n_features, monitor_.
    """

    _EMISSION_LETTERS = "mc"
    _FITTED = ("means_", "_covars_")

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3, startprob_prior=1.0,
                 transmat_prior=1.0, means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False, params="stmc",
                 init_params="stmc", implementation="log", *, dtype="float64"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.dtype = dtype
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    @property
    def covars_(self):
        """Every state's covariance matrix, (N, D, D)."""
        c = self._covars_
        kind = self.covariance_type
        if kind == "full":
            return c
        if kind == "tied":
            return np.tile(c, (self.n_components, 1, 1))
        D = self.means_.shape[1] if hasattr(self, "means_") else getattr(self, "n_features", None)
        if kind == "spherical":
            v = c[:, 0] if c.ndim == 2 else c
            return np.eye(D or 1)[None] * v[:, None, None]
        return np.array([np.diag(row) for row in c])

    @covars_.setter
    def covars_(self, covars):
        covars = np.array(covars, copy=True)
        _validate_covars(covars, self.covariance_type, self.n_components)
        self._covars_ = covars

    def _prepare_X(self, X, fit):
        X = self._as_2d(X)
        D = X.shape[1]
        if fit:
            if self.covariance_type not in COVARIANCE_TYPES:
                raise _CovarianceTypeError(f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, "
                                           f"got {self.covariance_type!r}")
            if hasattr(self, "n_features") and self.n_features != D:
                raise ValueError(f"Unexpected number of dimensions, got {D} but expected {self.n_features}")
            self.n_features = D
        elif D != self.n_features:
            raise ValueError(f"X has {D} features, but the model has {self.n_features}")
        return X

    def _emission(self, blank=False):
        em = GaussianEmission(self.n_components, self.n_features, covariance_type=self.covariance_type,
                              min_covar=self.min_covar, means_prior=self.means_prior,
                              means_weight=self.means_weight, covars_prior=self.covars_prior,
                              covars_weight=self.covars_weight)
        if not blank:
            em.means = self.means_
            c = np.asarray(self._covars_, dtype=np.float64)
            em.set_covars(c[:, 0] if self.covariance_type == "spherical" and c.ndim == 2 else c)
        return em

    def _init_emission(self, X, rows):
        letters = "".join(c for c, name in (("m", "means_"), ("c", "covars_")) if self._needs_init(c, name))
        if not letters:
            return
        em = self._emission(blank=True)
        em.initialize(rows, self.random_state, params=letters)
        if "m" in letters:
            self.means_ = em.means.copy()
        if "c" in letters:
            c = em.compact_covars
            # hmmlearn's stored spherical form: the variance repeated over the features
            self._covars_ = np.tile(c[:, None], (1, self.n_features)) if self.covariance_type == "spherical" else c

    def _check_emission(self):
        self.means_ = np.asarray(self.means_)
        self.n_features = self.means_.shape[1]
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")

    def _store(self, core):
        self._store_core(core)
        self._load_emission(core.emission, self._dtype())

    def _load_emission(self, em, dtype):
        self.n_features = em.n_features
        self.means_ = em.means.astype(dtype)
        c = em.compact_covars
        if em.covariance_type == "spherical":
            c = np.tile(c[:, None], (1, em.n_features))     # hmmlearn's stored form: repeated per feature
        self._covars_ = c.astype(dtype)

    def _n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "m": nc * nf,
                "c": {"spherical": nc, "diag": nc * nf, "full": nc * nf * (nf + 1) // 2,
                      "tied": nf * (nf + 1) // 2}[self.covariance_type]}

    def _sample_states(self, n, rs, currstate):
        means, covars = self.means_, self.covars_
        return self._state_stream(n, rs, currstate, lambda s, r: r.multivariate_normal(means[s], covars[s]))


class _CountsHMM(_BaseHMM):
    """Rows of D features (counts or reals) whose D is set by fit (hmmlearn's BaseHMM rule)."""

    def _prepare_X(self, X, fit):
        X = self._as_2d(X)
        D = X.shape[1]
        if fit:
            if hasattr(self, "n_features") and self.n_features is not None and self.n_features != D:
                raise ValueError(f"Unexpected number of dimensions, got {D} but expected {self.n_features}")
            self.n_features = D
        elif D != self.n_features:
            raise ValueError(f"X has {D} features, but the model has {self.n_features}")
        return X


class PoissonHMM(_CountsHMM):
    """Hidden Markov model with Poisson emissions (hmmlearn.hmm.PoissonHMM's API on hmmop).

    X is (n_samples, n_features) counts; a row of NaN is a missing observation.
    Attributes: startprob_, transmat_, lambdas_ (n_components, n_features), n_features, monitor_.
    """

    _EMISSION_LETTERS = "l"
    _FITTED = ("lambdas_",)
    _mutates_random_state = True

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, lambdas_prior=0.0,
                 lambdas_weight=0.0, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="stl", init_params="stl", implementation="log", *, dtype="float64"):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.dtype = dtype
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    def _emission(self, blank=False):
        em = PoissonEmission(self.n_components, self.n_features, lambdas_prior=self.lambdas_prior,
                             lambdas_weight=self.lambdas_weight)
        if not blank:
            em.lambdas = self.lambdas_
        return em

    def _init_emission(self, X, rows):
        if self._needs_init("l", "lambdas_"):
            # hmmlearn's gamma start from the moments of all counts (here: of the observed rows)
            self.lambdas_ = self._emission(blank=True).initialize(rows, self.random_state).lambdas

    def _check_emission(self):
        self.lambdas_ = np.atleast_2d(self.lambdas_)
        n_features = getattr(self, "n_features", self.lambdas_.shape[1])
        if self.lambdas_.shape != (self.n_components, n_features):
            raise ValueError("lambdas_ must have shape (n_components, n_features)")
        self.n_features = n_features

    def _store(self, core):
        self._store_core(core)
        self._load_emission(core.emission, self._dtype())

    def _load_emission(self, em, dtype):
        self.n_features = em.n_features
        self.lambdas_ = em.lambdas.astype(dtype)

    def _n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "l": nc * nf}

    def _sample_states(self, n, rs, currstate):
        lambdas = self.lambdas_
        return self._state_stream(n, rs, currstate, lambda s, r: r.poisson(lambdas[s]))


class MultinomialHMM(_CountsHMM):
    """Hidden Markov model with multinomial emissions (hmmlearn.hmm.MultinomialHMM's API on hmmop).

    X is (n_samples, n_features) counts of n_trials draws each; a row of NaN is a missing observation.
    Attributes: startprob_, transmat_, emissionprob_ (n_components, n_features), n_features, n_trials,
    monitor_.  (hmmlearn's constructor also logs a note on its 0.2.8 API change; not repeated here.)
    """

    _EMISSION_LETTERS = "e"
    _FITTED = ("emissionprob_",)
    _mutates_random_state = True

    def __init__(self, n_components=1, n_trials=None, startprob_prior=1.0, transmat_prior=1.0,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False, params="ste",
                 init_params="ste", implementation="log", *, dtype="float64"):
        self.n_components = n_components
        self.n_trials = n_trials
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.dtype = dtype
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    def _prepare_X(self, X, fit):
        X = super()._prepare_X(X, fit)
        if fit:
            with np.errstate(invalid="ignore"):
                observed = X[~np.isnan(X).all(axis=1)] if X.dtype.kind == "f" else X
                if (observed.dtype.kind == "f" and (observed != np.floor(observed)).any()) or \
                        (observed.size and observed.min() < 0):
                    raise ValueError("Symbol counts should be nonnegative integers")
            totals = observed.sum(axis=1)
            if self.n_trials is None:
                self.n_trials = totals.astype(np.int64)            # hmmlearn keeps every row's total
            elif not (totals == self.n_trials).all():
                raise ValueError("Total count for each sample should add up to the number of trials")
        return X

    def _single_trials(self):
        values = np.unique(np.asarray(self.n_trials))
        return int(values[0]) if len(values) == 1 else None

    def _emission(self, blank=False):
        em = MultinomialEmission(self.n_components, self.n_features, n_trials=None)
        if not blank:
            em.emissionprob = self.emissionprob_
        return em

    def _init_emission(self, X, rows):
        if "e" in self.init_params:         # (hmmlearn: no "is set" test, no warning, for this class)
            u = self.random_state.rand(self.n_components, self.n_features)
            self.emissionprob_ = u / u.sum(axis=1, keepdims=True)

    def _check_emission(self):
        self.emissionprob_ = np.atleast_2d(self.emissionprob_)
        n_features = getattr(self, "n_features", self.emissionprob_.shape[1])
        if self.emissionprob_.shape != (self.n_components, n_features):
            raise ValueError("emissionprob_ must have shape (n_components, n_features)")
        self.n_features = n_features
        if self.n_trials is None:
            raise ValueError("n_trials must be set")

    def _store(self, core):
        self._store_core(core)
        self._load_emission(core.emission, self._dtype())

    def _load_emission(self, em, dtype):
        self.n_features = em.n_features
        self.emissionprob_ = em.emissionprob.astype(dtype)
        if em.n_trials is not None:
            self.n_trials = em.n_trials

    def _n_fit_scalars_per_param(self):
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "e": nc * (nf - 1)}

    def _sample_states(self, n, rs, currstate):
        from scipy.stats import multinomial
        trials = self._single_trials()
        if trials is None:
            raise ValueError("For sampling, a single n_trials must be given")
        B = self.emissionprob_
        return self._state_stream(n, rs, currstate, lambda s, r: multinomial.rvs(n=trials, p=B[s], random_state=r))

    def _file_model(self):
        em = self._emission()
        em.n_trials = self._single_trials()
        return self._core(em)

    def save(self, path):
        """As _BaseHMM.save; a per-row n_trials (fit's, for n_trials=None) is kept only if all are equal."""
        trials = self.n_trials
        self.n_trials = self._single_trials()
        try:
            super().save(path)
        finally:
            self.n_trials = trials


class GMMHMM(_CountsHMM):
    """Hidden Markov model with Gaussian-mixture emissions (hmmlearn.hmm.GMMHMM's API on hmmop).

    X is (n_samples, n_features) real; a row of NaN is a missing observation.
    Attributes: startprob_, transmat_, weights_ (N, n_mix), means_ (N, n_mix, D), covars_ (spherical
    (N, n_mix), diag (N, n_mix, D), full (N, n_mix, D, D), tied (N, D, D)), n_features, monitor_.
    """

    _EMISSION_LETTERS = "wmc"
    _FITTED = ("weights_", "means_", "covars_")

    def __init__(self, n_components=1, n_mix=1, min_covar=1e-3, startprob_prior=1.0, transmat_prior=1.0,
                 weights_prior=1.0, means_prior=0.0, means_weight=0.0, covars_prior=None, covars_weight=None,
                 algorithm="viterbi", covariance_type="diag", random_state=None, n_iter=10, tol=1e-2,
                 verbose=False, params="stmcw", init_params="stmcw", implementation="log", *, dtype="float64"):
        self.n_components = n_components
        self.n_mix = n_mix
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
        self.covariance_type = covariance_type
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.dtype = dtype
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)

    def _prepare_X(self, X, fit):
        if fit and self.covariance_type not in COVARIANCE_TYPES:
            raise _CovarianceTypeError(f"covariance_type must be one of {sorted(COVARIANCE_TYPES)}, "
                                       f"got {self.covariance_type!r}")
        return super()._prepare_X(X, fit)

    def _emission(self, blank=False):
        em = GMMEmission(self.n_components, self.n_features, n_mix=self.n_mix,
                         covariance_type=self.covariance_type, min_covar=self.min_covar,
                         weights_prior=self.weights_prior, means_prior=self.means_prior,
                         means_weight=self.means_weight, covars_prior=self.covars_prior,
                         covars_weight=self.covars_weight)
        if not blank:
            em._weights = np.array(self.weights_, dtype=np.float64)
            em.means = self.means_
            em.set_covars(self.covars_)
        return em

    def _init_emission(self, X, rows):
        letters = "".join(c for c, name in (("w", "weights_"), ("m", "means_"), ("c", "covars_"))
                          if self._needs_init(c, name))
        if not letters:
            return
        em = self._emission(blank=True).initialize(rows, self.random_state, params=letters)
        self._load_emission(em, np.float64, letters)

    def _check_emission(self):
        if not hasattr(self, "n_features") or self.n_features is None:
            self.n_features = np.shape(self.means_)[2]
        nc, nf, nm = self.n_components, self.n_features, self.n_mix
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")
        self.weights_ = np.array(self.weights_)
        if self.weights_.shape != (nc, nm):
            raise ValueError(f"weights_ must have shape (n_components, n_mix), actual shape: {self.weights_.shape}")
        self._check_sum_1("weights_", self.weights_)
        self.means_ = np.array(self.means_)
        if self.means_.shape != (nc, nm, nf):
            raise ValueError(f"means_ must have shape (n_components, n_mix, n_features), actual shape: "
                             f"{self.means_.shape}")
        self.covars_ = np.array(self.covars_)
        needed = {"spherical": (nc, nm), "tied": (nc, nf, nf), "diag": (nc, nm, nf),
                  "full": (nc, nm, nf, nf)}[self.covariance_type]
        if self.covars_.shape != needed:
            raise ValueError(f"{self.covariance_type!r} mixture covars must have shape {needed}, actual shape: "
                             f"{self.covars_.shape}")
        if self.covariance_type in ("spherical", "diag"):
            if np.any(self.covars_ < 0):
                raise ValueError(f"{self.covariance_type!r} mixture covars must be non-negative")
        else:
            for i, cv in enumerate(self.covars_.reshape(-1, nf, nf)):
                if not np.allclose(cv, cv.T) or linalg.eigvalsh(cv).min() < 0:
                    raise ValueError(f"Covariance of state #{i} is not symmetric positive definite")

    def _store(self, core):
        self._store_core(core)
        self._load_emission(core.emission, self._dtype())

    def _load_emission(self, em, dtype, letters="wmc"):
        self.n_features = em.n_features
        if "w" in letters:
            self.weights_ = em.weights.astype(dtype)
        if "m" in letters:
            self.means_ = em.means.astype(dtype)
        if "c" in letters:
            self.covars_ = em.covars.astype(dtype)

    def _n_fit_scalars_per_param(self):
        nc, nf, nm = self.n_components, self.n_features, self.n_mix
        return {"s": nc - 1, "t": nc * (nc - 1), "m": nc * nm * nf,
                "c": {"spherical": nc * nm, "diag": nc * nm * nf, "full": nc * nm * nf * (nf + 1) // 2,
                      "tied": nc * nf * (nf + 1) // 2}[self.covariance_type],
                "w": nm - 1}         # (hmmlearn's count: n_mix - 1, not n_components * (n_mix - 1))

    def _sample_states(self, n, rs, currstate):
        weights, means, covars, kind = self.weights_, self.means_, self.covars_, self.covariance_type
        nf = self.n_features

        def draw(state, r):
            k = r.choice(self.n_mix, p=weights[state])
            c = covars[state] if kind == "tied" else covars[state, k]
            if kind == "spherical":
                c = c * np.eye(nf)
            elif kind == "diag":
                c = np.diag(c)
            return r.multivariate_normal(means[state, k], c)
        return self._state_stream(n, rs, currstate, draw)


def _validate_covars(covars, covariance_type, n_components):
    """hmmlearn's checks of an assigned covars_ (ValueError)."""
    if covariance_type == "spherical":
        if len(covars) != n_components:
            raise ValueError("'spherical' covars have length n_components")
        if np.any(covars <= 0):
            raise ValueError("'spherical' covars must be positive")
    elif covariance_type == "tied":
        if covars.ndim != 2 or covars.shape[0] != covars.shape[1]:
            raise ValueError("'tied' covars must have shape (n_dim, n_dim)")
        if not np.allclose(covars, covars.T) or np.any(linalg.eigvalsh(covars) <= 0):
            raise ValueError("'tied' covars must be symmetric, positive-definite")
    elif covariance_type == "diag":
        if covars.ndim != 2:
            raise ValueError("'diag' covars must have shape (n_components, n_dim)")
        if np.any(covars <= 0):
            raise ValueError("'diag' covars must be positive")
    elif covariance_type == "full":
        if covars.ndim != 3 or covars.shape[1] != covars.shape[2]:
            raise ValueError("'full' covars must have shape (n_components, n_dim, n_dim)")
        for i, cv in enumerate(covars):
            if not np.allclose(cv, cv.T) or np.any(linalg.eigvalsh(cv) <= 0):
                raise ValueError(f"component {i} of 'full' covars must be symmetric, positive-definite")
    else:
        raise ValueError("covariance_type must be one of 'spherical', 'tied', 'diag', 'full'")


# -- model files ---------------------------------------------------------------------------------------------
_BY_FAMILY = {"categorical": CategoricalHMM, "gaussian": GaussianHMM, "gmm": GMMHMM, "multinomial": MultinomialHMM,
              "poisson": PoissonHMM}
_CLASSES = {cls.__name__: cls for cls in _BY_FAMILY.values()}


def load(path):
    """The estimator saved by ``save(path)``, fitted (a file of hmmop's own models gives the class of its family)."""
    core = _load_core(path)
    with np.load(path, allow_pickle=False) as f:
        params = json.loads(str(f[_PARAMS_KEY])) if _PARAMS_KEY in f.files else {}
    family = core.emission.family
    cls = _CLASSES.get(params.pop("class", None)) or _BY_FAMILY.get(family)
    if cls is None:
        raise ValueError(f"{path!r} holds emission family {family!r}, which hmmop.hmmlearn has no class for")
    accepted = set(cls._get_param_names())
    model = cls(**{k: v for k, v in params.items() if k in accepted})
    dtype = model._dtype()
    model.startprob_, model.transmat_ = core.pi.astype(dtype), core.A.astype(dtype)
    model._load_emission(core.emission, dtype)
    return model

