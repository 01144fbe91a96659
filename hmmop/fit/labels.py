"""Known states ("labels") of some steps: checking them, and what every method does with them.

A label says which state a step is in (an int in [0, N), or -1 where unknown) or which states it may be
in (a boolean row of N, True = allowed).  Every model uses them the same way: a step's log-emission is
-inf in the states its label rules out, so the forward recursion sums only over the paths that agree
with the labels and gives log P(obs, labels); its posteriors are P(s_t | obs, labels), Viterbi the best
path among those (forced alignment), EM and gradient training maximise log P(obs, labels).  Fully
labelled data makes the E-step's posteriors the labels themselves: one EM iteration (or
``supervised_counts``) gives the supervised estimate, normalised counts plus the priors' pseudo-counts.

Forms ``labels`` may take (n = total steps, N states, sequences as the data's ``lengths``):
  - one int array per sequence, (T_i,), -1 where unknown, or one bool array (T_i, N) per sequence
    ("one of these states"); None in the list: that sequence has no labels;
  - hmmlearn's concatenated form: one int array (n,) or one bool array (n, N), split by ``lengths``.
"""
import numpy as np

UNKNOWN = -1


class Labels:
    """Checked labels of a data set's n rows: ``allowed`` (n, N) bool, True where a step may be in a state.

    blocked: flat indices into an (n, N) C-ordered log-emission array of the entries to set to -inf;
    known: (n,) int64, the state where exactly one is allowed, else -1.
    """

    def __init__(self, allowed, lengths, name="labels"):
        self.allowed = np.ascontiguousarray(allowed, dtype=bool)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.name = name
        self.blocked = np.flatnonzero(~self.allowed.ravel())
        single = self.allowed.sum(axis=1) == 1
        self.known = np.where(single, self.allowed.argmax(axis=1), UNKNOWN).astype(np.int64)

    @property
    def complete(self):
        """Whether every step's state is known."""
        return bool((self.known >= 0).all())

    def apply(self, log_emission):
        """-inf (in place) where the labels rule a state out; log_emission (n, N) C-contiguous; returns it."""
        log_emission.reshape(-1)[self.blocked] = -np.inf
        return log_emission

    def bias(self):
        """(n, N) float64: 0 where allowed, -inf elsewhere (added to log-emissions)."""
        return np.where(self.allowed, 0.0, -np.inf)

    def take(self, chosen):
        """The labels of the sequences ``chosen`` (indices), in that order."""
        parts = [self.allowed[s:s + L] for s, L in zip(self.starts[chosen].tolist(), self.lengths[chosen].tolist())]
        n_states = self.allowed.shape[1]
        allowed = np.concatenate(parts) if parts else np.zeros((0, n_states), dtype=bool)
        return Labels(allowed, self.lengths[chosen], self.name)

    def per_sequence(self):
        """A list of (T_i, N) bool arrays, one per sequence."""
        return [self.allowed[s:s + L] for s, L in zip(self.starts.tolist(), self.lengths.tolist())]

    def where(self, row):
        """(sequence, step) of row index ``row``."""
        b = int(np.searchsorted(self.starts + self.lengths, row, side="right"))
        while self.lengths[b] == 0:
            b += 1
        return b, int(row - self.starts[b])

    def why_impossible(self, b, log_emission=None, A_allowed=None, pi_allowed=None):
        """A sentence saying why no state path of sequence b agrees with its labels: the first step
        whose known state cannot be entered (pi_allowed (N,), A_allowed (N, N) bool: where the
        parameters are not 0) or cannot emit the observation (log_emission: the sequence's (T_b, N)
        log-emissions before the labels), else the general statement."""
        s, L = int(self.starts[b]), int(self.lengths[b])
        known = self.known[s:s + L]
        allowed = self.allowed[s:s + L]
        if log_emission is not None:
            can_emit = allowed & (np.asarray(log_emission) > -np.inf)
            bad = np.flatnonzero(~can_emit.any(axis=1))
            if bad.size:
                t = int(bad[0])
                what = f"its labelled state {int(known[t])} cannot" if known[t] >= 0 else \
                    f"none of its labelled states {np.flatnonzero(allowed[t]).tolist()} can"
                return f"sequence {b}, step {t}: {what} emit the observation there"
        if pi_allowed is not None and L and not (allowed[0] & pi_allowed).any():
            return f"sequence {b}, step 0: the labelled state{'s' if known[0] < 0 else ''} " \
                   f"{self._states(allowed[0])} cannot start a sequence (pi is 0 there)"
        if A_allowed is not None:
            for t in range(1, L):
                if not (A_allowed[allowed[t - 1]][:, allowed[t]]).any():
                    return (f"sequence {b}, step {t}: no transition from {self._states(allowed[t - 1])} at step "
                            f"{t - 1} to {self._states(allowed[t])} (A is 0 there)")
        return f"sequence {b}: no state path agrees with its labels and the model"

    @staticmethod
    def _states(row):
        idx = np.flatnonzero(row).tolist()
        return f"state {idx[0]}" if len(idx) == 1 else f"states {idx}"


def check_labels(labels, lengths, n_states, name="labels"):
    """Labels of data with ``lengths`` (n_sequences,) and N = n_states, or None for no labels.

    ``labels`` in any form of the module docstring.  ValueError naming ``name``, the sequence and the
    step for a state outside [0, N) other than -1, a row that allows no state, a sequence of the
    wrong length, or a form that is none of these.
    """
    if labels is None:
        return None
    lengths = np.asarray(lengths, dtype=np.int64)
    n, N = int(lengths.sum()), int(n_states)
    if isinstance(labels, Labels):
        if labels.allowed.shape != (n, N) or not np.array_equal(labels.lengths, lengths):
            raise ValueError(f"{name}: labels of {len(labels.lengths)} sequences, {labels.allowed.shape[0]} steps "
                             f"and {labels.allowed.shape[1]} states for data of {len(lengths)} sequences, "
                             f"{n} steps and {N} states")
        return labels
    per_sequence = isinstance(labels, (list, tuple)) and len(labels) > 0 and \
        all(x is None or np.ndim(x) >= 1 for x in labels)
    if per_sequence:
        if len(labels) != len(lengths):
            raise ValueError(f"{name}: {len(labels)} label sequences for {len(lengths)} sequences of data")
        parts = [_allowed(x, int(L), N, f"{name}[{b}]", b) for b, (x, L) in enumerate(zip(labels, lengths))]
        allowed = np.concatenate(parts) if parts else np.zeros((0, N), dtype=bool)
    else:
        x = np.asarray(labels)
        if x.ndim == 2 and x.dtype.kind in "iu" and len(lengths) == x.shape[0] and (lengths == x.shape[1]).all():
            parts = [_allowed(row, x.shape[1], N, f"{name}[{b}]", b) for b, row in enumerate(x)]
            allowed = np.concatenate(parts)         # one (n_sequences, T) array of equal-length sequences
        else:
            allowed = _allowed(x, n, N, name, None, lengths)
    return Labels(allowed, lengths, name)


def _allowed(x, T, N, name, b, lengths=None):
    """(T, N) bool of one sequence's labels (b: its index) or of the concatenated rows (lengths given)."""
    if x is None:
        return np.ones((T, N), dtype=bool)
    x = np.asarray(x)
    where = _where(b, lengths)
    if x.ndim == 1:
        if x.dtype.kind not in "iu":
            if x.dtype.kind == "f" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
                x = x.astype(np.int64)
            else:
                raise ValueError(f"{name}: expected integer states (-1 where unknown), got dtype {x.dtype}")
        if len(x) != T:
            raise ValueError(f"{name} has {len(x)} steps but {_what(b, lengths)} {T}")
        bad = np.flatnonzero((x < UNKNOWN) | (x >= N))
        if bad.size:
            s, t = where(int(bad[0]))
            raise ValueError(f"{name}: {s}step {t} has label {int(x[bad[0]])}, not a state in [0, {N}) or "
                             f"-1 (unknown)")
        allowed = np.ones((T, N), dtype=bool)
        known = np.flatnonzero(x >= 0)
        allowed[known] = False
        allowed[known, x[known]] = True
        return allowed
    if x.ndim == 2:
        if x.dtype != bool:
            raise ValueError(f"{name}: a 2-D label array must be a boolean mask (steps, {N}) of the states "
                             f"each step may be in, got dtype {x.dtype}")
        if x.shape != (T, N):
            raise ValueError(f"{name}: mask of shape {x.shape}, expected ({T}, {N}) ({_what(b, lengths)} {T} "
                             f"and the model {N} states)")
        empty = np.flatnonzero(~x.any(axis=1))
        if empty.size:
            s, t = where(int(empty[0]))
            raise ValueError(f"{name}: {s}step {t} allows no state (its mask row is all False)")
        return x
    raise ValueError(f"{name}: expected states (steps,) or a boolean mask (steps, {N}), got shape {x.shape}")


def _what(b, lengths):
    return "the data has" if b is None else f"sequence {b} has"


def _where(b, lengths):
    """row index -> ('sequence b, ', step) for messages."""
    if lengths is None:
        return lambda i: (f"sequence {b}, ", i)
    ends = np.cumsum(lengths)

    def at(i):
        s = int(np.searchsorted(ends, i, side="right"))
        return f"sequence {s}, ", int(i - (ends[s] - lengths[s]))
    return at


def supervised_counts(labels):
    """Counts of fully labelled data: (start (N,), trans (N, N), gamma (n, N) one-hot) float64."""
    if not labels.complete:
        s, t = labels.where(int(np.flatnonzero(labels.known < 0)[0]))
        raise ValueError(f"{labels.name}: sequence {s}, step {t} has no single known state; supervised fitting "
                         f"needs every step labelled (use fit(..., labels=...) for partial labels)")
    n, N = labels.allowed.shape
    known = labels.known
    gamma = np.zeros((n, N))
    gamma[np.arange(n), known] = 1.0
    nonempty = labels.lengths > 0
    start = np.bincount(known[labels.starts[nonempty]], minlength=N).astype(np.float64)
    follows = np.ones(n, dtype=bool)
    follows[labels.starts[nonempty]] = False       # row t has a predecessor in its sequence
    rows = np.flatnonzero(follows)
    trans = np.bincount(known[rows - 1] * N + known[rows], minlength=N * N).astype(np.float64).reshape(N, N)
    return start, trans, gamma
