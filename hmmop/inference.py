"""Inference with a discrete HMM as free functions: Viterbi decoding, state posteriors, sampling.

All run on the C kernel in double precision through the Cython adapter, the
sequences of a batch in OpenMP threads inside the batch driver
(csrc/hmm_batch.c).  A sequence's results do
not depend on the batch around it or on the thread count.  Shapes and conventions:

    A (N, N)   A[i, j] = P(next = j | current = i)
    B (N, M)   B[i, k] = P(symbol k | state i)
    pi (N,)    initial probabilities
    obs (T,) or (batch, T) integer symbols in [0, M); -1 pads the end of a
               row, -2 marks a missing observation (emission 1 in every state)

A, B, pi may be any float array-likes; they are used as given, in float64.
"""
import re

import numpy as np

from . import _kernel
from .data import concatenated
from .ops import checks
from .ops.threads import get_num_threads


def viterbi(A, B, pi, obs, lengths=None, num_threads=None):
    """Most likely state path of each sequence (max-product in log space).

    obs: padded (T,) or (batch, T) as above; or, with ``lengths`` (batch,),
    hmmlearn's form: the sequences concatenated in one 1-D array (or
    (n_samples, 1)), sequence b the next lengths[b] symbols (no -1 there;
    this form needs no padding and is the faster one for many sequences).
    Returns (log_prob (batch,) float64, paths): log_prob[b] = log P(best
    path, obs[b]) (0 for an empty sequence, -inf for an impossible one),
    paths a list of int32 arrays (T_b,).  Ties are broken as hmmlearn 0.3.3
    breaks them (last state: the lowest index; predecessors: the highest), so
    paths equal its.
    """
    A, B, pi, obs32, starts, lengths = _laid_out(A, B, pi, obs, lengths)
    log_prob, paths = _kernel.viterbi(A, B, pi, obs32, starts, lengths, num_threads or get_num_threads())
    return log_prob, _split(paths, starts, lengths)


def posteriors(A, B, pi, obs, lengths=None, num_threads=None):
    """State posteriors gamma_t(i) = P(state_t = i | obs) by scaled forward-backward.

    obs (and lengths) as for viterbi.  Returns (ll (batch,) float64
    log-likelihoods, gamma): gamma a list of float64 arrays (T_b, N) whose
    rows sum to 1 (NaN rows for an impossible sequence).
    """
    A, B, pi, obs32, starts, lengths = _laid_out(A, B, pi, obs, lengths)
    ll, gamma = _kernel.posteriors(A, B, pi, obs32, starts, lengths, num_threads or get_num_threads())
    return ll, _split(gamma, starts, lengths)


def sample(A, B, pi, n_sequences, length, seed=None, num_threads=None):
    """Draw n_sequences sequences of ``length`` symbols.

    Returns (obs, states), both (n_sequences, length) int32.  seed: anything
    numpy.random.default_rng takes; the same seed gives the same draws (they
    come from NumPy, then the kernel turns them into states and symbols).
    """
    A, B, pi = _parameters(A, B, pi)
    for label, value in (("n_sequences", n_sequences), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    checks.check_shapes(A.shape, B.shape, pi.shape, (1,))
    for name, p in (("A", A), ("B", B), ("pi", pi)):
        if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-6):
            raise ValueError(f"{name} must hold non-negative probabilities summing to 1 along its last axis")
    uniforms = np.random.default_rng(seed).random((int(n_sequences), int(length), 2))
    return _kernel.sample(A, B, pi, uniforms, num_threads or get_num_threads())


def _parameters(A, B, pi):
    return tuple(np.ascontiguousarray(x, dtype=np.float64) for x in (A, B, pi))


def _prepared(A, B, pi, obs):
    """Checked float64 parameters and (obs32, lengths) from checks.prepare_obs."""
    A, B, pi = _parameters(A, B, pi)
    obs = np.asarray(obs)
    if obs.dtype.kind in "iub" and obs.dtype not in checks.OBS_DTYPES:
        obs = obs.astype(np.int64)
    checks.check_dtypes(A.dtype, B.dtype, pi.dtype, obs.dtype)
    _, m, _, _ = checks.check_shapes(A.shape, B.shape, pi.shape, obs.shape)
    obs32, lengths = checks.prepare_obs(obs, m)
    return A, B, pi, obs32, lengths


def _laid_out(A, B, pi, obs, lengths):
    """Checked float64 parameters and the kernel's layout of obs: (obs32 1-D, starts,
    lengths), sequence b in obs32[starts[b] : starts[b] + lengths[b]]."""
    if lengths is not None:
        return _prepared_concatenated(A, B, pi, obs, lengths)
    A, B, pi, obs32, lengths = _prepared(A, B, pi, obs)
    starts = np.arange(len(lengths), dtype=np.int64) * obs32.shape[1]
    return A, B, pi, obs32.ravel(), starts, lengths


def _split(rows, starts, lengths):
    """[rows[s : s + L] for each sequence] (views)."""
    return [rows[s:s + L] for s, L in zip(starts.tolist(), lengths.tolist())]


def _prepared_concatenated(A, B, pi, obs, lengths):
    """Checked float64 parameters, obs32 (total,) for the kernel, starts and lengths
    (batch,) int64, from hmmlearn's (X, lengths) form."""
    obs, lengths = concatenated(obs, lengths, "obs")
    if (obs == -1).any():
        raise ValueError(f"obs[{int(np.flatnonzero(obs == -1)[0])}] = -1: padding has no place in "
                         f"concatenated sequences (given with lengths)")
    try:
        A, B, pi, obs32, _ = _prepared(A, B, pi, obs[None, :] if len(obs) else np.zeros((1, 1), np.int64))
    except ValueError as exc:   # checked as one padded row: name the position in the concatenation
        message = re.sub(r"^obs\[0, (\d+)\]", r"obs[\1]", str(exc)).replace(", -1 padding or", " or")
        raise ValueError(message) from None
    starts = np.cumsum(lengths) - lengths
    return A, B, pi, obs32.ravel()[:len(obs)], starts, lengths


# -- dense emissions: per-step log-likelihoods from anywhere ----------------------------------
def viterbi_dense(A, pi, log_emission, lengths=None, num_threads=None):
    """Most likely state path of each sequence given per-step log-emissions.

    A (N, N), pi (N,): non-negative (logs taken in double; zeros are fine).
    log_emission: (T, N) one sequence; or with ``lengths`` (batch,) either
    hmmlearn's concatenated form (n_rows, N), sequence b the next lengths[b]
    rows, or a padded (batch, T, N) array (lengths None: every row T steps).
    Entries are log p(obs_t | state i): any real or -inf; a row of zeros is a
    missing observation.  Returns (log_prob (batch,) float64, paths: a list of
    int32 arrays (T_b,)), ties broken as hmmlearn breaks them (see viterbi).
    """
    A, pi, rows, starts, lengths = _dense_layout(A, pi, log_emission, lengths)
    log_prob, paths = _kernel.viterbi_dense(A, pi, rows, starts, lengths, num_threads or get_num_threads())
    return log_prob, _split(paths, starts, lengths)


def posteriors_dense(A, pi, log_emission, lengths=None, num_threads=None):
    """State posteriors gamma_t(i) = P(state_t = i | obs) given per-step log-emissions.

    Arguments as for viterbi_dense.  Returns (ll (batch,) float64
    log-likelihoods, gamma: a list of float64 arrays (T_b, N)).  An impossible
    sequence has ll = -inf and gamma rows of NaN.
    """
    A, pi, rows, starts, lengths = _dense_layout(A, pi, log_emission, lengths)
    ll, gamma, _, _ = _kernel.posteriors_dense(A, pi, rows, starts, lengths, num_threads or get_num_threads())
    gamma = _split(gamma, starts, lengths)
    for b in np.flatnonzero(ll == -np.inf):
        gamma[b] = np.full_like(gamma[b], np.nan)
    return ll, gamma


def _dense_layout(A, pi, log_emission, lengths):
    """Checked float64 (A, pi, rows (size, N), starts, lengths) for the dense kernel functions."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    pi = np.ascontiguousarray(pi, dtype=np.float64)
    le = np.asarray(log_emission, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise ValueError(f"A must be a square (N, N) matrix, got shape {A.shape}")
    n = A.shape[0]
    if pi.shape != (n,):
        raise ValueError(f"pi must have shape ({n},), got {pi.shape}")
    for name, x in (("A", A), ("pi", pi)):
        if not np.isfinite(x).all() or (x < 0).any():
            raise ValueError(f"{name} must hold finite non-negative values")
    if le.ndim not in (2, 3) or le.shape[-1] != n:
        raise ValueError(f"log_emission must have shape (T, {n}), (n_rows, {n}) with lengths, or "
                         f"(batch, T, {n}), got {le.shape}")
    if le.ndim == 3:
        batch, T = le.shape[:2]
        lengths = np.full(batch, T, dtype=np.int64) if lengths is None else \
            checks.prepare_lengths(np.asarray(lengths), T)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {lengths.shape}")
        starts = np.arange(batch, dtype=np.int64) * T
        rows = le.reshape(batch * T, n)
    else:
        rows = le
        if lengths is None:
            lengths = np.array([len(le)], dtype=np.int64)
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
            raise ValueError(f"lengths must be a 1-D sequence of non-negative integers, got {lengths!r}")
        if lengths.sum() != len(le):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but log_emission holds {len(le)} rows")
        lengths = lengths.astype(np.int64)
        starts = np.cumsum(lengths) - lengths
    rows = np.ascontiguousarray(rows)
    if le.ndim == 3:        # padding may hold anything: only the steps inside the sequences are checked
        checks.check_log_emission_values(le, lengths)
    else:
        bad = np.isnan(rows) | (rows == np.inf)
        if bad.any():
            r, i = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"log_emission[{r}, {i}] = {rows[r, i]!r}: log-emissions must be real "
                             f"numbers or -inf (an impossible emission), not NaN or +inf")
    return A, pi, rows, starts, lengths
