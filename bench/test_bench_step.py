"""One training step (softmax -> ll -> backward -> SGD update) on each way to compute ll:
the native operator through hmmop.hmm_forward (the default on a CPU, "native") and inside a
hybridized gluon block as the trainer runs it ("native-hybrid"; graphs get hmmop.ops.native.guard's
identity ops in front), the Python CustomOp on its Cython kernel ("customop", "customop-hybrid"),
the CustomOp forced onto its NDArray path ("ndarray", the GPU route, here on the CPU), the autograd
unroll ("unroll"), and a floor: the same step with two builtin ops of the same inputs,
dot(dot(pi, A), B), in place of hmm_forward ("floor": what MXNet's step costs with no HMM at all).
The update is MXNet's one-op sgd_update for all of them.

N=4 states, M=3 symbols (the gist's sizes), one sequence of T symbols.
Run: python -m pytest bench/test_bench_step.py   (prints a ratio table at the end)
"""
import functools

import mxnet as mx
import pytest
from mxnet import gluon

import hmmop
from benchutil import TABLES
from hmmop.cli.benchmarks import training_step

TABLES["step"] = ("training step, N=4, M=3: median per step",
                  ["native", "native-hybrid", "customop", "customop-hybrid", "ndarray", "unroll", "floor"],
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


def floor(A, B, pi, obs):
    return mx.nd.dot(mx.nd.dot(pi, A), B)


ENGINES = {"native": lambda: hmmop.hmm_forward,
           "native-hybrid": lambda: hybrid(NativeLikelihood),
           "customop": lambda: functools.partial(hmmop.hmm_forward, backend="cython"),
           "customop-hybrid": hybrid,
           "ndarray": lambda: functools.partial(hmmop.hmm_forward, backend="ndarray"),
           "unroll": lambda: hmmop.unroll_forward,
           "floor": lambda: floor}


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
