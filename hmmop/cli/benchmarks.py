"""The headline benchmarks of the README, runnable without pytest (``hmmop bench``).

Three tables, each timed with time.perf_counter, a few repetitions and their median:

- step_table: one training step (softmax of the logits -> log-likelihood ->
  backward -> sgd_update of both logit arrays), N=4, M=3, one sequence of T
  symbols, the fused op ("fused", through hmmop.hmm_forward) against the
  autograd unroll ("unroll", hmmop.unroll_forward);
- kernel_table: the compiled kernel alone (_kernel.forward + backward, one
  thread), per time step, against hmmlearn's forward_scaling +
  backward_scaling + compute_scaling_xi_sum on the same data;
- em_table: one EM iteration on a data set sampled from a known seeded model,
  HMM.fit(method="em", epochs=1) against hmmlearn's CategoricalHMM(n_iter=1).

Each benchmark also checks that both sides computed the same thing (same
updated parameters, same log-likelihood) and raises MismatchError if not.
hmmlearn is optional: without it its columns are None and the titles say so.

A table is a dict {"title": str, "columns": [str, ...], "rows": [(label,
{column: seconds or None}), ...], "ratio": (numerator, denominator, label) or
None}; format_tables prints a list of them, hmmop.cli.plots.benchmark draws them.
"""
import os
import platform
import statistics
import sys
import time

import numpy as np

STEP_TS = (30, 300, 3000)
KERNEL_NS = (4, 16, 64)
KERNEL_M = 8
EM_SIZES = ((4, 3), (16, 32))
EM_MIN_LEN, EM_MAX_LEN = 20, 200
NO_HMMLEARN = " (hmmlearn not installed)"

# run()'s settings: repetitions per cell and the seconds after which a cell stops repeating.
FULL = dict(step=dict(repeats=21, budget=5.0), kernel=dict(T=20_000, repeats=11, budget=3.0),
            em=dict(n_sequences=500, repeats=11, budget=5.0))
QUICK = dict(step=dict(repeats=11, budget=1.0), kernel=dict(T=5_000, repeats=7, budget=1.0),
             em=dict(n_sequences=200, repeats=7, budget=1.0))


class MismatchError(AssertionError):
    """The two sides of a benchmark computed different results."""


# -- helpers --------------------------------------------------------------------------------------

def _hmmlearn():
    """(hmmlearn.hmm, hmmlearn._hmmc), or None if hmmlearn cannot be imported."""
    try:
        from hmmlearn import _hmmc, hmm
    except ImportError:
        return None
    return hmm, _hmmc


def _version(module_name):
    try:
        from importlib import metadata
        return metadata.version(module_name)
    except Exception:          # not installed, or installed without metadata
        try:
            return __import__(module_name).__version__
        except Exception:
            return "not installed"


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def median_time(fn, repeats, setup=None, budget=None):
    """Median seconds of fn() over up to ``repeats`` calls (setup() before each, untimed),
    stopping early once the calls took ``budget`` seconds in all (at least one call)."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget is not None and sum(times) >= budget:
            break
    return statistics.median(times)


def _report(progress, message):
    if progress is not None:
        progress(message)


def _check(ok, message):
    if not ok:
        raise MismatchError(message)


# -- the benchmarks -------------------------------------------------------------------------------

def describe_machine():
    """Two lines: CPU model, cores, hmmop's kernel threads; Python and library versions."""
    import hmmop
    import mxnet as mx
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = cores
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"CPU: {_cpu_model()}, {cores} cores ({usable} usable), hmmop kernel threads: "
            f"{hmmop.ops.threads.get_num_threads()} (OMP_NUM_THREADS {'=' + omp if omp else 'unset'})\n"
            f"Python {platform.python_version()}, hmmop {hmmop.__version__}, mxnet {mx.__version__}, "
            f"numpy {np.__version__}, hmmlearn {_version('hmmlearn')}")


def training_step(engine, T, seed=0):
    """(step, params): one SGD training step of N=4, M=3 logits on one sequence of T symbols
    (engine(A, B, pi, obs) -> ll, e.g. hmmop.hmm_forward); bench/test_bench_step.py times it too."""
    import mxnet as mx
    rng = np.random.default_rng(seed)
    A_logits = mx.nd.array(rng.normal(size=(4, 4)))
    B_logits = mx.nd.array(rng.normal(size=(4, 3)))
    pi = mx.nd.array(np.full(4, 0.25))
    obs = mx.nd.array(rng.integers(0, 3, T), dtype=np.int32)
    params = (A_logits, B_logits)
    for p in params:
        p.attach_grad()

    def step():
        with mx.autograd.record():
            loss = -engine(mx.nd.softmax(A_logits, axis=1), mx.nd.softmax(B_logits, axis=1), pi, obs)
        loss.backward()
        for p in params:
            mx.nd.sgd_update(p, p.grad, lr=1e-2, out=p)
        B_logits.wait_to_read()
    return step, params


def step_table(ts=STEP_TS, repeats=21, budget=5.0, progress=None):
    """Training step, fused vs unroll, for each T in ts: median seconds per step."""
    import hmmop
    engines = {"fused": hmmop.hmm_forward, "unroll": hmmop.unroll_forward}
    rows = []
    for T in ts:
        steps = {name: training_step(fn, T) for name, fn in engines.items()}
        for step, _ in steps.values():          # untimed first step: warm-up and check
            step()
        for name, a, b in zip("AB", steps["fused"][1], steps["unroll"][1]):
            a, b = a.asnumpy(), b.asnumpy()
            _check(np.allclose(a, b, rtol=1e-4, atol=1e-4),
                   f"training step T={T}: fused and unroll updated {name}_logits differently "
                   f"(max difference {np.abs(a - b).max():g})")
        cells = {}
        for name, (step, _) in steps.items():
            _report(progress, f"training step T={T}: {name}")
            cells[name] = median_time(step, repeats, budget=budget)
        rows.append((f"T={T}", cells))
    return {"title": "training step, N=4 M=3, one sequence of T symbols: median per step",
            "columns": list(engines), "rows": rows, "ratio": ("unroll", "fused", "unroll/fused")}


def kernel_data(n, T, m=KERNEL_M, seed=0):
    """(A, B, pi, seq): a random n-state, m-symbol model and T random symbols (also bench/test_bench_kernel.py's)."""
    rng = np.random.default_rng(seed)
    A = rng.random((n, n)) + 0.1
    B = rng.random((n, m)) + 0.1
    pi = rng.random(n) + 0.1
    return A / A.sum(1, keepdims=True), B / B.sum(1, keepdims=True), pi / pi.sum(), rng.integers(0, m, T)


def kernel_table(ns=KERNEL_NS, T=20_000, repeats=11, budget=3.0, progress=None):
    """Kernel alone, one thread, one sequence of T symbols (M=8): median seconds per time step."""
    from .. import _kernel
    lib = _hmmlearn()
    rows = []
    for n in ns:
        A, B, pi, seq = kernel_data(n, T)
        obs32, lengths = _kernel.prepare_obs(seq.reshape(1, -1), KERNEL_M)
        gll = np.ones(1)
        dA, dB, dpi = np.empty_like(A), np.empty_like(B), np.empty_like(pi)

        def ours():
            ws = _kernel.forward(A, B, pi, obs32, lengths, 1)
            _kernel.backward(ws, gll, dA, dB, dpi, 1, 1, 1, 1)
            return ws.ll[0]

        ll = ours()
        _check(np.isfinite(ll) and np.isfinite(dA).all(), f"kernel N={n}: non-finite result")
        _report(progress, f"kernel N={n}: hmmop")
        cells = {"hmmop": median_time(ours, repeats, budget=budget) / T, "hmmlearn": None}
        if lib is not None:
            _hmmc = lib[1]
            frameprob = np.ascontiguousarray(B[:, seq].T)

            def theirs():
                log_prob, fwd, scaling = _hmmc.forward_scaling(pi, A, frameprob)
                bwd = _hmmc.backward_scaling(pi, A, frameprob, scaling)
                _hmmc.compute_scaling_xi_sum(fwd, A, bwd, frameprob)
                return log_prob

            log_prob = theirs()
            _check(np.isclose(ll, log_prob, rtol=1e-10, atol=0),
                   f"kernel N={n}: log-likelihoods differ, hmmop {ll!r}, hmmlearn {log_prob!r}")
            _report(progress, f"kernel N={n}: hmmlearn")
            cells["hmmlearn"] = median_time(theirs, repeats, budget=budget) / T
        rows.append((f"N={n}", cells))
    return {"title": f"kernel alone, one thread, one sequence of {T} symbols (M={KERNEL_M}): median per time step"
                     + ("" if lib else NO_HMMLEARN),
            "columns": ["hmmop", "hmmlearn"], "rows": rows, "ratio": ("hmmlearn", "hmmop", "hmmlearn/hmmop")}


def em_problem(n, m, n_sequences, seed=0):
    """(start (A0, B0, pi0), seqs): n_sequences sequences of 20..200 symbols sampled from a
    known seeded model (A = (I + Dirichlet(1) rows) / 2, B rows Dirichlet(0.5)), and a random
    start (Dirichlet(1) rows)."""
    from .. import inference
    rng = np.random.default_rng([seed, n, m])
    A = 0.5 * np.eye(n) + 0.5 * rng.dirichlet(np.ones(n), n)
    B = rng.dirichlet(np.full(m, 0.5), n)
    pi = rng.dirichlet(np.ones(n))
    lengths = rng.integers(EM_MIN_LEN, EM_MAX_LEN + 1, n_sequences)
    obs, _ = inference.sample(A, B, pi, n_sequences, EM_MAX_LEN, seed=rng.integers(2 ** 32))
    seqs = [obs[i, :L].astype(np.int64) for i, L in enumerate(lengths)]
    start = (rng.dirichlet(np.ones(n), n), rng.dirichlet(np.ones(m), n), rng.dirichlet(np.ones(n)))
    return start, seqs


def em_table(sizes=EM_SIZES, n_sequences=500, repeats=11, budget=5.0, progress=None):
    """One EM iteration from the same start, hmmop vs hmmlearn, for each (N, M): median seconds.
    Raises MismatchError unless both end with the same parameters (to 1e-10)."""
    from .. import HMM
    lib = _hmmlearn()
    rows = []
    for n, m in sizes:
        (A0, B0, pi0), seqs = em_problem(n, m, n_sequences)
        model = HMM.from_probabilities(A0, B0, pi0, dtype="float64")
        history = []

        def reset():
            model.set_probabilities(A=A0, B=B0, pi=pi0)

        def ours():
            history.append(model.fit(seqs, method="em", epochs=1, progress=False)[0])

        reset()
        ours()                                  # warm-up
        _report(progress, f"EM iteration N={n} M={m}: hmmop")
        cells = {"hmmop": median_time(ours, repeats, setup=reset, budget=budget), "hmmlearn": None}
        _check(len(set(history)) == 1, f"EM N={n} M={m}: repeated iterations from one start differ: {history}")
        if lib is not None:
            theirs = lib[0].CategoricalHMM(n, n_features=m, n_iter=1, init_params="", params="ste")
            X, lengths = np.concatenate(seqs).reshape(-1, 1), [len(s) for s in seqs]

            def reset_theirs():
                theirs.startprob_, theirs.transmat_, theirs.emissionprob_ = pi0.copy(), A0.copy(), B0.copy()

            _report(progress, f"EM iteration N={n} M={m}: hmmlearn")
            cells["hmmlearn"] = median_time(lambda: theirs.fit(X, lengths), repeats, setup=reset_theirs,
                                            budget=budget)
            _check(np.isclose(history[-1], theirs.monitor_.history[0], rtol=1e-12, atol=0),
                   f"EM N={n} M={m}: log-likelihoods differ, hmmop {history[-1]!r}, "
                   f"hmmlearn {theirs.monitor_.history[0]!r}")
            for name, a, b in (("A", model.A, theirs.transmat_), ("B", model.B, theirs.emissionprob_),
                               ("pi", model.pi, theirs.startprob_)):
                _check(np.allclose(a, b, rtol=0, atol=1e-10),
                       f"EM N={n} M={m}: updated {name} differs from hmmlearn's "
                       f"(max difference {np.abs(a - b).max():g})")
        rows.append((f"N={n} M={m}", cells))
    return {"title": f"one EM iteration, {n_sequences} sequences of {EM_MIN_LEN}..{EM_MAX_LEN} symbols, "
                     f"float64: median" + ("" if lib else NO_HMMLEARN),
            "columns": ["hmmop", "hmmlearn"], "rows": rows, "ratio": ("hmmlearn", "hmmop", "hmmlearn/hmmop")}


def run(quick=False, progress=None):
    """The three headline tables (see the module docstring); quick: fewer repetitions, smaller
    data: about 8 s on two cores, the full run about 25 s. progress: optional callable(str) told
    what runs next."""
    settings = QUICK if quick else FULL
    return [step_table(progress=progress, **settings["step"]),
            kernel_table(progress=progress, **settings["kernel"]),
            em_table(progress=progress, **settings["em"])]


# -- the machine's peak ---------------------------------------------------------------------------

X86_MACHINES = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")


def _cpuinfo():
    """/proc/cpuinfo as a list of dicts, one per logical processor ({} fields stripped), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "processor" in fields:
            blocks.append(fields)
    return blocks or None


def _usable_cpus():
    """The logical processors this process may run on (ids), or None where that cannot be asked."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _physical_cores(blocks):
    """Distinct (physical id, core id) among the usable processors: SMT siblings share one core's
    FMA units. Falls back to the count of usable logical processors where cpuinfo has no ids."""
    usable = _usable_cpus()
    mine = [b for b in blocks if usable is None or not b["processor"].isdigit()
            or int(b["processor"]) in usable]
    ids = {(b.get("physical id"), b.get("core id")) for b in mine}
    if not mine or (None, None) in ids:
        return len(usable) if usable else (os.cpu_count() or 1)
    return len(ids)


def _simd(flags):
    """(register bits, name, FMA units per core assumed, flops-per-lane label) from cpuinfo flags."""
    if "avx512f" in flags:
        return 512, "AVX-512", 2, "2 (FMA)"
    if "avx2" in flags and "fma" in flags:
        return 256, "AVX2+FMA", 2, "2 (FMA)"
    if "avx" in flags:
        return 256, "AVX, no FMA", 1, "2 (mul + add)"
    return 128, "SSE2", 1, "2 (mul + add)"


def _clock_ghz(blocks):
    """(GHz, where it came from): the model name's nominal '@ x.xxGHz' if it has one (cpu MHz is a
    momentary reading that frequency scaling moves), else the highest 'cpu MHz'; (None, None)."""
    import re
    match = re.search(r"@\s*([0-9.]+)\s*GHz", blocks[0].get("model name", ""), re.IGNORECASE)
    if match:
        return float(match.group(1)), "model name's nominal clock"
    mhz = []
    for b in blocks:
        try:
            mhz.append(float(b["cpu mhz"]))
        except (KeyError, ValueError):
            pass
    if mhz:
        return max(mhz) / 1000, "'cpu MHz' in /proc/cpuinfo"
    return None, None


def peak_gflops(dtype, threads=None):
    """(GFLOP/s, description): the theoretical FMA peak of ``threads`` cores in ``dtype``.

    peak = cores x clock x SIMD lanes x 2 (an FMA is 2 flops) x FMA units per core, read from
    /proc/cpuinfo: cores are the usable physical cores (SMT siblings share their core's units),
    at most ``threads`` of them (None: all); the widest vector of the flags (avx512f: 512 bits,
    avx2 + fma: 256, else 128-bit SSE2; lanes = bits / 32 or 64); the clock is the model name's
    nominal '@ x.xxGHz' where it has one, else the highest 'cpu MHz'. FMA units per core cannot
    be read from /proc/cpuinfo: 2 is assumed with AVX-512 (server parts; some have 1) or AVX2+FMA,
    1 (a multiply and an add pipe) without FMA. (On the development machine hmmop's kernel
    reached 106 float32 GFLOP/s on one core, above one unit's 73.6: two units.) The description
    states every factor and where it came from.

    dtype: float32 or float64 (anything np.dtype accepts; else ValueError). Returns (None,
    reason) off Linux, off x86, or where /proc/cpuinfo lacks what the figure needs.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"peak_gflops: dtype must be float32 or float64, not {dtype}")
    if threads is not None and (int(threads) != threads or threads < 1):
        raise ValueError(f"peak_gflops: threads must be a positive integer or None, not {threads!r}")
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux"):
        return None, f"peak unknown: reads /proc/cpuinfo, which {sys.platform} does not have"
    if machine not in X86_MACHINES:
        return None, f"peak unknown: only x86 SIMD flags are understood, this is {machine or 'unknown'}"
    blocks = _cpuinfo()
    if blocks is None:
        return None, "peak unknown: /proc/cpuinfo cannot be read"
    ghz, clock_source = _clock_ghz(blocks)
    if ghz is None or ghz <= 0:
        return None, "peak unknown: /proc/cpuinfo gives no clock (no 'cpu MHz', no '@ x.xxGHz')"
    physical = _physical_cores(blocks)
    cores = physical if threads is None else min(int(threads), physical)
    bits, simd, units, per_lane = _simd(set(blocks[0].get("flags", "").split()))
    lanes = bits // (8 * dtype.itemsize)
    per_core_unit = ghz * lanes * 2                       # one unit, one core
    gflops = cores * per_core_unit * units
    assumed = ("assumed: typical of AVX-512 server parts, some have 1" if simd == "AVX-512" else
               "assumed: two FMA pipes since Haswell / Zen 2" if units == 2 else
               "one multiply and one add pipe assumed")
    text = (f"{cores} core{'s' * (cores != 1)} x {ghz:.2f} GHz ({clock_source}) x {lanes} {dtype.name} "
            f"lanes ({simd}, {bits}-bit) x {per_lane} x {units} FMA unit{'s' * (units != 1)} ({assumed})"
            f" = {gflops:.4g} GFLOP/s")
    if cores < (threads or 0):
        text += f"; {threads} threads asked, {physical} physical cores usable"
    return gflops, text


# -- output ---------------------------------------------------------------------------------------

def format_duration(seconds):
    """'1.35 ms': three significant digits in us, ms or s; '-' for None."""
    if seconds is None:
        return "-"
    seconds = float(f"{seconds:.3g}")        # round first, so 0.9996 s reads 1 s, not 1e+03 ms
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 1000 else f"{seconds:.0f} s"


def format_ratio(numerator, denominator):
    """'12.3x', or '-' where either side is missing (or the denominator is 0)."""
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.1f}x"


def format_tables(tables):
    """Plain-text tables: a title line, then the rows in aligned columns and the ratio, if any."""
    blocks = []
    for table in tables:
        ratio = table.get("ratio")
        header = [""] + list(table["columns"]) + ([ratio[2]] if ratio else [])
        lines = [header]
        for label, cells in table["rows"]:
            line = [str(label)] + [format_duration(cells.get(c)) for c in table["columns"]]
            if ratio:
                line.append(format_ratio(cells.get(ratio[0]), cells.get(ratio[1])))
            lines.append(line)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [f"== {table['title']} =="]
        for line in lines:
            text.append("  ".join([line[0].ljust(widths[0])] +
                                  [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])]).rstrip())
        blocks.append("\n".join(text))
    return "\n\n".join(blocks) + "\n"


def main(quick=False, plot=None, out=None, err=None):
    """What ``hmmop bench`` does: the machine's description and the tables on ``out``, progress
    on ``err``, and the tables drawn into the image ``plot`` if given. Returns None."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    print(describe_machine(), file=out, flush=True)
    print(file=out, flush=True)
    tables = run(quick=quick, progress=lambda message: print(f"running: {message}", file=err, flush=True))
    print(format_tables(tables), file=out, end="", flush=True)
    if plot is not None:
        from .plots import benchmark
        benchmark(tables, plot)
        print(f"plot written to {plot}", file=err, flush=True)
