"""Turning user sequences into the -1 padded int32 batches the operator takes.

Codes: symbols are 0..M-1, MISSING (-2) marks a missing observation (its
emission probability is 1 in every state), PAD (-1) fills the end of a row.
"""
import numbers

import numpy as np

PAD, MISSING = -1, -2


def encode(sequences, n_symbols, symbols=None, lengths=None):
    """Validate and encode observation sequences into a list of int32 rows.

    sequences: a list of sequences (each a list or 1-D array of symbols), a
    single 1-D array or list of symbols (one sequence), a 2-D integer array
    whose rows are -1 padded, or - with ``lengths`` - hmmlearn's form: the
    sequences concatenated in one array X of shape (n_samples,) or
    (n_samples, 1), lengths giving each one's length.  With ``symbols`` (the
    vocabulary, a list of distinct tokens) each token is replaced by its
    index; without it symbols must be integers in [0, n_symbols).  A missing
    observation is None (any symbols) or -2 (integer symbols).
    Returns a list of int32 arrays, one per sequence (empty ones included),
    missing observations as MISSING.  Raises ValueError naming the sequence
    and position of the first bad symbol, or when there is no symbol at all.
    """
    flat, lens = _encoded(sequences, n_symbols, symbols, lengths)
    ends = np.cumsum(lens)
    return [flat[start:end] for start, end in zip((ends - lens).tolist(), ends.tolist())]


def encode_flat(sequences, n_symbols, symbols=None, lengths=None):
    """What encode gives, as hmmlearn's form: (all symbols concatenated, int32,
    MISSING for a missing observation; lengths (n_sequences,) int64)."""
    return _encoded(sequences, n_symbols, symbols, lengths)


def encode_padded(sequences, n_symbols, symbols=None, lengths=None):
    """What encode gives, as one (n_sequences, max(1, longest)) int32 array padded with -1."""
    flat, lens = _encoded(sequences, n_symbols, symbols, lengths)
    out = np.full((len(lens), max(1, int(lens.max()))), PAD, dtype=np.int32)
    out[np.arange(out.shape[1]) < lens[:, None]] = flat     # row-major order: row by row
    return out


def _encoded(sequences, n_symbols, symbols, lengths):
    """(all symbols as one int32 array, the length of each sequence (n_sequences,) int64)."""
    if lengths is not None:
        sequences = _split(sequences, lengths)
    if isinstance(sequences, np.ndarray):
        if sequences.ndim == 1:
            rows = [sequences]
        elif sequences.ndim == 2:
            rows = [row[: _padded_length(row, i)] for i, row in enumerate(sequences)]
        else:
            raise ValueError(f"sequences: expected a 1-D or 2-D array, got shape {sequences.shape}")
    elif isinstance(sequences, (str, bytes)):
        raise ValueError("sequences: expected a list of sequences, got a single string; "
                         "wrap it in a list, e.g. [text]")
    else:
        try:
            rows = list(sequences)
        except TypeError:
            raise ValueError(f"sequences: expected a list of sequences, got {type(sequences).__name__}") from None
        if rows and all(_is_scalar(x) for x in rows):
            rows = [rows]                                  # one flat sequence
    if not rows:
        raise ValueError("sequences: no sequence given (empty data)")
    if symbols is None and all(type(row) is np.ndarray for row in rows):
        flat = _concatenated_integer_rows(rows)
        if flat is not None:            # the common case, in a few vectorised steps
            lens = _lengths(rows)
            if len(flat) == 0:
                raise ValueError(f"sequences: all {len(rows)} sequences are empty (no symbol to train on)")
            return _checked_symbols(rows, lens, n_symbols, flat), lens
    index = None if symbols is None else {tok: k for k, tok in enumerate(symbols)}
    out = []
    for i, row in enumerate(rows):
        if index is None and type(row) is np.ndarray and row.ndim == 1 and row.dtype.kind in "iu":
            out.append(row)                  # the common case, without a call (many short rows)
            continue
        if not isinstance(row, np.ndarray) and _is_scalar(row):    # (arrays skip the slow ABC check)
            raise ValueError(f"sequences[{i}] = {row!r} is not a sequence")
        out.append(_encode_row(row, i, n_symbols, index))
    lens = _lengths(out)
    if not lens.any():
        raise ValueError(f"sequences: all {len(out)} sequences are empty (no symbol to train on)")
    flat = _checked_symbols(out, lens, n_symbols) if index is None else np.concatenate(out)
    return flat, lens


def _lengths(rows):
    return np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))


def pad(rows, order=None):
    """(len(order), max length) int32 array of rows[order], padded with -1."""
    chosen = rows if order is None else [rows[i] for i in order]
    out = np.full((len(chosen), max(1, max(len(r) for r in chosen))), PAD, dtype=np.int32)
    for b, r in enumerate(chosen):
        out[b, : len(r)] = r
    return out


def concatenated(X, lengths, name="X"):
    """Checked hmmlearn form: (X as a 1-D array, lengths (n_sequences,) int64).

    X: the sequences concatenated, shape (n_samples,) or (n_samples, 1);
    lengths: non-negative integers summing to n_samples.  ValueError naming
    ``name`` (what the caller calls X) otherwise.
    """
    X = np.asarray(X)
    if X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 1:
        raise ValueError(f"{name}: with lengths, expected the concatenated sequences as shape (n_samples,) or "
                         f"(n_samples, 1), got shape {X.shape}")
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
        raise ValueError(f"lengths must be a 1-D sequence of non-negative integers, got {lengths!r}")
    if lengths.sum() != len(X):
        raise ValueError(f"lengths sum to {int(lengths.sum())} but {name} holds {len(X)} symbols")
    return X, lengths.astype(np.int64)


def _split(X, lengths):
    """hmmlearn's (X, lengths) -> a list of 1-D arrays."""
    X, lengths = concatenated(X, lengths)
    return list(np.split(X, np.cumsum(lengths)[:-1]))


def _is_scalar(x):
    return x is None or isinstance(x, (numbers.Number, str, bytes, np.generic))


def _padded_length(row, i):
    ends = np.flatnonzero(row == -1)
    length = int(ends[0]) if len(ends) else len(row)
    if (row[length:] != -1).any():
        bad = length + int(np.flatnonzero(row[length:] != -1)[0])
        raise ValueError(f"sequences[{i}, {bad}] = {row[bad]!r} follows -1 padding")
    return length


def _encode_row(row, i, n_symbols, index):
    if index is not None:
        try:
            return np.array([MISSING if tok is None else index[tok] for tok in row], dtype=np.int32)
        except (KeyError, TypeError):
            for t, tok in enumerate(row):
                if not _hashable_in(tok, index):
                    raise ValueError(f"sequences[{i}][{t}] = {tok!r} is not in the model's symbol "
                                     f"vocabulary ({len(index)} symbols)") from None
            raise
    if not isinstance(row, np.ndarray) and any(x is None for x in row):
        row = [MISSING if x is None else x for x in row]
    arr = np.asarray(row)
    if arr.ndim != 1:
        raise ValueError(f"sequences[{i}]: expected a 1-D sequence of symbols, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iuf":
        raise ValueError(f"sequences[{i}] holds {arr.dtype} values; integer symbols in "
                         f"[0, {n_symbols}) are needed (or give the model a symbol vocabulary)")
    return arr


def _concatenated_integer_rows(arrays):
    """The arrays concatenated, if all are 1-D of integers; else None (the caller
    then looks at them one by one, to name what is wrong)."""
    try:
        flat = np.concatenate(arrays)
    except ValueError:                  # 0-d arrays, or rows of other dimensions
        return None
    return flat if flat.ndim == 1 and flat.dtype.kind in "iu" else None


def _checked_symbols(arrays, lens, n_symbols, flat=None):
    """All numeric rows as one int32 array (flat: their concatenation, if made
    already), every value checked in one vectorised pass (a check per row costs
    more than the whole pass on many short rows)."""
    if flat is None:
        flat = np.concatenate(arrays)
    if flat.dtype.kind in "iu" and flat.min() >= 0 and flat.max() < n_symbols:
        return flat.astype(np.int32)    # all symbols: one pass each for min and max
    bad = (flat < 0) & (flat != MISSING) | (flat >= n_symbols)
    if flat.dtype.kind == "f":
        bad |= flat != np.floor(flat)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        ends = np.cumsum(lens)
        i = int(np.searchsorted(ends, k, side="right"))
        t = k - (int(ends[i - 1]) if i else 0)
        raise ValueError(f"sequences[{i}][{t}] = {arrays[i][t]!r} is not a symbol of this model: expected an "
                         f"integer in [0, {n_symbols}), or -2 / None for a missing observation")
    return flat.astype(np.int32)


def _hashable_in(tok, index):
    try:
        return tok in index
    except TypeError:
        return False


def feature_rows(X, lengths=None, name="X"):
    """Feature sequences as hmmlearn's concatenated form: (rows (n, D) float64, lengths (n_sequences,) int64).

    X: a list of (T_i, D) arrays (or nested lists), one (T, D) array (one
    sequence), or - with ``lengths`` - the sequences concatenated, (n, D).
    The values are not checked here (the emission component does that); a
    row of NaN is a missing observation.  ValueError naming ``name`` for
    shapes that do not fit.
    """
    if lengths is not None:
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2:
            raise ValueError(f"{name}: with lengths, expected the concatenated sequences as an (n_samples, "
                             f"n_features) array, got shape {rows.shape}")
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
            raise ValueError(f"lengths must be a 1-D sequence of non-negative integers, got {lengths!r}")
        if lengths.sum() != len(rows):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but {name} holds {len(rows)} rows")
        return np.ascontiguousarray(rows), lengths.astype(np.int64)
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return np.ascontiguousarray(X, dtype=np.float64), np.array([len(X)], dtype=np.int64)
    if isinstance(X, np.ndarray) and X.ndim != 2:
        raise ValueError(f"{name}: expected a (T, n_features) array, a list of them, or (X, lengths); "
                         f"got an array of shape {X.shape}")
    try:
        seqs = [np.asarray(x, dtype=np.float64) for x in X]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a list of (T_i, n_features) arrays of numbers ({exc})") from None
    if not seqs:
        raise ValueError(f"{name}: no sequence given (empty data)")
    widths = set()
    for i, s in enumerate(seqs):
        if s.ndim != 2:
            raise ValueError(f"{name}[{i}]: each sequence must be a (T, n_features) array, got shape {s.shape}")
        widths.add(s.shape[1])
    if len(widths) > 1:
        raise ValueError(f"{name}: the sequences have different numbers of features {sorted(widths)}")
    return (np.ascontiguousarray(np.concatenate(seqs, axis=0)),
            np.array([len(s) for s in seqs], dtype=np.int64))
