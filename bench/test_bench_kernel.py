"""The compiled kernel alone: forward + all gradients, per time step, one thread.

Next to it, hmmlearn's compiled forward_scaling + backward_scaling +
compute_scaling_xi_sum on the same data (what one EM E-step needs).
Run: python -m pytest bench/test_bench_kernel.py
"""
import numpy as np
import pytest
from hmmlearn import _hmmc

from benchutil import TABLES
from hmmop import _kernel
from hmmop.cli.benchmarks import kernel_data

TABLES["kernel"] = ("kernel, one sequence, one thread: median per time step",
                    ["hmmop", "hmmlearn"], ("hmmlearn", "hmmop", "hmmlearn/hmmop"))

T = 20_000
M = 8


def data(n):
    return kernel_data(n, T, M)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_hmmop_kernel(benchmark, record, n):
    benchmark.group = f"kernel N={n}"
    A, B, pi, seq = data(n)
    obs32, lengths = _kernel.prepare_obs(seq.reshape(1, -1), M)
    gll = np.ones(1)
    dA, dB, dpi = np.empty_like(A), np.empty_like(B), np.empty_like(pi)

    def run():
        ws = _kernel.forward(A, B, pi, obs32, lengths, 1)
        _kernel.backward(ws, gll, dA, dB, dpi, 1, 1, 1, 1)

    benchmark(run)
    record("kernel", f"N={n}", "hmmop", per=T)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_hmmlearn_kernel(benchmark, record, n):
    benchmark.group = f"kernel N={n}"
    A, B, pi, seq = data(n)
    frameprob = np.ascontiguousarray(B[:, seq].T)

    def run():
        _, fwd, scaling = _hmmc.forward_scaling(pi, A, frameprob)
        bwd = _hmmc.backward_scaling(pi, A, frameprob, scaling)
        _hmmc.compute_scaling_xi_sum(fwd, A, bwd, frameprob)

    benchmark(run)
    record("kernel", f"N={n}", "hmmlearn", per=T)
