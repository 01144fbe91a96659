"""The kernel's inference functions - _kernel.viterbi, posteriors, sample - and missing
observations (-2) through the Cython path.

Oracles: hmmlearn 0.3.3 (CategoricalHMM.decode / predict_proba), brute-force enumeration of
state paths, float64 finite differences, numpy's searchsorted as an inverse CDF, and the
law of large numbers."""
import itertools

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop import _kernel
from hmmop.ops.threads import get_num_threads
from reference import hmmlearn_model, marginal_ll, numeric_grad, random_model, random_padded, under_thread_counts

MISSING, PAD = -2, -1


def rows(obs, lengths):
    return [obs[b, :lengths[b]] for b in range(len(lengths))]


def emission(B, state, o):
    """B[state, o], 1 for a missing step."""
    return 1.0 if o == MISSING else B[state, o]


def path_prob(A, B, pi, path, seq):
    p = pi[path[0]] * emission(B, path[0], seq[0])
    for t in range(1, len(seq)):
        p *= A[path[t - 1], path[t]] * emission(B, path[t], seq[t])
    return p


def brute_force_viterbi(A, B, pi, seq):
    """(log prob, path) of the most probable path by enumeration; the first best in
    lexicographic order, i.e. lowest indices first."""
    n = A.shape[0]
    best, best_path = -np.inf, None
    for path in itertools.product(range(n), repeat=len(seq)):
        with np.errstate(divide="ignore"):
            lp = np.log(pi[path[0]]) + np.log(emission(B, path[0], seq[0]))
            for t in range(1, len(seq)):
                lp += np.log(A[path[t - 1], path[t]]) + np.log(emission(B, path[t], seq[t]))
        if best_path is None or lp > best:
            best, best_path = lp, path
    return best, np.array(best_path)


def brute_force_posteriors(A, B, pi, seq):
    """gamma (T, n) = P(state_t | seq) by enumeration."""
    n, T = A.shape[0], len(seq)
    gamma = np.zeros((T, n))
    for path in itertools.product(range(n), repeat=T):
        p = path_prob(A, B, pi, path, seq)
        gamma[np.arange(T), path] += p
    return gamma / gamma[0].sum()


def left_right(rng, n, m, stay=0.6):
    """Left-right model: from i only to i or i+1; starts in state 0."""
    A = np.zeros((n, n))
    for i in range(n - 1):
        A[i, i], A[i, i + 1] = stay, 1 - stay
    A[n - 1, n - 1] = 1.0
    B = rng.random((n, m)) + 0.05
    B /= B.sum(axis=1, keepdims=True)
    pi = np.zeros(n)
    pi[0] = 1.0
    return A, B, pi


def viterbi(A, B, pi, obs):
    """_kernel.viterbi on a padded (batch, T) array: (log_prob, paths (batch, T), -1 on padding)."""
    obs32, lengths = _kernel.prepare_obs(np.ascontiguousarray(obs), B.shape[1])
    starts = np.arange(len(lengths), dtype=np.int64) * obs32.shape[1]
    log_prob, paths = _kernel.viterbi(A, B, pi, obs32.ravel(), starts, lengths, get_num_threads())
    return log_prob, paths.reshape(obs32.shape)


def posteriors(A, B, pi, obs, num_threads=None):
    """_kernel.posteriors on a padded (batch, T) array: (ll (batch,), gamma (batch, T, n), 0 on padding)."""
    obs32, lengths = _kernel.prepare_obs(np.ascontiguousarray(obs), B.shape[1])
    starts = np.arange(len(lengths), dtype=np.int64) * obs32.shape[1]
    ll, gamma = _kernel.posteriors(A, B, pi, obs32.ravel(), starts, lengths, num_threads or get_num_threads())
    return ll, gamma.reshape(obs32.shape + (A.shape[0],))


# ---------------------------------------------------------------------------------------------
# Viterbi

@pytest.mark.parametrize("n, m, dtype", [(1, 1, np.float64), (2, 3, np.float64),
                                         (5, 8, np.float32), (12, 30, np.float64),
                                         (20, 30, np.float64), (20, 4, np.float32),
                                         (7, 2, np.float64),    # M = 2: many exact ties
                                         (4, 3, np.float64), (4, 2, np.float32), (8, 2, np.float64)])
def test_viterbi_matches_hmmlearn(n, m, dtype):
    rng = np.random.default_rng(n * 100 + m)
    A, B, pi = random_model(rng, n, m, dtype)
    lengths = [1, 500, 0, *rng.integers(1, 500, 3)]
    obs = random_padded(rng, m, lengths)
    log_prob, paths = viterbi(A, B, pi, obs)
    assert log_prob.dtype == np.float64 and paths.dtype == np.int32
    assert paths.shape == obs.shape
    model = hmmlearn_model(A, B, pi)
    for b, L in enumerate(lengths):
        assert np.all(paths[b, L:] == -1)
        if L == 0:
            assert log_prob[b] == 0.0
            continue
        ref_lp, ref_path = model.decode(obs[b, :L].reshape(-1, 1), algorithm="viterbi")
        np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-10)
        np.testing.assert_array_equal(paths[b, :L], ref_path)


def test_viterbi_matches_brute_force_on_tiny_models():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n, m = rng.integers(1, 4), rng.integers(1, 5)
        A, B, pi = random_model(rng, n, m)
        lengths = list(rng.integers(1, 7, 3))
        obs = random_padded(rng, m, lengths, T=7)
        obs[0, rng.integers(0, lengths[0])] = MISSING
        log_prob, paths = viterbi(A, B, pi, obs)
        for b, seq in enumerate(rows(obs, lengths)):
            ref_lp, ref_path = brute_force_viterbi(A, B, pi, list(seq))
            np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-12)
            np.testing.assert_array_equal(paths[b, :lengths[b]], ref_path)


def test_viterbi_respects_structural_zeros():
    rng = np.random.default_rng(2)
    A, B, pi = left_right(rng, 6, 5)
    lengths = [40, 3, 25]
    obs = random_padded(rng, 5, lengths)
    log_prob, paths = viterbi(A, B, pi, obs)
    model = hmmlearn_model(A, B, pi)
    for b, L in enumerate(lengths):
        path = paths[b, :L]
        assert path[0] == 0
        assert set(np.diff(path)) <= {0, 1}
        assert np.isfinite(log_prob[b])
        ref_lp, ref_path = model.decode(obs[b, :L].reshape(-1, 1), algorithm="viterbi")
        np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-10)
        np.testing.assert_array_equal(path, ref_path)


def test_viterbi_impossible_sequence():
    # Symbol 1 comes only from state 2, which a left-right model cannot reach by step 1.
    A, _, pi = left_right(np.random.default_rng(3), 3, 2)
    B = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    log_prob, paths = viterbi(A, B, pi, np.array([[0, 1, 0], [0, 0, 1]]))
    assert log_prob[0] == -np.inf
    assert np.all((paths[0] >= 0) & (paths[0] < 3))
    np.testing.assert_allclose(log_prob[1], np.log(0.4 * 0.4))   # the only possible path
    np.testing.assert_array_equal(paths[1], [0, 1, 2])


@pytest.mark.parametrize("n", [3, 4, 8, 13])     # the kernel's paths: one j, n = 4, blocks of 8 and 4
def test_viterbi_breaks_ties_as_hmmlearn(n):
    """Last state: the lowest index among equal maxima; predecessors: the highest."""
    m, T = 2, 6
    # Fully symmetric: every path is equally probable.
    A, B, pi = np.full((n, n), 1 / n), np.full((n, m), 1 / m), np.full(n, 1 / n)
    obs = np.array([[0, 1, 1, 0, 1, 0], [1, -1, -1, -1, -1, -1]])
    log_prob, paths = viterbi(A, B, pi, obs)
    np.testing.assert_array_equal(paths[0], [n - 1] * (T - 1) + [0])
    np.testing.assert_array_equal(paths[1, :1], [0])
    np.testing.assert_allclose(log_prob[0], T * np.log(1 / n) + T * np.log(1 / m))
    model = hmmlearn_model(A, B, pi)
    np.testing.assert_array_equal(paths[0], model.decode(obs[0].reshape(-1, 1))[1])
    # States 1 and 2 are exact duplicates of each other: every tie between them as hmmlearn.
    rng = np.random.default_rng(4)
    A, B, pi = random_model(rng, n, 4)
    A[:, 2] = A[:, 1] = (A[:, 1] + A[:, 2]) / 2
    A[2] = A[1]
    B[2] = B[1]
    pi[2] = pi[1] = (pi[1] + pi[2]) / 2
    lengths = [6, 30, 5, 40]
    obs = random_padded(rng, 4, lengths)
    log_prob, paths = viterbi(A, B, pi, obs)
    assert np.any(paths == 1) and np.any(paths == 2)
    model = hmmlearn_model(A, B, pi)
    for b, L in enumerate(lengths):
        ref_lp, ref_path = model.decode(obs[b, :L].reshape(-1, 1), algorithm="viterbi")
        np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-10)
        np.testing.assert_array_equal(paths[b, :L], ref_path)


def test_viterbi_and_posteriors_independent_of_thread_count():
    rng = np.random.default_rng(5)
    A, B, pi = random_model(rng, 7, 9)
    obs = random_padded(rng, 9, list(rng.integers(0, 200, 11)))
    obs[obs >= 0] = np.where(rng.random((obs >= 0).sum()) < 0.1, MISSING, obs[obs >= 0])

    def run():
        lp, paths = viterbi(A, B, pi, obs)
        return (lp, paths) + posteriors(A, B, pi, obs)

    first, *others = under_thread_counts([1, 2, 3], run)
    for other in others:
        for x, y in zip(first, other):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n", [1, 3, 4, 9])
def test_batch_viterbi_and_posteriors_give_each_sequence_what_it_gives_alone(n):
    """The driver advances sequences of similar length together (lanes that drop out as
    they end) over a concatenation: each result equals the sequence decoded alone, bit for
    bit, at any thread count; positions outside the sequences stay -1."""
    rng = np.random.default_rng(20 + n)
    A, B, pi = random_model(rng, n, 5)
    lengths = np.array([0, *rng.integers(1, 60, 37), 0, 200, 1], dtype=np.int64)
    gaps = rng.integers(0, 3, len(lengths))                  # unused symbols between sequences
    starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    obs = np.full(int(starts[-1] + lengths[-1] + 2), 4, dtype=np.int32)
    for s, L in zip(starts, lengths):
        obs[s:s + L] = rng.integers(0, 6, L)                 # 5: a missing step
    runs = under_thread_counts([1, 2, 3], lambda: _kernel.viterbi(A, B, pi, obs, starts, lengths,
                                                                    get_num_threads()))
    for log_prob, paths in runs[1:]:
        np.testing.assert_array_equal(log_prob, runs[0][0])
        np.testing.assert_array_equal(paths, runs[0][1])
    log_prob, paths = runs[0]
    covered = np.zeros(len(obs), dtype=bool)
    for b, (s, L) in enumerate(zip(starts, lengths)):
        covered[s:s + L] = True
        alone_lp, alone = _kernel.viterbi(A, B, pi, obs[s:s + L].copy(), np.zeros(1, np.int64),
                                          np.array([L], np.int64), 1)
        assert log_prob[b] == alone_lp[0]
        np.testing.assert_array_equal(paths[s:s + L], alone)
        if 0 < L and n ** int(L) <= 5000:                      # small enough to enumerate
            seq = np.where(obs[s:s + L] == 5, MISSING, obs[s:s + L])
            ref_lp, ref_path = brute_force_viterbi(A, B, pi, list(seq))
            np.testing.assert_allclose(log_prob[b], ref_lp, rtol=1e-12)
            np.testing.assert_array_equal(paths[s:s + L], ref_path)
    assert (paths[~covered] == -1).all() and (log_prob[lengths == 0] == 0).all()
    # Posteriors over the same layout: alone or in the batch, at any thread count, the same.
    runs = under_thread_counts([1, 2], lambda: _kernel.posteriors(A, B, pi, obs, starts, lengths,
                                                                  get_num_threads()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    ll, gamma = runs[0]
    for b, (s, L) in enumerate(zip(starts, lengths)):
        alone_ll, alone = _kernel.posteriors(A, B, pi, obs[s:s + L].copy(), np.zeros(1, np.int64),
                                             np.array([L], np.int64), 1)
        assert ll[b] == alone_ll[0]
        np.testing.assert_array_equal(gamma[s:s + L], alone)
    assert (gamma[~covered] == 0).all() and (ll[lengths == 0] == 0).all()
    np.testing.assert_allclose(gamma[covered].sum(axis=1), 1.0, rtol=1e-12)


def test_batch_viterbi_of_long_sequences_interleaves_fewer():
    """4 lanes of 600,000 steps x 32 states would need 307 MB of back pointers per thread: the
    driver takes 2 lanes at a time then.  The paths are still each sequence's own."""
    rng = np.random.default_rng(30)
    A, B, pi = random_model(rng, 32, 6)
    lengths = np.array([600_000, 599_999, 7, 3], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    obs = rng.integers(0, 6, int(lengths.sum())).astype(np.int32)
    log_prob, paths = _kernel.viterbi(A, B, pi, obs, starts, lengths, 2)
    for b in (1, 2):
        s, L = starts[b], lengths[b]
        alone_lp, alone = _kernel.viterbi(A, B, pi, obs[s:s + L].copy(), np.zeros(1, np.int64),
                                          np.array([L], np.int64), 1)
        assert log_prob[b] == alone_lp[0]
        np.testing.assert_array_equal(paths[s:s + L], alone)


@pytest.mark.parametrize("function", [_kernel.viterbi, _kernel.posteriors])
def test_batch_inference_rejects_sequences_outside_obs(function):
    A, B, pi = random_model(np.random.default_rng(0), 2, 3)
    obs = np.zeros(10, dtype=np.int32)
    for starts, lengths in (([0, 5], [5, 6]), ([-1], [3]), ([0], [-2])):
        with pytest.raises(ValueError, match="is not inside obs32"):
            function(A, B, pi, obs, np.array(starts, np.int64), np.array(lengths, np.int64), 1)


# ---------------------------------------------------------------------------------------------
# Posteriors

@pytest.mark.parametrize("n, m, dtype", [(1, 2, np.float64), (4, 6, np.float64),
                                         (20, 30, np.float64), (9, 5, np.float32)])
def test_posteriors_match_hmmlearn(n, m, dtype):
    rng = np.random.default_rng(10 + n)
    A, B, pi = random_model(rng, n, m, dtype)
    lengths = [300, 0, 1, *rng.integers(1, 300, 3)]
    obs = random_padded(rng, m, lengths)
    ll, gamma = posteriors(A, B, pi, obs)
    assert gamma.shape == obs.shape + (n,) and gamma.dtype == np.float64 and ll.dtype == np.float64
    model = hmmlearn_model(A, B, pi)
    for b, L in enumerate(lengths):
        assert np.all(gamma[b, L:] == 0)
        if L:
            np.testing.assert_allclose(gamma[b, :L].sum(axis=1), 1.0, rtol=1e-12)
            ref = model.predict_proba(obs[b, :L].reshape(-1, 1))
            np.testing.assert_allclose(gamma[b, :L], ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(ll[b], model.score(obs[b, :L].reshape(-1, 1)), rtol=1e-12)
        else:
            assert ll[b] == 0


def test_posteriors_of_an_impossible_sequence_are_nan():
    A, B, pi = random_model(np.random.default_rng(11), 3, 2)
    B[:, 1] = 0.0
    B[:, 0] = 1.0
    ll, gamma = posteriors(A, B, pi, np.array([[0, 0, -1], [0, 1, 0], [0, 0, 0]]), num_threads=2)
    assert np.all(np.isnan(gamma[1])) and ll[1] == -np.inf
    np.testing.assert_allclose(gamma[0, :2], brute_force_posteriors(A, B, pi, [0, 0]), rtol=1e-12)
    np.testing.assert_allclose(gamma[2], brute_force_posteriors(A, B, pi, [0, 0, 0]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Missing observations (-2)

MISSING_OBS = np.array([[-2, 0, 1, 2, -1, -1],
                        [0, 1, -2, -2, 2, -1],
                        [1, 0, 2, 1, 0, -2],
                        [-2, -2, -2, -1, -1, -1],
                        [-1, -1, -1, -1, -1, -1]], dtype=np.int64)


def missing_rows():
    return [[int(o) for o in r if o != PAD] for r in MISSING_OBS]


def test_prepare_obs_maps_missing_to_n_symbols():
    obs32, lengths = _kernel.prepare_obs(MISSING_OBS, 3)
    np.testing.assert_array_equal(lengths, [4, 5, 6, 3, 0])
    np.testing.assert_array_equal(obs32, np.where(MISSING_OBS == MISSING, 3, MISSING_OBS))


def test_forward_with_missing_is_the_marginal():
    rng = np.random.default_rng(20)
    A, B, pi = random_model(rng, 3, 3)
    B[1, 2] = 0.0                                   # a zero in the marginalised column
    B /= B.sum(axis=1, keepdims=True)
    ll = hmmop.hmm_forward(mx.nd.array(A, dtype="float64"), mx.nd.array(B, dtype="float64"),
                           mx.nd.array(pi, dtype="float64"), MISSING_OBS, backend="cython")
    ref = [marginal_ll(A, B, pi, seq) if seq else 0.0 for seq in missing_rows()]
    np.testing.assert_allclose(ll.asnumpy(), ref, rtol=1e-12, atol=1e-12)


def test_posteriors_with_missing_match_brute_force():
    rng = np.random.default_rng(21)
    A, B, pi = random_model(rng, 3, 3)
    _, gamma = posteriors(A, B, pi, MISSING_OBS, num_threads=2)
    for b, seq in enumerate(missing_rows()):
        if seq:
            np.testing.assert_allclose(gamma[b, :len(seq)], brute_force_posteriors(A, B, pi, seq), rtol=1e-11)


def test_gradient_with_missing_matches_finite_differences():
    rng = np.random.default_rng(22)
    A, B, pi = random_model(rng, 3, 3)
    weights = np.array([0.7, -1.3, 1.1, 0.4, 2.0])
    params = [mx.nd.array(x, dtype="float64") for x in (A, B, pi)]
    for x in params:
        x.attach_grad()
    with mx.autograd.record():
        ll = hmmop.hmm_forward(*params, MISSING_OBS, backend="cython")
    ll.backward(mx.nd.array(weights, dtype="float64"))

    def objective():          # brute force, emission 1 at missing steps; B's rows need not sum to 1
        return sum(w * np.log(sum(path_prob(A, B, pi, path, seq)
                                  for path in itertools.product(range(3), repeat=len(seq))))
                   for w, seq in zip(weights, missing_rows()) if seq)

    for x, nd in zip((A, B, pi), params):
        np.testing.assert_allclose(nd.grad.asnumpy(), numeric_grad(objective, x),
                                   rtol=1e-6, atol=1e-8)


def test_missing_after_padding_and_other_negatives_are_errors():
    A, B, pi = (mx.nd.array(x) for x in random_model(np.random.default_rng(23), 2, 3))
    with pytest.raises(ValueError, match="padding"):
        hmmop.hmm_forward(A, B, pi, [[0, 1, -1, -2]])
    with pytest.raises(ValueError, match="padding"):
        _kernel.prepare_obs(np.array([[-2, -1, -2]]), 3)
    with pytest.raises(ValueError, match=r"obs\[0, 1\] = -3 is not a valid symbol.*-2 missing"):
        hmmop.hmm_forward(A, B, pi, [[0, -3, 1]])
    with pytest.raises(ValueError, match="not a valid symbol"):
        _kernel.prepare_obs(np.array([[0.0, -2.0, -4.0]]), 3)
    # -2 is accepted by the checked wrapper
    assert np.isfinite(hmmop.hmm_forward(A, B, pi, [[0, -2, 1]]).asnumpy()).all()


# ---------------------------------------------------------------------------------------------
# Sampling

def reference_sample(A, B, pi, u):
    """Inverse CDF by numpy: the smallest index whose cumulative value is > u."""
    count, length, _ = u.shape
    states = np.empty((count, length), dtype=np.int64)
    obs = np.empty((count, length), dtype=np.int64)
    cumA, cumB, cumpi = np.cumsum(A, axis=1), np.cumsum(B, axis=1), np.cumsum(pi)
    for b in range(count):
        for t in range(length):
            cum = cumpi if t == 0 else cumA[states[b, t - 1]]
            states[b, t] = np.searchsorted(cum, u[b, t, 0], side="right")
            obs[b, t] = np.searchsorted(cumB[states[b, t]], u[b, t, 1], side="right")
    return obs, states


def sparse_model():
    A = np.array([[0.5, 0.3, 0.0, 0.2],
                  [0.0, 0.6, 0.4, 0.0],
                  [0.25, 0.0, 0.25, 0.5],
                  [0.1, 0.2, 0.3, 0.4]])
    B = np.array([[0.0, 0.5, 0.5, 0.0, 0.0],
                  [0.2, 0.2, 0.2, 0.2, 0.2],
                  [0.7, 0.0, 0.0, 0.1, 0.2],
                  [0.0, 0.0, 0.0, 0.0, 1.0]])
    pi = np.array([0.4, 0.0, 0.35, 0.25])
    return A, B, pi


def test_sample_is_the_inverse_cdf_of_its_uniforms():
    A, B, pi = sparse_model()
    u = np.random.default_rng(30).random((20, 50, 2))
    u[0, :, :] = 0.0                                # the lowest uniform: never a zero entry
    obs, states = _kernel.sample(A, B, pi, u, 3)
    assert obs.dtype == np.int32 and states.dtype == np.int32 and obs.shape == (20, 50)
    ref_obs, ref_states = reference_sample(A, B, pi, u)
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(states, ref_states)
    again = under_thread_counts([1, 2], lambda: _kernel.sample(A, B, pi, u, get_num_threads()))
    for o, s in again:
        np.testing.assert_array_equal(o, obs)
        np.testing.assert_array_equal(s, states)


def test_sample_rounding_never_picks_a_zero_probability():
    # ten times 0.1 sums to 0.9999999999999999: a uniform above it has no index with cum > u.
    n = 11
    A = np.tile(np.r_[[0.1] * 10, 0.0], (n, 1))
    B = np.tile(np.r_[[0.1] * 10, 0.0], (n, 1))
    pi = np.r_[[0.1] * 10, 0.0]
    assert np.cumsum(pi)[-1] < 1.0
    u = np.full((2, 5, 2), np.nextafter(1.0, 0.0))
    obs, states = _kernel.sample(A, B, pi, u, 1)
    assert np.all(states == 9) and np.all(obs == 9)


def test_sample_frequencies():
    A, B, pi = sparse_model()
    count, length = 200_000, 5                      # 10^6 symbols; 2*10^5 initial states
    u = np.random.default_rng(31).random((count, length, 2))
    obs, states = _kernel.sample(A, B, pi, u, get_num_threads())
    n, m = B.shape
    init = np.bincount(states[:, 0], minlength=n) / count
    trans = np.bincount((states[:, :-1] * n + states[:, 1:]).ravel(), minlength=n * n).reshape(n, n)
    emit = np.bincount((states * m + obs).ravel(), minlength=n * m).reshape(n, m)
    assert np.all(init[pi == 0] == 0) and np.all(trans[A == 0] == 0) and np.all(emit[B == 0] == 0)
    np.testing.assert_allclose(init, pi, atol=0.005)
    np.testing.assert_allclose(trans / trans.sum(axis=1, keepdims=True), A, atol=0.005)
    np.testing.assert_allclose(emit / emit.sum(axis=1, keepdims=True), B, atol=0.005)


def test_sample_rejects_non_distributions():
    A, B, pi = sparse_model()
    u = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="A row 1"):
        _kernel.sample(A * np.array([[1.0], [0.5], [1.0], [1.0]]), B, pi, u, 1)
    with pytest.raises(ValueError, match="non-negative"):
        _kernel.sample(A, B, pi * np.array([1.0, -1.0, 1.0, 1.0]) + np.array([0, 0.5, 0, -0.5]), u, 1)
