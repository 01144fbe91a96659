"""hmmop.cli.benchmarks (the runner behind `hmmop bench`): formatting, the machine's
description, and each benchmark on tiny sizes - its table, its times, and that its
cross-check between the two sides catches a side that computes something else."""
import io
import math
import os
import platform
import sys
import time
import types

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.cli import benchmarks


def check_table(table, columns, labels, ratio):
    assert set(table) == {"title", "columns", "rows", "ratio"}
    assert isinstance(table["title"], str) and table["title"]
    assert table["columns"] == columns
    assert table["ratio"] == ratio
    assert [label for label, _ in table["rows"]] == labels
    for _, cells in table["rows"]:
        assert set(cells) == set(columns)


def all_times(table):
    return [cells[c] for _, cells in table["rows"] for c in table["columns"]]


def positive_finite(times):
    return all(isinstance(t, float) and math.isfinite(t) and t > 0 for t in times)


# -- formatting -----------------------------------------------------------------------------------

HAND_MADE = [
    {"title": "step", "columns": ["fused", "unroll"], "ratio": ("unroll", "fused", "unroll/fused"),
     "rows": [("T=30", {"fused": 1.2345e-3, "unroll": 0.015}),
              ("T=3000", {"fused": 0.99996, "unroll": 1.41}),
              ("T=9", {"fused": 6.34e-8, "unroll": None})]},
    {"title": "no ratio", "columns": ["a"], "ratio": None, "rows": [("x", {"a": 2.5e-5})]},
]


def test_format_tables_durations_ratio_and_missing():
    text = benchmarks.format_tables(HAND_MADE)
    assert text == (
        "== step ==\n"
        "            fused  unroll  unroll/fused\n"
        "T=30      1.23 ms   15 ms         12.2x\n"
        "T=3000        1 s  1.41 s          1.4x\n"
        "T=9     0.0634 us       -             -\n"
        "\n"
        "== no ratio ==\n"
        "       a\n"
        "x  25 us\n")


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (6.34e-8, "0.0634 us"), (9.9996e-4, "1 ms"), (1.5e-3, "1.5 ms"), (0.137, "137 ms"),
    (0.99996, "1 s"), (1.41, "1.41 s"), (1234.5, "1230 s")])
def test_format_duration(seconds, text):
    assert benchmarks.format_duration(seconds) == text


@pytest.mark.parametrize("numerator, denominator, text", [
    (15.0, 1.35, "11.1x"), (1.41, 1.3755e-3, "1025.1x"), (None, 1.0, "-"), (1.0, None, "-"), (1.0, 0.0, "-")])
def test_format_ratio(numerator, denominator, text):
    assert benchmarks.format_ratio(numerator, denominator) == text


def test_describe_machine_names_cpu_cores_threads_and_versions():
    import hmmlearn
    text = benchmarks.describe_machine()
    assert 1 <= len(text.splitlines()) <= 2
    models = []
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    assert f"CPU: {models[0] if models else platform.processor()}," in text
    assert f"{os.cpu_count()} cores" in text
    assert f"kernel threads: {hmmop.ops.threads.get_num_threads()}" in text
    for name, version in (("Python", platform.python_version()), ("hmmop", hmmop.__version__),
                          ("mxnet", mx.__version__), ("numpy", np.__version__),
                          ("hmmlearn", hmmlearn.__version__)):
        assert f"{name} {version}" in text


def test_describe_machine_without_hmmlearn(monkeypatch):
    monkeypatch.setattr(benchmarks, "_version", lambda name: "not installed")
    assert "hmmlearn not installed" in benchmarks.describe_machine()


def test_median_time_budget_and_untimed_setup():
    calls = []
    median = benchmarks.median_time(lambda: (calls.append(1), time.sleep(0.02)), repeats=100, budget=0.05)
    assert 1 <= len(calls) <= 3 and 0.015 < median < 0.5
    median = benchmarks.median_time(lambda: None, repeats=3, setup=lambda: time.sleep(0.02))
    assert median < 0.01


# -- the benchmarks on tiny sizes ------------------------------------------------------------------

def test_step_table():
    progress = []
    table = benchmarks.step_table(ts=(30, 60), repeats=2, progress=progress.append)
    check_table(table, ["fused", "unroll"], ["T=30", "T=60"], ("unroll", "fused", "unroll/fused"))
    assert positive_finite(all_times(table))
    assert progress == ["training step T=30: fused", "training step T=30: unroll",
                        "training step T=60: fused", "training step T=60: unroll"]
    # about ten NDArray operations per time step for the unroll: it costs more than the one fused op
    assert table["rows"][1][1]["unroll"] > table["rows"][1][1]["fused"]


def test_step_table_catches_a_wrong_engine(monkeypatch):
    real = hmmop.unroll_forward
    monkeypatch.setattr(hmmop, "unroll_forward", lambda A, B, pi, obs: 2 * real(A, B, pi, obs))
    with pytest.raises(benchmarks.MismatchError, match="fused and unroll"):
        benchmarks.step_table(ts=(30,), repeats=1)


def test_kernel_table():
    table = benchmarks.kernel_table(ns=(4, 8), T=2000, repeats=2)
    check_table(table, ["hmmop", "hmmlearn"], ["N=4", "N=8"], ("hmmlearn", "hmmop", "hmmlearn/hmmop"))
    assert positive_finite(all_times(table))
    assert all(t < 1e-4 for t in all_times(table))          # per time step, not per call
    assert "2000 symbols" in table["title"] and "not installed" not in table["title"]


def test_kernel_table_catches_a_wrong_hmmlearn_result(monkeypatch):
    hmm, _hmmc = benchmarks._hmmlearn()

    def forward_scaling(*args):
        log_prob, fwd, scaling = _hmmc.forward_scaling(*args)
        return log_prob + 1e-6, fwd, scaling

    fake = types.SimpleNamespace(forward_scaling=forward_scaling, backward_scaling=_hmmc.backward_scaling,
                                 compute_scaling_xi_sum=_hmmc.compute_scaling_xi_sum)
    monkeypatch.setattr(benchmarks, "_hmmlearn", lambda: (hmm, fake))
    with pytest.raises(benchmarks.MismatchError, match="log-likelihoods differ"):
        benchmarks.kernel_table(ns=(4,), T=500, repeats=1)


def test_em_table_matches_hmmlearn():
    table = benchmarks.em_table(sizes=((4, 3), (3, 5)), n_sequences=20, repeats=2)
    check_table(table, ["hmmop", "hmmlearn"], ["N=4 M=3", "N=3 M=5"], ("hmmlearn", "hmmop", "hmmlearn/hmmop"))
    assert positive_finite(all_times(table))
    assert "20 sequences" in table["title"]


def test_em_problem_is_seeded_and_in_range():
    (A0, B0, pi0), seqs = benchmarks.em_problem(4, 3, 30)
    (A1, _, _), seqs1 = benchmarks.em_problem(4, 3, 30)
    assert len(seqs) == 30 and all(20 <= len(s) <= 200 for s in seqs)
    assert all(((s >= 0) & (s < 3)).all() for s in seqs)
    assert np.array_equal(A0, A1) and all(np.array_equal(a, b) for a, b in zip(seqs, seqs1))
    assert np.allclose(A0.sum(1), 1) and np.allclose(B0.sum(1), 1) and np.isclose(pi0.sum(), 1)


def test_em_table_catches_a_different_em_step(monkeypatch):
    hmm, _hmmc = benchmarks._hmmlearn()

    def categorical(*args, **kwargs):
        kwargs["params"] = "st"                              # B not updated: different work
        return hmm.CategoricalHMM(*args, **kwargs)

    monkeypatch.setattr(benchmarks, "_hmmlearn",
                        lambda: (types.SimpleNamespace(CategoricalHMM=categorical), _hmmc))
    with pytest.raises(benchmarks.MismatchError, match="updated B differs"):
        benchmarks.em_table(sizes=((4, 3),), n_sequences=20, repeats=1)


def test_without_hmmlearn_its_columns_are_empty(monkeypatch):
    monkeypatch.setitem(sys.modules, "hmmlearn", None)       # import hmmlearn raises ImportError
    assert benchmarks._hmmlearn() is None
    tables = [benchmarks.kernel_table(ns=(4,), T=500, repeats=1),
              benchmarks.em_table(sizes=((4, 3),), n_sequences=10, repeats=1)]
    for table in tables:
        assert table["title"].endswith(benchmarks.NO_HMMLEARN)
        (_, cells), = table["rows"]
        assert cells["hmmlearn"] is None and positive_finite([cells["hmmop"]])
    text = benchmarks.format_tables(tables)
    assert all(line.endswith("-") for line in text.splitlines() if line.startswith("N=4"))


# -- run and main ----------------------------------------------------------------------------------

def test_run_passes_settings_and_progress(monkeypatch):
    calls = []
    for name in ("step", "kernel", "em"):
        monkeypatch.setattr(benchmarks, f"{name}_table",
                            lambda name=name, **kwargs: calls.append((name, kwargs)) or name)
    report = print
    assert benchmarks.run(quick=True, progress=report) == ["step", "kernel", "em"]
    assert calls == [(n, dict(benchmarks.QUICK[n], progress=report)) for n in ("step", "kernel", "em")]
    calls.clear()
    benchmarks.run()
    assert calls == [(n, dict(benchmarks.FULL[n], progress=None)) for n in ("step", "kernel", "em")]
    for name in ("step", "kernel", "em"):     # quick does no more work than the full run
        assert all(benchmarks.QUICK[name][k] <= v for k, v in benchmarks.FULL[name].items())


def test_main_prints_machine_tables_and_plots(monkeypatch, tmp_path):
    def fake_run(quick, progress):
        assert quick is True
        progress("training step T=30: fused")
        return HAND_MADE

    drawn = []
    monkeypatch.setattr(benchmarks, "run", fake_run)
    monkeypatch.setitem(sys.modules, "hmmop.cli.plots",
                        types.SimpleNamespace(benchmark=lambda tables, path: drawn.append((tables, path))))
    out, err = io.StringIO(), io.StringIO()
    path = str(tmp_path / "bench.png")
    assert benchmarks.main(quick=True, plot=path, out=out, err=err) is None
    assert out.getvalue() == benchmarks.describe_machine() + "\n\n" + benchmarks.format_tables(HAND_MADE)
    assert "training step T=30: fused" in err.getvalue() and path in err.getvalue()
    assert drawn == [(HAND_MADE, path)]


def test_main_without_plot_does_not_import_plots(monkeypatch):
    monkeypatch.setattr(benchmarks, "run", lambda quick, progress: HAND_MADE)
    monkeypatch.setitem(sys.modules, "hmmop.cli.plots", None)    # importing it would raise
    out = io.StringIO()
    benchmarks.main(out=out, err=io.StringIO())
    assert out.getvalue().endswith(benchmarks.format_tables(HAND_MADE))


def test_peak_gflops_is_the_product_of_its_stated_factors():
    """peak = cores x GHz x lanes x 2 x FMA units, as the description states them; float32 has twice
    float64's lanes; one thread is one core's share."""
    import re
    from hmmop.cli.benchmarks import peak_gflops
    p32, text = peak_gflops("float32")
    if p32 is None:
        pytest.skip(text)
    p64, _ = peak_gflops("float64")
    one, _ = peak_gflops("float32", threads=1)
    cores, ghz, lanes, units = re.match(r"(\d+) cores? x ([0-9.]+) GHz .* x (\d+) float32 lanes .* x (\d) FMA unit",
                                        text).groups()
    assert p32 == pytest.approx(int(cores) * float(ghz) * int(lanes) * 2 * int(units), rel=5e-3)
    assert p32 == pytest.approx(2 * p64) and p32 == pytest.approx(int(cores) * one)
    with pytest.raises(ValueError, match="float32 or float64"):
        peak_gflops("int8")
