"""hmmop.cli.plots: each plot is a real PNG of a sensible size with the right contents, matplotlib is
imported only when drawing, and its absence gives PlotUnavailable with the install hint."""
import importlib
import importlib.util
import struct
import sys

import numpy as np
import pytest

import hmmop
from hmmop.cli import plots

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (pip install 'hmmop[plot]')")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) in pixels from the IHDR chunk, after checking the PNG signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def check_png(path, min_height=200):
    width, height = png_size(path)
    assert 700 <= width <= 1200 and min_height <= height <= 2500, (width, height)
    from matplotlib.image import imread
    pixels = imread(str(path))
    assert pixels.shape[:2] == (height, width)
    rgb = (pixels[..., :3] * 255).astype(np.uint32)
    assert len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])) > 20   # something was drawn


@pytest.fixture
def saved(monkeypatch):
    """The figures the plots save, in order (Figure.savefig wrapped to keep them)."""
    from matplotlib.figure import Figure
    figures, original = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def random_posteriors(rng, T, N):
    gamma = rng.dirichlet(np.full(N, 0.5), size=T)
    return gamma, gamma.argmax(axis=1).astype(np.int32)


def tick_texts(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


TABLES = [{"title": "decode", "columns": ["hmmop", "hmmlearn"],
           "rows": [("viterbi", {"hmmop": 2e-4, "hmmlearn": 3.5e-3}),
                    ("posteriors", {"hmmop": 4e-4, "hmmlearn": None})]},
          {"title": "EM epoch", "columns": ["C", "NDArray"],
           "rows": [("N=4", {"C": 1.2e-3, "NDArray": 0.025}), ("N=64", {"C": 0.05})]}]


@needs_matplotlib
def test_training_curve_emphasises_the_best_start(tmp_path, saved):
    histories = [np.linspace(-900.0, -700.0, 30), np.linspace(-950.0, -650.0, 25)]   # start 1 ends higher
    path = tmp_path / "curve.png"
    assert plots.training_curve(histories, 250, path) == path
    check_png(path)
    ax = saved[-1].axes[0]
    widths = {line.get_label(): line.get_linewidth() for line in ax.get_lines()}
    assert set(widths) == {"start 0", "start 1 (best, final -2.6000)"}
    assert widths["start 1 (best, final -2.6000)"] > widths["start 0"]
    best = next(line for line in ax.get_lines() if "best" in line.get_label())
    np.testing.assert_allclose(best.get_ydata(), histories[1] / 250)            # per symbol
    np.testing.assert_array_equal(best.get_xdata(), np.arange(1, 26))
    assert ax.get_xlabel() == "epoch" and "per symbol" in ax.get_ylabel()


@needs_matplotlib
def test_posteriors_short_sequence_labels_every_symbol(tmp_path, saved):
    rng = np.random.default_rng(0)
    gamma, states = random_posteriors(rng, 30, 3)
    symbols = list("ab \ncab" * 5)[:30]
    path = plots.posteriors(gamma, states, symbols, str(tmp_path / "post.png"), title="one sequence")
    check_png(path)
    top, band = saved[-1].axes[:2]
    assert top.get_title() == "one sequence"
    assert tick_texts(band) == [plots.visible(s) for s in symbols] and "␣" in tick_texts(band)
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["state 0", "state 1", "state 2"]
    np.testing.assert_array_equal(band.get_images()[0].get_array()[0], states)   # the Viterbi band


@needs_matplotlib
def test_posteriors_thin_the_labels_of_a_long_sequence(tmp_path, saved):
    rng = np.random.default_rng(1)
    gamma, states = random_posteriors(rng, 300, 4)
    symbols = [str(s) for s in rng.integers(0, 10, 300)]
    check_png(plots.posteriors(gamma, states, symbols, tmp_path / "long.png"))
    labels = tick_texts(saved[-1].axes[1])
    assert 20 <= len(labels) <= 80
    assert labels[:3] == [symbols[0], symbols[4], symbols[8]]                   # every 4th of 300


@needs_matplotlib
def test_emissions_small_with_visible_whitespace(tmp_path, saved):
    rng = np.random.default_rng(2)
    B = rng.dirichlet(np.ones(5), size=3)
    path = plots.emissions(B, ["a", " ", "\n", "b", 7], tmp_path / "b.png")
    check_png(path)
    ax = saved[-1].axes[0]
    assert tick_texts(ax) == ["a", "␣", "↵", "b", "7"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["state 0", "state 1", "state 2"]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), B)
    assert len(saved[-1].axes) == 2                                              # the colour bar


@needs_matplotlib
def test_emissions_keeps_the_most_probable_symbols(tmp_path, saved):
    rng = np.random.default_rng(3)
    B = rng.dirichlet(np.full(100, 0.3), size=4)
    vocabulary = [f"w{k}" for k in range(100)]
    check_png(plots.emissions(B, vocabulary, tmp_path / "b100.png"))
    ax = saved[-1].axes[0]
    top = np.sort(np.argsort(-B.mean(axis=0))[:60])
    assert tick_texts(ax) == [vocabulary[k] for k in top]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), B[:, top])
    assert "60 most probable of 100" in ax.get_title()
    plots.emissions(B, vocabulary, tmp_path / "all.png", max_symbols=100)
    assert len(tick_texts(saved[-1].axes[0])) == 100 and "most probable" not in saved[-1].axes[0].get_title()


@needs_matplotlib
def test_benchmark_one_log_axis_per_table(tmp_path, saved):
    path = plots.benchmark(TABLES, tmp_path / "bench.png", title="timings")
    check_png(path)
    axes = [ax for ax in saved[-1].axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["decode", "EM epoch"]
    assert all(ax.get_xscale() == "log" for ax in axes)
    widths = sorted(p.get_x() + p.get_width() for p in axes[0].patches if p.get_height() > 0)
    np.testing.assert_allclose(widths, [2e-4, 4e-4, 3.5e-3])                 # None draws no bar
    texts = {t.get_text() for t in axes[0].texts}
    assert {"200 µs", "400 µs", "3.5 ms", "n/a"} <= texts
    assert [plots._duration(s) for s in (2.5, 0.0123, 4.2e-5, 3e-9, 0.0)] == \
        ["2.5 s", "12.3 ms", "42 µs", "3 ns", "n/a"]


@needs_matplotlib
def test_writes_exactly_the_path_given(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "no_suffix"
    plots.emissions(rng.dirichlet(np.ones(3), size=2), None, path)
    assert png_size(path) and not (tmp_path / "no_suffix.png").exists()


@needs_matplotlib
def test_leaves_pyplot_and_its_backend_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt
    before = plt.get_backend()
    plt.switch_backend("svg")                     # a user's own choice
    try:
        mine = plt.figure()
        rng = np.random.default_rng(5)
        gamma, states = random_posteriors(rng, 20, 2)
        plots.training_curve([np.arange(5.0)], 10, tmp_path / "a.png")
        plots.posteriors(gamma, states, list("x" * 20), tmp_path / "b.png")
        plots.emissions(rng.dirichlet(np.ones(4), size=2), list("abcd"), tmp_path / "c.png")
        plots.benchmark(TABLES[:1], tmp_path / "d.png")
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == [mine.number]                  # none of ours left open
        plt.close(mine)
    finally:
        plt.switch_backend(before)


@pytest.mark.parametrize("call, message", [
    (lambda p: plots.training_curve([], 10, p), "histories"),
    (lambda p: plots.training_curve([np.zeros((2, 2))], 10, p), "1-D"),
    (lambda p: plots.posteriors(np.full((4, 2), 0.5), [0, 1, 2, 0], list("abcd"), p), r"states must be \(4,\)"),
    (lambda p: plots.posteriors(np.full((4, 2), 0.5), [0, 1, 1, 0], list("abc"), p), "3 given for 4"),
    (lambda p: plots.emissions(np.full((2, 3), 1 / 3), ["a", "b"], p), "2 tokens for 3 columns"),
    (lambda p: plots.benchmark([{"title": "x"}], p), "needs 'columns' and 'rows'"),
])
def test_bad_input_is_refused_before_drawing(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_plots_raise_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # `import matplotlib` now fails
    monkeypatch.setattr(hmmop.cli, "plots", plots)               # restored after the re-import below
    monkeypatch.delitem(sys.modules, "hmmop.cli.plots")
    fresh = importlib.import_module("hmmop.cli.plots")           # importing needs no matplotlib
    assert fresh is not plots
    rng = np.random.default_rng(6)
    gamma, states = random_posteriors(rng, 5, 2)
    for module in (fresh, plots):
        for call in (lambda: module.training_curve([np.arange(3.0)], 5, tmp_path / "a.png"),
                     lambda: module.posteriors(gamma, states, list("abcde"), tmp_path / "b.png"),
                     lambda: module.emissions(gamma.T, list("abcde"), tmp_path / "c.png"),
                     lambda: module.benchmark(TABLES, tmp_path / "d.png")):
            with pytest.raises(module.PlotUnavailable, match=r"plots need matplotlib: pip install 'hmmop\[plot\]'"):
                call()
    assert issubclass(plots.PlotUnavailable, ImportError)
    assert not list(tmp_path.iterdir())
