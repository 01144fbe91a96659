"""Whole training runs with the HMM trainer: the default engine ("fused": the native
operator on this CPU), the CustomOp ("custom") and the autograd unroll.

- the gist's problem: one sequence of 30 symbols, 1000 SGD steps (lr 1e-2, summed loss);
- 50 sequences of length 200 sampled from a 4-state, 3-symbol HMM: 50 full-batch Adam epochs.
Run: python -m pytest bench/test_bench_training.py
"""
import numpy as np
import pytest
from hmmlearn import hmm

from benchutil import TABLES
from hmmop import HMM
from hmmop.gist import GIST_A, GIST_B, GIST_OBS

TABLES["training"] = ("whole training run: median wall time",
                      ["fused", "custom", "unroll"], ("custom", "fused", "custom/fused"))


def sampled_data():
    truth = hmm.CategoricalHMM(4)
    truth.n_features = 3
    truth.startprob_ = np.array([0.6, 0.1, 0.2, 0.1])
    truth.transmat_ = np.array([[0.8, 0.2, 0, 0], [0.1, 0.5, 0.4, 0], [0, 0.4, 0.2, 0.4], [0, 0, 0.4, 0.6]])
    truth.emissionprob_ = np.array([[0.7, 0.15, 0.15], [0.1, 0.4, 0.5], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    rng = np.random.default_rng(1)
    return [truth.sample(200, random_state=int(rng.integers(1 << 30)))[0].ravel() for _ in range(50)]


def skip_slow_smoke_run(benchmark, engine):
    """With timing off (the test suite runs bench/ once as a smoke test), skip the unroll's long runs:
    tests/test_gist.py and tests/test_trainer.py train on the unroll already."""
    if engine == "unroll" and benchmark.disabled:
        pytest.skip("the unroll's whole runs are only worth running when they are timed")


def gist_run(engine):
    model = HMM.from_logits(GIST_A, GIST_B, fixed=("pi",), engine=engine)
    model.set_probabilities(pi=np.ones(4))
    model.fit([GIST_OBS], epochs=1000, normalize=False, progress=False)


def sampled_run(engine, data):
    model = HMM(4, 3, seed=0, engine=engine)
    model.fit(data, epochs=50, optimizer="adam", learning_rate=0.05, progress=False)


@pytest.mark.parametrize("engine", ["fused", "custom", "unroll"])
def test_train_gist_1000_steps(benchmark, record, engine):
    benchmark.group = "training: gist, 1000 steps"
    skip_slow_smoke_run(benchmark, engine)
    benchmark.pedantic(gist_run, args=(engine,), rounds=1 if engine == "unroll" else 3, iterations=1)
    record("training", "gist T=30, 1000 SGD steps", engine)


@pytest.mark.parametrize("engine", ["fused", "custom", "unroll"])
def test_train_50x200_50_epochs(benchmark, record, engine):
    benchmark.group = "training: 50 x 200, 50 epochs"
    skip_slow_smoke_run(benchmark, engine)
    data = sampled_data()
    benchmark.pedantic(sampled_run, args=(engine, data), rounds=1 if engine == "unroll" else 3, iterations=1)
    record("training", "50x200, 50 Adam epochs", engine)
