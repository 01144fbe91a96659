"""Data files for the command line: symbol sequences (categorical models) and numeric rows
(Gaussian models), as text or hmmlearn-style arrays.

Symbols (read_sequences): one sequence per non-empty line, split into
symbols by ``tokens``: "chars" (every character, the line's end excluded),
"words" (whitespace-separated tokens) or "ints" (whitespace-separated
integers, hmmlearn-style codes).  Arrays: a .npy file holding X
(n_samples,) or (n_samples, 1) is one sequence; a .npz file holds X and,
optionally, lengths.

Numeric rows (read_features): one observation per line, D numbers separated
by tabs (when the first row has a tab), commas (when it has a comma) or
whitespace; blank lines separate sequences; lines starting with "#" are
comments.  An empty field, "nan", "NA" or "N/A" (any case) is a missing
value; a row whose values are all missing is a missing observation (in a
tab-separated file a line of tabs is such a row, not a blank line; with
whitespace separation write NA).  A row with only some values missing is an
error (the models take whole missing rows only).  The first line may be a
header of column names: it is one when none of its fields is a number.
Arrays: a .npy file holding one (T, D) (or (T,)) sequence, or a .npz file
holding X (n, D) and, optionally, lengths.

Labels (read_labels): the known hidden states of some steps, one line per
sequence of the data (same order, same number), each line whitespace-separated
entries, one per step (per token for symbols, per row for numeric data): a
state index in [0, N) or "-" for unknown.  Blank lines are skipped, as the
data readers skip them (between symbol lines; between blocks of numeric rows),
and so are lines starting with "#".

"-" reads standard input (text).  Errors are DataError, naming the file,
line and column.
"""
import io
import math
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
    text = _read_text(path, "arrays of codes")
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


def read_labels(path, lengths, n_states, data="data", lines=None):
    """(labels, label_lines): the labels of the data's sequences, a list of int64 arrays, one per
    sequence (lengths[i] entries), -1 where unknown ("-" in the file), and the 1-based line of each
    in the file.  data: the data file's name and lines: the 1-based line of each sequence in it (None
    for array files), for messages.  DataError naming the file, line and entry for: a different
    number of (non-blank) lines than sequences, a line with the wrong number of entries, an entry
    that is neither an integer nor "-", a state outside [0, n_states)."""
    text = _read_text(path, "labels")
    found = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if len(found) != len(lengths):
        raise DataError(f"{_name(path)}: {len(found)} line{'s' * (len(found) != 1)} of labels, but "
                        f"{_name(data)} has {len(lengths)} sequence{'s' * (len(lengths) != 1)} (one line of "
                        f"labels per sequence, in the same order; blank lines do not count)")
    out = []
    for b, ((number, entries), T) in enumerate(zip(found, lengths)):
        if len(entries) != T:
            where = f" (line {lines[b]})" if lines else ""
            raise DataError(f"{_name(path)}, line {number}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
                            f"but sequence {b} of {_name(data)}{where} has {T} step{'s' * (T != 1)} (one "
                            f"state or - per step)")
        states = np.empty(T, dtype=np.int64)
        for t, entry in enumerate(entries):
            if entry == "-":
                states[t] = -1
                continue
            try:
                value = int(entry)
            except ValueError:
                raise DataError(f"{_name(path)}, line {number}, entry {t + 1}: {entry!r} is not a state (an "
                                f"integer in [0, {n_states})) or - (unknown)") from None
            if not 0 <= value < n_states:
                raise DataError(f"{_name(path)}, line {number}, entry {t + 1}: state {value} is out of range: "
                                f"the model has {n_states} state{'s' * (n_states != 1)}, 0..{n_states - 1}"
                                f"{' (write - for unknown)' if value == -1 else ''}")
            states[t] = value
        out.append(states)
    return out, [number for number, _ in found]


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


def read_features(path):
    """(sequences, names, lines): the file's numeric sequences as float64 (T_i, D) arrays (NaN rows
    missing), the header's D column names (None without one) and the 1-based line number of each
    sequence's first row (None for array files).  See the module docstring for the formats."""
    if path != "-" and path.endswith((".npy", ".npz")):
        return _read_feature_arrays(path), None, None
    text = _read_text(path, "arrays")
    lines = text.splitlines()
    sep = _separator(lines)
    sequences, starts, rows = [], [], []
    names, width, width_line = None, None, None
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("#"):
            continue
        if not line.strip() and not (sep == "\t" and "\t" in line):
            if rows:                              # a blank line ends a sequence
                sequences.append(np.array(rows, dtype=np.float64))
                rows = []
            continue
        fields = [f.strip() for f in line.split(sep)] if sep else line.split()
        if width is None:
            width, width_line = len(fields), number
            if _is_header(fields):
                names = [f or f"x{c}" for c, f in enumerate(fields)]
                continue
        elif len(fields) != width:
            what = {"\t": "tab", ",": "comma"}.get(sep, "whitespace")
            first = f"the header (line {width_line}) has {width} names" if names else \
                f"line {width_line} has {width}"
            raise DataError(f"{_name(path)}, line {number}: {len(fields)} columns, but {first} ({what}-separated); "
                            f"every row needs the same number of values")
        row = [_value(f, path, number, column) for column, f in enumerate(fields, start=1)]
        missing = [math.isnan(v) for v in row]
        if any(missing) and not all(missing):
            raise DataError(f"{_name(path)}, line {number}, column {missing.index(True) + 1}: a missing value "
                            f"in a row with values; only a whole row can be missing (a missing "
                            f"observation: leave every field of the row empty or NA)")
        if not rows:
            starts.append(number)
        rows.append(row)
    if rows:
        sequences.append(np.array(rows, dtype=np.float64))
    if not sequences:
        raise DataError(f"{_name(path)}: no sequence in it (the file is empty or only blank lines"
                        f"{', comments' if any(line.lstrip().startswith('#') for line in lines) else ''}"
                        f"{' and a header' if names else ''})")
    return sequences, names, starts


def check_features(sequences, lines, path, n_features):
    """DataError unless every sequence has ``n_features`` columns (naming the file and line)."""
    width = sequences[0].shape[1]
    if width != n_features:
        where = f"{_name(path)}, line {lines[0]}" if lines else f"{path}: X"
        raise DataError(f"{where}: {width} column{'s' * (width != 1)} per row, but the model has "
                        f"{n_features} feature{'s' * (n_features != 1)}")


def format_features(sequences, sep="\t"):
    """Numeric sequences as text: one row per line, values joined by ``sep`` (shortest exact form,
    "nan" for a missing value), a blank line between sequences."""
    blocks = ["\n".join(sep.join(repr(float(v)) for v in row) for row in np.asarray(seq, dtype=np.float64))
              for seq in sequences]
    return "\n\n".join(blocks) + "\n"


def write_features(path, sequences, states=None):
    """Write numeric sequences to ``path``: .npz (X (n, D), lengths and, when given, the states
    concatenated), .csv (comma-separated) or any other name (tab-separated), as read_features reads them."""
    sequences = [np.asarray(s, dtype=np.float64) for s in sequences]
    if path.endswith(".npz"):
        arrays = {"X": np.concatenate(sequences), "lengths": np.array([len(s) for s in sequences], dtype=np.int64)}
        if states is not None:
            arrays["states"] = np.concatenate([np.asarray(z) for z in states])
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return
    with io.open(path, "w", encoding="utf-8") as f:
        f.write(format_features(sequences, "," if path.endswith(".csv") else "\t"))


_MISSING = frozenset(("", "nan", "na", "n/a"))


def _separator(lines):
    """The separator of numeric rows: tab or comma when the first data line has one, else None (whitespace)."""
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return "\t" if "\t" in line else "," if "," in line else None
    return None


def _is_header(fields):
    """A line of names: no field is a number (and not all are missing-value marks)."""
    def number(f):
        try:
            float(f)
            return True
        except ValueError:
            return False
    return not any(number(f) for f in fields) and not all(f.lower() in _MISSING for f in fields)


def _value(field, path, number, column):
    if field.lower() in _MISSING:
        return math.nan
    try:
        value = float(field)
    except ValueError:
        raise DataError(f"{_name(path)}, line {number}, column {column}: {field!r} is not a number "
                        f"(a header of names is allowed on the first line only)") from None
    if math.isinf(value):
        raise DataError(f"{_name(path)}, line {number}, column {column}: {field!r} is not a finite number "
                        f"(leave the field empty or write NA for a missing value)")
    return value


def _read_feature_arrays(path):
    X, lengths = _load_arrays(path)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.dtype.kind not in "iuf" or X.shape[1] == 0:
        raise DataError(f"{path}: X must hold numbers of shape (n_samples, n_features) or (n_samples,), "
                        f"got {X.dtype} of shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"{path}: no sequence in it (X is empty)")
    X = X.astype(np.float64)
    nan = np.isnan(X)
    bad = np.flatnonzero(np.isinf(X).any(axis=1) | (nan.any(axis=1) & ~nan.all(axis=1)))
    if len(bad):
        raise DataError(f"{path}: row {int(bad[0])} of X has an infinite value or is NaN in some but not all "
                        f"columns (a missing observation is a row of NaN)")
    return _split_lengths(path, X, lengths)


def _ints(line, path, number):
    values = []
    for column, word in enumerate(line.split(), start=1):
        try:
            values.append(int(word))
        except ValueError:
            raise DataError(f"{_name(path)}, line {number}, token {column}: {word!r} is not an integer "
                            f"(--tokens ints); use --tokens chars or words for text") from None
    return np.array(values, dtype=np.int64)


def _read_text(path, arrays):
    """The whole text of ``path`` (or standard input for "-"); DataError when it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.read()
        with io.open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        f"for {arrays} use a .npy/.npz file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None


def _load_arrays(path):
    """(X, lengths or None) of a .npy (X only) or .npz (X, optional lengths) file."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable NumPy file ({exc})") from None
    if isinstance(data, np.ndarray):
        return np.asarray(data), None
    with data:
        if "X" not in data.files:
            raise DataError(f"{path}: a .npz data file needs an array X (and optionally lengths), "
                            f"it has {data.files}")
        return np.asarray(data["X"]), (data["lengths"] if "lengths" in data.files else None)


def _split_lengths(path, X, lengths):
    """X cut into its sequences by ``lengths`` (None: X is one sequence); empty ones dropped."""
    if lengths is None:
        return [X]
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or lengths.sum() != len(X):
        raise DataError(f"{path}: lengths must be non-negative integers summing to len(X) = {len(X)}")
    return [s for s in np.split(X, np.cumsum(lengths)[:-1]) if len(s)]


def _read_arrays(path):
    X, lengths = _load_arrays(path)
    if X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 1 or X.dtype.kind not in "iu":
        raise DataError(f"{path}: X must hold integer codes of shape (n_samples,) or (n_samples, 1), "
                        f"got {X.dtype} of shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"{path}: no sequence in it (X is empty)")
    return _split_lengths(path, X, lengths)


def _name(path):
    return "standard input" if path == "-" else path
