"""The batch driver (issue 8) against the per-sequence kernel it replaced: log-likelihood + gradient.

One timed call is one _kernel.forward + one _kernel.backward (gll = ones, every request code 1 =
write): "batched" is _kernel.forward / backward, the C batch driver that advances blocks of
sequences together as small GEMMs and computes in the parameters' dtype; "sequential" is
_kernel.forward_sequential / backward_sequential, the per-sequence kernel (one sequence per OpenMP
thread at a time, always computing in double). Same signatures, same inputs: random models (rows
uniform + 0.1, normalised, seeded), uniformly random symbols, parameters and gradient buffers in the
workload's dtype, observations through _kernel.prepare_obs - all made outside the timed function.

Workloads (WORKLOADS): N=64 M=64, 256 sequences of 200 symbols, float32 on 1 and 2 threads and
float64 on 2; N=16 M=32, 64 x 500, float32, 2 threads; one sequence of 100,000 symbols, N=8 M=8,
float32; the gist's size, N=4 M=3, one sequence of 30, float32 and float64. Threads are set with
hmmop.set_num_threads (restored to None afterwards) and passed as num_threads; the one-sequence
rows use 1 thread.

Before timing, every test runs both sides once on its workload and fails unless the batched
log-likelihoods and the three gradients match the sequential ones: to 1e-4 relative in float32,
1e-12 in float64 (ll per sequence; each gradient as max |difference| / max |sequential|).

At the end: the "batch" table of medians (sequential, batched, their ratio), then achieved GFLOP/s
per cell - 6 N^2 flops per symbol (forward 2 N^2, backward 4 N^2) times the workload's symbols, over
the median - and its fraction of hmmop.cli.benchmarks.peak_gflops(dtype, threads), whose description
is printed below. The fraction is of the workload dtype's
peak for both columns, though "sequential" computes in double.

Run: python -m pytest bench/test_bench_batch.py   (about 20-40 s; under --benchmark-disable each
body runs once and nothing is printed)
"""
import functools
from typing import NamedTuple

import numpy as np
import pytest

import hmmop
from benchutil import RESULTS, TABLES
from hmmop import _kernel
from hmmop.cli.benchmarks import peak_gflops

TABLE = "batch"
TABLES[TABLE] = ("log-likelihood + gradient (forward + backward), batch driver vs per-sequence kernel: median",
                 ["sequential", "batched"], ("sequential", "batched", "sequential/batched"))

RTOL = {"float32": 1e-4, "float64": 1e-12}
FLOPS_PER_SYMBOL = 6           # x N^2: forward 2 N^2, backward 4 N^2


class Workload(NamedTuple):
    n: int
    m: int
    batch: int
    T: int
    dtype: str
    threads: int
    rounds: int = 0            # > 0: benchmark.pedantic with this many rounds; 0: benchmark() calibrates

    @property
    def label(self):
        return (f"N={self.n} M={self.m}, {self.batch} x {self.T}, {self.dtype}, "
                f"{self.threads} thread{'s' * (self.threads != 1)}")

    @property
    def flops(self):
        return FLOPS_PER_SYMBOL * self.n ** 2 * self.batch * self.T


WORKLOADS = [
    Workload(64, 64, 256, 200, "float32", 1, rounds=15),
    Workload(64, 64, 256, 200, "float32", 2, rounds=15),
    Workload(64, 64, 256, 200, "float64", 2, rounds=15),
    Workload(16, 32, 64, 500, "float32", 2),
    Workload(8, 8, 1, 100_000, "float32", 1, rounds=15),
    Workload(4, 3, 1, 30, "float32", 1),
    Workload(4, 3, 1, 30, "float64", 1),
]
BY_LABEL = {w.label: w for w in WORKLOADS}

IMPLEMENTATIONS = {"sequential": ("forward_sequential", "backward_sequential"),
                   "batched": ("forward", "backward")}


def functions(impl):
    """(forward, backward) of one side, looked up when a test runs (not at import: a missing name
    fails those tests, not the collection of the whole bench/ run)."""
    return tuple(getattr(_kernel, name) for name in IMPLEMENTATIONS[impl])


@functools.lru_cache(maxsize=None)
def data(w):
    """(A, B, pi, obs32, lengths) of a workload, seeded by its sizes; shared, never written."""
    rng = np.random.default_rng([w.n, w.m, w.batch, w.T])
    A = rng.random((w.n, w.n)) + 0.1
    B = rng.random((w.n, w.m)) + 0.1
    pi = rng.random(w.n) + 0.1
    A, B, pi = (np.ascontiguousarray(x / x.sum(-1, keepdims=True), dtype=w.dtype) for x in (A, B, pi))
    obs32, lengths = _kernel.prepare_obs(rng.integers(0, w.m, (w.batch, w.T)), w.m)
    return A, B, pi, obs32, lengths


def make_call(w, impl, num_threads):
    """(call, outputs): call() runs forward + backward into preallocated buffers and returns
    (ll as float64, dA, dB, dpi)."""
    A, B, pi, obs32, lengths = data(w)
    forward, backward = functions(impl)
    gll = np.ones(w.batch, dtype=w.dtype)
    dA, dB, dpi = np.empty_like(A), np.empty_like(B), np.empty_like(pi)

    def call():
        ws = forward(A, B, pi, obs32, lengths, num_threads)
        backward(ws, gll, dA, dB, dpi, 1, 1, 1, num_threads)
        return ws

    def outputs():
        ws = call()
        return np.array(ws.ll, dtype=np.float64), dA.copy(), dB.copy(), dpi.copy()

    return call, outputs


def check(w, num_threads):
    """Run both sides once; AssertionError unless batched matches sequential (see the docstring)."""
    rtol = RTOL[w.dtype]
    seq = make_call(w, "sequential", num_threads)[1]()
    new = make_call(w, "batched", num_threads)[1]()
    for name, s, b in zip(("ll", "dA", "dB", "dpi"), seq, new):
        assert b.shape == s.shape and b.dtype == s.dtype, \
            f"{w.label}: batched {name} is {b.dtype}{b.shape}, sequential {s.dtype}{s.shape}"
        assert np.isfinite(s).all() and np.isfinite(b).all(), f"{w.label}: non-finite {name}"
        s64, b64 = s.astype(np.float64), b.astype(np.float64)
        if name == "ll":
            err = np.max(np.abs(b64 - s64) / np.abs(s64))
        else:
            err = np.max(np.abs(b64 - s64)) / np.max(np.abs(s64))
        assert err <= rtol, (f"{w.label}: batched {name} differs from sequential by {err:.3g} "
                             f"relative (allowed {rtol:g})")


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("w", WORKLOADS, ids=[w.label.replace(" ", "") for w in WORKLOADS])
def test_loglik_and_gradient(benchmark, record, w, impl):
    benchmark.group = f"batch {w.label}"
    hmmop.set_num_threads(w.threads)
    try:
        num_threads = hmmop.get_num_threads()
        check(w, num_threads)
        call = make_call(w, impl, num_threads)[0]
        if w.rounds:
            benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
        else:
            benchmark(call)
    finally:
        hmmop.set_num_threads(None)
    record(TABLE, w.label, impl)


# -- GFLOP/s, printed after the tables of conftest.py ----------------------------------------------

def _gflops_cell(seconds, w, peak):
    if seconds is None:
        return "-"
    gflops = w.flops / seconds / 1e9
    return f"{gflops:.3g} GFLOP/s" + (f" ({100 * gflops / peak:.2g}% of peak)" if peak else "")


class GflopsSummary:
    """A plugin, registered by the fixture below, whose terminal summary follows conftest.py's."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        cells = RESULTS.get(TABLE)
        if not cells:                       # --benchmark-disable, or nothing ran
            return
        tr = terminalreporter
        columns = TABLES[TABLE][1]
        tr.write_sep("=", f"{TABLE}: achieved GFLOP/s ({FLOPS_PER_SYMBOL} N^2 per symbol / median) and "
                          f"fraction of peak_gflops(dtype, threads)")
        tr.write_line(" | ".join(["row"] + columns))
        peaks = {}
        for w in WORKLOADS:
            if not any((w.label, c) in cells for c in columns):
                continue
            key = (w.dtype, w.threads)
            if key not in peaks:
                peaks[key] = peak_gflops(w.dtype, w.threads)
            tr.write_line(" | ".join([w.label] + [_gflops_cell(cells.get((w.label, c)), w, peaks[key][0])
                                                  for c in columns]))
        for (dtype, threads), (_, description) in peaks.items():
            tr.write_line(f"peak {dtype}, {threads} thread{'s' * (threads != 1)}: {description}")


@pytest.fixture(scope="module", autouse=True)
def _gflops_summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("hmmop-bench-batch-gflops"):
        manager.register(GflopsSummary(), "hmmop-bench-batch-gflops")
