"""The command line on Gaussian models: numeric files read and written, fit, score, decode, sample,
info and their plots against the Python API (GaussianHMM), and clear errors for bad files.

Everything runs in this process through cli.main (tests/test_cli.py's hmmop helper)."""
import json
import sys

import numpy as np
import pytest

import hmmop
from hmmop import GaussianHMM
from hmmop.cli import plots
from hmmop.cli.files import DataError, format_features, read_features, write_features

from test_cli import hmmop as run, png_size


def regimes(seed, lengths, D=2, missing=()):
    """Sequences switching between two well-separated means every 10 steps; rows in ``missing``
    ((sequence, step) pairs) are NaN."""
    rng = np.random.default_rng(seed)
    out = []
    for b, T in enumerate(lengths):
        z = (np.arange(T) // 10) % 2
        X = rng.normal(size=(T, D)) + 4.0 * z[:, None]
        for s, t in missing:
            if s == b:
                X[t] = np.nan
        out.append(X)
    return out


def csv_text(sequences, header=None, sep=","):
    """The sequences as a user would write them: exact values, empty fields for a missing row."""
    lines = [sep.join(header)] if header else []
    for seq in sequences:
        lines += [sep.join("" if np.isnan(v) else repr(float(v)) for v in row) for row in seq]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("gauss")
    X = regimes(0, [40, 30, 25], missing=[(0, 5), (2, 0)])
    data = d / "walk.csv"
    data.write_text(csv_text(X, header=["speed", "height"]), encoding="utf-8")
    model, curve = d / "walk.hmmop.npz", d / "curve.png"
    status, out, err = run("fit", data, "--emissions", "gaussian", "--states", 2, "--seed", 0, "--epochs", 30,
                           "--out", model, "--plot", curve)
    assert status == 0, err
    return dict(dir=d, X=X, data=str(data), model=str(model), curve=str(curve), err=err)


def test_fit_writes_a_gaussian_model(fitted):
    model = hmmop.load(fitted["model"])
    assert isinstance(model, GaussianHMM)
    assert (model.n_states, model.n_features, model.covariance_type) == (2, 2, "diag")
    n = sum(len(x) for x in fitted["X"]) - 2                      # two missing rows
    assert f"{n} observations of 2 features (2 missing)" in fitted["err"]
    reported = float(fitted["err"].split("log-likelihood ")[1].split(" per observation")[0])
    assert reported == pytest.approx(model.score(fitted["X"]) / n, abs=1e-5)
    assert np.sort(model.means[:, 0]) == pytest.approx([0, 4], abs=0.6)     # the two regimes
    width, height = png_size(fitted["curve"])
    assert width > 300 and height > 200


def test_read_features_round_trips(tmp_path):
    X = regimes(1, [7, 1, 5], D=3, missing=[(0, 2), (2, 4)])
    for name in ("x.csv", "x.tsv", "x.txt", "x.npz"):
        write_features(str(tmp_path / name), X)
        got, names, lines = read_features(str(tmp_path / name))
        assert len(got) == 3 and names is None
        for a, b in zip(got, X):
            np.testing.assert_array_equal(a, b)                   # NaN rows equal too
        assert lines == (None if name.endswith(".npz") else [1, 9, 11])
    np.save(tmp_path / "one.npy", X[0])
    got, _, _ = read_features(str(tmp_path / "one.npy"))
    np.testing.assert_array_equal(got[0], X[0])
    # whitespace-separated, a header, comments, NA and "nan" marks, several blank lines, \r\n ends
    text = "# a comment\r\n  a  b \r\n1 2\r\nNA nan\r\n\r\n\r\n# between\r\n3 -4.5e1\r\n"
    (tmp_path / "w.txt").write_text(text, encoding="utf-8")
    got, names, lines = read_features(str(tmp_path / "w.txt"))
    assert names == ["a", "b"] and lines == [3, 8]
    np.testing.assert_array_equal(got[0], [[1, 2], [np.nan, np.nan]])
    np.testing.assert_array_equal(got[1], [[3, -45]])
    # tab-separated: a line of tabs is a missing row, not a blank line; one column: no separator
    (tmp_path / "t.tsv").write_text("1\t2\n\t\n3\t4\n", encoding="utf-8")
    np.testing.assert_array_equal(read_features(str(tmp_path / "t.tsv"))[0][0], [[1, 2], [np.nan] * 2, [3, 4]])
    assert format_features([np.array([[0.1], [2.0]]), np.array([[np.nan]])], ",") == "0.1\n2.0\n\nnan\n"


def test_score_equals_the_python_api(fitted):
    model = GaussianHMM.load(fitted["model"])
    expected = model.score_sequences(fitted["X"])
    status, out, err = run("score", fitted["model"], fitted["data"])
    assert status == 0, err
    np.testing.assert_array_equal([float(x) for x in out.split()], expected)
    status, out, _ = run("score", fitted["model"], fitted["data"], "--json")
    result = json.loads(out)
    np.testing.assert_array_equal(result["log_likelihoods"], expected)
    assert result["observations"] == 93 and result["total"] == pytest.approx(expected.sum(), rel=1e-12)
    # the same data from standard input, tab-separated without a header
    status, out, err = run("score", fitted["model"], "-", stdin=format_features(fitted["X"], "\t"))
    assert status == 0, err
    np.testing.assert_array_equal([float(x) for x in out.split()], expected)


def test_decode_equals_predict(fitted):
    model = GaussianHMM.load(fitted["model"])
    paths = model.predict(fitted["X"])
    plot = fitted["dir"] / "states.png"
    status, out, err = run("decode", fitted["model"], fitted["data"], "--plot", plot, "--sequence", 1)
    assert status == 0, err
    assert [[int(s) for s in line.split()] for line in out.splitlines()] == [p.tolist() for p in paths]
    width, height = png_size(plot)
    assert width > 300 and height > 500                          # values, posteriors and the Viterbi band
    status, out, err = run("decode", fitted["model"], fitted["data"], "--posteriors")
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split("\t") == ["sequence", "step", "speed", "height", "viterbi", "state_0", "state_1"]
    fields = np.array([[float(x) for x in r.split("\t")] for r in rows])
    np.testing.assert_array_equal(fields[:, 2:4], np.concatenate(fitted["X"]))
    np.testing.assert_array_equal(fields[:, 4], np.concatenate(paths))
    np.testing.assert_allclose(fields[:, 5:], np.concatenate(model.predict_proba(fitted["X"])), rtol=1e-5,
                               atol=1e-6)


def test_sample_writes_numeric_rows(fitted):
    model = GaussianHMM.load(fitted["model"])
    X, states = model.sample(3, 12, seed=5)
    status, out, err = run("sample", fitted["model"], "--n", 3, "--length", 12, "--seed", 5)
    assert status == 0, err
    blocks = out.strip("\n").split("\n\n")
    assert len(blocks) == 3
    for block, x in zip(blocks, X):
        np.testing.assert_array_equal([[float(v) for v in line.split("\t")] for line in block.split("\n")], x)
    for name in ("s.npz", "s.csv"):
        path = fitted["dir"] / name
        status, _, err = run("sample", fitted["model"], "--n", 3, "--length", 12, "--seed", 5, "--out", path)
        assert status == 0, err
        got, _, _ = read_features(str(path))
        for a, b in zip(got, X):
            np.testing.assert_array_equal(a, b)
    with np.load(fitted["dir"] / "s.npz") as f:
        np.testing.assert_array_equal(f["lengths"], [12, 12, 12])
        np.testing.assert_array_equal(f["states"], np.concatenate(states))
    status, _, err = run("sample", fitted["model"], "--out", fitted["dir"] / "s.csv")
    assert status == 2 and "exists; add --force" in err


def test_info_shows_means_and_covariances(fitted, tmp_path):
    model = GaussianHMM.load(fitted["model"])
    plot = tmp_path / "means.png"
    status, out, err = run("info", fitted["model"], "--plot", plot)
    assert status == 0, err
    fields = dict(line.split("\t", 1) for line in out.splitlines())
    assert fields["family"] == "gaussian" and fields["states"] == "2" and fields["features"] == "2"
    assert fields["covariance"] == "diag" and fields["free parameters"] == str(model.n_free_parameters)
    for i in range(2):
        np.testing.assert_allclose([float(x) for x in fields[f"state {i} mean"].split("\t")], model.means[i],
                                   rtol=1e-5)
        np.testing.assert_allclose([float(x) for x in fields[f"state {i} sd"].split("\t")],
                                   np.sqrt(np.diag(model.covars[i])), rtol=1e-5)
        np.testing.assert_allclose([float(x) for x in fields[f"from {i}"].split("\t")], model.A[i], atol=1e-4)
    assert png_size(plot)[0] > 300


def test_array_files_full_covariance_and_gradient(tmp_path):
    X = regimes(2, [30, 20, 20])
    data = tmp_path / "x.npz"
    np.savez(data, X=np.concatenate(X), lengths=[30, 20, 20])
    model = tmp_path / "full.npz"
    status, _, err = run("fit", data, "--emissions", "gaussian", "--states", 2, "--covariance", "full",
                         "--epochs", 10, "--seed", 1, "--out", model)
    assert status == 0, err
    fitted = hmmop.load(str(model))
    assert fitted.covariance_type == "full"
    np.save(tmp_path / "one.npy", X[1])
    status, out, err = run("score", model, tmp_path / "one.npy")
    assert status == 0, err
    assert [float(x) for x in out.split()] == [fitted.score_sequences([X[1]])[0]]
    status, out, _ = run("info", model)
    fields = dict(line.split("\t", 1) for line in out.splitlines())
    np.testing.assert_allclose([float(x) for x in fields["state 1 covariance 0"].split("\t")],
                               fitted.covars[1, 0], rtol=1e-5)
    status, _, err = run("fit", data, "--emissions", "gaussian", "--states", 2, "--method", "gradient",
                         "--epochs", 5, "--seed", 1, "--out", tmp_path / "grad.npz")
    assert status == 0, err
    assert "(gradient, adam lr 0.05, up to 5 epochs)" in err


def test_without_scikit_learn_kmeans_is_one_line_and_random_works(fitted, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)      # `from sklearn.cluster import ...` fails
    status, _, err = run("fit", fitted["data"], "--emissions", "gaussian", "--states", 2, "--out", tmp_path / "k.npz")
    assert status == 1 and "needs scikit-learn" in err and "Traceback" not in err
    status, _, err = run("fit", fitted["data"], "--emissions", "gaussian", "--states", 2, "--init", "random",
                         "--epochs", 5, "--seed", 0, "--out", tmp_path / "r.npz")
    assert status == 0, err
    assert isinstance(hmmop.load(str(tmp_path / "r.npz")), GaussianHMM)


def test_means_plot_colours_distances_in_standard_deviations(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    figures, original = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k)))
    means = np.array([[0.0, 100.0], [2.0, 300.0], [4.0, 200.0]])
    covars = np.array([[1.0, 100.0 ** 2]] * 3)                    # (N, D) variances
    plots.means(means, covars, ["a", "b"], tmp_path / "m.png")
    ax = figures[-1].axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), [[-2, -1], [0, 1], [2, 0]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="covars must be"):
        plots.means(means, np.ones((3, 3)), None, tmp_path / "x.png")


def test_categorical_stays_the_default(tmp_path):
    data = tmp_path / "ab.txt"
    data.write_text("abab\nbbaa\n", encoding="utf-8")
    status, _, err = run("fit", data, "--states", 2, "--method", "em", "--epochs", 3, "--out", tmp_path / "m.npz")
    assert status == 0 and "per symbol" in err, err
    assert isinstance(hmmop.load(str(tmp_path / "m.npz")), hmmop.HMM)
    status, out, err = run("info", tmp_path / "m.npz")
    assert status == 0 and "family" not in out and "state 0 emits" in out


def test_help_names_the_new_options(capsys):
    from hmmop import cli
    from hmmop.cli import commands
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--emissions {categorical,gaussian}" in out and "--covariance" in out and "hmmop fit walk.csv" in out
    assert "Gaussian" in commands._parser().format_help()


@pytest.mark.parametrize("name,text,message", [
    ("bad.csv", "x,y\n1,2\n3,oops\n", "bad.csv, line 3, column 2: 'oops' is not a number"),
    ("rag.tsv", "1\t2\n3\t4\t5\n", "rag.tsv, line 2: 3 columns, but line 1 has 2"),
    ("part.csv", "1,2\n3,\n", "part.csv, line 2, column 2: a missing value in a row with values"),
    ("inf.txt", "1 2\n-inf 2\n", "inf.txt, line 2, column 1: '-inf' is not a finite number"),
    ("wide.txt", "\n1 2 3\n", "wide.txt, line 2: 3 columns per row, but the model has 2 features"),
    ("late.csv", "1,2\n\na,b\n", "late.csv, line 3, column 1: 'a' is not a number"),
    ("empty.csv", "# nothing\n\n", "empty.csv: no sequence in it"),
    ("nox.npz", None, "a .npz data file needs an array X"),
    ("text.npy", None, "X must hold numbers"),
])
def test_bad_files_name_the_place(fitted, tmp_path, name, text, message):
    path = tmp_path / name
    if name == "nox.npz":
        np.savez(path, Y=np.zeros((3, 2)))
    elif name == "text.npy":
        np.save(path, np.array([["a", "b"]]))
    else:
        path.write_text(text, encoding="utf-8")
    status, out, err = run("score", fitted["model"], path)
    assert status == 1 and out == "", err
    assert message in err and err.startswith("hmmop score: error: ") and len(err.strip().splitlines()) == 1
    if name != "wide.txt":
        with pytest.raises(DataError, match="line|no sequence|X"):
            read_features(str(path))


@pytest.mark.parametrize("args,status,message", [
    (["score", "{model}", "{data}", "--tokens", "chars"], 2, "--tokens applies to categorical models"),
    (["decode", "{model}", "{data}", "--unknown", "skip"], 2, "--unknown applies to categorical models"),
    (["decode", "{model}", "{data}", "--plot", "{dir}/p.png", "--sequence", "3"], 2, "sequences 0..2"),
    (["fit", "{data}", "--states", 2, "--covariance", "full", "--out", "{dir}/c.npz"], 2,
     "--covariance applies to --emissions gaussian"),
    (["fit", "{data}", "--emissions", "gaussian", "--states", 2, "--tokens", "words", "--out", "{dir}/c.npz"], 2,
     "--tokens applies to --emissions categorical"),
    (["fit", "{data}", "--emissions", "gaussian", "--states", 2, "--covariance", "round"], 2, "invalid choice"),
    (["fit", "{dir}/none.csv", "--emissions", "gaussian", "--states", 2], 1, "none.csv: no such file"),
])
def test_user_mistakes(fitted, args, status, message):
    args = [str(a).format(**fitted) for a in args]
    got, _, err = run(*args)
    assert got == status, err
    assert message in err and "Traceback" not in err
