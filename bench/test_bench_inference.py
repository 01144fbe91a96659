"""hmmop.HMM against hmmlearn 0.3.3 on whole data sets, and EM against Adam.

Data: 500 sequences, lengths uniform in 20..200 (seeded), sampled with
hmmop.inference.sample from a known float64 model (seeded: A = (I + Dirichlet(1)
rows) / 2, B rows Dirichlet(0.5), pi Dirichlet(1)), for N=4, M=3 and N=16, M=32.
All hmmop models are float64.  Both libraries run with their defaults (hmmop's
kernel: hmmop.ops.threads.get_num_threads() OpenMP threads; hmmlearn: one thread).

- "inference" table, hmmop vs hmmlearn on the same data and parameters:
  * one EM iteration from a random start (rows Dirichlet(1), seeded):
    HMM.from_probabilities(..., dtype="float64").fit(seqs, method="em", epochs=1),
    the model built once outside the timed function, its parameters reset with
    set_probabilities in pedantic's untimed setup; vs
    CategoricalHMM(n_iter=1, init_params="", params="ste").fit(X, lengths),
    its parameters reset likewise.  Both do one E-step and one M-step;
  * decode (Viterbi) of the whole set under the known model: model.decode(seqs)
    vs hmmlearn's decode(X, lengths);
  * predict_proba of the whole set: model.predict_proba(seqs) vs
    hmmlearn's predict_proba(X, lengths).
- "em_vs_adam" table, time to a target log-likelihood, both from the same
  random start: EM (fit(method="em", epochs=EM_MAX, tol=EM_TOL), an untimed
  reference run) stops at some final log-likelihood per symbol; the target is
  that value less TARGET_GAP per symbol.  Timed: EM, and full-batch Adam
  (fit(method="gradient", optimizer="adam", learning_rate=ADAM_LR), float64,
  normalized loss) each until its history reaches the target - a callback
  raises when it does.  The row says after how many updates each got there
  (history[e] is the log-likelihood after e updates; the run stops at the
  epoch that reports it, so it also pays that epoch's E-step/forward pass).
  Learning rate: 0.2 was the best single value of 0.02, 0.05, 0.1, 0.2, 0.3
  over both sizes (0.1 is a little faster for N=4, 0.3 for N=16).

Under --benchmark-disable (CI) every body runs once and the EM-vs-Adam race
runs with tiny budgets (QUICK_*), so the file stays at a few seconds.
Run: python -m pytest bench/test_bench_inference.py
"""
import functools

import numpy as np
import pytest
from hmmlearn import hmm

from benchutil import TABLES
from hmmop import HMM, inference

TABLES["inference"] = ("500 sequences of 20..200 symbols, float64: median wall time",
                       ["hmmop", "hmmlearn"], ("hmmlearn", "hmmop", "hmmlearn/hmmop"))
TABLES["em_vs_adam"] = ("time to within 1e-3/symbol of EM's final log-likelihood (500 seqs, 20..200): median",
                        ["EM", "Adam"], ("Adam", "EM", "Adam/EM"))

SIZES = [(4, 3), (16, 32)]
N_SEQUENCES, MIN_LEN, MAX_LEN = 500, 20, 200
EM_MAX, EM_TOL = 2000, 1e-5          # reference EM run: its final value sets the target
TARGET_GAP = 1e-3                    # per symbol, below EM's final log-likelihood
ADAM_LR, ADAM_MAX = 0.2, 1000        # Adam's budget: epochs
QUICK_EM_MAX, QUICK_ADAM_MAX = 10, 20


def size_id(size):
    return f"N={size[0]} M={size[1]}"


def _rows(rng, n, k, alpha):
    return rng.dirichlet(np.full(k, alpha), n)


@functools.lru_cache(maxsize=None)
def problem(size):
    """(known (A, B, pi), start (A0, B0, pi0), seqs (list of int64 arrays), X, lengths)."""
    n, m = size
    rng = np.random.default_rng(100 + n)
    A = 0.5 * np.eye(n) + 0.5 * _rows(rng, n, n, 1.0)
    B = _rows(rng, n, m, 0.5)
    pi = rng.dirichlet(np.ones(n))
    lengths = np.random.default_rng(7).integers(MIN_LEN, MAX_LEN + 1, N_SEQUENCES)
    obs, _ = inference.sample(A, B, pi, N_SEQUENCES, MAX_LEN, seed=8)
    seqs = [obs[i, :L].astype(np.int64) for i, L in enumerate(lengths)]
    rng = np.random.default_rng(200 + n)
    start = (_rows(rng, n, n, 1.0), _rows(rng, n, m, 1.0), rng.dirichlet(np.ones(n)))
    X = np.concatenate(seqs).reshape(-1, 1)
    return (A, B, pi), start, seqs, X, lengths


def hmmlearn_model(size, probabilities, **kwargs):
    A, B, pi = probabilities
    model = hmm.CategoricalHMM(size[0], n_features=size[1], **kwargs)
    model.startprob_, model.transmat_, model.emissionprob_ = pi.copy(), A.copy(), B.copy()
    return model


def rounds(seconds):
    """Rounds for a benchmark whose call takes about this long: the file stays near 2 minutes."""
    return 100 if seconds < 0.02 else 30 if seconds < 0.05 else 10 if seconds < 0.3 else 5


# -- one EM iteration ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_em_iteration_hmmop(benchmark, record, size):
    benchmark.group = f"one EM iteration, {size_id(size)}"
    _, (A0, B0, pi0), seqs, _, _ = problem(size)
    model = HMM.from_probabilities(A0, B0, pi0, dtype="float64")
    history = []

    def setup():
        model.set_probabilities(A=A0, B=B0, pi=pi0)

    def run():
        history.append(model.fit(seqs, method="em", epochs=1, progress=False))

    benchmark.pedantic(run, setup=setup, rounds=rounds(0), warmup_rounds=5)
    assert all(len(h) == 1 and np.isfinite(h[0]) for h in history)
    record("inference", f"EM iteration {size_id(size)}", "hmmop")


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_em_iteration_hmmlearn(benchmark, record, size):
    benchmark.group = f"one EM iteration, {size_id(size)}"
    _, start, seqs, X, lengths = problem(size)
    model = hmmlearn_model(size, start, n_iter=1, init_params="", params="ste")

    def setup():
        A0, B0, pi0 = start
        model.startprob_, model.transmat_, model.emissionprob_ = pi0.copy(), A0.copy(), B0.copy()

    benchmark.pedantic(model.fit, args=(X, lengths), setup=setup, rounds=rounds(0.3 * size[0] / 4))
    ours = HMM.from_probabilities(*start, dtype="float64")
    ours.fit(seqs, method="em", epochs=1, progress=False)
    assert np.isclose(ours.history_[0], model.monitor_.history[0], rtol=1e-12)
    assert np.allclose(ours.A, model.transmat_, atol=1e-10)
    record("inference", f"EM iteration {size_id(size)}", "hmmlearn")


# -- decode and predict_proba of the whole set ---------------------------------------------------

def same_decode(ours, theirs):
    return np.isclose(ours[0], theirs[0], rtol=1e-12)


def same_posteriors(ours, theirs):
    return np.allclose(np.concatenate(ours), theirs, atol=1e-10)


# method: (hmmlearn's seconds per call at N=4, to size its rounds; how to compare the results)
WHOLE_SET = {"decode": (0.01, same_decode), "predict_proba": (0.15, same_posteriors)}


@pytest.mark.parametrize("method", list(WHOLE_SET))
@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_whole_set_hmmop(benchmark, record, size, method):
    benchmark.group = f"{method}, {size_id(size)}"
    known, _, seqs, _, _ = problem(size)
    model = HMM.from_probabilities(*known, dtype="float64")
    benchmark.pedantic(getattr(model, method), args=(seqs,), rounds=rounds(0), warmup_rounds=5)
    record("inference", f"{method} {size_id(size)}", "hmmop")


@pytest.mark.parametrize("method", list(WHOLE_SET))
@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_whole_set_hmmlearn(benchmark, record, size, method):
    benchmark.group = f"{method}, {size_id(size)}"
    seconds, same = WHOLE_SET[method]
    known, _, seqs, X, lengths = problem(size)
    model = hmmlearn_model(size, known)
    theirs = benchmark.pedantic(getattr(model, method), args=(X, lengths), rounds=rounds(seconds * size[0] / 4))
    assert same(getattr(HMM.from_probabilities(*known, dtype="float64"), method)(seqs), theirs)
    record("inference", f"{method} {size_id(size)}", "hmmlearn")


# -- EM vs Adam: time to a target log-likelihood --------------------------------------------------

class _Reached(Exception):
    def __init__(self, epoch):
        super().__init__(epoch)
        self.epoch = epoch


def _stop_at(target_total):
    def callback(epoch, value):
        if value >= target_total:
            raise _Reached(epoch)
    return callback


def em_to(model, seqs, target_total, epochs):
    """Updates EM needed for its history to reach target_total (None if not within epochs)."""
    try:
        model.fit(seqs, method="em", epochs=epochs, progress=False, callback=_stop_at(target_total))
    except _Reached as reached:
        return reached.epoch
    return None


def adam_to(model, seqs, target_total, epochs):
    """Same for full-batch Adam."""
    try:
        model.fit(seqs, method="gradient", optimizer="adam", learning_rate=ADAM_LR, epochs=epochs,
                  progress=False, callback=_stop_at(target_total))
    except _Reached as reached:
        return reached.epoch
    return None


@functools.lru_cache(maxsize=None)
def race(size, quick):
    """Untimed calibration: the target and the epochs each method needs (also a warm-up)."""
    _, start, seqs, _, _ = problem(size)
    n_symbols = sum(len(s) for s in seqs)
    em_max, adam_max = (QUICK_EM_MAX, QUICK_ADAM_MAX) if quick else (EM_MAX, ADAM_MAX)
    model = HMM.from_probabilities(*start, dtype="float64")
    reference = model.fit(seqs, method="em", epochs=em_max, tol=EM_TOL, progress=False)
    final = model.score(seqs)
    target = final - TARGET_GAP * n_symbols
    reached = np.flatnonzero(reference >= target)
    em_epochs = int(reached[0]) if len(reached) else len(reference)   # len: only after the last update
    model.set_probabilities(*start)
    adam_epochs = adam_to(model, seqs, target, adam_max)
    adam = f"Adam {adam_epochs} ep" if adam_epochs is not None else \
        f"Adam NOT reached in {adam_max} ep (time = whole budget)"
    row = (f"{size_id(size)}: EM {em_epochs} it, {adam} "
           f"(EM final {final / n_symbols:.5f}/sym after {len(reference)} it, tol {EM_TOL:g})")
    return dict(target=target, em_epochs=em_epochs, adam_epochs=adam_epochs, em_max=em_max,
                adam_max=adam_max, row=row, final_per_symbol=final / n_symbols, em_iterations=len(reference))


# column: (how to run it until the target, its budget in the race info, rounds)
RACERS = {"EM": (lambda m, s, t, info: em_to(m, s, t, info["em_max"] + 1), lambda size: 5 if size[0] < 8 else 3),
          "Adam": (lambda m, s, t, info: adam_to(m, s, t, info["adam_max"]), lambda size: 5)}


@pytest.mark.parametrize("method", list(RACERS))
@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_time_to_target(benchmark, record, size, method):
    benchmark.group = f"EM vs Adam to target, {size_id(size)}"
    _, start, seqs, _, _ = problem(size)
    info = race(size, benchmark.disabled)
    to_target, rounds = RACERS[method]
    model = HMM.from_probabilities(*start, dtype="float64")
    epochs = []
    benchmark.extra_info.update({k: v for k, v in info.items() if k != "target"})
    benchmark.pedantic(lambda: epochs.append(to_target(model, seqs, info["target"], info)),
                       setup=lambda: model.set_probabilities(*start), rounds=rounds(size))
    # EM reaches the target by construction (the reference run's final value is above it);
    # Adam must, whenever the untimed calibration run did.
    if method == "EM" or info["adam_epochs"] is not None:
        assert all(e is not None for e in epochs), epochs
    record("em_vs_adam", info["row"], method)
