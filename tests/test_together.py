"""Gradient training of many models as one stack (hmmop/fit/together.py): HMM.fit(method="gradient",
n_init=k) with its starts together and hmmop.fit_many(method="gradient"), each against the same fits run
one after another (HMM._starts_together = False; one HMM per group) - bit for bit where the objective
has no prior, to rounding with one."""
import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.fit.monitor import DivergenceError
from hmmop.fit.together import TogetherTrainer
from hmmop.nn.hmm_block import HMMBlock


def data(seed=0, n=16, M=3, low=10, high=40):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, M, rng.integers(low, high)) for _ in range(n)]


def fitted(together, X, model_kwargs=None, **fit_kwargs):
    model = hmmop.HMM(4, 3, seed=0, **(model_kwargs or {}))
    if "fixed" in (model_kwargs or {}):
        model.set_probabilities(pi=np.full(4, 0.25))
    model._starts_together = together
    kwargs = dict(method="gradient", epochs=60, n_init=3, seed=3, progress=False)
    kwargs.update(fit_kwargs)
    model.fit(X, **kwargs)
    return model


def assert_same_fit(a, b, history_rtol=0.0):
    for x, y in zip(a.probabilities(), b.probabilities()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.inits_, b.inits_)
    assert [len(h) for h in a.histories_] == [len(h) for h in b.histories_]
    for x, y in zip(a.histories_, b.histories_):
        np.testing.assert_allclose(x, y, rtol=history_rtol, atol=0)
    np.testing.assert_allclose(a.history_, b.history_, rtol=history_rtol, atol=0)


MASK = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=bool)
CASES = [
    ({}, {}),
    ({}, {"optimizer": "adam", "learning_rate": 0.05, "tol": 1e-4}),     # the starts stop at different epochs
    ({}, {"batch_size": 5}),                                           # the same minibatches for every start
    ({"dtype": "float64"}, {"optimizer": "nag", "learning_rate": 0.01, "optimizer_params": {"momentum": 0.9}}),
    ({}, {"optimizer": "rmsprop", "learning_rate": 0.01}),
    ({"mask": {"A": MASK}}, {}),
    ({"fixed": ("pi",)}, {"learn": ("A",)}),
    ({"engine": "custom"}, {"normalize": False, "learning_rate": 1e-3}),
]


@pytest.mark.parametrize("model_kwargs, fit_kwargs", CASES)
def test_n_init_gradient_starts_together_equal_one_after_the_other(model_kwargs, fit_kwargs):
    X = data()
    together, alone = fitted(True, X, model_kwargs, **fit_kwargs), fitted(False, X, model_kwargs, **fit_kwargs)
    assert_same_fit(together, alone)
    assert len(together.inits_) == 3
    if "tol" in fit_kwargs:
        assert len({len(h) for h in together.histories_}) > 1


def test_n_init_gradient_with_a_prior_equals_one_after_the_other_to_rounding():
    X = data(1)
    prior = {"A": 2.0, "B": 1.5}
    together, alone = fitted(True, X, prior=prior), fitted(False, X, prior=prior)
    # the parameters are the same; the objective's log-prior is summed in another order
    assert_same_fit(together, alone, history_rtol=1e-6)


def test_a_diverging_start_raises_as_one_after_the_other_does():
    X = data(2)
    errors, models = [], []
    for together in (True, False):
        model = hmmop.HMM(4, 3, seed=0)
        model._starts_together = together
        with pytest.raises(DivergenceError) as info:
            model.fit(X, method="gradient", epochs=30, n_init=3, seed=3, learning_rate=1e3, normalize=False,
                      progress=False)
        errors.append(info.value)
        models.append(model)
    a, b = errors
    assert str(a) == str(b) and a.epoch == b.epoch
    np.testing.assert_array_equal(a.history, b.history)
    for x, y in zip(models[0].probabilities(), models[1].probabilities()):     # the last finite parameters
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(models[0].history_, models[1].history_)


def test_stopped_models_keep_their_parameters_while_the_others_train():
    """A model that diverges is held at its last finite parameters while the rest go on."""
    block = HMMBlock(2, 2, n_models=2)
    block.initialize()
    good = {"A_logits": np.zeros((2, 2)), "B_logits": np.zeros((2, 2)), "pi_logits": np.zeros(2)}
    bad = {"A_logits": np.zeros((2, 2)), "B_logits": np.array([[0.0, -1e30], [0.0, -1e30]]),
           "pi_logits": np.zeros(2)}       # symbol 1 impossible: -inf from the first step
    block.set_stack(0, good)
    block.set_stack(1, bad)
    trainer = TogetherTrainer(block, "sgd", learning_rate=0.5)
    rows = [np.array([0, 1, 1, 0], dtype=np.int32), np.array([1, 1], dtype=np.int32)]
    (h0, e0), (h1, e1) = trainer.fit(rows, epochs=5, progress=False)
    assert e0 is None and len(h0) == 5 and np.all(np.isfinite(h0))
    assert isinstance(e1, DivergenceError) and "first step" in str(e1) and len(h1) == 0
    np.testing.assert_array_equal(block.stacked(1)["B_logits"], np.float32(bad["B_logits"]))
    assert not np.array_equal(block.stacked(0)["B_logits"], good["B_logits"])


def test_optimizers_that_are_not_elementwise_are_refused_or_run_one_by_one():
    block = HMMBlock(2, 2, n_models=2)
    block.initialize()
    with pytest.raises(ValueError, match="optimizer"):
        TogetherTrainer(block, "lamb")
    X = data(3, n=6)
    together = fitted(True, X, optimizer="lamb", epochs=5)       # fit falls back to one start after another
    alone = fitted(False, X, optimizer="lamb", epochs=5)
    assert_same_fit(together, alone)


def test_stacked_block_scores_as_separate_blocks():
    rng = np.random.default_rng(4)
    K, X = 3, data(4, n=5)
    stacked = HMMBlock(4, 3, n_models=K)
    stacked.initialize()
    singles = []
    for k in range(K):
        values = {"A_logits": rng.normal(size=(4, 4)), "B_logits": rng.normal(size=(4, 3)),
                  "pi_logits": rng.normal(size=4)}
        stacked.set_stack(k, values)
        single = HMMBlock(4, 3)
        single.initialize()
        for name, v in values.items():
            getattr(single, name).set_data(mx.nd.array(v))
        singles.append(single)
    (obs,) = stacked.inputs(X, None, mx.cpu())
    ll = stacked(obs).asnumpy()
    for k, single in enumerate(singles):
        np.testing.assert_array_equal(ll[k], single(obs).asnumpy())
    model = mx.nd.array([2, 0, 1, 2, 0], dtype="int32")
    by_model = stacked(obs, model).asnumpy()
    np.testing.assert_array_equal(by_model, ll[model.asnumpy(), np.arange(5)])


@pytest.mark.parametrize("options", [{}, {"n_init": 2, "optimizer": "adam", "learning_rate": 0.05, "tol": 1e-4}])
def test_fit_many_gradient_equals_one_fit_per_group(options):
    X = data(5, n=12)
    groups = ["a", "b", "c"] * 4
    models = hmmop.fit_many(X, groups, 4, 3, seed=7, method="gradient", epochs=40, progress=False, **options)
    assert list(models) == ["a", "b", "c"]
    for i, g in enumerate(models):
        alone = hmmop.HMM(4, 3, seed=7 + i)
        alone.fit([x for x, h in zip(X, groups) if h == g], method="gradient", epochs=40, seed=7 + i,
                  progress=False, **options)
        for x, y in zip(models[g].probabilities(), alone.probabilities()):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(models[g].history_, alone.history_)
        np.testing.assert_array_equal(models[g].inits_, alone.inits_)


def test_fit_many_gradient_names_the_group_that_diverged():
    X = data(6, n=6)
    with pytest.raises(DivergenceError, match="group"):
        hmmop.fit_many(X, [0, 1] * 3, 4, 3, seed=1, method="gradient", epochs=20, learning_rate=1e3,
                       normalize=False, progress=False)
    with pytest.raises(ValueError, match="method"):
        hmmop.fit_many(X, [0, 1] * 3, 4, 3, method="newton")
    for bad in ({"epochs": 0}, {"tol": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            hmmop.fit_many(X, [0, 1] * 3, 4, 3, method="gradient", **bad)
    with pytest.raises(ValueError, match="optimizer"):
        hmmop.fit_many(X, [0, 1] * 3, 4, 3, method="gradient", optimizer="lamb")


def family_data(kind, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(15, 40, 8)
    if kind == "poisson":
        return rng.poisson(3.0, (lengths.sum(), 2)).astype(np.float64), lengths
    X = rng.normal(size=(lengths.sum(), 2)) + np.repeat(rng.normal(scale=2, size=(len(lengths), 1)), lengths, 0)
    return X, lengths


FAMILIES = [
    (lambda: hmmop.GaussianHMM(3, 2, covariance_type="diag", seed=0), "gaussian", {}),
    (lambda: hmmop.GaussianHMM(2, 2, covariance_type="full", seed=0, dtype="float64"), "gaussian",
     {"optimizer": "sgd", "learning_rate": 0.01, "tol": 1e-5}),
    (lambda: hmmop.PoissonHMM(3, 2, seed=0), "poisson", {"batch_size": 3}),
    (lambda: hmmop.GMMHMM(2, 2, n_mix=2, seed=0), "gaussian", {"params": "stm"}),
]


@pytest.mark.parametrize("make, kind, options", FAMILIES)
def test_families_gradient_starts_together_equal_one_after_the_other(make, kind, options):
    """The core's families (hmm_forward_dense's model axis, each start's log-emissions stacked)."""
    X, lengths = family_data(kind)
    fits = []
    for together in (True, False):
        model = make()
        model._starts_together = together
        kwargs = dict(method="gradient", epochs=25, n_init=3, seed=5, progress=False)
        kwargs.update(options)
        model.fit(X, lengths, **kwargs)
        fits.append(model)
    a, b = fits
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.pi, b.pi)
    for name, value in a.emission.raw_parameters().items():
        np.testing.assert_array_equal(value, b.emission.raw_parameters()[name])
    np.testing.assert_array_equal(a.inits_, b.inits_)
    for x, y in zip(a.histories_, b.histories_):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("family, settings, options", [
    (hmmop.GaussianHMM, {"n_features": 2, "covariance_type": "diag"}, {"method": "gradient", "epochs": 20}),
    (hmmop.GaussianHMM, {"n_features": 2, "covariance_type": "full", "dtype": "float64"},
     {"method": "gradient", "epochs": 20, "n_init": 2, "optimizer": "sgd", "learning_rate": 0.01, "tol": 1e-5}),
    (hmmop.PoissonHMM, {"n_features": 2}, {"method": "gradient", "epochs": 15, "n_init": 2}),
    (hmmop.GaussianHMM, {"n_features": 2}, {"method": "em", "epochs": 8, "n_init": 2}),
])
def test_fit_many_of_a_family_equals_one_fit_per_group(family, settings, options):
    """One model per group for the core's families: gradient training as one stack (each model its own
    rows through hmm_forward_dense's model-index form), EM one group after another."""
    rng = np.random.default_rng(8)
    kind = "poisson" if family is hmmop.PoissonHMM else "gaussian"
    X, lengths = family_data(kind, seed=9)
    sequences = np.split(X, np.cumsum(lengths)[:-1])
    groups = [int(g) for g in rng.integers(0, 3, len(sequences))]
    models = hmmop.fit_many(sequences, groups, 2, seed=4, family=family, progress=False, **settings, **options)
    assert list(models) == list(dict.fromkeys(groups))
    for i, g in enumerate(models):
        alone = family(2, seed=4 + i, **settings)
        alone.fit([x for x, h in zip(sequences, groups) if h == g], seed=4 + i, progress=False, **options)
        np.testing.assert_array_equal(models[g].A, alone.A)
        for name, value in alone.emission.raw_parameters().items():
            np.testing.assert_array_equal(models[g].emission.raw_parameters()[name], value)
        for x, y in zip(models[g].histories_, alone.histories_):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="n_symbols"):
        hmmop.fit_many(sequences, groups, 2, n_symbols=3, family=family, **settings)


def test_a_model_from_the_stack_trains_on_as_one_trained_alone():
    """fit_many's models hold the stack's logits (their block, made on first use, takes them): a second
    fit goes on exactly as the second fit of a model trained alone."""
    X = data(10, n=6)
    groups = [0, 1] * 3
    models = hmmop.fit_many(X, groups, 4, 3, seed=2, method="gradient", epochs=15, progress=False)
    for i, g in enumerate(models):
        alone = hmmop.HMM(4, 3, seed=2 + i)
        own = [x for x, h in zip(X, groups) if h == g]
        alone.fit(own, method="gradient", epochs=15, seed=2 + i, progress=False)
        assert models[g]._block is None                          # not made by fit_many
        for m in (models[g], alone):
            m.fit(own, method="gradient", epochs=5, progress=False, optimizer="adam", learning_rate=0.05)
        for x, y in zip(models[g].probabilities(), alone.probabilities()):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(models[g].history_, alone.history_)
