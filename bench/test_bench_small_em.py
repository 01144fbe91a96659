"""EM on small data (issue 16: "small data must not be slower than hmmlearn"): a whole fit of 100
Baum-Welch iterations of a categorical HMM, hmmop against hmmlearn 0.3.3, per iteration.

Data (seeded, made once per run and workload, outside every timed call): N=4 states, M=3 symbols; a
known model (A = 0.7 I + 0.3 Dirichlet(1) rows, B and pi Dirichlet(1)) and its sampled sequences, in
hmmlearn's concatenated form (X (n,) int, lengths), state paths and symbols drawn by inverse CDF in
NumPy (not by hmmop). The EM start: A, B, pi Dirichlet(1) rows from the same seed.

Workloads: 1 sequence of 30 symbols (the issue's case; target: hmmop <= 20 us per iteration, where
hmmlearn takes ~120 us and hmmop took ~560 us through MXNet) and 50 sequences of 100 symbols.

"small_em" table, one fit of 100 iterations from the start (each round's start set in pedantic's
untimed setup), the median divided by 100:
- "hmmlearn": hmmlearn.hmm.CategoricalHMM(4, n_iter=100, tol=-inf, init_params="", params="ste")
  with n_features, startprob_, transmat_, emissionprob_ set, .fit(X[:, None], lengths) (its default
  implementation="log");
- "hmmop EmissionHMM": hmmop.EmissionHMM(4, CategoricalEmission(4, 3), dtype="float64") holding the
  start, .fit(X, lengths, epochs=100, progress=False) (the core's EM: em_iterations, the whole loop
  in C, csrc/hmm_em.c);
- "hmmop HMM": hmmop.HMM(4, 3, dtype="float64") holding the start, .fit(X, lengths, method="em",
  epochs=100, progress=False) - whatever hmmop.HMM's EM does (since it became an EmissionHMM, the
  same C loop).
tol: -inf for hmmlearn and None for hmmop, so every fit runs its 100 iterations (hmmlearn's test
``history[-1] - history[-2] < 0`` can stop a converged fit on a rounding-level decrease).
Checked in the same run: after every round (in the next round's untimed setup, and after the last),
the model's A, B, pi and its 100-entry history equal hmmlearn's fit from the same start to 1e-8
relative (absolute floor 1e-12). hmmlearn's result comes from its own timed rounds when its test ran
first (the parametrisation puts it first), else from one untimed fit.

Run: python -m pytest bench/test_bench_small_em.py   (a few seconds)
"""
import functools
from typing import NamedTuple

import numpy as np
import pytest
from hmmlearn import hmm

from benchutil import TABLES
from hmmop import HMM, EmissionHMM
from hmmop.emissions import CategoricalEmission

TABLE = "small_em"
IMPLS = ["hmmlearn", "hmmop EmissionHMM", "hmmop HMM"]
TABLES[TABLE] = ("EM on small data: one iteration of a 100-iteration fit, N=4 M=3 (target: hmmop <= 20 us "
                 "at 1 x 30): median", IMPLS, ("hmmlearn", "hmmop HMM", "hmmlearn/hmmop HMM"))
N, M, ITERATIONS = 4, 3, 100
RTOL, ATOL = 1e-8, 1e-12


class Workload(NamedTuple):
    sequences: int
    length: int
    hmmlearn_rounds: int
    hmmop_rounds: int

    @property
    def label(self):
        return f"{self.sequences} x {self.length}"


WORKLOADS = [Workload(1, 30, 5, 50), Workload(50, 100, 2, 10)]
PARAMS = [pytest.param(w, id=w.label.replace(" ", "")) for w in WORKLOADS]


class Problem(NamedTuple):
    X: np.ndarray           # (n,) int64 symbols
    lengths: np.ndarray     # (sequences,) int64
    start: tuple            # A (N, N), B (N, M), pi (N,) float64


@functools.lru_cache(maxsize=None)
def problem(w):
    """The workload's data and EM start (see the module docstring); shared, never written."""
    rng = np.random.default_rng([w.sequences, w.length])
    A = 0.7 * np.eye(N) + 0.3 * rng.dirichlet(np.ones(N), N)
    B, pi = rng.dirichlet(np.ones(M), N), rng.dirichlet(np.ones(N))
    u = rng.random((w.sequences, w.length, 2))
    states = np.empty((w.sequences, w.length), dtype=np.int64)
    states[:, 0] = (np.cumsum(pi)[None, :] < u[:, 0, :1]).sum(axis=1)
    for t in range(1, w.length):
        states[:, t] = (np.cumsum(A, axis=1)[states[:, t - 1]] < u[:, t, :1]).sum(axis=1)
    states = np.minimum(states, N - 1)
    X = np.minimum((np.cumsum(B, axis=1)[states] < u[:, :, 1:]).sum(axis=2), M - 1).reshape(-1)
    start = (rng.dirichlet(np.ones(N), N), rng.dirichlet(np.ones(M), N), rng.dirichlet(np.ones(N)))
    return Problem(X.astype(np.int64), np.full(w.sequences, w.length, dtype=np.int64), start)


def hmmlearn_model(w):
    model = hmm.CategoricalHMM(N, n_iter=ITERATIONS, tol=-np.inf, init_params="", params="ste")
    model.n_features = M
    set_hmmlearn_start(model, problem(w).start)
    return model


def set_hmmlearn_start(model, start):
    model.transmat_, model.emissionprob_, model.startprob_ = (x.copy() for x in start)


def hmmlearn_result(model):
    return {"history": np.array(model.monitor_.history), "A": model.transmat_.copy(),
            "B": model.emissionprob_.copy(), "pi": model.startprob_.copy()}


REFERENCE = {}              # workload -> hmmlearn_result after its fit from the start


def reference(w):
    if w not in REFERENCE:
        p, model = problem(w), hmmlearn_model(w)
        model.fit(p.X[:, None], p.lengths)
        REFERENCE[w] = hmmlearn_result(model)
    return REFERENCE[w]


def hmmop_model(w, impl):
    A, B, pi = problem(w).start
    if impl == "hmmop HMM":
        model = HMM(N, M, dtype="float64")
        model.set_probabilities(A=A, B=B, pi=pi)
        return model
    emission = CategoricalEmission(N, M)
    emission.B = B
    model = EmissionHMM(N, emission, dtype="float64")
    model.set_probabilities(A=A, pi=pi)
    model.initialized = True
    return model


def check(label, model, history, ref):
    """AssertionError unless the fitted model and history equal hmmlearn's (see the module docstring)."""
    ours = {"history": np.asarray(history), "A": model.A, "B": model.emission.B, "pi": model.pi}
    for name, r in ref.items():
        o = ours[name]
        assert o.shape == r.shape, f"{label}: {name} has shape {o.shape}, hmmlearn's {r.shape}"
        bad = ~(np.abs(o - r) <= RTOL * np.abs(r) + ATOL)
        assert not bad.any(), (f"{label}: {name} differs from hmmlearn's: {int(bad.sum())} entries beyond "
                               f"{RTOL:g} relative, max |difference| {np.max(np.abs(o - r)):.3g}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("w", PARAMS)
def test_small_em(benchmark, record, w, impl):
    benchmark.group = f"small EM {w.label}"
    p = problem(w)
    if impl == "hmmlearn":
        model = hmmlearn_model(w)
        benchmark.pedantic(model.fit, args=(p.X[:, None], p.lengths),
                           setup=lambda: set_hmmlearn_start(model, p.start), rounds=w.hmmlearn_rounds, iterations=1)
        REFERENCE[w] = hmmlearn_result(model)
        assert len(REFERENCE[w]["history"]) == ITERATIONS
    else:
        ref, label = reference(w), f"{w.label}, {impl}"
        done = []                   # (model, history) of the round before, checked in the next setup

        def setup():
            while done:
                check(label, *done.pop(), ref)
            return (hmmop_model(w, impl),), {}

        def fit(model):
            if impl == "hmmop HMM":
                done.append((model, model.fit(p.X, p.lengths, method="em", epochs=ITERATIONS, progress=False)))
            else:
                done.append((model, model.fit(p.X, p.lengths, epochs=ITERATIONS, progress=False)))

        benchmark.pedantic(fit, setup=setup, rounds=w.hmmop_rounds, iterations=1, warmup_rounds=1)
        check(label, *done.pop(), ref)
    record(TABLE, w.label, impl, per=ITERATIONS)
