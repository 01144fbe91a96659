"""Turning user sequences into the -1 padded int32 batches the operator takes."""
import numbers

import numpy as np


def encode(sequences, n_symbols, symbols=None):
    """Validate and encode observation sequences.

    sequences: a list of sequences (each a list or 1-D array of symbols), a
    single 1-D array or list of symbols (one sequence), or a 2-D integer array
    whose rows are -1 padded.  With ``symbols`` (the vocabulary, a list of
    distinct tokens) each token is replaced by its index; without it symbols
    must be integers in [0, n_symbols).
    Returns a list of int32 arrays, one per sequence (empty ones included).
    Raises ValueError naming the sequence and position of the first bad symbol,
    or when there is no symbol at all.
    """
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
    index = None if symbols is None else {tok: k for k, tok in enumerate(symbols)}
    out = []
    for i, row in enumerate(rows):
        if _is_scalar(row):
            raise ValueError(f"sequences[{i}] = {row!r} is not a sequence")
        out.append(_encode_row(row, i, n_symbols, index))
    if sum(len(r) for r in out) == 0:
        raise ValueError(f"sequences: all {len(out)} sequences are empty (no symbol to train on)")
    return out


def pad(rows, order=None):
    """(len(order), max length) int32 array of rows[order], padded with -1."""
    order = range(len(rows)) if order is None else order
    chosen = [rows[i] for i in order]
    out = np.full((len(chosen), max(1, max(len(r) for r in chosen))), -1, dtype=np.int32)
    for b, r in enumerate(chosen):
        out[b, : len(r)] = r
    return out


def _is_scalar(x):
    return isinstance(x, (numbers.Number, str, bytes, np.generic))


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
            return np.array([index[tok] for tok in row], dtype=np.int32)
        except (KeyError, TypeError):
            for t, tok in enumerate(row):
                if not _hashable_in(tok, index):
                    raise ValueError(f"sequences[{i}][{t}] = {tok!r} is not in the model's symbol "
                                     f"vocabulary ({len(index)} symbols)") from None
            raise
    arr = np.asarray(row)
    if arr.ndim != 1:
        raise ValueError(f"sequences[{i}]: expected a 1-D sequence of symbols, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iuf":
        raise ValueError(f"sequences[{i}] holds {arr.dtype} values; integer symbols in "
                         f"[0, {n_symbols}) are needed (or give the model a symbol vocabulary)")
    bad = np.flatnonzero((arr != np.floor(arr)) | (arr < 0) | (arr >= n_symbols)) if arr.size else []
    if len(bad):
        t = int(bad[0])
        raise ValueError(f"sequences[{i}][{t}] = {arr[t]!r} is not a symbol of this model: expected an "
                         f"integer in [0, {n_symbols})")
    return arr.astype(np.int32)


def _hashable_in(tok, index):
    try:
        return tok in index
    except TypeError:
        return False
