"""The model core serves every family: hmmop.HMM is an EmissionHMM with a categorical component, and the
core's gradient training (hmmop.Trainer's loop) gives every family minibatches and continuation."""
import numpy as np
import pytest

import hmmop
from hmmop.emissions.categorical import CategoricalEmission


def gaussian_data(seed=0, n=6, T=40):
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(T + i, 2)) + (rng.random() > 0.5) * 3 for i in range(n)]
    return X


def test_hmm_is_the_core_with_a_categorical_component():
    model = hmmop.HMM(3, 4, seed=0)
    assert isinstance(model, hmmop.EmissionHMM)
    assert isinstance(model.emission, CategoricalEmission)
    np.testing.assert_array_equal(model.emission.B, model.B)


def test_hmm_gradient_fits_continue_where_they_stopped():
    """Two fits of 5 epochs are one fit of 10: the block keeps its logits between fits (not re-derived from
    the probabilities), so plain SGD's trajectory is the same bit for bit."""
    seqs = [np.random.default_rng(1).integers(0, 4, size=30) for _ in range(3)]
    once, twice = hmmop.HMM(3, 4, seed=2), hmmop.HMM(3, 4, seed=2)
    h10 = once.fit(seqs, epochs=10, learning_rate=0.5)
    h5 = np.concatenate([twice.fit(seqs, epochs=5, learning_rate=0.5), twice.fit(seqs, epochs=5, learning_rate=0.5)])
    np.testing.assert_array_equal(h10, h5)
    np.testing.assert_array_equal(once.A, twice.A)


def test_hmm_probabilities_set_between_fits_are_used():
    seqs = [np.random.default_rng(1).integers(0, 4, size=30)]
    model = hmmop.HMM(3, 4, seed=2)
    model.fit(seqs, epochs=3)
    fresh = hmmop.HMM(3, 4, seed=5)
    model.set_probabilities(*fresh.probabilities())
    np.testing.assert_allclose(model.fit(seqs, epochs=2), fresh.fit(seqs, epochs=2), rtol=1e-6)


def test_gaussian_gradient_one_minibatch_is_the_full_batch():
    X = gaussian_data()
    runs = []
    for batch_size in (None, len(X), 100):
        model = hmmop.GaussianHMM(2, 2, seed=0, dtype="float64")
        runs.append(model.fit(X, method="gradient", epochs=4, batch_size=batch_size, learning_rate=0.05))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_gaussian_gradient_minibatches_learn():
    X = gaussian_data(n=8)
    model = hmmop.GaussianHMM(2, 2, seed=0, dtype="float64")
    model.fit(X, method="em", epochs=1)
    before = model.score(X)
    history = model.fit(X, method="gradient", epochs=20, batch_size=3, seed=1, learning_rate=0.02)
    assert len(history) == 20 and np.isfinite(history).all()
    assert model.score(X) > before


def test_gaussian_minibatch_order_follows_the_seed():
    X = gaussian_data(n=8)
    runs = []
    for seed in (1, 1, 2):
        model = hmmop.GaussianHMM(2, 2, seed=0, dtype="float64")
        runs.append(model.fit(X, method="gradient", epochs=3, batch_size=3, seed=seed))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_core_rejects_a_bad_batch_size():
    model = hmmop.GaussianHMM(2, 2, seed=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            model.fit(gaussian_data(), method="gradient", epochs=1, batch_size=bad)


def test_gaussian_em_over_a_kvstore_is_refused_clearly():
    model = hmmop.GaussianHMM(2, 2, seed=0)
    with pytest.raises(ValueError, match="kvstore works with method='gradient'"):
        model.fit(gaussian_data(), method="em", epochs=1, kvstore=object())


def test_categorical_component_learns_its_emissions_by_gradient():
    """params="e" trains B alone on the dense block (the component names its raw parameter's letter)."""
    model = hmmop.EmissionHMM(3, CategoricalEmission(3, 4), dtype="float64")
    rows = np.random.default_rng(3).integers(0, 4, size=60)
    model.fit(rows, method="em", epochs=1)
    A, pi, B = model.A, model.pi, model.emission.B
    model.fit(rows, method="gradient", epochs=5, params="e", learning_rate=0.1)
    np.testing.assert_array_equal(model.A, A)
    np.testing.assert_array_equal(model.pi, pi)
    assert not np.allclose(model.emission.B, B)


def test_hmmlearn_facade_is_an_attribute_of_the_package():
    import hmmop.hmmlearn as direct
    assert hmmop.hmmlearn is direct and hasattr(hmmop.hmmlearn, "GaussianHMM")
