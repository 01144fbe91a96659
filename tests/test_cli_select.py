"""`hmmop select`: the number of states chosen on the command line, against hmmop.select.

Everything runs in this process through cli.main (tests/test_cli.py's hmmop helper): the printed table
and --json against hmmop.select on the same sequences and options, --out against Selection.best (and
read back by hmmop.load and `hmmop score`), --plot's PNG, --states' forms and errors; Gaussian models of
numeric rows (--emissions gaussian) against hmmop.select(family=GaussianHMM), and the errors for numeric rows
read as symbols."""
import argparse
import json
import os
import sys
from unittest import mock

import numpy as np
import pytest

import hmmop
from hmmop.cli import commands

from test_cli import hmmop as run
from test_cli import png_size

SYMBOLS = list("abcd")


def _sample_text(seed=0, n=24):
    """Lines of characters from a 3-regime HMM (each regime prefers one or two letters)."""
    model = hmmop.HMM.from_probabilities(
        [[0.85, 0.1, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]],
        [[0.7, 0.2, 0.05, 0.05], [0.05, 0.05, 0.45, 0.45], [0.25, 0.25, 0.25, 0.25]], [0.4, 0.3, 0.3],
        symbols=SYMBOLS, dtype="float64")
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n):
        seqs, _ = model.sample(1, int(rng.integers(20, 60)), seed=seed * 1000 + k)
        lines.append("".join(seqs[0]))
    return lines


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("select")
    lines = _sample_text()
    path = d / "regimes.txt"
    path.write_text("\n".join(lines[:12]) + "\n\n" + "\n".join(lines[12:]) + "\n", encoding="utf-8")  # a blank line
    return dict(dir=d, path=str(path), sequences=[list(line) for line in lines])


def _table(out):
    """{N: (params, loglik, aic, bic)} and the chosen N of select's printed output."""
    lines = out.splitlines()
    assert lines[0].split() == ["states", "params", "loglik", "AIC", "BIC"]
    rows, marked = {}, []
    for line in lines[1:-1]:
        fields = line.split()
        rows[int(fields[0])] = (int(fields[1]), float(fields[2]), float(fields[3]), float(fields[4]))
        if "<-" in fields:
            marked.append(int(fields[0]))
    assert lines[-1].startswith("chosen: ")
    chosen = int(lines[-1].split()[1])
    assert marked == [chosen]
    return rows, chosen


def test_table_equals_hmmop_select(text):
    status, out, err = run("select", text["path"], "--states", "2..4", "--n-init", 3, "--epochs", 30, "--seed", 5)
    assert status == 0, err
    expected = hmmop.select(text["sequences"], states=range(2, 5), symbols=SYMBOLS, n_init=3, epochs=30, seed=5)
    rows, chosen = _table(out)
    assert sorted(rows) == [2, 3, 4] and chosen == expected.best_n_states
    for i, n in enumerate(expected.states):
        params, ll, aic, bic = rows[n]
        assert params == expected.n_parameters[i]
        np.testing.assert_allclose([ll, aic, bic], [expected.loglik[i], expected.aic[i], expected.bic[i]],
                                   rtol=0, atol=5e-4)       # printed with 3 decimals
    assert out.splitlines()[-1] == f"chosen: {chosen} states (smallest BIC)"
    assert out == expected.table() + f"\nchosen: {chosen} states (smallest BIC)\n"
    assert "fitting 3 models (2..4 states) to 24 sequences" in err and "9 EM fits" in err


def test_json_equals_hmmop_select(text):
    """--json: exact values; a comma list keeps its order (N states use seed + N, as hmmop.select)."""
    status, out, err = run("select", text["path"], "--states", "4,1,2", "--n-init", 2, "--epochs", 15, "--seed", 3,
                           "--criterion", "aic", "--tol", "1e-4", "--json")
    assert status == 0, err
    got = json.loads(out)
    expected = hmmop.select(text["sequences"], states=[4, 1, 2], symbols=SYMBOLS, n_init=2, epochs=15, seed=3,
                            tol=1e-4, criterion="aic")
    assert got["states"] == [4, 1, 2] and got["criterion"] == "aic"
    assert got["chosen"] == expected.best_n_states
    for key in ("loglik", "aic", "bic", "n_parameters"):
        np.testing.assert_array_equal(got[key], getattr(expected, key), err_msg=key)
    assert got["chosen"] == got["states"][int(np.argmin(got["aic"]))]
    status, out, err = run("select", text["path"], "--states", "1..3", "--n-init", 1, "--epochs", 10, "--seed", 0,
                           "--criterion", "loglik", "--json")
    assert status == 0, err
    got = json.loads(out)
    assert got["chosen"] == got["states"][int(np.argmax(got["loglik"]))]


def test_out_is_the_best_model(text):
    out_path = text["dir"] / "best.hmmop.npz"
    status, out, err = run("select", text["path"], "--states", "2..3", "--n-init", 2, "--epochs", 20, "--seed", 1,
                           "--out", out_path)
    assert status == 0, err
    expected = hmmop.select(text["sequences"], states=[2, 3], symbols=SYMBOLS, n_init=2, epochs=20, seed=1)
    model = hmmop.load(str(out_path))
    best = expected.best
    assert isinstance(model, hmmop.HMM) and model.n_states == expected.best_n_states
    assert model.symbols == SYMBOLS and model.tokens == "chars" and model.dtype == np.float32
    for name in ("A", "B", "pi"):
        np.testing.assert_allclose(getattr(model, name), getattr(best, name), rtol=1e-6, atol=1e-7, err_msg=name)
    assert f"model with {model.n_states} states written to {out_path}" in err
    status, scored, err = run("score", out_path, text["path"])      # score reads it as fit's models
    assert status == 0, err
    np.testing.assert_allclose([float(x) for x in scored.split()], model.score_sequences(text["sequences"]))
    before = os.path.getmtime(out_path)                               # no overwrite without --force
    status, out, err = run("select", text["path"], "--states", "2", "--n-init", 1, "--epochs", 2, "--out", out_path)
    assert status == 2 and out == "" and "exists; add --force" in err
    assert os.path.getmtime(out_path) == before
    status, _, err = run("select", text["path"], "--states", "2", "--n-init", 1, "--epochs", 2, "--seed", 0,
                         "--out", out_path, "--force")
    assert status == 0, err
    assert hmmop.load(str(out_path)).n_states == 2


def test_integer_codes(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.integers(0, 5, 240)
    lengths = [90, 100, 50]
    data = tmp_path / "codes.npz"
    np.savez(data, X=X.reshape(-1, 1), lengths=lengths)
    out_path = tmp_path / "best.npz"
    status, out, err = run("select", data, "--states", "2,3", "--n-init", 2, "--epochs", 10, "--seed", 2,
                           "--json", "--out", out_path)
    assert status == 0, err
    expected = hmmop.select(X, states=[2, 3], n_symbols=5, lengths=lengths, n_init=2, epochs=10, seed=2)
    got = json.loads(out)
    np.testing.assert_array_equal(got["bic"], expected.bic)
    model = hmmop.load(str(out_path))
    assert model.symbols is None and model.tokens == "ints" and model.n_symbols == 5
    np.testing.assert_allclose(model.B, expected.best.B, rtol=1e-6, atol=1e-7)


def test_plot_is_a_png(text):
    pytest.importorskip("matplotlib")
    plot = text["dir"] / "criteria.png"
    status, out, err = run("select", text["path"], "--states", "1..3", "--n-init", 1, "--epochs", 10, "--seed", 0,
                           "--plot", plot)
    assert status == 0, err
    width, height = png_size(plot)
    assert width > 300 and height > 200
    assert f"written to {plot}" in err
    status, _, err = run("select", text["path"], "--states", "2", "--plot", plot)
    assert status == 2 and "exists; add --force" in err


def test_plot_without_matplotlib_fails_before_the_fits(text, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with mock.patch.object(commands, "select_models", side_effect=AssertionError("fitted")) as fits:
        status, out, err = run("select", text["path"], "--states", "2..3", "--plot", tmp_path / "c.png",
                               "--out", tmp_path / "m.npz")
    assert status == 1 and out == ""
    assert err == "hmmop select: error: plots need matplotlib: pip install 'hmmop[plot]'\n"
    assert not fits.called and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text_, expected", [
    ("2..8", [2, 3, 4, 5, 6, 7, 8]), ("3..3", [3]), ("1..2", [1, 2]), (" 2 .. 4 ", [2, 3, 4]),
    ("2,3,5", [2, 3, 5]), ("5,2", [5, 2]), ("4", [4]),
])
def test_states_forms(text_, expected):
    assert commands._states_list(text_) == expected


@pytest.mark.parametrize("value, message", [
    ("5..2", "an empty range (2 < 5)"), ("0..3", "must be >= 1"), ("0", "must be >= 1"), ("2,0", "must be >= 1"),
    ("2..", "expected a range A..B"), ("a..b", "expected a range A..B"), ("2,x", "expected a range A..B"),
    ("2-5", "expected a range A..B"), ("", "expected a range A..B"), ("2..5..7", "expected a range A..B"),
    ("2,3,2", "2 given more than once"), ("2.5", "expected a range A..B"),
])
def test_states_errors(text, value, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        commands._states_list(value)
    status, out, err = run("select", text["path"], f"--states={value}")
    assert status == 2 and out == ""
    assert "hmmop select: error: argument --states" in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--tokens", "words"], []])
def test_states_required(text, args):
    status, _, err = run("select", text["path"], *args)
    assert status == 2 and "--states" in err


def test_numeric_rows_need_emissions_gaussian(tmp_path):
    """Numeric rows read as categorical data are an error pointing at --emissions gaussian."""
    rows = tmp_path / "walk.csv"
    rows.write_text("speed,turn\n0.1,0.2\n3.2,1.1\n\n6.1,-0.5\n", encoding="utf-8")
    floats = tmp_path / "walk.npz"
    np.savez(floats, X=np.random.default_rng(0).normal(size=(30, 2)), lengths=[10, 20])
    for path in (rows, floats):
        status, out, err = run("select", path, "--states", "2..3")
        assert status == 1 and out == "", err
        assert err.startswith(f"hmmop select: error: {path}: ") and "--emissions gaussian" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    status, out, err = run("select", rows, "--states", "2", "--tokens", "chars", "--n-init", 1, "--epochs", 2)
    assert status == 0, err         # its text, when asked for explicitly
    status, _, err = run("select", rows, "--states", "2", "--covariance", "full")
    assert status == 2 and "--covariance applies to --emissions gaussian" in err
    status, _, err = run("select", rows, "--states", "2", "--emissions", "gaussian", "--tokens", "words")
    assert status == 2 and "--tokens applies to --emissions categorical" in err
    status, _, err = run("select", tmp_path / "missing.txt", "--states", "2")
    assert status == 1 and "no such file" in err


def test_select_gaussian_numeric_rows_as_hmmop_select(tmp_path):
    """--emissions gaussian: the table and --json are hmmop.select(family=GaussianHMM)'s on the same rows;
    --out writes the chosen GaussianHMM."""
    rng = np.random.default_rng(3)
    truth = np.repeat(rng.integers(0, 3, 30), 10)
    X = np.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 4.0]])[truth] + 0.8 * rng.normal(size=(300, 2))
    path = tmp_path / "rows.npz"
    np.savez(path, X=X, lengths=[150, 150])
    out_model = tmp_path / "best.npz"
    args = ["--states", "1..4", "--seed", "0", "--n-init", 2, "--epochs", 20, "--dtype", "float64"]
    status, out, err = run("select", path, "--emissions", "gaussian", "--covariance", "diag", *args, "--json",
                           "--out", out_model)
    assert status == 0, err
    got = json.loads(out)
    sel = hmmop.select([X[:150], X[150:]], range(1, 5), n_init=2, epochs=20, seed=0, family=hmmop.GaussianHMM,
                       n_features=2, covariance_type="diag", dtype="float64")
    assert got["states"] == [1, 2, 3, 4] and got["chosen"] == sel.best_n_states == 3
    np.testing.assert_array_equal(got["bic"], sel.bic)
    np.testing.assert_array_equal(got["loglik"], sel.loglik)
    best = hmmop.load(str(out_model))
    assert isinstance(best, hmmop.GaussianHMM) and best.n_states == 3
    np.testing.assert_array_equal(best.means, sel.best.means)
    status, out, err = run("select", path, "--emissions", "gaussian", *args)
    assert status == 0 and "chosen: 3 states" in out and "observations of 2 features" in err


def test_help_names_both_families():
    status, out, _ = run("select", "--help")
    assert status == 0 and "example:" in out and "hmmop select" in out
    assert "--emissions gaussian" in " ".join(out.split()) and "--covariance" in out
