"""Many models in one call (issue 18): EM restarts and model selection, hmmop against one fit after another
and against hmmlearn 0.3.3.

Data (seeded, made once per run, outside every timed call): N=4 states, M=3 symbols, a known model
(A = 0.7 I + 0.3 Dirichlet(1) rows, B and pi Dirichlet(1)) and 50 sampled sequences of 100 symbols
(5,000 symbols), drawn by inverse CDF in NumPy.

"restarts" table (target: hmmop together <= 0.1 s), 20 starts x 100 EM iterations each (tol: none,
every start runs its 100 iterations), the median of whole runs:
- "hmmlearn": 20 fits of hmmlearn.hmm.CategoricalHMM(4, n_iter=100, tol=-inf, random_state=s), s = 0..19,
  .fit(X[:, None], lengths), keeping the best score (hmmlearn has no n_init: this loop is what its users write);
- "hmmop one by one": HMM(4, 3, seed=0).fit(X, lengths, method="em", epochs=100, n_init=20, seed=1) with
  the starts run one after the other (HMM._starts_together = False: one C loop per start);
- "hmmop together": the same fit as it runs by default: the 20 starts' EM loops in one C call
  (hmm_em_categorical_many), threads over the starts.
Checked in the same run: "together" gives bit for bit the parameters, inits_ and histories_ of "one by one".

"selection" table (target: hmmop select within 2x of the single largest fit), on the same data:
- "largest fit": HMM(8, 3, seed=0).fit(X, lengths, method="em", epochs=100, n_init=10, seed=0) - the
  largest candidate with its starts;
- "select N=2..8": hmmop.select(X, range(2, 9), lengths=lengths, n_symbols=3, n_init=10, epochs=100,
  seed=0): 70 fits (7 sizes x 10 starts) in one call, AIC/BIC per N;
- "select one by one": the same 7 fits of select's models (HMM(N, seed=N).fit(..., n_init=10, seed=N)), one after
  another.
Checked: select's N=8 model is bit for bit HMM(8, 3, seed=8).fit(..., n_init=10, seed=8) (N states: seed 0 + N),
and "one by one"'s N=5 model select's.

Run: python -m pytest bench/test_bench_many.py   (about a minute, most of it hmmlearn)
"""
import functools

import numpy as np
import pytest
from hmmlearn import hmm

import hmmop
from benchutil import TABLES

RESTARTS, SELECTION = "restarts", "selection"
TABLES[RESTARTS] = ("Restarts: 20 starts x 100 EM iterations, N=4 M=3, 50 x 100 symbols (target: hmmop together "
                    "<= 0.1 s): median", ["hmmlearn", "hmmop one by one", "hmmop together"],
                    ("hmmop one by one", "hmmop together", "one by one/together"))
TABLES[SELECTION] = ("Model selection: N = 2..8, 10 starts x 100 EM iterations each, 5,000 symbols (target: "
                     "select within 2x of the largest fit): median",
                     ["largest fit", "select N=2..8", "select one by one"],
                     ("select N=2..8", "largest fit", "select/largest fit"))
N, M, STARTS, ITERATIONS = 4, 3, 20, 100
ROW = "50 x 100"


@functools.lru_cache(maxsize=None)
def problem():
    rng = np.random.default_rng(18)
    A = 0.7 * np.eye(N) + 0.3 * rng.dirichlet(np.ones(N), N)
    B, pi = rng.dirichlet(np.ones(M), N), rng.dirichlet(np.ones(N))
    u = rng.random((50, 100, 2))
    states = np.empty((50, 100), dtype=np.int64)
    states[:, 0] = (np.cumsum(pi)[None, :] < u[:, 0, :1]).sum(axis=1)
    for t in range(1, 100):
        states[:, t] = (np.cumsum(A, axis=1)[states[:, t - 1]] < u[:, t, :1]).sum(axis=1)
    states = np.minimum(states, N - 1)
    X = np.minimum((np.cumsum(B, axis=1)[states] < u[:, :, 1:]).sum(axis=2), M - 1).reshape(-1)
    return X.astype(np.int64), np.full(50, 100, dtype=np.int64)


def restarts(together):
    X, lengths = problem()
    model = hmmop.HMM(N, M, seed=0, dtype="float64")
    model._starts_together = together
    model.fit(X, lengths, method="em", epochs=ITERATIONS, n_init=STARTS, seed=1, progress=False)
    return model


def hmmlearn_restarts(starts=STARTS):
    X, lengths = problem()
    best = -np.inf
    for s in range(starts):
        model = hmm.CategoricalHMM(N, n_iter=ITERATIONS, tol=-np.inf, random_state=s)
        model.fit(X[:, None], lengths)
        best = max(best, model.score(X[:, None], lengths))
    return best


def same_fit(a, b):
    """Bit for bit the same parameters, inits_ and histories_."""
    for x, y in zip(a.probabilities(), b.probabilities()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.inits_, b.inits_)
    for x, y in zip(a.histories_, b.histories_):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("impl", ["hmmlearn", "hmmop one by one", "hmmop together"])
def test_restarts(benchmark, record, impl):
    benchmark.group = "restarts"
    if impl == "hmmlearn":
        # a timing alone (nothing to check): under --benchmark-disable (CI) two of the 20 fits (20 take ~30 s)
        benchmark.pedantic(hmmlearn_restarts, args=(2 if benchmark.disabled else STARTS,), rounds=1, iterations=1)
    else:
        together = impl == "hmmop together"
        model = benchmark.pedantic(restarts, args=(together,), rounds=5, iterations=1, warmup_rounds=1)
        same_fit(model, restarts(not together))
        assert len(model.inits_) == STARTS and all(len(h) == ITERATIONS for h in model.histories_)
    record(RESTARTS, ROW, impl)


def largest():
    X, lengths = problem()
    model = hmmop.HMM(8, M, seed=0, dtype="float64")
    model.fit(X, lengths, method="em", epochs=ITERATIONS, n_init=10, seed=0, progress=False)
    return model


def selection():
    X, lengths = problem()
    return hmmop.select(X, range(2, 9), lengths=lengths, n_symbols=M, n_init=10, epochs=ITERATIONS, seed=0,
                        dtype="float64")


def selection_one_by_one():
    X, lengths = problem()
    models = {}
    for n in range(2, 9):
        models[n] = hmmop.HMM(n, M, seed=n, dtype="float64")
        models[n].fit(X, lengths, method="em", epochs=ITERATIONS, n_init=10, seed=n, progress=False)
    return models


@pytest.mark.parametrize("impl", ["largest fit", "select N=2..8", "select one by one"])
def test_selection(benchmark, record, impl):
    benchmark.group = "selection"
    if impl == "largest fit":
        benchmark.pedantic(largest, rounds=5, iterations=1, warmup_rounds=1)
    elif impl == "select one by one":
        models = benchmark.pedantic(selection_one_by_one, rounds=3, iterations=1)
        same_fit(models[5], selection().models[5])
    else:
        sel = benchmark.pedantic(selection, rounds=5, iterations=1, warmup_rounds=1)
        ref = hmmop.HMM(8, M, seed=8, dtype="float64")
        X, lengths = problem()
        ref.fit(X, lengths, method="em", epochs=ITERATIONS, n_init=10, seed=8, progress=False)
        same_fit(sel.models[8], ref)
    record(SELECTION, ROW, impl)


# -- gradient training over the model axis -----------------------------------------------------------
GRADIENT = "gradient"
TABLES[GRADIENT] = ("Gradient training of many models (target: 100 models x 1000 plain-SGD steps <= 1 s, i.e. "
                    "<= 10 us a model-step): median time per model-step", ["one by one", "together"],
                    ("one by one", "together", "one by one/together"))
ENTITIES, ENTITY_T, SGD_STEPS = 100, 30, 1000


@functools.lru_cache(maxsize=None)
def entities():
    """100 sequences of 30 symbols, one per entity, drawn uniformly (seeded)."""
    rng = np.random.default_rng(180)
    return [rng.integers(0, M, ENTITY_T) for _ in range(ENTITIES)]


def sgd_together():
    return hmmop.fit_many(entities(), list(range(ENTITIES)), N, M, seed=0, method="gradient", epochs=SGD_STEPS,
                          progress=False)


def sgd_one_by_one(count):
    models = []
    for i, x in enumerate(entities()[:count]):
        model = hmmop.HMM(N, M, seed=i)
        model.fit([x], method="gradient", epochs=SGD_STEPS, seed=i, progress=False)
        models.append(model)
    return models


def gradient_restarts(together):
    X, lengths = problem()
    model = hmmop.HMM(N, M, seed=0)
    model._starts_together = together
    model.fit(X, lengths, method="gradient", epochs=100, n_init=STARTS, seed=1, progress=False)
    return model


@pytest.mark.parametrize("impl", ["one by one", "together"])
def test_gradient_many_models(benchmark, record, impl):
    """fit_many(method="gradient"): 100 entities, one model each, 1000 plain-SGD steps (the gist's
    learning rate); "one by one": 5 of them fitted alone (HMM(4, 3, seed=i).fit(its sequence,
    method="gradient", epochs=1000, seed=i)), the time per model-step.  Checked: those 5 models equal
    fit_many's bit for bit."""
    benchmark.group = "gradient: 100 models"
    if impl == "together":
        models = benchmark.pedantic(sgd_together, rounds=3, iterations=1, warmup_rounds=1)
        record(GRADIENT, "100 models x 1000 SGD steps", impl, per=ENTITIES * SGD_STEPS)
        for i, alone in enumerate(sgd_one_by_one(2)):
            same_fit(models[i], alone)
    else:
        benchmark.pedantic(sgd_one_by_one, args=(1 if benchmark.disabled else 5,), rounds=1, iterations=1)
        record(GRADIENT, "100 models x 1000 SGD steps", impl, per=5 * SGD_STEPS)


@pytest.mark.parametrize("impl", ["one by one", "together"])
def test_gradient_restarts(benchmark, record, impl):
    """HMM.fit(method="gradient", n_init=20, epochs=100) on the 50 x 100 data: the 20 starts as one stack
    against one after the other (bit for bit the same fit, checked)."""
    benchmark.group = "gradient: restarts"
    if impl == "one by one" and benchmark.disabled:
        pytest.skip("a timing alone: the 'together' row runs and checks the same fit one by one")
    model = benchmark.pedantic(gradient_restarts, args=(impl == "together",), rounds=1 if impl == "one by one"
                               else 3, iterations=1)
    record(GRADIENT, "n_init=20 x 100 SGD steps, 50 x 100", impl, per=STARTS * 100)
    if impl == "together":
        same_fit(model, gradient_restarts(False))
