"""The hmmop command line against the Python API.

The fitted model every test reads is made by `python -m hmmop fit` in a subprocess, as a user
runs it (and the help test runs the console script); the other commands run in this process
through cli.main, as the console script calls it, with their own stdin, stdout and stderr
(a subprocess costs ~2 s of importing MXNet each)."""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from hmmop import HMM
from hmmop.cli.files import read_sequences, with_vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def hmmop_process(*args):
    """(status, stdout, stderr) of `python -m hmmop ARGS` in a subprocess."""
    run = subprocess.run([sys.executable, "-m", "hmmop", *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    return run.returncode, run.stdout, run.stderr


def hmmop(*args, stdin=None, cwd=None):
    """(status, stdout, stderr) of `hmmop ARGS` run in this process (cli.main; argparse's errors exit)."""
    from hmmop import cli
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with mock.patch.object(sys, "stdin", io.StringIO(stdin or "")), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main([str(a) for a in args])
            except SystemExit as exit:
                status = exit.code
    finally:
        os.chdir(here)
    return status, out.getvalue(), err.getvalue()


def png_size(path):
    """(width, height) of a PNG file, checking its signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 3-state model of the README's characters, fitted by the command line."""
    d = tmp_path_factory.mktemp("cli")
    model, curve = d / "readme.npz", d / "curve.png"
    status, out, err = hmmop_process("fit", README, "--states", 3, "--epochs", 25, "--seed", 0, "--out", model,
                                     "--plot", curve)
    assert status == 0, err
    return dict(dir=d, model=str(model), curve=str(curve), err=err)


def readme_sequences(model):
    sequences, _, lines = read_sequences(README, "chars")
    return with_vocabulary(sequences, lines, model.symbols)


def test_fit_reports_and_writes_the_model(fitted):
    assert "per symbol" in fitted["err"] and f"model written to {fitted['model']}" in fitted["err"]
    model = HMM.load(fitted["model"])
    assert model.n_states == 3 and model.tokens == "chars"
    sequences = readme_sequences(model)
    assert sorted({c for s in sequences for c in s}) == model.symbols
    reported = float(fitted["err"].split("log-likelihood ")[1].split(" per symbol")[0])
    n = sum(len(s) for s in sequences)
    assert reported == pytest.approx(model.score(sequences) / n, abs=1e-6)
    width, height = png_size(fitted["curve"])
    assert width > 300 and height > 200


def test_score_equals_the_python_api(fitted):
    model = HMM.load(fitted["model"])
    expected = model.score_sequences(readme_sequences(model))
    status, out, err = hmmop("score", fitted["model"], README)
    assert status == 0, err
    np.testing.assert_array_equal([float(x) for x in out.split()], expected)
    assert "total log-likelihood" in err
    status, out, _ = hmmop("score", fitted["model"], README, "--json")
    result = json.loads(out)
    np.testing.assert_array_equal(result["log_likelihoods"], expected)
    assert result["total"] == pytest.approx(expected.sum(), rel=1e-12)


def test_decode_equals_the_python_api(fitted):
    model = HMM.load(fitted["model"])
    sequences = readme_sequences(model)
    _, paths = model.decode(sequences)
    plot = fitted["dir"] / "states.png"
    status, out, err = hmmop("decode", fitted["model"], README, "--plot", plot, "--sequence", 2)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths):
        assert [int(s) for s in line.split()] == path.tolist()
    width, height = png_size(plot)
    assert width > 300 and height > 200


def test_decode_posteriors_tsv(fitted):
    model = HMM.load(fitted["model"])
    sequences = readme_sequences(model)[:3]
    short = fitted["dir"] / "three.txt"
    short.write_text("\n".join("".join(s) for s in sequences) + "\n", encoding="utf-8")
    status, out, err = hmmop("decode", fitted["model"], short, "--posteriors")
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split("\t") == ["sequence", "step", "symbol", "viterbi", "state_0", "state_1", "state_2"]
    assert len(rows) == sum(len(s) for s in sequences)
    gamma = np.concatenate(model.predict_proba(sequences))
    got = np.array([[float(x) for x in r.split("\t")[4:]] for r in rows])
    np.testing.assert_allclose(got, gamma, rtol=1e-5, atol=1e-6)


def test_sample_writes_text_like_the_data(fitted):
    model = HMM.load(fitted["model"])
    status, out, err = hmmop("sample", fitted["model"], "--n", 4, "--length", 50, "--seed", 7)
    assert status == 0, err
    expected, _ = model.sample(4, 50, seed=7)
    assert out.splitlines() == ["".join(s) for s in expected]


def test_info_shows_the_model(fitted, tmp_path):
    model = HMM.load(fitted["model"])
    plot = tmp_path / "emissions.png"
    status, out, err = hmmop("info", fitted["model"], "--plot", plot)
    assert status == 0, err
    fields = dict(line.split("\t", 1) for line in out.splitlines())
    assert fields["states"] == "3" and fields["symbols"] == str(model.n_symbols)
    assert fields["tokens"] == "chars" and fields["dtype"] == "float32"
    row = [float(x) for x in fields["from 1"].split("\t")]
    np.testing.assert_allclose(row, model.A[1], atol=1e-4)
    top = fields["state 0 emits"].split("  ")[0].rsplit(" ", 1)
    assert float(top[1]) == pytest.approx(model.B[0].max(), abs=1e-3)
    assert png_size(plot)[0] > 300


def test_unknown_tokens(fitted, tmp_path):
    data = tmp_path / "new.txt"
    data.write_text("the model\n\nnever saw \x07 this\n", encoding="utf-8")
    status, out, err = hmmop("score", fitted["model"], data)
    assert status == 1 and out == ""
    assert "line 3, column 11" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    model = HMM.load(fitted["model"])
    for unknown, row in (("skip", list("never saw  this")), ("missing", list("never saw ") + [None] + list(" this"))):
        status, out, err = hmmop("score", fitted["model"], data, "--unknown", unknown)
        assert status == 0, err
        expected = model.score_sequences([list("the model"), row])
        np.testing.assert_array_equal([float(x) for x in out.split()], expected)


def test_integer_codes_and_stdin(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, 300)
    data = tmp_path / "codes.npz"
    np.savez(data, X=X.reshape(-1, 1), lengths=[100, 150, 50])
    model = tmp_path / "codes.hmmop.npz"
    status, _, err = hmmop("fit", data, "--states", 2, "--method", "em", "--epochs", 10, "--seed", 1,
                           "--out", model)
    assert status == 0, err
    fitted = HMM.load(str(model))
    assert fitted.symbols is None and fitted.n_symbols == 4 and fitted.tokens == "ints"
    text = "\n".join(" ".join(map(str, s)) for s in (X[:100], X[100:250], X[250:])) + "\n"
    status, out, err = hmmop("score", model, "-", stdin=text)
    assert status == 0, err
    np.testing.assert_array_equal([float(x) for x in out.split()],
                                  fitted.score_sequences(X, lengths=[100, 150, 50]))
    status, out, _ = hmmop("sample", model, "--n", 2, "--length", 6, "--seed", 3)
    assert [line.split() for line in out.splitlines()] == \
        [[str(v) for v in s] for s in fitted.sample(2, 6, seed=3)[0]]


@pytest.mark.parametrize("args,status,message", [
    (["fit", "no-such-file.txt", "--states", 2], 1, "no-such-file.txt: no such file"),
    (["fit", README, "--states", 0], 2, "expected a positive integer"),
    (["fit", README, "--states", 2, "--lr", "-1"], 2, "expected a positive finite number"),
    (["fit", README, "--states", 2, "--tokens", "bytes"], 2, "invalid choice"),
    (["fit", README], 2, "--states"),
    (["score", README, README], 1, "is not an hmmop model file"),
    (["score", "missing-model.npz", README], 1, "missing-model.npz: no such model file"),
    (["sample", "missing-model.npz"], 1, "no such model file"),
])
def test_user_mistakes_are_one_clear_line(args, status, message):
    got, _, err = hmmop(*args)
    assert got == status, err
    assert message in err and "Traceback" not in err


def test_empty_file_and_existing_output(tmp_path, fitted):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    status, _, err = hmmop("fit", empty, "--states", 2, "--out", tmp_path / "m.npz")
    assert status == 1 and "no sequence" in err and "Traceback" not in err
    status, _, err = hmmop("fit", README, "--states", 2, "--out", fitted["model"])
    assert status == 2 and "exists; add --force" in err
    before = os.path.getmtime(fitted["model"])
    status, _, err = hmmop("info", fitted["model"], "--plot", fitted["curve"])
    assert status == 2 and "exists" in err and os.path.getmtime(fitted["model"]) == before


def test_help_has_an_example_for_every_command(capsys):
    from hmmop import cli
    for command in ("fit", "score", "decode", "sample", "info", "bench"):     # in this process: argparse's help
        with pytest.raises(SystemExit) as exit:
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert exit.value.code == 0 and "example:" in out and f"hmmop {command}" in out
    script = os.path.join(os.path.dirname(sys.executable), "hmmop")      # the console_scripts entry point
    run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "fit" in run.stdout


def test_bench_quick_prints_its_tables(tmp_path):
    plot = tmp_path / "bench.png"
    status, out, err = hmmop("bench", "--quick", "--plot", plot)
    assert status == 0, err
    assert "unroll" in out and "hmmlearn" in out and "x" in out
    assert png_size(plot)[0] > 300


def test_plot_without_matplotlib_fails_before_the_work(tmp_path, fitted, monkeypatch):
    """--plot without matplotlib: one line with the install hint, before fitting (or decoding), and no
    model written; matplotlib is made unimportable as on a machine without it."""
    from hmmop import GaussianHMM
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # `import matplotlib` now fails
    hint = "plots need matplotlib: pip install 'hmmop[plot]'"
    numbers = tmp_path / "walk.csv"
    numbers.write_text("1,2\n3,4\n5,6\n\n7,8\n9,10\n", encoding="utf-8")
    with mock.patch.object(HMM, "fit", side_effect=AssertionError("fitted")) as hmm_fit, \
            mock.patch.object(GaussianHMM, "fit", side_effect=AssertionError("fitted")) as gaussian_fit, \
            mock.patch.object(HMM, "decode", side_effect=AssertionError("decoded")) as decode:
        for args in (["fit", README, "--states", 2], ["fit", numbers, "--emissions", "gaussian", "--states", 2]):
            status, out, err = hmmop(*args, "--plot", tmp_path / "curve.png", "--out", tmp_path / "m.npz")
            assert status == 1 and out == ""
            assert err == f"hmmop fit: error: {hint}\n"
        status, out, err = hmmop("decode", fitted["model"], README, "--plot", tmp_path / "states.png")
        assert status == 1 and out == "" and err == f"hmmop decode: error: {hint}\n"
        status, out, err = hmmop("info", fitted["model"], "--plot", tmp_path / "emissions.png")
        assert status == 1 and out == "" and err == f"hmmop info: error: {hint}\n"
    assert not hmm_fit.called and not gaussian_fit.called and not decode.called
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.csv"]
