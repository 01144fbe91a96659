"""One training step (softmax -> ll -> backward -> SGD update): the fused op on its
Cython kernel through hmmop.hmm_forward ("fused"), the same inside a hybridized
gluon block as the trainer runs it ("fused-hybrid"), the op forced onto its
NDArray path ("ndarray", the GPU route, here on the CPU), the native operator
of hmmop/libhmmop_op.so through hmmop.hmm_forward(backend="native") and in a
hybridized block ("native", "native-hybrid"; both with hmmop.native.guard's
identity ops in front) and the autograd unroll ("unroll").  The update is MXNet's one-op sgd_update for all of them.

N=4 states, M=3 symbols (the gist's sizes), one sequence of T symbols.
Run: python -m pytest bench/test_bench_step.py   (prints a ratio table at the end)
"""
import functools

import pytest
from mxnet import gluon

import hmmop
from benchutil import TABLES
from hmmop.benchmarks import training_step

TABLES["step"] = ("training step, N=4, M=3: median per step",
                  ["fused", "fused-hybrid", "native", "native-hybrid", "ndarray", "unroll"],
                  ("unroll", "native", "unroll/native"))


class Likelihood(gluon.HybridBlock):
    def hybrid_forward(self, F, A, B, pi, obs):
        return F.Custom(A, B, pi, obs, op_type="hmm_forward")


class NativeLikelihood(gluon.HybridBlock):
    def hybrid_forward(self, F, A, B, pi, obs):
        return hmmop.hmm_forward(A, B, pi, obs, backend="native")


def hybrid(block=Likelihood):
    block = block()
    block.hybridize()
    return block


ENGINES = {"fused": lambda: hmmop.hmm_forward,
           "fused-hybrid": hybrid,
           "native": lambda: functools.partial(hmmop.hmm_forward, backend="native"),
           "native-hybrid": lambda: hybrid(NativeLikelihood),
           "ndarray": lambda: functools.partial(hmmop.hmm_forward, backend="ndarray"),
           "unroll": lambda: hmmop.unroll_forward}


def make_step(ll_fn, T):
    return training_step(ll_fn, T)[0]


@pytest.mark.parametrize("T", [30, 300, 3000])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_training_step(benchmark, record, engine, T):
    benchmark.group = f"training step T={T}"
    step = make_step(ENGINES[engine](), T)
    step()
    if engine in ("ndarray", "unroll") and T >= 300:
        benchmark.pedantic(step, rounds=3 if T >= 3000 else 5, iterations=1)
    else:
        benchmark(step)
    record("step", f"T={T}", engine)
