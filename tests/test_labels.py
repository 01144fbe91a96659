"""Labels (known states of some steps) on every model: hmmop/fit/labels.py and the core's methods.

Oracles: enumeration of every state path that agrees with the labels (score, posteriors, Viterbi),
NumPy counts of fully labelled data (supervised fits), float64 finite differences of
log P(X, labels) (gradient training's block).
"""
import itertools

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.fit.labels import check_labels


def brute(A, pi, le, allowed):
    """(log P(obs, labels), posteriors (T, N), best log-prob, best path) by enumeration; le (T, N)."""
    T, N = le.shape
    total, best = -np.inf, (-np.inf, None)
    post = np.zeros((T, N))
    weights = []
    with np.errstate(divide="ignore"):
        lA, lpi = np.log(A), np.log(pi)
    for path in itertools.product(range(N), repeat=T):
        if not all(allowed[t, s] for t, s in enumerate(path)):
            continue
        lp = lpi[path[0]] + le[0, path[0]] + sum(lA[path[t - 1], path[t]] + le[t, path[t]] for t in range(1, T))
        weights.append((lp, path))
        total = np.logaddexp(total, lp)
        if lp > best[0]:
            best = (lp, path)
    for lp, path in weights:
        post[np.arange(T), path] += np.exp(lp - total)
    return total, post, best[0], np.array(best[1])


def categorical(seed=0, N=3, M=4, **kwargs):
    rng = np.random.default_rng(seed)
    A, B, pi = rng.dirichlet(np.ones(N), N), rng.dirichlet(np.ones(M), N), rng.dirichlet(np.ones(N))
    if "mask" in kwargs:
        B = np.where(kwargs["mask"]["B"], B, 0.0)
        B /= B.sum(axis=1, keepdims=True)
    return hmmop.HMM.from_probabilities(A, B, pi, dtype="float64", **kwargs)


def gaussian(seed=0, N=3, D=2):
    rng = np.random.default_rng(seed)
    return hmmop.GaussianHMM.from_parameters(rng.dirichlet(np.ones(N) * 3, N), rng.dirichlet(np.ones(N)),
                                             rng.normal(size=(N, D)), rng.uniform(0.5, 2.0, (N, D)),
                                             dtype="float64")


def gaussian_le(model, x):
    means, var = model.means, np.diagonal(model.covars, axis1=1, axis2=2)
    return -0.5 * (np.log(2 * np.pi * var)[None] + (x[:, None, :] - means[None]) ** 2 / var[None]).sum(-1)


def allowed_of(labels, T, N):
    if labels is None:
        return np.ones((T, N), dtype=bool)
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels
    out = np.ones((T, N), dtype=bool)
    for t, s in enumerate(labels):
        if s >= 0:
            out[t] = np.arange(N) == s
    return out


PARTIAL = [np.array([-1, 2, -1, -1, 0]), np.array([1, -1, -1, -1, -1, 1]), None,
           np.array([[True, True, False], [False, True, True], [True, False, True], [True, True, True]])]


@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_score_posteriors_and_decode_with_labels_equal_enumeration(family):
    rng = np.random.default_rng(1)
    lengths = [5, 6, 4, 4]
    if family == "categorical":
        model = categorical()
        X = [rng.integers(0, 4, L) for L in lengths]
        les = [np.log(model.B[:, x].T) for x in X]
    else:
        model = gaussian()
        X = [rng.normal(size=(L, 2)) for L in lengths]
        les = [gaussian_le(model, x) for x in X]
    ll = model.score_sequences(X, labels=PARTIAL)
    post = model.predict_proba(X, labels=PARTIAL)
    log_prob, paths = model.decode(X, labels=PARTIAL)
    best_total = 0.0
    for b, (le, lab) in enumerate(zip(les, PARTIAL)):
        want_ll, want_post, best, path = brute(model.A, model.pi, le, allowed_of(lab, len(le), 3))
        np.testing.assert_allclose(ll[b], want_ll, rtol=1e-12)
        np.testing.assert_allclose(post[b], want_post, atol=1e-12)
        np.testing.assert_array_equal(paths[b], path)
        best_total += best
    np.testing.assert_allclose(log_prob, best_total, rtol=1e-12)
    # labels change the answer (the oracle would not notice labels ignored on both sides otherwise)
    assert not np.allclose(ll, model.score_sequences(X))
    # hmmlearn's concatenated form and a single boolean (n, N) mask give the same
    flat = np.concatenate([allowed_of(lab, L, 3) for lab, L in zip(PARTIAL, lengths)])
    Xc = np.concatenate(X)
    np.testing.assert_allclose(model.score_sequences(Xc, lengths, labels=flat), ll, rtol=1e-13)
    _, map_paths = model.decode(X, labels=PARTIAL, algorithm="map")
    for p, m in zip(post, map_paths):
        np.testing.assert_array_equal(m, p.argmax(axis=1))


def test_label_forms():
    lengths = np.array([3, 2])
    per_sequence = check_labels([[0, -1, 2], [-1, 1]], lengths, 3)
    concatenated = check_labels(np.array([0, -1, 2, -1, 1]), lengths, 3)
    padded = check_labels(np.array([[0, -1, 2], [-1, 1, -1]])[:, :3], np.array([3, 3]), 3)
    floats = check_labels([np.array([0.0, -1.0, 2.0]), None], lengths, 3)
    np.testing.assert_array_equal(per_sequence.allowed, concatenated.allowed)
    assert per_sequence.known.tolist() == [0, -1, 2, -1, 1]
    assert padded.known.tolist() == [0, -1, 2, -1, 1, -1]
    assert floats.known.tolist() == [0, -1, 2, -1, -1]
    assert not per_sequence.complete and check_labels([[0, 1, 2], [2, 2]], lengths, 3).complete
    assert check_labels(None, lengths, 3) is None


@pytest.mark.parametrize("labels, match", [
    ([[0, 3, 1], [0, 0]], r"labels\[0\]: sequence 0, step 1 has label 3, not a state in \[0, 3\)"),
    (np.array([0, 1, 2, 0, -2]), r"sequence 1, step 1 has label -2"),
    ([[0, 1], [0, 0]], r"labels\[0\] has 2 steps but sequence 0 has 3"),
    ([[0, 1, 1]], r"1 label sequences for 2 sequences"),
    ([np.ones((3, 3), dtype=bool), np.array([[True, False, False], [False, False, False]])],
     r"labels\[1\]: sequence 1, step 1 allows no state"),
    ([np.ones((3, 2), dtype=bool), None], r"mask of shape \(3, 2\), expected \(3, 3\)"),
    ([np.array([0.5, 1, 1]), None], r"expected integer states"),
    (np.zeros((5, 3), dtype=np.int64), r"must be a boolean mask"),
])
def test_bad_labels_are_clear_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels, np.array([3, 2]), 3)
    model = categorical()
    with pytest.raises(ValueError, match=match):
        model.score([[0, 1, 2], [3, 0]], labels=labels)


def test_supervised_fit_is_the_normalised_counts_with_prior_pseudo_counts():
    rng = np.random.default_rng(2)
    lengths = [7, 1, 9, 5]
    X = [rng.integers(0, 4, L) for L in lengths]
    Z = [rng.integers(0, 3, L) for L in lengths]
    prior = {"A": 2.0, "pi": 1.5, "B": 3.0}
    model = categorical(seed=5)
    model.fit_supervised(X, Z, prior=prior)
    start = np.bincount([z[0] for z in Z], minlength=3) + 0.5
    trans = np.full((3, 3), 1.0)
    emit = np.full((3, 4), 2.0)
    for x, z in zip(X, Z):
        for t in range(len(z)):
            emit[z[t], x[t]] += 1
            if t:
                trans[z[t - 1], z[t]] += 1
    np.testing.assert_allclose(model.pi, start / start.sum(), rtol=1e-14)
    np.testing.assert_allclose(model.A, trans / trans.sum(1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(model.B, emit / emit.sum(1, keepdims=True), rtol=1e-14)
    # one EM iteration on the same labels: the same parameters (the E-step's posteriors are the labels)
    em = categorical(seed=6)
    em.fit(X, labels=Z, method="em", epochs=1, prior=prior)
    for a, b in zip(em.probabilities(), model.probabilities()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_supervised_gaussian_and_poisson():
    rng = np.random.default_rng(3)
    lengths = [30, 25]
    Z = [rng.integers(0, 2, L) for L in lengths]
    X = [rng.normal(size=(L, 2)) + 4.0 * z[:, None] for z, L in zip(Z, lengths)]
    model = hmmop.GaussianHMM(2, 2, dtype="float64")          # never initialised: the fit sets everything
    model.fit_supervised(X, Z)
    x, z = np.concatenate(X), np.concatenate(Z)
    for k in range(2):
        mean = x[z == k].mean(axis=0)
        np.testing.assert_allclose(model.means[k], mean, rtol=1e-12)
        var = (1e-2 + ((x[z == k] - mean) ** 2).sum(axis=0)) / (z == k).sum()     # covars_prior 1e-2
        np.testing.assert_allclose(np.diag(model.covars[k]), var, rtol=1e-10)
    trans = np.zeros((2, 2))
    for zz in Z:
        np.add.at(trans, (zz[:-1], zz[1:]), 1)
    np.testing.assert_allclose(model.A, trans / trans.sum(1, keepdims=True), rtol=1e-14)
    em = gaussian(seed=1, N=2)
    em.fit(X, labels=Z, epochs=1)
    np.testing.assert_allclose(em.means, model.means, rtol=1e-12)
    np.testing.assert_allclose(em.A, model.A, rtol=1e-12)
    counts = [rng.poisson(2.0 + 5.0 * z[:, None], size=(len(z), 3)) for z in Z]
    poisson = hmmop.PoissonHMM(2, 3, dtype="float64").fit_supervised(counts, Z)
    c = np.concatenate(counts)
    for k in range(2):
        np.testing.assert_allclose(poisson.emission.lambdas[k], c[z == k].mean(axis=0), rtol=1e-12)


def test_semi_supervised_em_climbs_log_p_of_data_and_labels():
    rng = np.random.default_rng(4)
    model = gaussian(seed=2)
    X, states = model.sample(6, 40, seed=5)
    labels = [np.where(rng.random(40) < 0.1, s, -1) for s in states]
    start = gaussian(seed=3)
    want0 = start.score(X, labels=labels)
    history = start.fit(X, labels=labels, epochs=15)
    np.testing.assert_allclose(history[0], want0, rtol=1e-12)
    assert (np.diff(history) > -1e-8 * abs(history[0])).all()
    np.testing.assert_allclose(history[-1], start.score(X, labels=labels), rtol=1e-3)
    # labels with nothing known: the unlabelled fit, exactly the same objective
    none = [np.full(40, -1)] * 6
    a, b = gaussian(seed=3), gaussian(seed=3)
    np.testing.assert_allclose(a.fit(X, labels=none, epochs=5), b.fit(X, epochs=5), rtol=1e-12)


@pytest.mark.parametrize("engine", ["native", "custom", "ndarray"])
def test_gradient_of_log_p_data_and_labels_equals_finite_differences(engine):
    model = gaussian(seed=4)
    model.engine = engine
    rng = np.random.default_rng(6)
    X = [rng.normal(size=(L, 2)) for L in (6, 4)]
    labels = [np.array([1, -1, -1, 2, -1, -1]), np.array([-1, 0, -1, -1])]
    rows, lengths, _ = model._data(X)
    block = model._gradient_block(model._labels(labels, lengths))
    inputs = block.inputs(model._split(rows, lengths), None, mx.cpu())
    with mx.autograd.record():
        ll = block(*inputs)
    ll.backward()
    np.testing.assert_allclose(ll.asnumpy(), model.score_sequences(X, labels=labels), rtol=1e-12)
    logits = block.A_logits.data().asnumpy()
    grad = block.A_logits.grad().asnumpy()
    eps, numeric = 1e-6, np.zeros_like(logits)
    for i, j in itertools.product(range(3), repeat=2):
        values = []
        for sign in (1, -1):
            lg = logits.copy()
            lg[i, j] += sign * eps
            A = np.exp(lg - lg.max(1, keepdims=True))
            probe = gaussian(seed=4)
            probe.set_probabilities(A=A / A.sum(1, keepdims=True))
            values.append(probe.score(X, labels=labels))
        numeric[i, j] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_gradient_fit_with_labels_on_a_categorical_hmm_keeps_structural_zeros():
    mask = {"B": np.array([[True, True, False, True], [True, True, True, True], [False, True, True, True]])}
    model = categorical(seed=7, mask=mask)
    rng = np.random.default_rng(8)
    X = [np.where(rng.random(20) < 0.5, 1, 3) for _ in range(4)]
    labels = [np.where(np.arange(20) % 5 == 0, 0, -1)] * 4
    want0 = model.score(X, labels=labels)
    history = model.fit(X, labels=labels, epochs=30, learning_rate=0.2, optimizer="adam")
    np.testing.assert_allclose(history[0], want0, rtol=1e-10)
    assert history[-1] > history[0]
    assert model.B[0, 2] == 0 and model.B[2, 0] == 0
    np.testing.assert_allclose(history[-1], model.score(X, labels=labels), rtol=1e-2)
    # the categorical block (no labels) continues from the labelled fit's parameters, and from EM's
    for method in ("gradient", "em"):
        if method == "em":
            model.fit(X, method="em", epochs=3)
        A0 = model.A
        model.fit(X, epochs=1, learning_rate=1e-9)
        np.testing.assert_allclose(model.A, A0, rtol=1e-6, err_msg=f"after {method}")


def test_impossible_labels():
    A = np.array([[0.5, 0.0, 0.5], [0.3, 0.3, 0.4], [0.2, 0.4, 0.4]])
    B = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    model = hmmop.HMM.from_probabilities(A, B, np.ones(3) / 3, keep_zeros=True, dtype="float64")
    X = [[0, 1, 1, 0], [0, 2, 1, 1]]
    through_zero = [[-1, -1, -1, -1], [-1, -1, 0, 1]]        # 0 -> 1 is a structural zero of A
    ll = model.score_sequences(X, labels=through_zero)
    assert np.isfinite(ll[0]) and ll[1] == -np.inf          # score: the honest answer
    assert np.isnan(model.predict_proba(X, labels=through_zero)[1]).all()
    with pytest.raises(ValueError, match=r"sequence 1, step 3: no transition from state 0 at step 2 to state 1"):
        model.decode(X, labels=through_zero)
    with pytest.raises(ValueError, match=r"sequence 1, step 3: no transition"):
        model.fit(X, labels=through_zero, method="em", epochs=2)
    with pytest.raises(ValueError, match=r"sequence 1, step 3: no transition .* structural zero"):
        model.fit_supervised(X, [[0, 0, 2, 2], [2, 2, 0, 1]])
    cannot_emit = [[-1, -1, -1, -1], [-1, 0, -1, -1]]          # state 0 never emits symbol 2
    with pytest.raises(ValueError, match=r"sequence 1, step 1: its labelled state 0 cannot emit"):
        model.decode(X, labels=cannot_emit)
    with pytest.raises(ValueError, match="every step labelled"):
        model.fit_supervised(X, through_zero)
    assert np.isfinite(model.score(X))                       # the process and the model are unharmed


def test_labels_leave_the_unlabelled_categorical_results_alone():
    model = categorical(seed=9)
    rng = np.random.default_rng(10)
    X = [rng.integers(0, 4, L) for L in (12, 3, 8)]
    nothing = [np.full(len(x), -1) for x in X]
    np.testing.assert_allclose(model.score_sequences(X, labels=nothing), model.score_sequences(X), rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate(model.predict(X, labels=nothing)),
                                  np.concatenate(model.predict(X)))
    a, b = categorical(seed=9), categorical(seed=9)
    np.testing.assert_allclose(a.fit(X, method="em", epochs=5, labels=nothing), b.fit(X, method="em", epochs=5),
                               rtol=1e-12)
    np.testing.assert_allclose(a.A, b.A, rtol=1e-10)


@pytest.mark.parametrize("family", ["gmm", "poisson", "multinomial"])
def test_every_family_fits_with_labels(family):
    rng = np.random.default_rng(11)
    Z = [rng.integers(0, 2, 30) for _ in range(3)]
    labels = [np.where(rng.random(30) < 0.2, z, -1) for z in Z]
    if family == "gmm":
        model, X = hmmop.GMMHMM(2, 2, n_mix=2, dtype="float64"), [rng.normal(size=(30, 2)) + 3 * z[:, None] for z in Z]
    elif family == "poisson":
        model, X = hmmop.PoissonHMM(2, 3, dtype="float64"), [rng.poisson(1 + 4 * z[:, None], size=(30, 3)) for z in Z]
    else:
        p = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
        model, X = hmmop.MultinomialHMM(2, 3, n_trials=5, dtype="float64"), \
            [np.array([rng.multinomial(5, p[k]) for k in z]) for z in Z]
    model.fit_supervised(X, Z)
    if family == "multinomial":      # per-state normalised counts of the trials' outcomes
        x, z = np.concatenate(X), np.concatenate(Z)
        for k in range(2):
            np.testing.assert_allclose(model.emission.emissionprob[k], x[z == k].sum(0) / x[z == k].sum(), rtol=1e-12)
    start = model.score(X, labels=labels)
    history = model.fit(X, labels=labels, epochs=6)
    np.testing.assert_allclose(history[0], start, rtol=1e-12)
    assert (np.diff(history) > -1e-8 * abs(history[0])).all()
    history = model.fit(X, labels=labels, epochs=3, method="gradient", learning_rate=0.01)
    assert np.isfinite(history).all()


def test_a_drawn_start_is_renumbered_to_fit_the_labels():
    """Two well-separated states, a few labels: from drawn starts (k-means centres in any order, random
    draws) the fitted state k is the labels' state k (without the renumbering, seed 2's Gaussian and
    seed 5's categorical fits come out swapped)."""
    rng = np.random.default_rng(12)
    Z = [np.repeat(rng.integers(0, 2, 8), 10) for _ in range(4)]
    X = [rng.normal(size=(80, 1)) + np.where(z[:, None] == 1, 5.0, -5.0) for z in Z]
    labels = [np.where(np.arange(80) % 37 == 0, z, -1) for z in Z]
    for seed in range(6):
        model = hmmop.GaussianHMM(2, 1, dtype="float64")
        model.fit(X, labels=labels, init="kmeans", seed=seed, epochs=10, n_init=3)
        np.testing.assert_allclose(model.means.ravel(), [-5.0, 5.0], atol=0.5, err_msg=f"seed {seed}")
        hmm = hmmop.HMM(2, 3, seed=seed)      # start 0: the model's own parameters; 1, 2: drawn, renumbered
        symbols = [np.where(z == 1, 2, 0) for z in Z]
        hmm.fit(symbols, labels=labels, method="em", epochs=5, n_init=3, seed=seed)
        assert hmm.B[0, 0] > 0.8 and hmm.B[1, 2] > 0.8, f"seed {seed}: {hmm.B}"


@pytest.mark.parametrize("family", ["gaussian", "tied", "gmm", "poisson", "multinomial", "categorical"])
def test_permuted_emission_permutes_the_log_likelihood_columns(family):
    rng = np.random.default_rng(13)
    if family in ("gaussian", "tied"):
        model = hmmop.GaussianHMM(3, 2, covariance_type="full" if family == "gaussian" else "tied", dtype="float64")
        X = rng.normal(size=(20, 2))
    elif family == "gmm":
        model, X = hmmop.GMMHMM(3, 2, n_mix=2, dtype="float64"), rng.normal(size=(20, 2))
    elif family == "poisson":
        model, X = hmmop.PoissonHMM(3, 2, dtype="float64"), rng.poisson(3.0, size=(20, 2))
    elif family == "multinomial":
        model, X = hmmop.MultinomialHMM(3, 3, n_trials=4, dtype="float64"), rng.multinomial(4, [0.2, 0.3, 0.5], 20)
    else:
        model, X = categorical(seed=13), rng.integers(0, 4, 20)
    if family != "categorical":
        model.fit([X], epochs=2, init="kmeans" if family == "gmm" else "random", seed=1)
    rows, _ = model.emission.prepare([X])
    order = np.array([2, 0, 1])
    np.testing.assert_allclose(model.emission.permuted(order).log_likelihood(rows),
                               model.emission.log_likelihood(rows)[:, order], rtol=1e-12)
