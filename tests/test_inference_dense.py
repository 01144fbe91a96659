"""hmmop.inference.viterbi_dense and posteriors_dense (Viterbi and state posteriors on per-step
log-emissions) against brute-force enumeration of state paths, the categorical viterbi /
posteriors on log_emission = log B[:, obs] (ties included), hmmlearn 0.3.3, each other across
the three input forms, and hmm_forward_dense's ll."""
import itertools

import hmmop  # noqa: I001  (first: it restores a numpy alias mxnet needs)
import mxnet as mx
import numpy as np
import pytest
from scipy.special import logsumexp

from hmmop import inference
from reference import hmmlearn_model, random_model, random_padded, under_thread_counts

F64 = np.float64


# -- oracles ---------------------------------------------------------------------------------
def path_scores(A, pi, le):
    """(paths (P, T), log P(path, obs) (P,)) for every state path of one sequence le (T, N)."""
    T, n = le.shape
    paths = np.array(list(itertools.product(range(n), repeat=T)))
    with np.errstate(divide="ignore"):
        log_A, log_pi = np.log(A), np.log(pi)
    score = (log_pi[paths[:, 0]] + log_A[paths[:, :-1], paths[:, 1:]].sum(axis=1)
             + le[np.arange(T), paths].sum(axis=1))
    return paths, score


def brute_viterbi(A, pi, le):
    """(best log P(path, obs), best path) by enumeration (inputs without ties)."""
    if len(le) == 0:
        return 0.0, np.zeros(0, dtype=np.int32)
    paths, score = path_scores(A, pi, le)
    k = int(np.argmax(score))
    return score[k], paths[k]


def brute_posteriors(A, pi, le):
    """(ll, gamma (T, N)) by enumeration."""
    T, n = le.shape
    if T == 0:
        return 0.0, np.zeros((0, n))
    paths, score = path_scores(A, pi, le)
    ll = logsumexp(score)
    gamma = np.zeros((T, n))
    w = np.exp(score - ll)
    for t in range(T):
        np.add.at(gamma[t], paths[:, t], w)
    return ll, gamma


def crf_problem(rng, n, lengths, T=None, scale=2.0, p_neg_inf=0.0, pad=0.0, zeros=True):
    """A, pi non-negative non-stochastic (exp of scores), with a zero each unless not zeros;
    padded log_emission (batch, T, n) with some -inf entries (never a whole row); padding filled
    with pad."""
    T = max(lengths) if T is None else T
    A, pi = np.exp(rng.normal(size=(n, n))), np.exp(rng.normal(size=n))
    if n > 1 and zeros:
        A[0, n - 1] = 0.0
        pi[n - 1] = 0.0
    le = scale * rng.normal(size=(len(lengths), T, n))
    dead = rng.random(le.shape) < p_neg_inf
    dead[..., 0] = False
    le[dead] = -np.inf
    for b, L in enumerate(lengths):
        le[b, L:] = pad
    return A, pi, le, np.asarray(lengths, dtype=np.int64)


def concatenate(le, lengths):
    """The padded (batch, T, N) rows as hmmlearn's concatenated (n_rows, N)."""
    return np.concatenate([le[b, :L] for b, L in enumerate(lengths)]) if len(lengths) else le[:0, 0]


# -- brute force -----------------------------------------------------------------------------
@pytest.mark.parametrize("n,lengths", [(1, [5, 0, 1]), (2, [8, 3, 1]), (3, [6, 5, 0, 2]), (4, [5, 4]),
                                       (6, [4, 1, 3])])
@pytest.mark.parametrize("scale", [2.0, 1e4])
def test_viterbi_matches_enumeration(n, lengths, scale):
    rng = np.random.default_rng(10 * n + len(lengths))
    A, pi, le, lengths = crf_problem(rng, n, lengths, scale=scale, p_neg_inf=0.15)
    log_prob, paths = inference.viterbi_dense(A, pi, le, lengths)
    assert log_prob.dtype == F64 and len(paths) == len(lengths)
    for b, L in enumerate(lengths):
        want_lp, want_path = brute_viterbi(A, pi, le[b, :L])
        assert paths[b].dtype == np.int32 and paths[b].shape == (L,)
        np.testing.assert_allclose(log_prob[b], want_lp, rtol=1e-12)
        np.testing.assert_array_equal(paths[b], want_path)


@pytest.mark.parametrize("n,lengths", [(1, [5, 0, 1]), (2, [8, 3, 1]), (3, [6, 5, 0, 2]), (4, [5, 4]),
                                       (6, [4, 1, 3])])
@pytest.mark.parametrize("scale", [2.0, 1e4])
def test_posteriors_match_enumeration_and_the_operator(n, lengths, scale):
    rng = np.random.default_rng(20 * n + len(lengths))
    A, pi, le, lengths = crf_problem(rng, n, lengths, scale=scale, p_neg_inf=0.15)
    ll, gamma = inference.posteriors_dense(A, pi, le, lengths)
    assert ll.dtype == F64 and len(gamma) == len(lengths)
    for b, L in enumerate(lengths):
        want_ll, want_gamma = brute_posteriors(A, pi, le[b, :L])
        assert gamma[b].dtype == F64 and gamma[b].shape == (L, n)
        np.testing.assert_allclose(ll[b], want_ll, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gamma[b], want_gamma, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gamma[b].sum(axis=1), 1.0, rtol=1e-12)
    # the same driver as hmm_forward_dense: the same ll
    op = hmmop.hmm_forward_dense(*(mx.nd.array(x, dtype=F64) for x in (A, pi, le)), lengths,
                                 backend="cython").asnumpy()
    np.testing.assert_allclose(ll, op, rtol=1e-14, atol=0)


# -- the categorical functions, hmmlearn, ties -----------------------------------------------
def categorical_as_dense(B, obs):
    """log_emission (batch, T, N) = log B[:, obs]: a zero row at a missing step (-2), NaN-free
    zeros on padding (-1); and lengths."""
    le = np.log(B.T[np.maximum(obs, 0)])
    le[obs < 0] = 0.0
    return le, (obs != -1).sum(axis=1)


def duplicated_model(rng, n, m):
    """A model whose states 1 and 2 are exact duplicates: exact ties between them everywhere."""
    A, B, pi = random_model(rng, n, m)
    A[:, 1:3] += 1.0                          # frequent enough to be decoded
    A /= A.sum(axis=1, keepdims=True)
    A[:, 2] = A[:, 1] = (A[:, 1] + A[:, 2]) / 2
    A[2] = A[1]
    B[2] = B[1]
    pi[2] = pi[1] = (pi[1] + pi[2]) / 2
    return A, B, pi


@pytest.mark.parametrize("n,m,kind", [(3, 4, "random"), (5, 2, "random"), (4, 3, "duplicates"),
                                      (8, 2, "duplicates"), (13, 4, "duplicates"), (4, 3, "uniform")])
def test_equal_to_categorical_viterbi_and_hmmlearn(n, m, kind):
    """log_emission = log B[:, obs] decodes to the categorical viterbi's paths, exact ties
    included (hmmlearn's rule: the last state the lowest index, predecessors the highest)."""
    rng = np.random.default_rng(30 + n + m)
    if kind == "uniform":                     # every path equally probable
        A, B, pi = np.full((n, n), 1 / n), np.full((n, m), 1 / m), np.full(n, 1 / n)
    elif kind == "duplicates":
        A, B, pi = duplicated_model(rng, n, m)
    else:
        A, B, pi = random_model(rng, n, m)
    lengths = [40, 6, 0, 25, 1]
    obs = random_padded(rng, m, lengths)
    obs[(rng.random(obs.shape) < 0.1) & (obs >= 0)] = -2
    le, _ = categorical_as_dense(B, obs)
    log_prob, paths = inference.viterbi_dense(A, pi, le, lengths)
    want_lp, want_paths = inference.viterbi(A, B, pi, obs)
    np.testing.assert_allclose(log_prob, want_lp, rtol=1e-12)
    for b, L in enumerate(lengths):
        np.testing.assert_array_equal(paths[b], want_paths[b])
    if kind != "random":
        assert any(len(np.unique(p)) > 1 for p in paths)
    if kind == "duplicates":
        assert any((p == 1).any() for p in paths) and any((p == 2).any() for p in paths)
    if kind == "uniform":
        np.testing.assert_array_equal(paths[0], [n - 1] * 39 + [0])
    # hmmlearn's decode on the sequences without missing steps
    model = hmmlearn_model(A, B, pi)
    clean = random_padded(rng, m, lengths)
    log_prob, paths = inference.viterbi_dense(A, pi, categorical_as_dense(B, clean)[0], lengths)
    for b, L in enumerate(lengths):
        if L:
            ref_lp, ref_path = model.decode(clean[b, :L].reshape(-1, 1), algorithm="viterbi")
            np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-10)
            np.testing.assert_array_equal(paths[b], ref_path)


@pytest.mark.parametrize("n,m", [(3, 4), (7, 2)])
def test_equal_to_categorical_posteriors_and_hmmlearn(n, m):
    rng = np.random.default_rng(40 + n)
    A, B, pi = random_model(rng, n, m)
    lengths = [50, 7, 0, 1, 33]
    obs = random_padded(rng, m, lengths)
    obs[(rng.random(obs.shape) < 0.1) & (obs >= 0)] = -2
    le, _ = categorical_as_dense(B, obs)
    ll, gamma = inference.posteriors_dense(A, pi, le, lengths)
    want_ll, want_gamma = inference.posteriors(A, B, pi, obs)
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12, atol=1e-12)
    for g, w in zip(gamma, want_gamma):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    model = hmmlearn_model(A, B, pi)
    clean = random_padded(rng, m, lengths)
    ll, gamma = inference.posteriors_dense(A, pi, categorical_as_dense(B, clean)[0], lengths)
    for b, L in enumerate(lengths):
        if L:
            np.testing.assert_allclose(ll[b], model.score(clean[b, :L].reshape(-1, 1)), rtol=1e-12)
            np.testing.assert_allclose(gamma[b], model.predict_proba(clean[b, :L].reshape(-1, 1)),
                                       rtol=1e-10, atol=1e-12)


# -- the three input forms, threads ----------------------------------------------------------
@pytest.mark.parametrize("function", [inference.viterbi_dense, inference.posteriors_dense],
                         ids=["viterbi", "posteriors"])
def test_three_input_forms_agree_bit_for_bit(function):
    """(T, N) one sequence, (n_rows, N) concatenated with lengths, (batch, T, N) padded with
    lengths (and without: every row T steps): each sequence's results the same in all."""
    rng = np.random.default_rng(50)
    A, pi, le, lengths = crf_problem(rng, 5, [30, 0, 12, 1, 30, 7], p_neg_inf=0.1, pad=0.0)
    padded = function(A, pi, le, lengths)
    concat = function(A, pi, concatenate(le, lengths), lengths)
    assert len(padded[1]) == len(concat[1]) == len(lengths)
    np.testing.assert_array_equal(padded[0], concat[0])
    for b, L in enumerate(lengths):
        np.testing.assert_array_equal(padded[1][b], concat[1][b])
        one = function(A, pi, le[b, :L])                     # (T, N): one sequence
        assert len(one[1]) == 1
        np.testing.assert_array_equal(one[0], padded[0][b:b + 1])
        np.testing.assert_array_equal(one[1][0], padded[1][b])
    full = [b for b, L in enumerate(lengths) if L == le.shape[1]]
    unpadded = function(A, pi, le[full])                     # (batch, T, N), lengths None
    np.testing.assert_array_equal(unpadded[0], padded[0][full])
    for k, b in enumerate(full):
        np.testing.assert_array_equal(unpadded[1][k], padded[1][b])
    # lengths as a list, int32 or a float array of integers (padded form)
    for given in (list(lengths), lengths.astype(np.int32), lengths.astype(F64)):
        np.testing.assert_array_equal(function(A, pi, le, given)[0], padded[0])


@pytest.mark.parametrize("function", [inference.viterbi_dense, inference.posteriors_dense],
                         ids=["viterbi", "posteriors"])
def test_thread_counts_and_companions_change_nothing(function):
    rng = np.random.default_rng(51)
    lengths = list(rng.integers(0, 80, 37))
    A, pi, le, lengths = crf_problem(rng, 6, lengths, T=80, p_neg_inf=0.1, pad=0.0)
    rows = concatenate(le, lengths)
    runs = under_thread_counts((1, 2, 3), lambda: function(A, pi, rows, lengths))
    for r in runs[1:]:
        np.testing.assert_array_equal(r[0], runs[0][0])
        for x, y in zip(r[1], runs[0][1]):
            np.testing.assert_array_equal(x, y)
    picked = rng.permutation(len(lengths))[:9]
    sub = function(A, pi, le[picked], lengths[picked])
    np.testing.assert_array_equal(sub[0], runs[0][0][picked])
    for k, b in enumerate(picked):
        np.testing.assert_array_equal(sub[1][k], runs[0][1][b])


def test_num_threads_argument():
    rng = np.random.default_rng(52)
    A, pi, le, lengths = crf_problem(rng, 3, [20, 9, 14], pad=0.0)
    for function in (inference.viterbi_dense, inference.posteriors_dense):
        want = function(A, pi, le, lengths)
        got = function(A, pi, le, lengths, num_threads=2)
        np.testing.assert_array_equal(got[0], want[0])
        for x, y in zip(got[1], want[1]):
            np.testing.assert_array_equal(x, y)


# -- -inf, impossible sequences --------------------------------------------------------------
def test_minus_inf_entries_steer_the_path():
    """-inf forbids a state at a step: the path goes round it, its posterior is 0 there."""
    A, pi = np.full((3, 3), 1 / 3), np.full(3, 1 / 3)
    le = np.log(np.array([[0.1, 0.8, 0.12], [0.15, 0.8, 0.05], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]]))
    le[1, 1] = -np.inf
    le[2, [0, 2]] = -np.inf
    log_prob, paths = inference.viterbi_dense(A, pi, le)
    want_lp, want_path = brute_viterbi(A, pi, le)
    np.testing.assert_array_equal(paths[0], want_path)
    assert paths[0][1] != 1 and paths[0][2] == 1
    np.testing.assert_allclose(log_prob[0], want_lp, rtol=1e-12)
    ll, gamma = inference.posteriors_dense(A, pi, le)
    assert gamma[0][1, 1] == 0 and gamma[0][2, 0] == 0 and gamma[0][2, 2] == 0
    np.testing.assert_allclose(gamma[0], brute_posteriors(A, pi, le)[1], rtol=1e-12, atol=1e-15)


def test_impossible_sequences():
    """A row of -inf, or -inf where A and pi leave no other way: log_prob and ll -inf, NaN
    posteriors, a path of valid states; the other sequences of the batch unaffected."""
    rng = np.random.default_rng(60)
    A, pi, le, lengths = crf_problem(rng, 3, [6, 6, 4, 6, 5], p_neg_inf=0.1, pad=0.0)
    A[:, 2] = 0.0                                     # state 2: only at t = 0 ...
    pi[:] = [1.0, 1.0, 0.0]                           # ... and not even then
    le[1, 3] = -np.inf                                # a whole row
    le[3, 4, :2] = -np.inf                            # only state 2 possible at t = 4
    le[4, 0, :2] = -np.inf                            # only state 2 possible at t = 0
    bad = [1, 3, 4]
    rows = concatenate(le, lengths)
    for form in ((le, lengths), (rows, lengths)):
        log_prob, paths = inference.viterbi_dense(A, pi, *form)
        ll, gamma = inference.posteriors_dense(A, pi, *form)
        assert (log_prob[bad] == -np.inf).all() and (ll[bad] == -np.inf).all()
        for b, L in enumerate(lengths):
            assert paths[b].shape == (L,) and ((paths[b] >= 0) & (paths[b] < 3)).all()
            if b in bad:
                assert gamma[b].shape == (L, 3) and np.isnan(gamma[b]).all()
            else:
                want_lp, want_path = brute_viterbi(A, pi, le[b, :L])
                np.testing.assert_allclose(log_prob[b], want_lp, rtol=1e-12)
                np.testing.assert_array_equal(paths[b], want_path)
                want_ll, want_gamma = brute_posteriors(A, pi, le[b, :L])
                np.testing.assert_allclose(ll[b], want_ll, rtol=1e-12)
                np.testing.assert_allclose(gamma[b], want_gamma, rtol=1e-10, atol=1e-12)
    # alone, too
    assert inference.viterbi_dense(A, pi, le[1, :6])[0][0] == -np.inf
    ll, gamma = inference.posteriors_dense(A, pi, le[4, :5])
    assert ll[0] == -np.inf and np.isnan(gamma[0]).all()


def test_empty_sequences():
    A, pi = np.full((2, 2), 0.5), np.full(2, 0.5)
    log_prob, paths = inference.viterbi_dense(A, pi, np.zeros((2, 2)), [0, 2, 0])
    np.testing.assert_allclose(log_prob, [0.0, 2 * np.log(0.5), 0.0], rtol=1e-15)
    assert [len(p) for p in paths] == [0, 2, 0]
    ll, gamma = inference.posteriors_dense(A, pi, np.zeros((2, 3, 2)), [0, 3])
    assert ll[0] == 0 and gamma[0].shape == (0, 2)
    np.testing.assert_allclose(ll[1], 0.0, atol=1e-15)
    np.testing.assert_allclose(gamma[1], 0.5)
    log_prob, paths = inference.viterbi_dense(A, pi, np.zeros((0, 2)), [0])
    assert log_prob.tolist() == [0.0] and paths[0].shape == (0,)


@pytest.mark.parametrize("pad", [np.nan, np.inf])
def test_padded_form_ignores_the_padding(pad):
    rng = np.random.default_rng(61)
    A, pi, le, lengths = crf_problem(rng, 3, [5, 2, 0, 4], pad=0.0)
    want = inference.posteriors_dense(A, pi, le, lengths)
    for b, L in enumerate(lengths):
        le[b, L:] = pad
    got = inference.posteriors_dense(A, pi, le, lengths)
    np.testing.assert_array_equal(got[0], want[0])
    assert inference.viterbi_dense(A, pi, le, lengths)[0].shape == (4,)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_posteriors_of_an_unreachable_state_of_huge_emission():
    A, pi = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([1.0, 0.0])     # state 1 unreachable
    le = np.array([[0.0, 1000.0]] * 4)
    ll, gamma = inference.posteriors_dense(A, pi, le)
    assert ll[0] == 0.0
    np.testing.assert_array_equal(gamma[0], [[1.0, 0.0]] * 4)


# -- bad input -------------------------------------------------------------------------------
GOOD = dict(A=np.full((2, 2), 0.5), pi=np.full(2, 0.5), le=np.zeros((3, 4, 2)), lengths=[4, 0, 2])

BAD = [
    ("A not square", dict(A=np.ones((2, 3))), r"A must be a square \(N, N\) matrix, got shape \(2, 3\)"),
    ("A rank 1", dict(A=np.ones(4)), r"A must be a square"),
    ("A negative", dict(A=np.array([[0.5, -0.5], [0.5, 0.5]])), r"A must hold finite non-negative values"),
    ("A NaN", dict(A=np.array([[0.5, np.nan], [0.5, 0.5]])), r"A must hold finite non-negative values"),
    ("pi shape", dict(pi=np.ones(3)), r"pi must have shape \(2,\), got \(3,\)"),
    ("pi inf", dict(pi=np.array([np.inf, 1.0])), r"pi must hold finite non-negative values"),
    ("log_emission rank 1", dict(le=np.zeros(4), lengths=None), r"log_emission must have shape \(T, 2\)"),
    ("log_emission columns", dict(le=np.zeros((3, 4, 3))), r"log_emission must have shape .*got \(3, 4, 3\)"),
    ("log_emission rank 4", dict(le=np.zeros((1, 3, 4, 2))), r"log_emission must have shape"),
    ("NaN inside", dict(le=np.array([[0.0, 0.0], [np.nan, 0.0]]), lengths=None),
     r"log_emission\[1, 0\] = nan"),
    ("+inf inside", dict(le=np.array([[0.0, 0.0], [0.0, np.inf]]), lengths=[1, 1]),
     r"log_emission\[1, 1\] = inf"),
    ("padded lengths > T", dict(lengths=[4, 5, 2]), r"lengths\[1\] = 5 is outside \[0, T\] = \[0, 4\]"),
    ("padded lengths < 0", dict(lengths=[4, 0, -2]), r"lengths\[2\] = -2 is outside"),
    ("padded lengths non-integer", dict(lengths=[4, 0.5, 2]), r"lengths\[1\] = 0.5 is not an integer"),
    ("padded lengths shape", dict(lengths=[4, 0]), r"lengths must have shape \(3,\), got \(2,\)"),
    ("concatenated lengths sum", dict(le=np.zeros((5, 2)), lengths=[2, 2]),
     r"lengths sum to 4 but log_emission holds 5 rows"),
    ("concatenated lengths negative", dict(le=np.zeros((2, 2)), lengths=[3, -1]),
     r"lengths must be a 1-D sequence of non-negative integers"),
    ("concatenated lengths float", dict(le=np.zeros((3, 2)), lengths=[1.0, 2.0]),
     r"lengths must be a 1-D sequence of non-negative integers"),
    ("concatenated lengths 2-D", dict(le=np.zeros((3, 2)), lengths=[[1, 2]]),
     r"lengths must be a 1-D sequence of non-negative integers"),
]


@pytest.mark.parametrize("label,overrides,pattern", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("function", [inference.viterbi_dense, inference.posteriors_dense],
                         ids=["viterbi", "posteriors"])
def test_bad_input_is_a_value_error_naming_it(function, label, overrides, pattern):
    args = {**GOOD, **overrides}
    with pytest.raises(ValueError, match=pattern):
        function(args["A"], args["pi"], args["le"], args["lengths"])
    log_prob, _ = function(GOOD["A"], GOOD["pi"], GOOD["le"], GOOD["lengths"])      # still usable
    assert log_prob.shape == (3,)
