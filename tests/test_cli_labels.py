"""The command line's --labels FILE (fit, score, decode): known states of some steps, one line per sequence.

Against the Python API (decode/score_sequences with labels=), the supervised counts computed here with
NumPy (fit --labels, fully labelled, one EM iteration), and the errors' messages (file, line, entry).
Everything runs in this process through cli.main (tests/test_cli.py's hmmop helper)."""
import json
import re

import numpy as np
import pytest

from hmmop import HMM, GaussianHMM

from test_cli import hmmop as run

SYMBOLS = list("abc")
LINES = ["abcabca", "bbacc", "cabbac"]
SEQS = [list(line) for line in LINES]      # (the API takes a sequence of tokens)


def _encoded(lines=LINES):
    index = {s: k for k, s in enumerate(SYMBOLS)}
    return [np.array([index[c] for c in line]) for line in lines]


def _labels_text(labels, blank=False):
    """A labels file: one line per sequence, '-' for unknown (blank and comment lines between, if asked)."""
    rows = [" ".join("-" if k < 0 else str(k) for k in lab) for lab in labels]
    return ("# states\n\n" + "\n\n".join(rows) + "\n\n") if blank else "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def categorical(tmp_path_factory):
    d = tmp_path_factory.mktemp("labels")
    model = HMM.from_probabilities([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.25, 0.25, 0.5]],
                                   [[0.6, 0.3, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]], [0.5, 0.3, 0.2],
                                   symbols=SYMBOLS, tokens="chars", dtype="float64")
    path = d / "model.hmmop.npz"
    model.save(str(path))
    data = d / "data.txt"
    data.write_text("\n".join(LINES[:2]) + "\n\n" + LINES[2] + "\n", encoding="utf-8")   # a blank line: skipped
    model = HMM.load(str(path))
    _, free = model.decode(SEQS)
    # labels that contradict the free Viterbi path at a few steps, unknown elsewhere
    labels = [np.full(len(p), -1) for p in free]
    for lab, p, steps in zip(labels, free, ([1, 4], [0], [2, 5])):
        lab[steps] = (p[steps] + 1) % 3
    return dict(dir=d, model=str(path), data=str(data), python=model, labels=labels)


def _write(categorical, name, text):
    path = categorical["dir"] / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_decode_with_labels_is_the_forced_alignment(categorical):
    labels = _write(categorical, "labels.txt", _labels_text(categorical["labels"], blank=True))
    status, out, err = run("decode", categorical["model"], categorical["data"], "--labels", labels)
    assert status == 0, err
    paths = [np.array(line.split(), dtype=int) for line in out.splitlines()]
    model = categorical["python"]
    _, expected = model.decode(SEQS, labels=categorical["labels"])
    _, free = model.decode(SEQS)
    assert len(paths) == 3
    for path, want, lab, unconstrained in zip(paths, expected, categorical["labels"], free):
        np.testing.assert_array_equal(path, want)
        known = lab >= 0
        np.testing.assert_array_equal(path[known], lab[known])
        assert (path[known] != unconstrained[known]).all()      # the labels changed the path there
    # --posteriors: P(state | sequence, labels); 1 at the labelled state
    status, out, err = run("decode", categorical["model"], categorical["data"], "--labels", labels, "--posteriors")
    assert status == 0, err
    rows = [line.split("\t") for line in out.splitlines()[1:]]
    gamma = np.concatenate(model.predict_proba(SEQS, labels=categorical["labels"]))
    np.testing.assert_allclose(np.array([r[4:] for r in rows], dtype=float), gamma, rtol=1e-5, atol=1e-8)
    flat = np.concatenate(categorical["labels"])
    np.testing.assert_allclose(gamma[flat >= 0, flat[flat >= 0]], 1.0)


def test_score_with_labels_prints_log_p_of_sequence_and_labels(categorical):
    labels = _write(categorical, "labels.txt", _labels_text(categorical["labels"]))
    status, out, err = run("score", categorical["model"], categorical["data"], "--labels", labels)
    assert status == 0, err
    got = np.array([float(x) for x in out.split()])
    model = categorical["python"]
    np.testing.assert_array_equal(got, model.score_sequences(SEQS, labels=categorical["labels"]))
    assert (got < model.score_sequences(SEQS)).all()
    assert "log P(data, labels)" in err
    status, out, _ = run("score", categorical["model"], categorical["data"], "--labels", labels, "--json")
    assert status == 0
    assert json.loads(out)["log_likelihoods"] == model.score_sequences(SEQS, labels=categorical["labels"]).tolist()


def test_score_json_writes_an_impossible_sequence_as_null(categorical):
    """JSON has no infinities: log P = -inf (labels no path agrees with) comes out as null, valid JSON."""
    model = HMM.from_probabilities([[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], [0.5, 0.5],
                                   symbols=SYMBOLS, tokens="chars", dtype="float64", keep_zeros=True)
    path = str(categorical["dir"] / "zeros.hmmop.npz")
    model.save(path)
    data = _write(categorical, "two.txt", "abc\nbca\n")
    labels = _write(categorical, "impossible.txt", "- - -\n0 - -\n")     # state 0 cannot emit 'b'
    status, out, err = run("score", path, data, "--labels", labels, "--json")
    assert status == 0, err

    def strict(name):
        raise AssertionError(f"not JSON: {name}")
    result = json.loads(out, parse_constant=strict)
    expected = model.score_sequences([list("abc"), list("bca")], labels=[[-1, -1, -1], [0, -1, -1]])
    assert np.isfinite(expected[0]) and expected[1] == -np.inf
    assert result["log_likelihoods"] == [expected[0], None] and result["total"] is None


def _supervised_counts(states, symbols, n_symbols, N=3):
    """(pi, A, B) by counting fully labelled sequences (B from symbol counts)."""
    pi, A, B = np.zeros(N), np.zeros((N, N)), np.zeros((N, n_symbols))
    for z, x in zip(states, symbols):
        pi[z[0]] += 1
        np.add.at(A, (z[:-1], z[1:]), 1)
        np.add.at(B, (z, x), 1)
    return (pi / pi.sum(), A / A.sum(axis=1, keepdims=True), B / B.sum(axis=1, keepdims=True))


FULL = [np.array([0, 0, 1, 2, 2, 1, 0]), np.array([1, 1, 0, 2, 0]), np.array([2, 1, 1, 0, 0, 2])]


@pytest.mark.parametrize("n_init", (1, 2))
def test_fit_em_one_epoch_on_fully_labelled_data_gives_the_counts(categorical, n_init):
    labels = _write(categorical, "full.txt", _labels_text(FULL))
    out = str(categorical["dir"] / f"fitted{n_init}.npz")
    status, _, err = run("fit", categorical["data"], "--states", 3, "--labels", labels, "--method", "em",
                         "--epochs", 1, "--dtype", "float64", "--seed", 1, "--n-init", n_init, "--out", out)
    assert status == 0, err
    assert "18 of 18 steps labelled" in err
    model = HMM.load(out)
    assert model.symbols == SYMBOLS and model.tokens == "chars"
    pi, A, B = _supervised_counts(FULL, _encoded(), 3)
    np.testing.assert_allclose(model.pi, pi, atol=1e-12)
    np.testing.assert_allclose(model.A, A, atol=1e-12)
    np.testing.assert_allclose(model.B, B, atol=1e-12)


def test_fit_gradient_with_labels_climbs_log_p_of_data_and_labels(categorical):
    labels = _write(categorical, "full.txt", _labels_text(FULL))
    out = str(categorical["dir"] / "gradient.npz")
    status, _, err = run("fit", categorical["data"], "--states", 3, "--labels", labels, "--method", "gradient",
                         "--epochs", 300, "--lr", 0.1, "--dtype", "float64", "--seed", 0, "--tol", 0, "--out", out)
    assert status == 0, err
    model = HMM.load(out)
    pi, A, B = _supervised_counts(FULL, _encoded(), 3)       # the maximiser of log P(data, labels)
    np.testing.assert_allclose(model.A, A, atol=0.05)
    np.testing.assert_allclose(model.B, B, atol=0.05)


def _gaussian_files(d):
    rng = np.random.default_rng(0)
    states = [np.array([0, 0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 1])]
    X = [rng.normal(size=(len(z), 2)) + 5.0 * z[:, None] for z in states]
    data = d / "walk.csv"
    data.write_text("x,y\n" + "\n\n".join("\n".join(f"{a!r},{b!r}" for a, b in seq) for seq in X) + "\n",
                    encoding="utf-8")
    return X, states, str(data)


@pytest.mark.parametrize("method", ("em", "gradient"))
def test_fit_gaussian_with_labels(tmp_path, method):
    X, states, data = _gaussian_files(tmp_path)
    labels = tmp_path / "states.txt"
    labels.write_text(_labels_text(states, blank=True), encoding="utf-8")
    out = str(tmp_path / "g.npz")
    epochs = 1 if method == "em" else 400
    status, _, err = run("fit", data, "--emissions", "gaussian", "--states", 2, "--labels", labels, "--method",
                         method, "--epochs", epochs, "--dtype", "float64", "--seed", 0, "--tol", 0, "--out", out)
    assert status == 0, err
    model = GaussianHMM.load(out)
    rows, z = np.concatenate(X), np.concatenate(states)
    means = np.array([rows[z == i].mean(axis=0) for i in range(2)])
    pi = np.bincount([s[0] for s in states], minlength=2) / 2
    A = np.zeros((2, 2))
    for s in states:
        np.add.at(A, (s[:-1], s[1:]), 1)
    A /= A.sum(axis=1, keepdims=True)
    tol = 1e-12 if method == "em" else 0.1
    np.testing.assert_allclose(model.means, means, atol=tol)
    np.testing.assert_allclose(model.A, A, atol=tol)
    if method == "em":
        np.testing.assert_allclose(model.pi, pi, atol=tol)
    # score and decode of the Gaussian model with labels, against the Python API
    partial = [np.where(np.arange(len(s)) % 2 == 0, s, -1) for s in states]
    labels.write_text(_labels_text(partial), encoding="utf-8")
    status, printed, err = run("score", out, data, "--labels", labels)
    assert status == 0, err
    np.testing.assert_array_equal([float(x) for x in printed.split()], model.score_sequences(X, labels=partial))
    status, printed, err = run("decode", out, data, "--labels", labels)
    assert status == 0, err
    for line, want in zip(printed.splitlines(), model.decode(X, labels=partial)[1]):
        np.testing.assert_array_equal(np.array(line.split(), dtype=int), want)


def test_unknown_skip_drops_the_labels_of_skipped_tokens(categorical):
    data = _write(categorical, "unknown.txt", "abzca\nbb\n")
    labels = _write(categorical, "unknown-labels.txt", "0 - 2 - 1\n- 2\n")
    status, out, err = run("decode", categorical["model"], data, "--labels", labels, "--unknown", "skip")
    assert status == 0, err
    kept = [np.array([0, -1, -1, 1]), np.array([-1, 2])]
    want = categorical["python"].decode([list("abca"), list("bb")], labels=kept)[1]
    assert [line.split() for line in out.splitlines()] == [[str(s) for s in w] for w in want]


@pytest.mark.parametrize("command", ("fit", "score", "decode"))
@pytest.mark.parametrize("text, message", [
    ("0 - 1 - - - -\n- - - - -\n", r"labels\.txt: 2 lines of labels, but \S*data\.txt has 3 sequences"),
    ("0 - 1 - - - -\n- - - - -\n- - -\n", r"labels\.txt, line 3: 3 entries, but sequence 2 of \S*data\.txt "
                                         r"\(line 4\) has 6 steps"),
    ("0 - 1 - - - -\n\n- - x - -\n- - - - - -\n", r"labels\.txt, line 3, entry 3: 'x' is not a state"),
    ("0 - 1 - - - -\n- - - - 3\n- - - - - -\n", r"labels\.txt, line 2, entry 5: state 3 is out of range: the "
                                               r"model has 3 states, 0\.\.2"),
    ("0 - -1 - - - -\n- - - - -\n- - - - - -\n", r"line 1, entry 3: state -1 is out of range.*write - for unknown"),
])
def test_bad_labels_files_name_the_file_line_and_entry(categorical, command, text, message):
    labels = _write(categorical, "labels.txt", text)
    if command == "fit":
        args = ("fit", categorical["data"], "--states", 3, "--out", categorical["dir"] / "never.npz")
    else:
        args = (command, categorical["model"], categorical["data"])
    status, out, err = run(*args, "--labels", labels)
    assert status == 1 and out == ""
    assert err.startswith(f"hmmop {command}: error: ")
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (categorical["dir"] / "never.npz").exists()


def test_labels_no_path_agrees_with(tmp_path):
    model = HMM.from_probabilities([[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]], [0.5, 0.5],
                                   symbols=["a", "b"], tokens="chars", keep_zeros=True, dtype="float64")
    path = str(tmp_path / "m.npz")
    model.save(path)
    data = tmp_path / "d.txt"
    data.write_text("ab\naab\n", encoding="utf-8")
    labels = tmp_path / "l.txt"
    labels.write_text("- -\n\n0 1 -\n", encoding="utf-8")            # state 0 never leaves
    status, out, err = run("decode", path, data, "--labels", labels)
    assert status == 1 and out == ""
    assert err.startswith(f"hmmop decode: error: {labels}, line 3: sequence 1, step 1: no transition"), err
    status, out, err = run("score", path, data, "--labels", labels)
    assert status == 0, err
    assert out.split()[1] == "-inf"
    assert "1 sequence with no state path" in err and "line 3" in err


def test_labels_and_data_both_from_stdin_is_a_usage_error(categorical):
    status, _, err = run("score", categorical["model"], "-", "--labels", "-", stdin="abc\n")
    assert status == 2 and "both read standard input" in err
    status, out, err = run("score", categorical["model"], "-", "--labels",
                           _write(categorical, "one.txt", "0 - 2\n"), stdin="abc\n")
    assert status == 0, err
    assert float(out) == categorical["python"].score_sequences([list("abc")], labels=[np.array([0, -1, 2])])[0]
