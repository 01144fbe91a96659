"""HMM odds and ends around inference and EM: files with masks, hmmlearn's input form,
divergence with minibatches, refusals of inconsistent structure."""
import numpy as np
import pytest

import hmmop
from hmmop import HMM
from reference import hmmlearn_score, random_model

LEFT_RIGHT = np.array([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]])


def test_masks_survive_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    _, B, _ = random_model(rng, 3, 4)
    model = HMM.from_probabilities(LEFT_RIGHT, B, [1.0, 0.0, 0.0], keep_zeros=True, dtype="float64")
    path = str(tmp_path / "lr.npz")
    model.save(path)
    loaded = HMM.load(path)
    assert set(loaded.mask) == {"A", "pi"}
    np.testing.assert_array_equal(loaded.mask["A"], LEFT_RIGHT > 0)
    assert loaded.n_free_parameters == model.n_free_parameters
    seqs = [rng.integers(0, 4, 40) for _ in range(5)]
    loaded.fit(seqs, method="em", epochs=5)
    assert (loaded.A[LEFT_RIGHT == 0] == 0.0).all() and loaded.pi[1:].tolist() == [0.0, 0.0]
    assert not np.allclose(loaded.A, LEFT_RIGHT)          # the free entries did move


def test_hmmlearn_input_form_everywhere():
    rng = np.random.default_rng(1)
    A, B, pi = random_model(rng, 3, 5)
    seqs = [rng.integers(0, 5, L) for L in (7, 1, 30)]
    X, lengths = np.concatenate(seqs).reshape(-1, 1), [len(s) for s in seqs]
    model = HMM.from_probabilities(A, B, pi, dtype="float64")
    np.testing.assert_allclose(model.score_sequences(X, lengths), [hmmlearn_score(A, B, pi, s) for s in seqs],
                               rtol=1e-10)
    assert [len(p) for p in model.predict(X, lengths=lengths)] == lengths
    with pytest.raises(ValueError, match="lengths sum to 37 but X holds 38"):
        model.score(X, [7, 1, 29])
    with pytest.raises(ValueError, match=r"X: with lengths.*\(38, 2\)"):
        model.score(np.hstack([X, X]), lengths)


def test_minibatch_divergence_keeps_finite_parameters():
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, 3, 50) for _ in range(40)]
    model = HMM(3, 3, seed=0)
    with pytest.raises(hmmop.DivergenceError, match=r"epoch \d+.*smaller learning rate") as info:
        model.fit(seqs, optimizer="sgd", learning_rate=1e7, normalize=False, batch_size=8, epochs=50, seed=0)
    err = info.value
    assert err.epoch >= 0 and len(err.history) == err.epoch
    np.testing.assert_array_equal(model.history_, err.history)
    for p in model.probabilities():
        assert np.isfinite(p).all()
    assert np.isfinite(model.score(seqs))


def test_impossible_data_under_structural_zeros_is_reported():
    B = np.array([[1.0, 0.0], [0.0, 1.0]])
    model = HMM.from_probabilities([[1.0, 0.0], [0.0, 1.0]], B, [1.0, 0.0], keep_zeros=True, dtype="float64")
    with pytest.raises(hmmop.DivergenceError, match="probability 0 under the starting parameters"):
        model.fit([[0, 1]], method="em", epochs=3)


def test_inconsistent_structure_is_refused():
    rng = np.random.default_rng(3)
    A, B, pi = random_model(rng, 3, 2)
    with pytest.raises(ValueError, match="non-zero probabilities where its mask holds structural zeros"):
        HMM.from_probabilities(A, B, pi, mask={"A": LEFT_RIGHT > 0})
    with pytest.raises(ValueError, match="pi is fixed"):
        HMM(3, 2, fixed=("pi",), mask={"pi": [True, False, True]})
    with pytest.raises(ValueError, match="prior\\['pi'\\]: pi is fixed"):
        HMM(3, 2, fixed=("pi",)).fit([[0, 1]], prior={"pi": 2.0}, epochs=1)


def test_missing_observations_in_gradient_training_equal_their_marginal():
    # Training on [0, None, 1] must follow the gradient of log P(o_0 = 0, o_2 = 1):
    # the same as training on the two observed symbols with a free step between them,
    # i.e. the op's -2 path; compare one SGD step with the step the unroll engine takes.
    rng = np.random.default_rng(4)
    A, B, pi = random_model(rng, 3, 2)
    results = []
    for engine in ("fused", "unroll"):
        model = HMM.from_probabilities(A, B, pi, dtype="float64", engine=engine)
        model.fit([[0, None, 1], [None, None]], epochs=3, learning_rate=0.5)
        results.append(model.probabilities())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert not np.allclose(results[0][0], A)
