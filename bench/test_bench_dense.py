"""hmm_forward_dense (dense log-emissions) against hmm_forward (categorical) on the same HMMs.

The dense operator takes log_emission (batch, T, N) where the categorical one takes B (N, M) and
symbols; with log_emission[b, t, :] = log B[:, obs[b, t]] both compute the same log-likelihoods
(and d ll / d log_emission[b, t, i] * 1 / B[i, obs] summed per symbol is d ll / dB). The issue's
target: the dense operator's log-likelihood + gradient within 1.3x of the categorical one's.

"dense" table, one timed call = forward + backward, every gradient requested (request code 1):
- driver rows: _kernel.forward + backward ("categorical", M=8 symbols, observations through
  _kernel.prepare_obs) against _kernel.forward_dense + backward_dense ("dense": logE rows
  (batch * T, N), sequence b at rows b*T.., d logE written too), the C batch driver both;
  N=64, 256 sequences of 200 steps: float32 on all of hmmop's threads (the target row), float32 on
  1 thread, float64 on all threads. Inputs and gradient buffers are made outside the timed call,
  d logE at a 64-byte aligned address, as MXNet's CPU arrays are (the operators' case: the driver
  then streams it, csrc/hmm_batch.h's HMM_STREAM_BYTES; NumPy's own arrays are 16-byte aligned).
- op rows: the same float32 workload through the MXNet operators under autograd:
  hmmop.hmm_forward(A, B, pi, obs) against hmmop.hmm_forward_dense(A, pi, log_emission, lengths)
  (default value checks on), gradients attached to A, B / log_emission and pi; record, backward,
  wait for the gradients. The dense side runs backend="native" where hmmop.ops.native offers it, else
  backend="cython" (the CustomOp), and the row's name says which.

The float32 1-thread and float64 driver rows are @pytest.mark.slow (make test runs the target row
only). Before timing, each test runs both sides once and fails unless they agree: ll to 1e-4 relative in
float32 (1e-10 in float64), dA, dpi and dB (dense: rebuilt from d logE) to the same tolerance as
max |difference| / max |categorical|.

"dense_step" table: one training step at the gist's size (N=4, M=3, one sequence of 30): softmax
of A's logits, log_softmax of B's logits gathered at the symbols into log_emission (1, T, N),
ll, backward, sgd_update of both logit arrays - as bench/test_bench_step.py, with:
- "dense": hmmop.hmm_forward_dense(..., backend="native"), or "cython" where native is missing
  (the row's name says which), its default value check on (a host pass over log_emission, which
  waits for the ops that compute it); "dense unchecked": the same with check_values=False;
- "floor": the same step with two builtin ops of the same inputs, dot(log_emission, dot(A, pi)),
  in place of hmm_forward_dense (test_bench_step.py's floor, for this step: what MXNet's step
  costs with no HMM in it);
- "categorical": the same parameters through hmmop.hmm_forward (B = softmax of B's logits, no
  gather) - test_bench_step.py's "native" column, for reference.
Target: dense within 1.3x of the floor. Checked before timing: one step of each dense kind and
one categorical step from the same start update both logit arrays alike (to 1e-5).

Run: python -m pytest bench/test_bench_dense.py   (about 20 s; under --benchmark-disable each
body runs once and nothing is printed)
"""
import functools
from typing import NamedTuple

import mxnet as mx
import numpy as np
import pytest

import hmmop
from benchutil import TABLES
from hmmop import _kernel

TABLE, STEP_TABLE = "dense", "dense_step"
TABLES[TABLE] = ("log-likelihood + all gradients, dense log-emissions vs categorical (M=8), "
                 "target dense/categorical <= 1.3x (float32, all threads): median",
                 ["categorical", "dense"], ("dense", "categorical", "dense/categorical"))
TABLES[STEP_TABLE] = ("training step through hmm_forward_dense, N=4 M=3 (the gist), "
                      "target dense/floor <= 1.3x: median per step",
                      ["dense", "dense unchecked", "floor", "categorical"], ("dense", "floor", "dense/floor"))

RTOL = {"float32": 1e-4, "float64": 1e-10}
STEP_ATOL = 1e-5


class Workload(NamedTuple):
    n: int
    m: int
    batch: int
    T: int
    dtype: str
    threads: object = None     # None: hmmop's default (all); else an int
    rounds: int = 15

    def num_threads(self):
        return hmmop.get_num_threads() if self.threads is None else self.threads

    @property
    def label(self):
        threads = "all threads" if self.threads is None else \
            f"{self.threads} thread{'s' * (self.threads != 1)}"
        return f"N={self.n} M={self.m}, {self.batch} x {self.T}, {self.dtype}, {threads}"


TARGET = Workload(64, 8, 256, 200, "float32")
WORKLOADS = [TARGET, Workload(64, 8, 256, 200, "float32", 1), Workload(64, 8, 256, 200, "float64")]
# CI (make test, -m "not slow") runs the target row only; make bench runs them all.
PARAMS = [pytest.param(w, id=w.label.replace(" ", ""), marks=() if w == TARGET else pytest.mark.slow)
          for w in WORKLOADS]


@functools.lru_cache(maxsize=None)
def data(w):
    """Shared, never written: A, B, pi (workload dtype), obs (batch, T) int64, obs32 + lengths
    (prepare_obs), logE (batch * T, N) = log B[:, obs] row by row, starts (batch,)."""
    rng = np.random.default_rng([w.n, w.m, w.batch, w.T])
    A = rng.random((w.n, w.n)) + 0.1
    B = rng.random((w.n, w.m)) + 0.1
    pi = rng.random(w.n) + 0.1
    A, B, pi = (x / x.sum(-1, keepdims=True) for x in (A, B, pi))
    obs = rng.integers(0, w.m, (w.batch, w.T))
    obs32, lengths = _kernel.prepare_obs(obs, w.m)
    logE = np.ascontiguousarray(np.log(B).T[obs.reshape(-1)], dtype=w.dtype)
    A, B, pi = (np.ascontiguousarray(x, dtype=w.dtype) for x in (A, B, pi))
    starts = np.arange(w.batch, dtype=np.int64) * w.T
    return A, B, pi, obs, obs32, lengths, logE, starts


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array at a 64-byte aligned address."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def dB_from_posteriors(gamma, obs, B):
    """d ll / dB rebuilt from the dense side's d ll / d logE (the posteriors): sum over the steps
    showing symbol k of gamma[t, i], over B[i, k]."""
    symbols = obs.reshape(-1)
    counts = np.stack([gamma[symbols == k].sum(axis=0, dtype=np.float64) for k in range(B.shape[1])], axis=1)
    return counts / B.astype(np.float64)


def compare(label, ours, ref, rtol):
    """AssertionError unless every named result of ours matches ref (see the docstring)."""
    for name in ref:
        o, r = np.asarray(ours[name], dtype=np.float64), np.asarray(ref[name], dtype=np.float64)
        assert o.shape == r.shape, f"{label}: {name} has shape {o.shape}, categorical {r.shape}"
        assert np.isfinite(o).all() and np.isfinite(r).all(), f"{label}: non-finite {name}"
        if name == "ll":
            err = np.max(np.abs(o - r) / np.abs(r))
        else:
            err = np.max(np.abs(o - r)) / np.max(np.abs(r))
        assert err <= rtol, (f"{label}: dense {name} differs from categorical by {err:.3g} relative "
                             f"(allowed {rtol:g})")


# -- the batch driver ------------------------------------------------------------------------------

def driver_call(w, kind):
    """(call, outputs): call() runs forward + backward into preallocated buffers; outputs() runs it
    and returns {ll, dA, dpi, dB} (dense: dB rebuilt from d logE)."""
    A, B, pi, obs, obs32, lengths, logE, starts = data(w)
    num_threads = w.num_threads()
    gll = np.ones(w.batch, dtype=w.dtype)
    dA, dpi = np.empty_like(A), np.empty_like(pi)
    if kind == "categorical":
        dB = np.empty_like(B)

        def call():
            ws = _kernel.forward(A, B, pi, obs32, lengths, num_threads)
            _kernel.backward(ws, gll, dA, dB, dpi, 1, 1, 1, num_threads)
            return ws

        def outputs():
            return {"ll": call().ll.copy(), "dA": dA.copy(), "dpi": dpi.copy(), "dB": dB.copy()}
    else:
        dlogE = aligned_empty(logE.shape, logE.dtype)
        dense_lengths = np.full(w.batch, w.T, dtype=np.int64)

        def call():
            ws = _kernel.forward_dense(A, pi, logE, starts, dense_lengths, num_threads)
            _kernel.backward_dense(ws, gll, logE, dA, dpi, dlogE, 1, 1, 1, num_threads)
            return ws

        def outputs():
            ll = call().ll.copy()
            return {"ll": ll, "dA": dA.copy(), "dpi": dpi.copy(), "dB": dB_from_posteriors(dlogE, obs, B)}
    return call, outputs


@pytest.mark.parametrize("kind", ["categorical", "dense"])
@pytest.mark.parametrize("w", PARAMS)
def test_driver(benchmark, record, w, kind):
    benchmark.group = f"dense driver {w.label}"
    compare(f"driver {w.label}", driver_call(w, "dense")[1](), driver_call(w, "categorical")[1](), RTOL[w.dtype])
    benchmark.pedantic(driver_call(w, kind)[0], rounds=w.rounds, iterations=1, warmup_rounds=1)
    record(TABLE, f"driver {w.label}", kind)


# -- the operators under autograd ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def dense_backend():
    """'native' where hmm_forward_dense(backend='native') runs, else 'cython'."""
    A = mx.nd.array([[1.0]])
    try:
        hmmop.hmm_forward_dense(A, mx.nd.array([1.0]), mx.nd.zeros((1, 1, 1)), [1], backend="native")
    except RuntimeError:
        return "cython"
    return "native"


def op_call(w, kind):
    """(call, outputs) of the autograd round trip through one operator (see the docstring)."""
    A, B, pi, obs, _, _, logE, _ = data(w)
    nd = {name: mx.nd.array(x, dtype=w.dtype) for name, x in (("A", A), ("B", B), ("pi", pi))}
    if kind == "categorical":
        inputs = (nd["A"], nd["B"], nd["pi"], mx.nd.array(obs, dtype=np.int32))
        leaves = {"A": inputs[0], "B": inputs[1], "pi": inputs[2]}

        def ll_fn():
            return hmmop.hmm_forward(*inputs)
    else:
        le = mx.nd.array(logE.reshape(w.batch, w.T, w.n), dtype=w.dtype)
        inputs = (nd["A"], nd["pi"], le, mx.nd.array(np.full(w.batch, w.T), dtype=np.int64))
        leaves = {"A": inputs[0], "pi": inputs[1], "logE": le}
        backend = dense_backend()

        def ll_fn():
            return hmmop.hmm_forward_dense(*inputs, backend=backend)
    for x in leaves.values():
        x.attach_grad()

    def call():
        with mx.autograd.record():
            ll = ll_fn()
        ll.backward()
        for x in leaves.values():
            x.grad.wait_to_read()
        return ll

    def outputs():
        out = {"ll": call().asnumpy(), "dA": leaves["A"].grad.asnumpy(), "dpi": leaves["pi"].grad.asnumpy()}
        if kind == "categorical":
            out["dB"] = leaves["B"].grad.asnumpy()
        else:
            out["dB"] = dB_from_posteriors(leaves["logE"].grad.asnumpy().reshape(-1, w.n), obs, B)
        return out

    return call, outputs


@pytest.mark.parametrize("kind", ["categorical", "dense"])
def test_operators(benchmark, record, kind):
    w = TARGET
    benchmark.group = f"dense operators {w.label}"
    hmmop.set_num_threads(w.num_threads())
    try:
        compare(f"operators {w.label}", op_call(w, "dense")[1](), op_call(w, "categorical")[1](), RTOL[w.dtype])
        call = op_call(w, kind)[0]
        call()
        benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
    finally:
        hmmop.set_num_threads(None)
    record(TABLE, f"ops under autograd ({dense_backend()}), {w.label}", kind)


# -- the training step at the gist's size ----------------------------------------------------------

N_STEP, M_STEP, T_STEP = 4, 3, 30


def floor(A, pi, log_emission, lengths):
    return mx.nd.dot(log_emission, mx.nd.dot(A, pi))


def make_step(kind, T=T_STEP, seed=0):
    """(step, params): one SGD step of N=4, M=3 logits on one sequence of T symbols.
    kind: "dense", "dense unchecked" / "floor" (log_emission gathered from log_softmax of B's logits, then
    hmm_forward_dense or floor) or "categorical" (hmm_forward on softmax of B's logits)."""
    rng = np.random.default_rng(seed)
    A_logits = mx.nd.array(rng.normal(size=(N_STEP, N_STEP)))
    B_logits = mx.nd.array(rng.normal(size=(N_STEP, M_STEP)))
    pi = mx.nd.array(np.full(N_STEP, 1.0 / N_STEP))
    obs = mx.nd.array(rng.integers(0, M_STEP, T), dtype=np.int32)
    lengths = mx.nd.array([T], dtype=np.int64)
    params = (A_logits, B_logits)
    for p in params:
        p.attach_grad()
    if kind == "dense":
        engine = functools.partial(hmmop.hmm_forward_dense, backend=dense_backend())
    elif kind == "dense unchecked":
        engine = functools.partial(hmmop.hmm_forward_dense, backend=dense_backend(), check_values=False)
    else:
        engine = floor

    def ll(A):
        if kind == "categorical":
            return hmmop.hmm_forward(A, mx.nd.softmax(B_logits, axis=1), pi, obs)
        log_b = mx.nd.log_softmax(B_logits, axis=1)                        # (N, M)
        log_emission = mx.nd.transpose(mx.nd.take(log_b, obs, axis=1)).reshape((1, T, N_STEP))
        return engine(A, pi, log_emission, lengths)

    def step():
        with mx.autograd.record():
            loss = -ll(mx.nd.softmax(A_logits, axis=1))
        loss.backward()
        for p in params:
            mx.nd.sgd_update(p, p.grad, lr=1e-2, out=p)
        B_logits.wait_to_read()

    return step, params


def check_step():
    """One dense and one categorical step from the same start update the logits alike."""
    results = {}
    for kind in ("dense", "dense unchecked", "categorical"):
        step, params = make_step(kind)
        step()
        results[kind] = [p.asnumpy() for p in params]
    for kind in ("dense", "dense unchecked"):
        for name, d, c in zip(("A_logits", "B_logits"), results[kind], results["categorical"]):
            assert np.allclose(d, c, rtol=0, atol=STEP_ATOL), \
                f"training step: {kind} and categorical updated {name} differently (max {np.abs(d - c).max():g})"


@pytest.mark.parametrize("kind", ["dense", "dense unchecked", "floor", "categorical"])
def test_training_step(benchmark, record, kind):
    benchmark.group = f"dense training step T={T_STEP}"
    check_step()
    step = make_step(kind)[0]
    step()
    benchmark(step)
    record(STEP_TABLE, f"N={N_STEP} M={M_STEP} T={T_STEP}, dense backend {dense_backend()}", kind)
