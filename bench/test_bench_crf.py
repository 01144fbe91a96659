"""hmmop.CRF (hmmop/nn/crf.py) against the same CRF written as gluon operations looping over time steps.

Workloads (issue 17): float32, batch 32, T = 50 with lengths drawn in 25..50 (seeded), K = 9 (CoNLL NER's
BIO tags) and K = 45 (Penn Treebank POS tags), unconstrained, parameters and emissions seeded N(0, 1).

"crf_nll" table, one timed call = the per-sequence NLL + backward (gradients of the emissions and of the
three parameters), waited for:
- "hmmop": the hybridized CRF (hmm_forward_dense: the native op where loaded), its host checks of tags and
  lengths on;
- "gluon loop": MXNet's lstm_crf example's approach vectorised over tags: alpha (batch, K) advanced one
  step at a time by a log-sum-exp over (batch, K, K), steps past a length held by a 0/1 mask; the gold
  score by the same gathers; autograd for the backward.
Target: gluon loop / hmmop >= 20x.

"crf_decode" table: the best paths and their scores of the same batches: crf.decode (Viterbi in C on the
host copy) against a gluon loop (max/argmax over (batch, K, K) per step, then a backtrack loop of picks,
paths copied out per sequence).  Target >= 10x.

pytorch-crf's columns (issue 17's reference; targets pytorch-crf / hmmop >= 5x in both tables) run only
where torch and torchcrf are importable: neither is a dependency, and the columns are skipped otherwise.
They time the same batches with the same parameters, torch on 2 threads: "crf_nll" -crf(emissions, tags,
mask, reduction="none") then .sum().backward() (emission and parameter gradients, set afresh each call);
"crf_decode" crf.decode(emissions, mask) (lists of tags).  The mask is steps < length; pytorch-crf's path
score is hmmop's (start[y_1] + emissions + transitions + end[y_L]), so its NLLs and gradients are checked
against hmmop's as the loop's are, and its paths against hmmop's.  Without touching the project's
environment:
    pip install --target DIR torch (the CPU wheel); pip install --target DIR --no-deps pytorch-crf
    PYTHONPATH=DIR python -m pytest bench/test_bench_crf.py

Checked before timing in the same run: the NLLs agree to 1e-4 relative, the emission and parameter
gradients to 1e-4 of the largest; the decoded paths are the same and their scores agree to 1e-4.

Run: python -m pytest bench/test_bench_crf.py   (about 20 s)
"""
import functools
from typing import NamedTuple

import mxnet as mx
import numpy as np
import pytest

from benchutil import TABLES
from hmmop.nn.crf import CRF

NLL_TABLE, DECODE_TABLE = "crf_nll", "crf_decode"
TABLES[NLL_TABLE] = ("CRF NLL + backward, float32, batch 32, T=50 (lengths 25..50), targets gluon loop / "
                     "hmmop >= 20x, pytorch-crf / hmmop >= 5x: median", ["gluon loop", "pytorch-crf", "hmmop"],
                     [("gluon loop", "hmmop", "gluon/hmmop"), ("pytorch-crf", "hmmop", "pytorch-crf/hmmop")])
TABLES[DECODE_TABLE] = ("CRF decoding (Viterbi), same batches, targets gluon loop / hmmop >= 10x, pytorch-crf / "
                        "hmmop >= 5x: median", ["gluon loop", "pytorch-crf", "hmmop"],
                        [("gluon loop", "hmmop", "gluon/hmmop"), ("pytorch-crf", "hmmop", "pytorch-crf/hmmop")])
RTOL = 1e-4


class Workload(NamedTuple):
    K: int
    batch: int = 32
    T: int = 50
    rounds: int = 15

    @property
    def label(self):
        return f"K={self.K}, {self.batch} x {self.T}"


WORKLOADS = [Workload(9), Workload(45)]
PARAMS = [pytest.param(w, id=f"K{w.K}") for w in WORKLOADS]


@functools.lru_cache(maxsize=None)
def data(w):
    """Shared, never written: emissions (batch, T, K) float32, tags (batch, T), lengths (batch,), and
    transitions, start, end float32."""
    rng = np.random.default_rng([17, w.K, w.batch, w.T])
    em = rng.normal(size=(w.batch, w.T, w.K)).astype(np.float32)
    tags = rng.integers(0, w.K, (w.batch, w.T))
    lengths = rng.integers(w.T // 2, w.T + 1, w.batch)
    trans, start, end = (rng.normal(size=s).astype(np.float32) for s in ((w.K, w.K), (w.K,), (w.K,)))
    return em, tags, lengths, trans, start, end


def make_crf(w):
    _, _, _, trans, start, end = data(w)
    crf = CRF(w.K)
    crf.initialize()
    for name, value in (("transitions", trans), ("start", start), ("end", end)):
        getattr(crf, name).set_data(mx.nd.array(value))
    crf.hybridize()
    return crf


def _logsumexp(x, axis):
    m = mx.nd.BlockGrad(mx.nd.max(x, axis=axis, keepdims=True))
    return mx.nd.log(mx.nd.sum(mx.nd.exp(mx.nd.broadcast_sub(x, m)), axis=axis)) + mx.nd.squeeze(m, axis=axis)


def gluon_nll(em, tags, lengths, trans, start, end):
    """NLL (batch,) by a loop over time steps of gluon ops (see the docstring)."""
    batch, T, K = em.shape
    steps = mx.nd.arange(T).reshape((1, T))
    inside = mx.nd.broadcast_lesser(steps, lengths.reshape((-1, 1)).astype("float32"))      # (batch, T)
    alpha = em[:, 0, :] + start.reshape((1, K))
    for t in range(1, T):
        scores = mx.nd.broadcast_add(alpha.expand_dims(2), trans.expand_dims(0))              # (batch, K, K)
        nxt = _logsumexp(scores, axis=1) + em[:, t, :]
        m = inside[:, t:t + 1]
        alpha = mx.nd.broadcast_mul(m, nxt) + mx.nd.broadcast_mul(1 - m, alpha)
    logz = _logsumexp(mx.nd.broadcast_add(alpha, end.reshape((1, K))), axis=1)
    y = tags.astype("float32")
    last = mx.nd.broadcast_equal(steps, lengths.reshape((-1, 1)).astype("float32") - 1)
    gold = (mx.nd.pick(em, y, axis=2) * inside).sum(axis=1) + mx.nd.take(start, y[:, 0]) \
        + (mx.nd.take(end, y) * last).sum(axis=1) \
        + (mx.nd.take(trans.reshape((-1,)), y[:, :-1] * K + y[:, 1:]) * inside[:, 1:]).sum(axis=1)
    return logz - gold


def gluon_decode(em, lengths, trans, start, end):
    """(paths, scores) by a gluon Viterbi loop and a backtrack loop (see the docstring)."""
    batch, T, K = em.shape
    Lf = lengths.astype("float32")
    score = em[:, 0, :] + start.reshape((1, K))
    pointers = []
    for t in range(1, T):
        x = mx.nd.broadcast_add(score.expand_dims(2), trans.expand_dims(0))
        m = (t < Lf).reshape((-1, 1))
        score = mx.nd.broadcast_mul(m, x.max(axis=1) + em[:, t, :]) + mx.nd.broadcast_mul(1 - m, score)
        pointers.append(x.argmax(axis=1))
    final = mx.nd.broadcast_add(score, end.reshape((1, K)))
    best, cur = final.max(axis=1), final.argmax(axis=1)
    out = [None] * T
    for t in range(T - 1, 0, -1):
        inside = t < Lf
        out[t] = cur
        cur = mx.nd.where(inside, mx.nd.pick(pointers[t - 1], cur, axis=1), cur)
    out[0] = cur
    path = mx.nd.stack(*out, axis=1).asnumpy().astype(np.int64)
    L = lengths.asnumpy()
    return [path[b, :L[b]] for b in range(batch)], best.asnumpy()


def nll_call(w, kind):
    """(call, outputs): call() runs NLL + backward; outputs() -> {nll, d_em, d_trans, d_start, d_end}."""
    em, tags, lengths, trans, start, end = data(w)
    E, Y, L = mx.nd.array(em), mx.nd.array(tags, dtype="int32"), mx.nd.array(lengths, dtype="int64")
    E.attach_grad()
    if kind == "hmmop":
        crf = make_crf(w)
        grads = [E] + [getattr(crf, n) for n in ("transitions", "start", "end")]

        def loss():
            return crf(E, Y, L)

        def grad_of(x):
            return x.grad if isinstance(x, mx.nd.NDArray) else x.grad()
    else:
        P = [mx.nd.array(x) for x in (trans, start, end)]
        for p in P:
            p.attach_grad()
        grads = [E] + P

        def loss():
            return gluon_nll(E, Y, L, *P)

        def grad_of(x):
            return x.grad

    def call():
        with mx.autograd.record():
            nll = loss()
        nll.backward()
        for g in grads:
            grad_of(g).wait_to_read()
        return nll

    def outputs():
        nll = call().asnumpy()
        return dict(zip(("nll", "d_em", "d_trans", "d_start", "d_end"),
                        [nll] + [grad_of(g).asnumpy() for g in grads]))
    return call, outputs


def decode_call(w, kind):
    em, _, lengths, trans, start, end = data(w)
    E, L = mx.nd.array(em), mx.nd.array(lengths, dtype="int64")
    if kind == "hmmop":
        crf = make_crf(w)
        return lambda: crf.decode(E, L)
    P = [mx.nd.array(x) for x in (trans, start, end)]
    return lambda: gluon_decode(E, L, *P)


def check_nll(w):
    ours, ref = nll_call(w, "hmmop")[1](), nll_call(w, "gluon loop")[1]()
    for name in ref:
        o, r = ours[name].astype(np.float64), ref[name].astype(np.float64)
        assert np.isfinite(o).all(), f"{w.label}: non-finite {name}"
        err = np.max(np.abs(o - r) / np.abs(r)) if name == "nll" else np.max(np.abs(o - r)) / np.max(np.abs(r))
        assert err <= RTOL, f"{w.label}: hmmop's {name} differs from the gluon loop's by {err:.3g} relative"


def check_decode(w):
    (p1, s1), (p2, s2) = decode_call(w, "hmmop")(), decode_call(w, "gluon loop")()
    np.testing.assert_allclose(s1, s2, rtol=RTOL, err_msg=f"{w.label}: best-path scores differ")
    for b, (a, c) in enumerate(zip(p1, p2)):
        np.testing.assert_array_equal(a, c, err_msg=f"{w.label}: sequence {b}'s best path differs")


@pytest.mark.parametrize("kind", ["gluon loop", "hmmop"])
@pytest.mark.parametrize("w", PARAMS)
def test_nll(benchmark, record, w, kind):
    benchmark.group = f"crf nll {w.label}"
    check_nll(w)
    call = nll_call(w, kind)[0]
    benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
    record(NLL_TABLE, w.label, kind)


@pytest.mark.parametrize("kind", ["gluon loop", "hmmop"])
@pytest.mark.parametrize("w", PARAMS)
def test_decode(benchmark, record, w, kind):
    benchmark.group = f"crf decode {w.label}"
    check_decode(w)
    call = decode_call(w, kind)
    benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
    record(DECODE_TABLE, w.label, kind)


def _torch_crf(w):
    """(torch, crf, E, Y, mask): pytorch-crf's CRF with the workload's parameters, on 2 threads."""
    torch = pytest.importorskip("torch")
    torchcrf = pytest.importorskip("torchcrf")
    em, tags, lengths, trans, start, end = data(w)
    torch.set_num_threads(2)
    crf = torchcrf.CRF(w.K, batch_first=True)
    with torch.no_grad():
        for p, v in ((crf.transitions, trans), (crf.start_transitions, start), (crf.end_transitions, end)):
            p.copy_(torch.from_numpy(v))
    E = torch.from_numpy(em).requires_grad_()
    mask = torch.from_numpy(np.arange(w.T)[None, :] < lengths[:, None])
    return torch, crf, E, torch.from_numpy(tags), mask


@pytest.mark.parametrize("w", PARAMS)
def test_pytorch_crf(benchmark, record, w):
    """pytorch-crf's NLL + backward on the same batch (2 threads), where torch and torchcrf exist."""
    torch, crf, E, Y, mask = _torch_crf(w)
    params = [E] + list(crf.parameters())

    def call():
        for p in params:               # gradients written, not accumulated (as MXNet's grad_req "write")
            p.grad = None
        loss = -crf(E, Y, mask, reduction="none")
        loss.sum().backward()
        return loss

    ours = nll_call(w, "hmmop")[1]()
    np.testing.assert_allclose(call().detach().numpy(), ours["nll"], rtol=RTOL)
    for name, p in zip(("d_em", "d_trans", "d_start", "d_end"),
                       (E, crf.transitions, crf.start_transitions, crf.end_transitions)):
        err = np.max(np.abs(p.grad.numpy() - ours[name])) / np.max(np.abs(ours[name]))
        assert err <= RTOL, f"{w.label}: pytorch-crf's {name} differs from hmmop's by {err:.3g} relative"
    benchmark.group = f"crf nll {w.label}"
    benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
    record(NLL_TABLE, w.label, "pytorch-crf")


@pytest.mark.parametrize("w", PARAMS)
def test_pytorch_crf_decode(benchmark, record, w):
    """pytorch-crf's Viterbi decoding of the same batch with its mask (2 threads)."""
    torch, crf, E, _, mask = _torch_crf(w)
    E = E.detach()

    def call():
        with torch.no_grad():
            return crf.decode(E, mask)

    ours = decode_call(w, "hmmop")()[0]
    theirs = call()
    assert len(theirs) == len(ours)
    for b, (a, c) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(a, np.asarray(c), err_msg=f"{w.label}: sequence {b}'s best path differs")
    benchmark.group = f"crf decode {w.label}"
    benchmark.pedantic(call, rounds=w.rounds, iterations=1, warmup_rounds=1)
    record(DECODE_TABLE, w.label, "pytorch-crf")
