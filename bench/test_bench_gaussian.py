"""One EM iteration of a Gaussian HMM: hmmop.GaussianHMM against hmmlearn 0.3.3, and where hmmop's
time goes.

Data (seeded, made once per run and workload, outside every timed call): a known model - means
N(0, 3^2) per entry; diag variances uniform in [0.5, 2], full covariances W W^T + 0.5 I with W
(D, D) of N(0, 1/D) entries; A = 0.8 I + 0.2 Dirichlet(1) rows, pi Dirichlet(1) - and ``frames``
observations in ``sequences`` sequences of equal length sampled from it (state paths by inverse
CDF in NumPy, not by hmmop), in hmmlearn's concatenated form (X (n, D), lengths). The EM start:
A and pi Dirichlet(1) rows, the true means plus N(0, 1), the true covariances times a factor
uniform in [0.7, 1.5] per state (diag: per entry).

Workloads: diag, N=10 states, D=30 features, 10^6 frames in 100 sequences (target: hmmop >= 50x
faster than hmmlearn), and full, N=8, D=10, 10^5 frames in 100 sequences (target >= 20x): both
@pytest.mark.slow (make bench runs them, make test leaves them out); the same models on 10^4
frames in 100 sequences (diag) and 2,000 in 20 (full: hmmlearn's per-sequence triangular solves are
slow on a busy machine) are the default size that CI runs once.

"gaussian" table, one EM iteration from the start (each round's start set in pedantic's untimed
setup):
- "hmmlearn": hmmlearn.hmm.GaussianHMM(N, covariance_type, init_params="", params="stmc",
  n_iter=1) with startprob_, transmat_, means_, covars_ set, .fit(X, lengths) (its defaults:
  implementation="log", one thread for its C code; NumPy's and SciPy's OpenBLAS as they come -
  on a loaded machine its full-covariance iteration, which makes N small scipy solve_triangular
  calls per sequence, ran several times slower with their default threads than with
  OPENBLAS_NUM_THREADS=1: set that for both libraries if its times look out of line);
- "hmmop float64" / "hmmop float32": GaussianHMM.from_parameters(A, pi, means, covars,
  covariance_type, dtype=...) made in the setup, .fit(X, lengths, epochs=1, progress=False) timed
  (hmmop's kernel on hmmop.get_num_threads() threads). The model's dtype is that of gradient
  training and of model files; EM computes in float64 whatever it is, so both columns should time
  the same work (measured here rather than assumed).
Checked in the same run: after its rounds, each hmmop model's A, pi, means, covars (N, D, D) and
log-likelihood equal hmmlearn's after its iteration from the same start, elementwise to 1e-6
relative for float64 (1e-4 for float32, should its EM ever compute in float32), with an absolute
floor of 1e-12 x the largest entry for exact zeros. hmmlearn's result comes from its own timed
rounds when its test ran first (the parametrisation puts it first), else from one untimed fit.

"gaussian_parts" table, hmmop's iteration (float64 model at the start) split into the calls fit
makes, each timed alone on the data of the one before it, its arrays reused as fit's loop reuses them
(from the C driver's cache of large blocks, _kernel.big_empty):
- "check + log-emission": emission.prepare_scored(X, lengths) on a fresh copy of the emission (made
  in the setup, so that it factors the covariances as fit's first call does): fit's one C pass over
  float64 C-contiguous X for EM from parameters already set - the checks, the count of missing rows
  and the first E-step's log-emissions (n, N) float64 together (later iterations take
  emission.log_likelihood(rows, out=...), the same pass without the count);
- "forward-backward": the E-step of fit's loop, _kernel.EMDense(...).step(A, pi, log_emission,
  gamma): ll, gamma (n, N), and the M-step of A and pi from the expected counts, in double;
- "accumulate + m_step": emission.empty_stats + accumulate(stats, rows, gamma) + m_step(stats, "mc")
  on a fresh copy of the emission (made in the setup);
- "whole": the "hmmop float64" iteration again (recorded by that test).
Checked: the parts run in turn from the start end with the parameters and log-likelihood of
hmmlearn's iteration (to 1e-6), so they time the same work as the whole.

At the end, an arithmetic floor per workload and each part's GFLOP/s against
hmmop.cli.benchmarks.peak_gflops("float64", threads): flops per frame log-emission 4ND (diag: x @ (D, N)
and x^2 @ (D, N)) or 2ND^2 + 2ND (full: the whitened x for every state, squared and summed),
statistics 4ND (diag: gamma^T x, gamma^T x^2) or 2ND^2 + 2ND (full: gamma^T x and the N outer
products), forward-backward 6N^2 (as bench/test_bench_batch.py counts it; its exps are not
counted). Diag at 10^6 frames: 1.2 + 0.6 + 1.2 = 3.0 GFLOP (the issue said ~2 GFLOP; the printed
line splits the count by part, so any other tally can be read off it). X alone is n D 8 bytes
(240 MB for diag at 10^6): the parts that read it are likely bound by memory, not arithmetic.

Run: python -m pytest bench/test_bench_gaussian.py -m "slow or not slow"   (a few minutes:
hmmlearn's diag iteration alone takes ~5 s a round); without -m the default sizes only.
"""
import functools
from typing import NamedTuple

import numpy as np
import pytest
from hmmlearn import hmm

from benchutil import RESULTS, TABLES
from hmmop import GaussianHMM, _kernel
from hmmop.cli.benchmarks import peak_gflops
from hmmop.emissions import GaussianEmission
from hmmop.ops.threads import get_num_threads

TABLE, PARTS_TABLE = "gaussian", "gaussian_parts"
TABLES[TABLE] = ("one EM iteration of a Gaussian HMM, hmmop vs hmmlearn 0.3.3; targets hmmlearn/hmmop "
                 ">= 50x (diag, 10^6 frames), >= 20x (full, 10^5 frames): median",
                 ["hmmlearn", "hmmop float64", "hmmop float32"],
                 ("hmmlearn", "hmmop float64", "hmmlearn/hmmop float64"))
PARTS = ["check + log-emission", "forward-backward", "accumulate + m_step"]
TABLES[PARTS_TABLE] = ("hmmop's EM iteration by parts (float64): median (shares: see the floor below)",
                       PARTS + ["whole"], None)

RTOL = {"float64": 1e-6, "float32": 1e-4}
ZERO_FLOOR = 1e-12          # x the largest entry: absolute tolerance, for exact zeros


class Workload(NamedTuple):
    kind: str
    n: int                  # states
    d: int                  # features
    frames: int
    sequences: int
    hmmlearn_rounds: int
    hmmop_rounds: int
    slow: bool = False

    @property
    def label(self):
        return f"{self.kind} N={self.n} D={self.d}, {self.frames:,} frames in {self.sequences} seqs"

    def flops(self):
        """{part: flops of one iteration} (see the module docstring)."""
        n, N, D = self.frames, self.n, self.d
        per_frame = ({"log-emission": 4 * N * D, "statistics": 4 * N * D} if self.kind == "diag" else
                     {"log-emission": 2 * N * D * D + 2 * N * D, "statistics": 2 * N * D * D + 2 * N * D})
        per_frame["forward-backward"] = 6 * N * N
        return {k: v * n for k, v in per_frame.items()}


WORKLOADS = [
    Workload("diag", 10, 30, 10_000, 100, hmmlearn_rounds=5, hmmop_rounds=20),
    Workload("full", 8, 10, 2_000, 20, hmmlearn_rounds=5, hmmop_rounds=20),
    Workload("diag", 10, 30, 1_000_000, 100, hmmlearn_rounds=2, hmmop_rounds=5, slow=True),
    Workload("full", 8, 10, 100_000, 100, hmmlearn_rounds=5, hmmop_rounds=10, slow=True),
]
PARAMS = [pytest.param(w, id=w.label.replace(" ", "").replace(",", ""),
                       marks=pytest.mark.slow if w.slow else ()) for w in WORKLOADS]


class Problem(NamedTuple):
    X: np.ndarray           # (frames, D) float64
    lengths: np.ndarray     # (sequences,) int64
    start: dict             # A, pi, means, covars (hmmlearn's covars_ shape for the kind)


@functools.lru_cache(maxsize=None)
def problem(w):
    """The workload's data and EM start (see the module docstring); shared, never written."""
    N, D = w.n, w.d
    rng = np.random.default_rng([w.n, w.d, w.frames, w.sequences])
    means = rng.normal(0.0, 3.0, (N, D))
    if w.kind == "diag":
        covars = rng.uniform(0.5, 2.0, (N, D))
        factors = np.sqrt(covars)
    else:
        W = rng.normal(0.0, 1.0 / np.sqrt(D), (N, D, D))
        covars = W @ np.swapaxes(W, 1, 2) + 0.5 * np.eye(D)
        factors = np.linalg.cholesky(covars)
    A = 0.8 * np.eye(N) + 0.2 * rng.dirichlet(np.ones(N), N)
    pi = rng.dirichlet(np.ones(N))

    T = w.frames // w.sequences
    states = np.empty((w.sequences, T), dtype=np.int64)
    cum_A, cum_pi = np.cumsum(A, axis=1), np.cumsum(pi)
    u = rng.random((w.sequences, T))
    states[:, 0] = (cum_pi[None, :] < u[:, :1]).sum(axis=1)
    for t in range(1, T):
        states[:, t] = (cum_A[states[:, t - 1]] < u[:, t, None]).sum(axis=1)
    states = np.minimum(states, N - 1).reshape(-1)          # a sum of 1 - ulp at the end of a row
    z = rng.standard_normal((w.frames, D))
    if w.kind == "diag":
        X = means[states] + factors[states] * z
    else:
        X = means[states] + np.einsum("kij,kj->ki", factors[states], z)
    lengths = np.full(w.sequences, T, dtype=np.int64)

    scale = rng.uniform(0.7, 1.5, (N, D) if w.kind == "diag" else (N, 1, 1))
    start = {"A": rng.dirichlet(np.ones(N), N), "pi": rng.dirichlet(np.ones(N)),
             "means": means + rng.normal(0.0, 1.0, (N, D)), "covars": covars * scale}
    return Problem(np.ascontiguousarray(X), lengths, start)


# -- the two libraries ------------------------------------------------------------------------------

def hmmlearn_model(w):
    model = hmm.GaussianHMM(w.n, covariance_type=w.kind, init_params="", params="stmc", n_iter=1)
    set_hmmlearn_start(model, problem(w).start)
    return model


def set_hmmlearn_start(model, start):
    model.startprob_, model.transmat_ = start["pi"].copy(), start["A"].copy()
    model.means_, model.covars_ = start["means"].copy(), start["covars"].copy()


def hmmop_model(w, dtype="float64"):
    s = problem(w).start
    return GaussianHMM.from_parameters(s["A"], s["pi"], s["means"], s["covars"], covariance_type=w.kind,
                                       dtype=dtype)


def hmmlearn_result(model):
    """{ll, A, pi, means, covars (N, D, D)} of an hmmlearn model after its iteration."""
    return {"ll": np.array(model.monitor_.history[0]), "A": model.transmat_.copy(), "pi": model.startprob_.copy(),
            "means": model.means_.copy(), "covars": np.array(model.covars_)}


REFERENCE = {}              # workload -> hmmlearn_result after one iteration from the start


def reference(w):
    """hmmlearn's result (from its timed rounds if they ran, else from one fit now)."""
    if w not in REFERENCE:
        p, model = problem(w), hmmlearn_model(w)
        model.fit(p.X, p.lengths)
        REFERENCE[w] = hmmlearn_result(model)
    return REFERENCE[w]


def compare(label, ours, rtol, ref):
    """AssertionError unless each entry of ours equals ref's (see the module docstring)."""
    for name, r in ref.items():
        o = np.asarray(ours[name], dtype=np.float64)
        assert o.shape == r.shape, f"{label}: {name} has shape {o.shape}, hmmlearn's {r.shape}"
        atol = ZERO_FLOOR * np.max(np.abs(r))
        bad = ~(np.abs(o - r) <= rtol * np.abs(r) + atol)
        assert not bad.any(), (f"{label}: {name} differs from hmmlearn's: {int(bad.sum())} entries beyond "
                               f"{rtol:g} relative, max |difference| {np.max(np.abs(o - r)):.3g}")


def hmmop_result(model):
    return {"ll": np.array(model.history_[0]), "A": model.A, "pi": model.pi, "means": model.means,
            "covars": model.covars}


# -- one EM iteration -------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["hmmlearn", "hmmop float64", "hmmop float32"])
@pytest.mark.parametrize("w", PARAMS)
def test_em_iteration(benchmark, record, w, impl):
    benchmark.group = f"gaussian EM iteration {w.label}"
    p = problem(w)
    if impl == "hmmlearn":
        model = hmmlearn_model(w)
        benchmark.pedantic(model.fit, args=(p.X, p.lengths), setup=lambda: set_hmmlearn_start(model, p.start),
                           rounds=w.hmmlearn_rounds, iterations=1)
        REFERENCE[w] = hmmlearn_result(model)
        ours = hmmop_model(w)
        ours.fit(p.X, p.lengths, epochs=1, progress=False)
        compare(f"{w.label}, hmmop float64 (checked after hmmlearn's rounds)", hmmop_result(ours),
                RTOL["float64"], REFERENCE[w])
    else:
        dtype = impl.split()[1]
        models = []

        def setup():
            models.append(hmmop_model(w, dtype))
            return (models[-1],), {}

        benchmark.pedantic(lambda model: model.fit(p.X, p.lengths, epochs=1, progress=False), setup=setup,
                           rounds=w.hmmop_rounds, iterations=1, warmup_rounds=1)
        compare(f"{w.label}, {impl}", hmmop_result(models[-1]), RTOL[dtype], reference(w))
    record(TABLE, w.label, impl)
    if impl == "hmmop float64":
        record(PARTS_TABLE, w.label, "whole")


# -- the iteration by parts -------------------------------------------------------------------------

class Stages(NamedTuple):
    model: GaussianHMM       # float64, at the start
    rows: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    log_emission: np.ndarray
    core: object             # _kernel.EMDense of the data layout, as fit's
    e_step: tuple            # its step's (ll, gamma, A, pi): A and pi after their M-step


@functools.lru_cache(maxsize=None)
def stages(w):
    """Each part's input, made by running the parts before it once as fit does (shared, never written)."""
    p = problem(w)
    model = hmmop_model(w)
    rows, lengths = data_checks(model, p.X, p.lengths)
    starts = np.cumsum(lengths) - lengths
    log_emission = _kernel.big_empty(len(rows), w.n)
    model.emission.log_likelihood(rows, out=log_emission)
    core = _kernel.EMDense(w.n, len(rows), starts, lengths, ["A", "pi"], {}, {}, (), get_num_threads())
    A, pi, gamma = model.A.copy(), model.pi.copy(), _kernel.big_empty(len(rows), w.n)
    ll = core.step(A, pi, log_emission, gamma)
    return Stages(model, rows, lengths, starts, log_emission, core, (ll, gamma, A, pi))


def data_checks(model, X, lengths):
    """fit's reading of X: the emission's prepare_counted (the checks and the count of missing rows)."""
    rows, lengths, n_missing = model.emission.prepare_counted(X, lengths)
    assert n_missing == 0
    return rows, lengths


def fresh_emission(model):
    em = model.emission
    return GaussianEmission.from_fields(model.n_states, em.fields(), em.meta())


def updates(emission, rows, gamma):
    """The emission's M-step side of the iteration, updating it in place."""
    stats = emission.empty_stats()
    emission.accumulate(stats, rows, gamma)
    emission.m_step(stats, "mc")


@functools.lru_cache(maxsize=None)
def check_parts(w):
    """The parts in turn give hmmlearn's iteration (see the module docstring)."""
    s = stages(w)
    ll, gamma, A, pi = s.e_step
    emission = fresh_emission(s.model)
    updates(emission, s.rows, gamma)
    ours = {"ll": np.array(ll), "A": A, "pi": pi, "means": emission.means, "covars": emission.covars}
    compare(f"{w.label}, parts in turn", ours, RTOL["float64"], reference(w))
    return True


def part_call(w, part):
    """(function, setup or None) of one part on its stage's input, as fit calls it (its arrays reused)."""
    s = stages(w)
    if part == "check + log-emission":     # on a fresh emission: its factor cache empty, as in fit
        X, lengths = problem(w).X, problem(w).lengths
        return (lambda emission: emission.prepare_scored(X, lengths)), \
            (lambda: ((fresh_emission(s.model),), {}))
    if part == "forward-backward":
        gamma = _kernel.big_empty(len(s.rows), w.n)
        return (lambda: s.core.step(s.model.A.copy(), s.model.pi.copy(), s.log_emission, gamma)), None
    return (lambda emission: updates(emission, s.rows, s.e_step[1])), (lambda: ((fresh_emission(s.model),), {}))


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("w", PARAMS)
def test_em_part(benchmark, record, w, part):
    benchmark.group = f"gaussian EM parts {w.label}"
    assert check_parts(w)
    fn, setup = part_call(w, part)
    benchmark.pedantic(fn, setup=setup, rounds=w.hmmop_rounds, iterations=1, warmup_rounds=1)
    record(PARTS_TABLE, w.label, part)


# -- the arithmetic floor, printed after the tables of conftest.py ----------------------------------

PART_FLOPS = {"check + log-emission": "log-emission", "forward-backward": "forward-backward",
              "accumulate + m_step": "statistics"}


class FloorSummary:
    """A plugin, registered by the fixture below, whose terminal summary follows conftest.py's."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        parts = RESULTS.get(PARTS_TABLE, {})
        whole = RESULTS.get(TABLE, {})
        if not parts and not whole:            # --benchmark-disable, or nothing ran
            return
        tr = terminalreporter
        threads = get_num_threads()
        peak, description = peak_gflops("float64", threads)
        tr.write_sep("=", "gaussian: arithmetic floor of one EM iteration and GFLOP/s achieved (float64)")
        for w in WORKLOADS:
            if not any(label == w.label for label, _ in list(parts) + list(whole)):
                continue
            flops = w.flops()
            total = sum(flops.values())
            at_peak = f" = {total / peak / 1e9 * 1e3:.3g} ms at peak" if peak else ""
            tr.write_line(f"{w.label}: floor {total / 1e9:.3g} GFLOP ("
                          + ", ".join(f"{k} {v / 1e9:.3g}" for k, v in flops.items())
                          + f"){at_peak}; X is {w.frames * w.d * 8 / 1e6:.3g} MB")
            cells = []
            seconds = whole.get((w.label, "hmmop float64"))
            for part in PARTS:
                t = parts.get((w.label, part))
                if t:
                    cells.append(f"{part} {t * 1e3:.3g} ms"
                                 + (f" ({100 * t / seconds:.0f}%)" if seconds else "")
                                 + (f" {flops[PART_FLOPS[part]] / t / 1e9:.3g} GFLOP/s" if part in PART_FLOPS
                                    else ""))
            if seconds:
                cells.append(f"whole {seconds * 1e3:.3g} ms, {total / seconds / 1e9:.3g} GFLOP/s"
                             + (f" ({100 * total / seconds / 1e9 / peak:.2g}% of peak)" if peak else ""))
                known = [parts.get((w.label, part)) for part in PARTS]
                if all(known):
                    cells.append(f"whole - sum of parts {(seconds - sum(known)) * 1e3:.3g} ms")
            if cells:
                tr.write_line("    " + "; ".join(cells))
        tr.write_line(f"peak float64, {threads} thread{'s' * (threads != 1)}: {description}")


@pytest.fixture(scope="module", autouse=True)
def _floor_summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("hmmop-bench-gaussian-floor"):
        manager.register(FloorSummary(), "hmmop-bench-gaussian-floor")
