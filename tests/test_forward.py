"""Log-likelihoods of hmm_forward against hmmlearn and brute-force enumeration."""
import mxnet as mx
import numpy as np
import pytest

import hmmop
from reference import brute_force_ll, hmmlearn_score, random_model, random_padded, under_thread_counts


def nd(*arrays, dtype=np.float64):
    return [mx.nd.array(a, dtype=dtype) for a in arrays]


@pytest.mark.parametrize("n,m,T", [(1, 1, 1), (1, 5, 40), (3, 1, 17), (2, 3, 1), (4, 3, 30),
                                   (7, 10, 200), (20, 10, 2000), (13, 2, 999), (20, 1, 5)])
def test_ll_matches_hmmlearn(n, m, T):
    rng = np.random.default_rng(n * 1000 + m * 10 + T)
    A, B, pi = random_model(rng, n, m)
    seq = rng.integers(0, m, T)
    ll = hmmop.hmm_forward(*nd(A, B, pi), seq).asnumpy()
    assert ll.shape == (1,)
    np.testing.assert_allclose(ll[0], hmmlearn_score(A, B, pi, seq), rtol=1e-10, atol=1e-12)


def test_ll_matches_brute_force_with_unnormalised_params():
    # The op takes values as given: no renormalisation of A, B or pi.
    rng = np.random.default_rng(1)
    A, B, pi = rng.random((3, 3)) * 2, rng.random((3, 2)), rng.random(3) * 3
    seq = [1, 0, 0, 1, 1]
    ll = hmmop.hmm_forward(*nd(A, B, pi), seq).asnumpy()[0]
    np.testing.assert_allclose(ll, brute_force_ll(A, B, pi, seq), rtol=1e-12)


@pytest.mark.parametrize("obs_dtype", [np.int32, np.int64, np.float32, np.float64])
def test_obs_dtypes_and_raw_custom_call(obs_dtype):
    rng = np.random.default_rng(2)
    A, B, pi = random_model(rng, 4, 3)
    obs = random_padded(rng, 3, [10, 3, 0, 7])
    expected = [hmmlearn_score(A, B, pi, row[row >= 0]) if (row >= 0).any() else 0.0 for row in obs]
    ll = mx.nd.Custom(*nd(A, B, pi), mx.nd.array(obs, dtype=obs_dtype), op_type="hmm_forward")
    assert ll.shape == (4,)
    np.testing.assert_allclose(ll.asnumpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_A(dtype):
    rng = np.random.default_rng(3)
    A, B, pi = random_model(rng, 3, 3)
    ll = hmmop.hmm_forward(*nd(A, B, pi, dtype=dtype), [[0, 1, 2], [2, 2, -1]])
    assert ll.dtype == dtype
    assert ll.shape == (2,)


def test_padded_batch_equals_single_sequences():
    rng = np.random.default_rng(4)
    A, B, pi = random_model(rng, 5, 4)
    lengths = [1, 50, 17, 0, 50, 3]
    obs = random_padded(rng, 4, lengths, T=60)
    batch_ll = hmmop.hmm_forward(*nd(A, B, pi), obs).asnumpy()
    for b, L in enumerate(lengths):
        single = hmmop.hmm_forward(*nd(A, B, pi), obs[b, :L]).asnumpy()[0] if L else 0.0
        assert batch_ll[b] == single
        if L:
            np.testing.assert_allclose(batch_ll[b], hmmlearn_score(A, B, pi, obs[b, :L]), rtol=1e-10)


def test_all_padding_row_is_empty_sequence():
    A, B, pi = random_model(np.random.default_rng(5), 2, 2)
    ll = hmmop.hmm_forward(*nd(A, B, pi), [[-1, -1, -1], [0, 1, -1]]).asnumpy()
    assert ll[0] == 0.0
    assert np.isfinite(ll[1]) and ll[1] < 0


def test_zero_length_time_axis_is_refused_clearly():
    # MXNet 1.x reads a 0 in a shape as "unknown", so (batch, 0) cannot reach the op.
    A, B, pi = random_model(np.random.default_rng(6), 2, 2)
    with pytest.raises(ValueError, match=r"obs .*shape \(3, 0\)"):
        hmmop.hmm_forward(*nd(A, B, pi), np.zeros((3, 0), dtype=np.int32))


def test_impossible_sequence_gives_minus_inf():
    A = np.array([[1.0, 0.0], [0.0, 1.0]])
    B = np.array([[1.0, 0.0], [0.0, 1.0]])
    pi = np.array([1.0, 0.0])
    ll = hmmop.hmm_forward(*nd(A, B, pi), [[0, 0, 1], [0, 0, -1]]).asnumpy()
    assert ll[0] == -np.inf
    assert ll[1] == 0.0


def test_nan_parameters_give_nan_without_crash():
    A, B, pi = random_model(np.random.default_rng(7), 3, 2)
    A[1, 2] = np.nan
    ll = hmmop.hmm_forward(*nd(A, B, pi), [[0, 1, 1, 0], [1, -1, -1, -1]]).asnumpy()
    assert np.isnan(ll[0])
    np.testing.assert_allclose(ll[1], np.log(pi @ B[:, 1]), rtol=1e-12)
    # the process stays usable
    A[1, 2] = 0.5
    assert np.isfinite(hmmop.hmm_forward(*nd(A, B, pi), [0, 1]).asnumpy()).all()


def test_float32_long_sequence_stays_accurate():
    rng = np.random.default_rng(8)
    A, B, pi = random_model(rng, 6, 5)
    seq = rng.integers(0, 5, 100_000)
    ll64 = hmmop.hmm_forward(*nd(A, B, pi), seq).asnumpy()[0]
    ll32 = hmmop.hmm_forward(*nd(A, B, pi, dtype=np.float32), seq).asnumpy()[0]
    assert np.isfinite(ll32)
    np.testing.assert_allclose(ll32, ll64, rtol=1e-4)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(9)
    A, B, pi = random_model(rng, 8, 4)
    obs = random_padded(rng, 4, list(rng.integers(0, 300, 37)), T=300)
    results = under_thread_counts((1, 2, 3), lambda: hmmop.hmm_forward(*nd(A, B, pi), obs).asnumpy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_unroll_matches_hmmlearn_on_padded_batch():
    rng = np.random.default_rng(10)
    A, B, pi = random_model(rng, 4, 3)
    lengths = [12, 5, 0, 9]
    obs = random_padded(rng, 3, lengths)
    ll = hmmop.unroll_forward(*nd(A, B, pi), obs).asnumpy()
    expected = [hmmlearn_score(A, B, pi, obs[b, :L]) if L else 0.0 for b, L in enumerate(lengths)]
    np.testing.assert_allclose(ll, expected, rtol=1e-10)
