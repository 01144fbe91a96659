"""Inference with hmmop.HMM and hmmop.inference against independent oracles.

decode (viterbi, map), predict, predict_proba, score, score_sequences, aic and bic against hmmlearn 0.3.3's
CategoricalHMM; Viterbi paths and posteriors against brute-force enumeration; missing observations (None
tokens, -2 symbols) against brute force with the missing step marginalised; sampling against the model's own
probabilities; free-parameter counts against an explicit count.
"""
import itertools

import numpy as np
import pytest

from hmmop import HMM
from hmmop import inference
from reference import hmmlearn_model as oracle, random_model

RTOL = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# helpers: the hmmlearn oracle, data, brute force
# ---------------------------------------------------------------------------------------------------------------
def random_sequences(rng, m, lengths):
    return [rng.integers(0, m, L) for L in lengths]


def concat(seqs):
    """hmmlearn's (X, lengths) form of a list of sequences."""
    return np.concatenate(seqs).astype(np.int64).reshape(-1, 1), [len(s) for s in seqs]


def n_free(A_free, B_free, pi_free, fixed=()):
    """Explicit count: for each learned parameter, each row with f free entries has f - 1 free parameters."""
    total = 0
    for name, free in (("A", A_free), ("B", B_free), ("pi", pi_free)):
        if name in fixed:
            continue
        free = np.atleast_2d(np.asarray(free, dtype=bool))
        total += int(sum(row.sum() - 1 for row in free))
    return total


def emission(B, o):
    """Emission factors of symbol o for every state; a missing observation (-2 or None) emits with probability 1."""
    if o is None or o == -2:
        return np.ones(B.shape[0])
    return B[:, o]


def brute_force(A, B, pi, seq):
    """Enumerate every state path: (log P(seq), best path, its log joint probability, posteriors (T, N))."""
    n, T = A.shape[0], len(seq)
    total, best, best_p = 0.0, None, -1.0
    gamma = np.zeros((T, n))
    for path in itertools.product(range(n), repeat=T):
        p = pi[path[0]] * emission(B, seq[0])[path[0]]
        for t in range(1, T):
            p *= A[path[t - 1], path[t]] * emission(B, seq[t])[path[t]]
        total += p
        gamma[np.arange(T), list(path)] += p
        if p > best_p:
            best, best_p = np.array(path), p
    return np.log(total), best, np.log(best_p), gamma / total


def second_best_gap(A, B, pi, seq):
    """log(best path probability) - log(second best): a check that the best path is unique."""
    n, T = A.shape[0], len(seq)
    ps = []
    for path in itertools.product(range(n), repeat=T):
        p = pi[path[0]] * emission(B, seq[0])[path[0]]
        for t in range(1, T):
            p *= A[path[t - 1], path[t]] * emission(B, seq[t])[path[t]]
        ps.append(p)
    ps = np.sort(ps)
    return np.inf if len(ps) < 2 else np.log(ps[-1]) - np.log(ps[-2])


def path_log_prob(A, B, pi, seq, path):
    """log P(path, seq) (missing steps emit with probability 1)."""
    with np.errstate(divide="ignore"):
        lp = np.log(pi[path[0]]) + np.log(emission(B, seq[0])[path[0]])
        for t in range(1, len(seq)):
            lp += np.log(A[path[t - 1], path[t]]) + np.log(emission(B, seq[t])[path[t]])
    return lp


def assert_same_best_paths(A, B, pi, seqs, got, want):
    """Paths equal, except where the best path is not unique: there the path must score exactly as well.

    Exact ties are not rare: a path that loops in a state before or after a cycle has the same factors as the
    one that loops after or before it when the symbols at the moved steps are equal."""
    assert len(got) == len(want) == len(seqs)
    n_ties = 0
    for b, (s, g, w) in enumerate(zip(seqs, got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == (len(s),), f"sequence {b}: path shape {g.shape}, expected ({len(s)},)"
        if not np.array_equal(g, w):
            n_ties += 1
            best = path_log_prob(A, B, pi, s, w)
            np.testing.assert_allclose(path_log_prob(A, B, pi, s, g), best, rtol=1e-13,
                                       err_msg=f"sequence {b}: hmmop's path is not a best path")
    assert n_ties <= len(seqs) // 2 + 1, f"{n_ties} of {len(seqs)} paths differ"


def split(flat, lengths):
    return np.split(np.asarray(flat), np.cumsum(lengths)[:-1])


def model_from(A, B, pi, **kwargs):
    return HMM.from_probabilities(A, B, pi, dtype="float64", **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# against hmmlearn
# ---------------------------------------------------------------------------------------------------------------
CASES = [
    # (N, M, lengths, seed)
    (2, 3, [1, 2, 3, 5, 8], 0),
    (5, 8, [1, 40, 7, 1, 120, 33, 2, 64], 1),
    (20, 30, [500, 1, 250, 17, 499, 3, 120], 2),
    (7, 2, list(range(1, 60, 4)), 3),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"N{c[0]}-M{c[1]}-{len(c[2])}seqs")
def case(request):
    n, m, lengths, seed = request.param
    rng = np.random.default_rng(100 + seed)
    A, B, pi = random_model(rng, n, m)
    seqs = random_sequences(rng, m, lengths)
    X, lens = concat(seqs)
    return dict(A=A, B=B, pi=pi, seqs=seqs, X=X, lengths=lens, model=model_from(A, B, pi), ref=oracle(A, B, pi))


def both_forms(case):
    """(args, kwargs) for a list of sequences, hmmlearn's (X (n, 1), lengths) and (X (n,), lengths)."""
    return [((case["seqs"],), {}),
            ((case["X"],), {"lengths": case["lengths"]}),
            ((case["X"].ravel(),), {"lengths": case["lengths"]})]


def test_score_matches_hmmlearn(case):
    ref, model = case["ref"], case["model"]
    expected_total = ref.score(case["X"], case["lengths"])
    expected_each = np.array([ref.score(s.reshape(-1, 1)) for s in case["seqs"]])
    for args, kwargs in both_forms(case):
        total = model.score(*args, **kwargs)
        assert np.ndim(total) == 0
        np.testing.assert_allclose(total, expected_total, rtol=RTOL)
        each = model.score_sequences(*args, **kwargs)
        assert each.shape == (len(case["seqs"]),) and each.dtype == np.float64
        np.testing.assert_allclose(each, expected_each, rtol=RTOL)


def test_viterbi_decode_and_predict_match_hmmlearn(case):
    ref, model = case["ref"], case["model"]
    ref_lp, ref_states = ref.decode(case["X"], case["lengths"], algorithm="viterbi")
    for args, kwargs in both_forms(case):
        for call in (lambda: model.decode(*args, **kwargs),
                     lambda: model.decode(*args, algorithm="viterbi", **kwargs)):
            lp, states = call()
            assert [len(s) for s in states] == case["lengths"]
            assert_same_best_paths(case["A"], case["B"], case["pi"], case["seqs"], states,
                                   split(ref_states, case["lengths"]))
            np.testing.assert_allclose(lp, ref_lp, rtol=RTOL)
        predicted = model.predict(*args, **kwargs)
        for p, s in zip(predicted, states):
            np.testing.assert_array_equal(p, s)


def test_map_decode_matches_hmmlearn_states_and_returns_the_data_log_likelihood(case):
    ref, model = case["ref"], case["model"]
    _, ref_states = ref.decode(case["X"], case["lengths"], algorithm="map")
    ll = ref.score(case["X"], case["lengths"])
    for args, kwargs in both_forms(case):
        lp, states = model.decode(*args, algorithm="map", **kwargs)
        assert [len(s) for s in states] == case["lengths"]
        np.testing.assert_array_equal(np.concatenate(states), ref_states)
        np.testing.assert_allclose(lp, ll, rtol=RTOL)   # hmmop's documented difference from hmmlearn


def test_predict_proba_matches_hmmlearn(case):
    ref, model = case["ref"], case["model"]
    expected = ref.predict_proba(case["X"], case["lengths"])
    n = case["A"].shape[0]
    for args, kwargs in both_forms(case):
        post = model.predict_proba(*args, **kwargs)
        assert [p.shape for p in post] == [(L, n) for L in case["lengths"]]
        assert all(p.dtype == np.float64 for p in post)
        got = np.concatenate(post)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-14)


def test_score_samples_matches_hmmlearn(case):
    ref, model = case["ref"], case["model"]
    want_ll, want_post = ref.score_samples(case["X"], case["lengths"])
    for args, kwargs in both_forms(case):
        ll, post = model.score_samples(*args, **kwargs)
        assert isinstance(ll, float) and [len(p) for p in post] == list(case["lengths"])
        np.testing.assert_allclose(ll, want_ll, rtol=RTOL)
        np.testing.assert_allclose(np.concatenate(post), want_post, rtol=RTOL, atol=1e-14)


def test_aic_bic_match_hmmlearn(case):
    ref, model = case["ref"], case["model"]
    n, m = case["B"].shape
    assert model.n_free_parameters == n_free(np.ones((n, n)), np.ones((n, m)), np.ones(n)) \
        == (n - 1) + n * (n - 1) + n * (m - 1)
    for args, kwargs in both_forms(case):
        np.testing.assert_allclose(model.aic(*args, **kwargs), ref.aic(case["X"], case["lengths"]), rtol=RTOL)
        np.testing.assert_allclose(model.bic(*args, **kwargs), ref.bic(case["X"], case["lengths"]), rtol=RTOL)


def test_free_functions_match_hmmlearn(case):
    ref, A, B, pi = case["ref"], case["A"], case["B"], case["pi"]
    seqs = case["seqs"]
    obs = np.full((len(seqs), max(case["lengths"])), -1, dtype=np.int64)
    for b, s in enumerate(seqs):
        obs[b, :len(s)] = s
    lp, paths = inference.viterbi(A, B, pi, obs)
    assert lp.shape == (len(seqs),) and lp.dtype == np.float64
    ref_paths = []
    for b, s in enumerate(seqs):
        ref_lp, ref_path = ref.decode(s.reshape(-1, 1), algorithm="viterbi")
        ref_paths.append(ref_path)
        np.testing.assert_allclose(lp[b], ref_lp, rtol=RTOL)
    assert_same_best_paths(A, B, pi, seqs, paths, ref_paths)
    ll, gamma = inference.posteriors(A, B, pi, obs)
    assert ll.shape == (len(seqs),) and ll.dtype == np.float64
    for b, s in enumerate(seqs):
        np.testing.assert_allclose(ll[b], ref.score(s.reshape(-1, 1)), rtol=RTOL)
        np.testing.assert_allclose(gamma[b], ref.predict_proba(s.reshape(-1, 1)), rtol=RTOL, atol=1e-14)


def test_single_flat_sequence_is_one_sequence():
    rng = np.random.default_rng(5)
    A, B, pi = random_model(rng, 3, 4)
    seq = rng.integers(0, 4, 30)
    model, ref = model_from(A, B, pi), oracle(A, B, pi)
    np.testing.assert_allclose(model.score(seq), ref.score(seq.reshape(-1, 1)), rtol=RTOL)
    np.testing.assert_allclose(model.score(list(seq)), ref.score(seq.reshape(-1, 1)), rtol=RTOL)
    lp, states = model.decode(seq)
    assert len(states) == 1
    assert_same_best_paths(A, B, pi, [seq], states, [ref.predict(seq.reshape(-1, 1))])


def test_concatenated_sequences_decode_as_the_padded_form():
    """inference.viterbi and posteriors(..., lengths=...) (hmmlearn's form, what the model uses)
    against the padded form, with empty sequences and missing steps; and the input errors."""
    rng = np.random.default_rng(8)
    A, B, pi = random_model(rng, 4, 3)
    seqs = random_sequences(rng, 3, [5, 0, 40, 1, 0, 17, 3])
    seqs[2][[3, 9]] = -2
    X, lengths = concat(seqs)
    padded = np.full((len(seqs), 40), -1)
    for b, s in enumerate(seqs):
        padded[b, :len(s)] = s
    want_lp, want = inference.viterbi(A, B, pi, padded)
    want_ll, want_gamma = inference.posteriors(A, B, pi, padded)
    for obs in (X, X[:, 0], X[:, 0].astype(np.int32)):
        lp, paths = inference.viterbi(A, B, pi, obs, lengths=lengths)
        np.testing.assert_array_equal(lp, want_lp)
        assert [p.tolist() for p in paths] == [p.tolist() for p in want]
        ll, gamma = inference.posteriors(A, B, pi, obs, lengths=lengths)
        np.testing.assert_array_equal(ll, want_ll)
        for g, w in zip(gamma, want_gamma):
            np.testing.assert_array_equal(g, w)
    assert [len(p) for p in want] == [len(g) for g in want_gamma] == lengths and want_lp[1] == want_lp[4] == 0
    for obs, lens, message in ((X, lengths[:-1], "lengths sum to 63 but obs holds 66 symbols"),
                               (np.where(X == -2, -1, X), lengths, r"obs\[8\] = -1: padding"),
                               (X, [-1] + lengths[1:], "non-negative integers"),
                               (padded, [40] * 7, r"expected the concatenated sequences"),
                               (np.where(X == -2, 3, X), lengths,
                                r"obs\[8\] = 3 is not a valid symbol: .* or -2 missing$")):
        with pytest.raises(ValueError, match=message):
            inference.viterbi(A, B, pi, obs, lengths=lens)


def test_unknown_decode_algorithm():
    model = HMM(2, 2, seed=0)
    with pytest.raises(ValueError):
        model.decode([[0, 1]], algorithm="foo")


def test_float32_model_agrees_loosely():
    rng = np.random.default_rng(6)
    A, B, pi = random_model(rng, 4, 5)
    seqs = random_sequences(rng, 5, [30, 1, 77])
    model = HMM.from_probabilities(A, B, pi)            # float32
    ref = oracle(model.A, model.B, model.pi)            # the probabilities the model holds
    X, lengths = concat(seqs)
    np.testing.assert_allclose(model.score(seqs), ref.score(X, lengths), rtol=1e-5)
    np.testing.assert_allclose(np.concatenate(model.predict_proba(seqs)), ref.predict_proba(X, lengths),
                               atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# against brute force
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m,seed", [(1, 2, 0), (2, 2, 1), (2, 3, 2), (3, 2, 3), (3, 4, 4)])
def test_viterbi_and_posteriors_match_brute_force(n, m, seed):
    rng = np.random.default_rng(200 + seed)
    A, B, pi = random_model(rng, n, m)
    seqs = random_sequences(rng, m, [1, 2, 3, 4, 5, 6, 6, 5])
    model = model_from(A, B, pi)
    total_best, paths, lls, gammas = 0.0, [], [], []
    for s in seqs:
        ll, best, best_lp, gamma = brute_force(A, B, pi, s)
        assert second_best_gap(A, B, pi, s) > 1e-9 or n == 1   # the best path is unique
        total_best += best_lp
        paths.append(best)
        lls.append(ll)
        gammas.append(gamma)
    lp, states = model.decode(seqs)
    np.testing.assert_allclose(lp, total_best, rtol=RTOL)
    for got, want in zip(states, paths):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(model.predict(seqs), paths):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.score_sequences(seqs), lls, rtol=RTOL)
    for got, want in zip(model.predict_proba(seqs), gammas):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-15)
    _, map_states = model.decode(seqs, algorithm="map")
    for got, g in zip(map_states, gammas):
        np.testing.assert_array_equal(got, g.argmax(axis=1))


# ---------------------------------------------------------------------------------------------------------------
# missing observations
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(300)
    A, B, pi = random_model(rng, 3, 4)
    return A, B, pi


MISSING_SEQS = [[0, -2, 3, 1], [-2], [2, 1, -2, -2, 0], [-2, 3], [1, 2, 3, -2], [3, 0, 1, 2, 2, 1]]


def test_missing_integer_observations_match_brute_force(small):
    A, B, pi = small
    model = model_from(A, B, pi)
    expected = [brute_force(A, B, pi, s) for s in MISSING_SEQS]
    np.testing.assert_allclose(model.score_sequences(MISSING_SEQS), [e[0] for e in expected], rtol=RTOL)
    np.testing.assert_allclose(model.score(MISSING_SEQS), sum(e[0] for e in expected), rtol=RTOL)
    for got, e in zip(model.predict_proba(MISSING_SEQS), expected):
        np.testing.assert_allclose(got, e[3], rtol=RTOL, atol=1e-15)
    # the same as a -1 padded 2-D array holding -2
    padded = np.full((len(MISSING_SEQS), 6), -1)
    for b, s in enumerate(MISSING_SEQS):
        padded[b, :len(s)] = s
    np.testing.assert_allclose(model.score_sequences(padded), [e[0] for e in expected], rtol=RTOL)
    ll, gamma = inference.posteriors(A, B, pi, padded)
    np.testing.assert_allclose(ll, [e[0] for e in expected], rtol=RTOL)
    for got, e in zip(gamma, expected):
        np.testing.assert_allclose(got, e[3], rtol=RTOL, atol=1e-15)


def test_missing_tokens_match_brute_force(small):
    A, B, pi = small
    words = ["sun", "rain", "fog", "snow"]
    model = model_from(A, B, pi, symbols=words)
    tokens = [[None if o == -2 else words[o] for o in s] for s in MISSING_SEQS]
    expected = [brute_force(A, B, pi, s) for s in MISSING_SEQS]
    np.testing.assert_allclose(model.score_sequences(tokens), [e[0] for e in expected], rtol=RTOL)
    np.testing.assert_allclose(model.score(tokens), sum(e[0] for e in expected), rtol=RTOL)
    for got, e in zip(model.predict_proba(tokens), expected):
        np.testing.assert_allclose(got, e[3], rtol=RTOL, atol=1e-15)


def test_missing_observations_in_viterbi_match_brute_force(small):
    A, B, pi = small
    model = model_from(A, B, pi)
    lp, states = model.decode(MISSING_SEQS)
    found = [brute_force(A, B, pi, s) for s in MISSING_SEQS]
    assert_same_best_paths(A, B, pi, MISSING_SEQS, states, [f[1] for f in found])
    np.testing.assert_allclose(lp, sum(f[2] for f in found), rtol=RTOL)


def test_missing_step_is_the_sum_over_its_symbols_on_long_sequences():
    """P(.., missing at t, ..) = sum_k P(.., k at t, ..), with hmmlearn scoring each completed sequence."""
    rng = np.random.default_rng(301)
    A, B, pi = random_model(rng, 6, 5)
    ref, model = oracle(A, B, pi), model_from(A, B, pi)
    seq = rng.integers(0, 5, 200)
    for t in (0, 77, 199):
        probs = []
        for k in range(5):
            s = seq.copy()
            s[t] = k
            probs.append(ref.score(s.reshape(-1, 1)))
        with_missing = seq.copy()
        with_missing[t] = -2
        expected = np.logaddexp.reduce(probs)
        np.testing.assert_allclose(model.score_sequences([with_missing])[0], expected, rtol=RTOL)
        # posterior at the missing step: sum_k P(state | completed with k) P(k | rest)
        weights = np.exp(np.array(probs) - expected)
        gamma_t = sum(w * ref.predict_proba(np.where(np.arange(200) == t, k, seq).reshape(-1, 1))[t]
                      for k, w in enumerate(weights))
        np.testing.assert_allclose(model.predict_proba([with_missing])[0][t], gamma_t, rtol=1e-9, atol=1e-14)


def test_bic_counts_observed_symbols_only(small):
    A, B, pi = small
    model = model_from(A, B, pi)
    ll = sum(brute_force(A, B, pi, s)[0] for s in MISSING_SEQS)
    n_observed = sum(o != -2 for s in MISSING_SEQS for o in s)
    k = n_free(np.ones((3, 3)), np.ones((3, 4)), np.ones(3))
    np.testing.assert_allclose(model.aic(MISSING_SEQS), -2 * ll + 2 * k, rtol=RTOL)
    np.testing.assert_allclose(model.bic(MISSING_SEQS), -2 * ll + k * np.log(n_observed), rtol=RTOL)


# ---------------------------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampler():
    A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])
    B = np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], [0.3, 0.4, 0.05, 0.25]])
    pi = np.array([0.2, 0.5, 0.3])
    return A, B, pi


def frequencies(obs, states, n, m):
    obs, states = np.asarray(obs), np.asarray(states)
    trans = np.zeros((n, n))
    np.add.at(trans, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    emit = np.zeros((n, m))
    np.add.at(emit, (states.ravel(), obs.ravel()), 1)
    start = np.bincount(states[:, 0], minlength=n).astype(float)
    with np.errstate(invalid="ignore"):          # no transitions in sequences of length 1
        return (trans / trans.sum(axis=1, keepdims=True), emit / emit.sum(axis=1, keepdims=True),
                start / start.sum())


def test_sample_is_seeded(sampler):
    model = model_from(*sampler)
    s1, z1 = model.sample(5, 40, seed=7)
    s2, z2 = model.sample(5, 40, seed=7)
    s3, z3 = model.sample(5, 40, seed=8)
    assert len(s1) == len(z1) == 5 and all(len(x) == 40 for x in s1 + z1)
    for a, b in zip(s1 + z1, s2 + z2):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(s1 + z1, s3 + z3))
    assert all(((x >= 0) & (x < 4)).all() for x in s1) and all(((z >= 0) & (z < 3)).all() for z in z1)

    obs, states = inference.sample(*sampler, 6, 25, seed=3)
    assert obs.shape == states.shape == (6, 25) and obs.dtype == states.dtype == np.int32
    obs2, states2 = inference.sample(*sampler, 6, 25, seed=3)
    np.testing.assert_array_equal(obs, obs2)
    np.testing.assert_array_equal(states, states2)
    assert not np.array_equal(obs, inference.sample(*sampler, 6, 25, seed=4)[0])


def test_sample_frequencies_match_the_model(sampler):
    A, B, pi = sampler
    model = model_from(A, B, pi)
    seqs, states = model.sample(1000, 1000, seed=11)                 # 10^6 symbols
    trans, emit, _ = frequencies(seqs, states, 3, 4)
    np.testing.assert_allclose(trans, A, atol=0.005)
    np.testing.assert_allclose(emit, B, atol=0.005)
    # the initial distribution needs many sequences: 250000 of length 1
    seqs1, states1 = model.sample(250000, 1, seed=12)
    _, emit1, start = frequencies(seqs1, states1, 3, 4)
    np.testing.assert_allclose(start, pi, atol=0.005)
    np.testing.assert_allclose(emit1, B, atol=0.01)
    # the free function, with fewer symbols
    obs, st = inference.sample(A, B, pi, 500, 500, seed=13)
    trans, emit, _ = frequencies(obs, st, 3, 4)
    np.testing.assert_allclose(trans, A, atol=0.01)
    np.testing.assert_allclose(emit, B, atol=0.01)


def test_sample_respects_structural_zeros():
    A = np.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])
    B = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.3, 0.0, 0.7]])
    pi = np.array([1.0, 0.0, 0.0])
    model = model_from(A, B, pi, keep_zeros=True)
    seqs, states = model.sample(200, 50, seed=0)
    trans, emit, start = frequencies(seqs, states, 3, 3)
    assert (trans[A == 0] == 0).all() and (emit[B == 0] == 0).all() and (start[pi == 0] == 0).all()
    assert np.isfinite(model.score(seqs))


def test_vocabulary_model_samples_tokens(sampler):
    words = ["sun", "rain", "fog", "snow"]
    model = model_from(*sampler, symbols=words)
    seqs, states = model.sample(20, 30, seed=1)
    assert len(seqs) == 20
    assert all(len(s) == 30 and all(isinstance(tok, str) and tok in words for tok in s) for s in seqs)
    as_ints = [[words.index(tok) for tok in s] for s in seqs]
    plain, plain_states = model_from(*sampler).sample(20, 30, seed=1)
    for a, b in zip(as_ints, plain):
        np.testing.assert_array_equal(a, b)       # the same draw, spelled as tokens
    ref = oracle(*sampler)
    np.testing.assert_allclose(model.score_sequences(seqs), [ref.score(np.asarray(p).reshape(-1, 1)) for p in plain],
                               rtol=RTOL)


# ---------------------------------------------------------------------------------------------------------------
# free parameters: structural zeros and fixed parameters
# ---------------------------------------------------------------------------------------------------------------
def left_right(rng, n, m):
    A = np.triu(rng.random((n, n)) + 0.1) * (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1)
    A /= A.sum(axis=1, keepdims=True)
    B = rng.random((n, m)) + 0.1
    B[0, 0] = B[1, 2] = B[n - 1, 1] = 0.0
    B /= B.sum(axis=1, keepdims=True)
    pi = np.zeros(n)
    pi[0], pi[1] = 0.8, 0.2
    return A, B, pi


@pytest.fixture(scope="module")
def structured():
    rng = np.random.default_rng(400)
    A, B, pi = left_right(rng, 4, 5)
    ref = oracle(A, B, pi)
    seqs = [ref.sample(L, random_state=i)[0].ravel() for i, L in enumerate([30, 1, 12, 45, 8])]
    return A, B, pi, seqs


def expected_criteria(A, B, pi, seqs, k):
    X, lengths = concat(seqs)
    with np.errstate(divide="ignore"):
        ll = oracle(A, B, pi).score(X, lengths)
    return -2 * ll + 2 * k, -2 * ll + k * np.log(len(X))


def test_keep_zeros_reduces_free_parameters(structured):
    A, B, pi, seqs = structured
    model = model_from(A, B, pi, keep_zeros=True)
    k = n_free(A > 0, B > 0, pi > 0)
    assert k == 3 + (4 * 4 - 3) + 1                  # A rows: 1, 1, 1, 0; B: 4 per row less 3 zeros; pi: 2 free
    assert model.n_free_parameters == k
    aic, bic = expected_criteria(A, B, pi, seqs, k)
    np.testing.assert_allclose(model.aic(seqs), aic, rtol=RTOL)
    np.testing.assert_allclose(model.bic(seqs), bic, rtol=RTOL)
    # without keep_zeros every entry is free
    dense = model_from(A, B, pi)
    assert dense.n_free_parameters == n_free(np.ones((4, 4)), np.ones((4, 5)), np.ones(4))


def test_mask_reduces_free_parameters(structured):
    A, B, pi, seqs = structured
    mask = {"A": A > 0, "B": B > 0}                   # pi's zero is not structural here
    model = model_from(A, B, pi, mask=mask)
    k = n_free(A > 0, B > 0, np.ones(4))
    assert model.n_free_parameters == k
    aic, bic = expected_criteria(A, B, pi, seqs, k)
    np.testing.assert_allclose(model.aic(seqs), aic, rtol=RTOL)
    np.testing.assert_allclose(model.bic(seqs), bic, rtol=RTOL)


@pytest.mark.parametrize("fixed", [("pi",), ("A",), ("B", "pi")])
def test_fixed_parameters_are_not_counted(fixed):
    rng = np.random.default_rng(401)
    A, B, pi = random_model(rng, 3, 4)
    seqs = random_sequences(rng, 4, [10, 3, 25])
    model = model_from(A, B, pi, fixed=fixed)
    k = n_free(np.ones((3, 3)), np.ones((3, 4)), np.ones(3), fixed=fixed)
    assert model.n_free_parameters == k
    aic, bic = expected_criteria(A, B, pi, seqs, k)
    np.testing.assert_allclose(model.aic(seqs), aic, rtol=RTOL)
    np.testing.assert_allclose(model.bic(seqs), bic, rtol=RTOL)


def test_fixed_and_structural_zeros_together(structured):
    A, B, pi, seqs = structured
    model = model_from(A, B, pi, keep_zeros=True, fixed=("B",))
    k = n_free(A > 0, B > 0, pi > 0, fixed=("B",))
    assert model.n_free_parameters == k
    aic, bic = expected_criteria(A, B, pi, seqs, k)
    np.testing.assert_allclose(model.aic(seqs), aic, rtol=RTOL)
    np.testing.assert_allclose(model.bic(seqs), bic, rtol=RTOL)
