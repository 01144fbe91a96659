"""The HMM trainer: the gist's loop as a library, against hmmlearn's EM and the unroll."""
import json

import mxnet as mx
import numpy as np
import pytest
from hmmlearn import hmm

import hmmop
from hmmop import HMM, HMMBlock
from hmmop.gist import GIST_A, GIST_B, GIST_OBS, GIST_PI, train_gist
from reference import hmmlearn_score, random_model


@pytest.fixture(scope="module")
def sampled():
    """50 sequences of length 200 from a known 4-state, 3-symbol HMM (fixed seed)."""
    truth = hmm.CategoricalHMM(4)
    truth.n_features = 3
    truth.startprob_ = GIST_PI
    truth.transmat_ = np.array([[0.8, 0.2, 0, 0], [0.1, 0.5, 0.4, 0], [0, 0.4, 0.2, 0.4], [0, 0, 0.4, 0.6]])
    truth.emissionprob_ = np.array([[0.7, 0.15, 0.15], [0.1, 0.4, 0.5], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    rng = np.random.default_rng(1)
    return [truth.sample(200, random_state=int(rng.integers(1 << 30)))[0].ravel() for _ in range(50)]


def test_trainer_reproduces_the_gist():
    model = HMM.from_logits(GIST_A, GIST_B, fixed=("pi",))
    model.set_probabilities(pi=np.ones(4))          # the gist's effective pi
    history = model.fit([GIST_OBS], epochs=1000, normalize=False)   # defaults: SGD, lr 1e-2
    assert abs(history[0] - (-31.7185)) < 5e-4
    assert abs(history[900] - (-30.9965)) < 5e-4
    _, A, B = train_gist()
    np.testing.assert_allclose(model.A, A, atol=1e-5)
    np.testing.assert_allclose(model.B, B, atol=1e-5)


def test_adam_reaches_hmmlearn_em(sampled):
    init = HMM(4, 3, seed=5, dtype="float64")
    A0, B0, pi0 = init.probabilities()
    em = hmm.CategoricalHMM(4, n_iter=300, tol=1e-6, init_params="", params="ste")
    em.n_features = 3
    em.startprob_, em.transmat_, em.emissionprob_ = pi0, A0, B0
    X, lengths = np.concatenate(sampled).reshape(-1, 1), [len(s) for s in sampled]
    em.fit(X, lengths)
    ll_em = em.score(X, lengths)

    model = HMM.from_probabilities(A0, B0, pi0)     # float32, as a user would
    model.fit(sampled, epochs=300, optimizer="adam", learning_rate=0.05)
    ll = model.score(sampled)
    assert abs(ll - ll_em) <= 0.005 * abs(ll_em)
    # and the reported score is the true one of the learned parameters
    np.testing.assert_allclose(ll, sum(hmmlearn_score(model.A, model.B, model.pi, s) for s in sampled),
                               rtol=1e-5)


def test_fused_and_unroll_engines_train_identically(sampled):
    A0, B0, pi0 = HMM(4, 3, seed=7, dtype="float64").probabilities()
    results = []
    for engine in ("fused", "ndarray", "unroll"):
        model = HMM.from_probabilities(A0, B0, pi0, dtype="float64", engine=engine)
        history = model.fit(sampled, epochs=20, learning_rate=0.5)
        results.append((history,) + model.probabilities())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_minibatches_are_seeded_and_loss_is_per_symbol(sampled):
    def run(data, seed, batch_size=8):
        model = HMM(4, 3, seed=3, dtype="float64")
        model.fit(data, epochs=3, batch_size=batch_size, seed=seed, learning_rate=0.1)
        return model.probabilities()

    first, again, other = run(sampled, 11), run(sampled, 11), run(sampled, 12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    # Per-symbol loss: the same data twice over gives the same full-batch step.
    once = run(sampled, 0, batch_size=None)
    twice = run(sampled + sampled, 0, batch_size=None)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("dtype, learn, batch_size", [("float32", None, None), ("float64", ("A", "pi"), 16)])
def test_plain_sgd_is_gluons_sgd_bit_for_bit(sampled, dtype, learn, batch_size):
    """The trainer applies plain SGD itself (one multi_sgd_update); with momentum=0 given,
    the same optimizer runs through gluon.Trainer: both must give the same bits."""
    runs = []
    for params in (None, {"momentum": 0.0}):
        model = HMM(4, 3, seed=9, dtype=dtype)
        history = model.fit(sampled[:20], epochs=15, learning_rate=0.3, optimizer_params=params, learn=learn,
                            batch_size=batch_size, seed=1, progress=False)
        runs.append((history,) + model.probabilities())
    first = HMM(4, 3, seed=9, dtype=dtype).probabilities()
    assert not np.allclose(runs[0][1], first[0])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_plain_sgd_is_taken_only_for_plain_sgd():
    block = HMM(2, 2, seed=0).block
    assert hmmop.Trainer(block)._plain_sgd
    for optimizer, params in (("sgd", {"momentum": 0.9}), ("adam", None), ("sgd", {"wd": 1e-3})):
        assert not hmmop.Trainer(block, optimizer, optimizer_params=params)._plain_sgd


def test_frozen_parameters_stay_put(sampled):
    model = HMM(4, 3, seed=2)
    A0, B0, pi0 = model.probabilities()
    model.fit(sampled[:5], epochs=5, learn=("A",), learning_rate=0.5)
    A1, B1, pi1 = model.probabilities()
    assert not np.allclose(A0, A1)
    np.testing.assert_array_equal(B0, B1)
    np.testing.assert_array_equal(pi0, pi1)


def test_tolerance_stops_early(sampled):
    model = HMM(4, 3, seed=4)
    history = model.fit(sampled, epochs=2000, optimizer="adam", learning_rate=0.05, tol=1e-5)
    n = sum(len(s) for s in sampled)
    assert 2 <= len(history) < 2000
    assert abs(history[-1] - history[-2]) / n < 1e-5
    assert np.array_equal(model.history_, history)


def test_progress_bar_shows_log_likelihood(capsys):
    HMM(2, 2, seed=0).fit([[0, 1, 1, 0]], epochs=3, progress=True)
    assert "ll_per_symbol" in capsys.readouterr().err
    HMM(2, 2, seed=0).fit([[0, 1, 1, 0]], epochs=3)   # not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_vocabulary_scores_and_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    A, B, pi = random_model(rng, 3, 4)
    words = ["sun", "rain", "fog", "snow"]
    model = HMM.from_probabilities(A, B, pi, symbols=words, dtype="float64")
    seqs = [["sun", "sun", "rain"], ["fog"], [], ["snow", "rain", "rain", "sun", "fog"]]
    expected = [hmmlearn_score(A, B, pi, [words.index(w) for w in s]) if s else 0.0 for s in seqs]
    np.testing.assert_allclose(model.score_sequences(seqs), expected, rtol=1e-10)

    path = tmp_path / "weather.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as f:      # loads without pickle
        meta = json.loads(str(f["meta"]))
        assert str(f["format"]) == "hmmop.HMM" and int(f["version"]) == 1
    assert meta == {"n_states": 3, "n_symbols": 4, "dtype": "float64", "symbols": words, "fixed": [], "mask": [],
                    "tokens": None}
    loaded = HMM.load(path)
    assert loaded.symbols == words and loaded.dtype == np.float64
    for a, b in zip(loaded.probabilities(), model.probabilities()):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(loaded.score_sequences(seqs), expected, rtol=1e-10)


def test_fixed_unnormalised_pi_survives_round_trip(tmp_path):
    model = HMM.from_logits(GIST_A, GIST_B, fixed=("pi",))
    model.set_probabilities(pi=np.ones(4))
    model.save(tmp_path / "gist.npz")
    loaded = HMM.load(tmp_path / "gist.npz")
    assert loaded.block.fixed == ("pi",)
    np.testing.assert_array_equal(loaded.pi, np.ones(4))
    np.testing.assert_allclose(loaded.score_sequences([GIST_OBS]), [-31.7185], atol=5e-4)


@pytest.mark.parametrize("make,pattern", [
    (lambda: HMM(0, 3), r"n_states must be a positive integer, got 0"),
    (lambda: HMM(2, 0), r"n_symbols must be a positive integer, got 0"),
    (lambda: HMM(2), r"give n_symbols or a symbol vocabulary"),
    (lambda: HMM(2, symbols=["a", "a"]), r"repeated tokens"),
    (lambda: HMM.from_probabilities(np.eye(2) * 2, np.full((2, 2), 0.5), [0.5, 0.5]), r"A must sum to 1"),
    (lambda: HMM.from_probabilities(np.eye(2), np.full((2, 3), 0.5), [0.5, 0.5]), r"B must sum to 1"),
    (lambda: HMM.from_probabilities(np.eye(2), np.full((2, 2), 0.5), [0.5, -0.5]), r"pi must hold .*non-negative"),
])
def test_bad_model_construction(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("data,pattern", [
    ([], r"no sequence given \(empty data\)"),
    ([[], []], r"all 2 sequences are empty"),
    ([[0, 1], [1, 3]], r"sequences\[1\]\[1\] = 3 is not a symbol of this model: expected an integer in \[0, 3\)"),
    ([[0, 1.5]], r"sequences\[0\]\[1\] = 1.5 is not a symbol"),
    ([["a", "b"]], r"sequences\[0\] holds <U1 values"),
    (np.array([[0, -1, 1]]), r"sequences\[0, 2\] = 1 follows -1 padding"),
])
def test_bad_training_data_fails_before_training(data, pattern):
    model = HMM(2, 3, seed=0)
    before = model.probabilities()
    with pytest.raises(ValueError, match=pattern):
        model.fit(data, epochs=5)
    for a, b in zip(before, model.probabilities()):
        np.testing.assert_array_equal(a, b)


def test_symbol_outside_vocabulary():
    model = HMM(2, symbols=["x", "y"], seed=0)
    with pytest.raises(ValueError, match=r"sequences\[1\]\[2\] = 'z' is not in the model's symbol vocabulary"):
        model.fit([["x"], ["y", "x", "z"]], epochs=1)


def test_bad_trainer_options():
    model = HMM(2, 2, seed=0, fixed=("pi",))
    with pytest.raises(ValueError, match=r"cannot learn \['pi'\]"):
        model.fit([[0, 1]], learn=("A", "pi"))
    with pytest.raises(ValueError, match=r"epochs must be a positive integer"):
        model.fit([[0, 1]], epochs=0)
    with pytest.raises(ValueError, match=r"learn names no parameter"):
        model.fit([[0, 1]], learn=())


def test_loading_something_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"is not an hmmop model file"):
        HMM.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(ValueError, match=r"is not an hmmop model file"):
        HMM.load(other)
    with pytest.raises(FileNotFoundError, match=r"no model file"):
        HMM.load(tmp_path / "missing.npz")


def test_block_hybridizes_to_the_same_numbers():
    rng = np.random.default_rng(9)
    obs = mx.nd.array([[0, 1, 2, 1], [2, 2, -1, -1]], dtype=np.int32)
    outs = []
    for hybridize in (False, True):
        block = HMMBlock(3, 3, dtype="float64")
        block.initialize()
        block.A_logits.set_data(mx.nd.array(rng.normal(size=(3, 3)), dtype=np.float64))
        rng = np.random.default_rng(9)
        if hybridize:
            block.hybridize()
        with mx.autograd.record():
            ll = block(obs)
        ll.backward()
        outs.append((ll.asnumpy(), block.A_logits.grad().asnumpy()))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="ignored"):
        HMMBlock(2, 2, engine="unroll").hybridize()


@pytest.mark.parametrize("optimizer", ["rmsprop", "adagrad", "adadelta", "ftrl", "adam"])
def test_float64_trains_with_every_optimizer_as_float32_does(sampled, optimizer):
    """MXNet 1.9.1 makes rmsprop's, adagrad's, adadelta's and ftrl's state float32 whatever the
    weights' dtype, and their update operators then refuse float64 weights; the Trainer
    makes the state in the weights' dtype.  A float64 model trains as the float32 one from the same
    start (its trajectory to float32's precision), on HMM and GaussianHMM alike."""
    A0, B0, pi0 = HMM(4, 3, seed=2, dtype="float64").probabilities()
    A0, B0, pi0 = (x.astype(np.float32).astype(np.float64) for x in (A0, B0, pi0))
    histories = {}
    for dtype in ("float32", "float64"):
        model = HMM.from_probabilities(A0, B0, pi0, dtype=dtype)
        histories[dtype] = model.fit(sampled[:10], method="gradient", epochs=5, optimizer=optimizer,
                                     learning_rate=0.05, progress=False)
    h32, h64 = np.asarray(histories["float32"]), np.asarray(histories["float64"])
    assert np.isfinite(h64).all() and h64[-1] != h64[0]
    np.testing.assert_allclose(h64, h32, rtol=1e-4)
    X = np.random.default_rng(0).normal(size=(60, 2))
    g = hmmop.GaussianHMM(2, 2, dtype="float64", seed=0)
    g.fit(X, method="gradient", epochs=3, optimizer=optimizer, progress=False)
    assert np.isfinite(g.history_).all()


def test_an_optimizer_object_trains_as_its_name_does(sampled):
    """An mx.optimizer.Optimizer object (its own settings; fit's learning_rate is not applied to it) trains
    exactly as the same optimizer given by name with those settings (it raised gluon's AssertionError
    about optimizer_params before)."""
    A0, B0, pi0 = HMM(4, 3, seed=4, dtype="float64").probabilities()
    runs = []
    for optimizer in ("adam", mx.optimizer.Adam(learning_rate=0.02, beta1=0.8)):
        model = HMM.from_probabilities(A0, B0, pi0)
        kw = {"learning_rate": 0.02, "optimizer_params": {"beta1": 0.8}} if optimizer == "adam" else {}
        runs.append(model.fit(sampled[:10], method="gradient", epochs=4, optimizer=optimizer, progress=False, **kw))
    np.testing.assert_array_equal(runs[1], runs[0])
