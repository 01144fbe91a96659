"""Data files for the command line: text with one sequence per line, or hmmlearn-style arrays.

Text: one sequence per non-empty line, split into symbols by ``tokens``:
"chars" (every character, the line's end excluded), "words" (whitespace-
separated tokens) or "ints" (whitespace-separated integers, hmmlearn-style
codes).  Arrays: a .npy file holding X (n_samples,) or (n_samples, 1) is one
sequence; a .npz file holds X and, optionally, lengths.  "-" reads standard
input (text).  Errors are DataError, naming the file, line and column.
"""
import io
import sys

import numpy as np

TOKENS = ("chars", "words", "ints")
UNKNOWN = ("error", "skip", "missing")


class DataError(ValueError):
    """A data file that cannot be read as sequences (the user's mistake, not a bug)."""


def read_sequences(path, tokens="chars"):
    """(sequences, tokens, lines): the file's sequences, how they were split, and the
    1-based line number of each (None for array files, whose tokens are "ints").

    Text sequences are lists of str tokens ("chars", "words") or int arrays ("ints").
    """
    if tokens not in TOKENS:
        raise DataError(f"tokens must be one of {TOKENS}, got {tokens!r}")
    if path != "-" and path.endswith((".npy", ".npz")):
        return _read_arrays(path), "ints", None
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with io.open(path, encoding="utf-8") as f:
                text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        f"for arrays of codes use a .npy/.npz file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    sequences, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if tokens == "chars":
            sequences.append(list(line))
        elif tokens == "words":
            sequences.append(line.split())
        else:
            sequences.append(_ints(line, path, number))
        lines.append(number)
    if not sequences:
        raise DataError(f"{_name(path)}: no sequence in it (the file is empty or only blank lines)")
    return sequences, tokens, lines


def with_vocabulary(sequences, lines, vocabulary, unknown="error", path="data"):
    """The token sequences with tokens the model does not know handled by ``unknown``:
    "error" (DataError naming line and column), "skip" (dropped) or "missing"
    (None, a missing observation)."""
    known = set(vocabulary)
    out = []
    for i, seq in enumerate(sequences):
        bad = [t for t, tok in enumerate(seq) if tok not in known]
        if not bad:
            out.append(seq)
        elif unknown == "error":
            where = f"line {lines[i]}" if lines else f"sequence {i}"
            raise DataError(f"{_name(path)}, {where}, column {bad[0] + 1}: {seq[bad[0]]!r} is not in the "
                            f"model's vocabulary ({len(known)} symbols); use --unknown skip or missing")
        elif unknown == "skip":
            out.append([tok for tok in seq if tok in known])
        else:
            out.append([tok if tok in known else None for tok in seq])
    return out


def format_sequence(sequence, tokens):
    """A sequence written as the data would be: characters joined, words or ints space-separated."""
    if tokens == "chars":
        return "".join(str(s) for s in sequence)
    return " ".join(str(s) for s in sequence)


def _ints(line, path, number):
    values = []
    for column, word in enumerate(line.split(), start=1):
        try:
            values.append(int(word))
        except ValueError:
            raise DataError(f"{_name(path)}, line {number}, token {column}: {word!r} is not an integer "
                            f"(--tokens ints); use --tokens chars or words for text") from None
    return np.array(values, dtype=np.int64)


def _read_arrays(path):
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable NumPy file ({exc})") from None
    if isinstance(data, np.ndarray):
        X, lengths = data, None
    else:
        with data:
            if "X" not in data.files:
                raise DataError(f"{path}: a .npz data file needs an array X (and optionally lengths), "
                                f"it has {data.files}")
            X = data["X"]
            lengths = data["lengths"] if "lengths" in data.files else None
    X = np.asarray(X)
    if X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 1 or X.dtype.kind not in "iu":
        raise DataError(f"{path}: X must hold integer codes of shape (n_samples,) or (n_samples, 1), "
                        f"got {X.dtype} of shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"{path}: no sequence in it (X is empty)")
    if lengths is None:
        return [X]
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or lengths.sum() != len(X):
        raise DataError(f"{path}: lengths must be non-negative integers summing to len(X) = {len(X)}")
    return [s for s in np.split(X, np.cumsum(lengths)[:-1]) if len(s)]


def _name(path):
    return "standard input" if path == "-" else path
