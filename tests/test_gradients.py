"""Gradients of hmm_forward against the unroll's autograd and finite differences."""
import mxnet as mx
import numpy as np
import pytest

import hmmop
from reference import grads_of, numeric_grad, params, random_model, random_padded, under_thread_counts


@pytest.mark.parametrize("n,m,lengths", [(1, 1, [3]), (2, 3, [1]), (4, 3, [30]), (6, 5, [40, 7, 0, 25]),
                                         (9, 2, [15, 15, 3])])
def test_gradients_match_unroll_autograd(n, m, lengths):
    rng = np.random.default_rng(n + m)
    A, B, pi = random_model(rng, n, m)
    obs = random_padded(rng, m, lengths)
    head = rng.normal(size=len(lengths))
    fused = grads_of(hmmop.hmm_forward, A, B, pi, obs, head)
    unroll = grads_of(hmmop.unroll_forward, A, B, pi, obs, head)
    for f, u in zip(fused, unroll):
        np.testing.assert_allclose(f, u, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n,m,lengths", [(3, 2, [6]), (4, 3, [9, 4, 0]), (2, 4, [1, 5])])
def test_gradients_match_finite_differences(n, m, lengths):
    rng = np.random.default_rng(10 * n + m)
    A, B, pi = random_model(rng, n, m)
    obs = random_padded(rng, m, lengths)
    head = rng.normal(size=len(lengths))
    _, dA, dB, dpi = grads_of(hmmop.hmm_forward, A, B, pi, obs, head)

    def objective():
        return float(head @ hmmop.hmm_forward(*params(A, B, pi), obs).asnumpy())

    # The op uses values as given, so these are plain partials (no simplex constraint).
    np.testing.assert_allclose(dA, numeric_grad(objective, A), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dB, numeric_grad(objective, B), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dpi, numeric_grad(objective, pi), rtol=1e-6, atol=1e-7)


def test_float32_gradients_close_to_float64():
    rng = np.random.default_rng(11)
    A, B, pi = random_model(rng, 5, 4)
    obs = random_padded(rng, 4, [100, 60, 80])
    g64 = grads_of(hmmop.hmm_forward, A, B, pi, obs)
    g32 = grads_of(hmmop.hmm_forward, A, B, pi, obs, dtype=np.float32)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_grad_req_add_accumulates_and_null_is_untouched():
    rng = np.random.default_rng(12)
    A, B, pi = random_model(rng, 3, 3)
    obs1, obs2 = random_padded(rng, 3, [8, 5]), random_padded(rng, 3, [11])
    _, dA1, dB1, dpi1 = grads_of(hmmop.hmm_forward, A, B, pi, obs1)
    _, dA2, dB2, dpi2 = grads_of(hmmop.hmm_forward, A, B, pi, obs2)

    a, b, p = params(A, B, pi, grad_req="add")
    b.attach_grad(grad_req="null")
    for obs in (obs1, obs2):
        with mx.autograd.record():
            ll = mx.nd.Custom(a, b, p, mx.nd.array(obs), op_type="hmm_forward")
        ll.backward()
    np.testing.assert_allclose(a.grad.asnumpy(), dA1 + dA2, rtol=1e-12)
    np.testing.assert_allclose(p.grad.asnumpy(), dpi1 + dpi2, rtol=1e-12)
    assert b.grad is None


def test_obs_gets_zero_gradient():
    rng = np.random.default_rng(13)
    A, B, pi = random_model(rng, 3, 2)
    a, b, p = params(A, B, pi)
    obs = mx.nd.array(random_padded(rng, 2, [4, 2]))
    obs.attach_grad()
    obs.grad[:] = 7
    with mx.autograd.record():
        ll = mx.nd.Custom(a, b, p, obs, op_type="hmm_forward")
    ll.backward()
    np.testing.assert_array_equal(obs.grad.asnumpy(), 0)


def test_impossible_sequence_has_zero_gradient_and_others_unaffected():
    A = np.array([[0.7, 0.3], [0.4, 0.6]])
    B = np.array([[1.0, 0.0], [0.5, 0.5]])
    pi = np.array([1.0, 0.0])                   # starts in state 0, which never emits symbol 1
    good = [[0, 1, 0, -1]]
    both = [[0, 1, 0, -1], [1, 0, 0, 0]]
    ll, dA, dB, dpi = grads_of(hmmop.hmm_forward, A, B, pi, both)
    assert ll[1] == -np.inf
    assert np.isfinite(ll[0])
    _, gA, gB, gpi = grads_of(hmmop.hmm_forward, A, B, pi, good)
    np.testing.assert_allclose(dA, gA, rtol=1e-12)
    np.testing.assert_allclose(dB, gB, rtol=1e-12)
    np.testing.assert_allclose(dpi, gpi, rtol=1e-12)


def test_nan_parameter_backward_does_not_crash():
    A, B, pi = random_model(np.random.default_rng(14), 3, 2)
    A[0, 0] = np.nan
    ll, dA, _, _ = grads_of(hmmop.hmm_forward, A, B, pi, [[0, 1, 0]])
    assert np.isnan(ll[0]) and np.isnan(dA).any()


def test_backward_after_inference_mode_forward():
    rng = np.random.default_rng(15)
    A, B, pi = random_model(rng, 4, 3)
    obs = random_padded(rng, 3, [20, 9])
    expected = grads_of(hmmop.hmm_forward, A, B, pi, obs)
    a, b, p = params(A, B, pi)
    with mx.autograd.record(train_mode=False):   # the op sees is_train=False
        ll = hmmop.hmm_forward(a, b, p, obs)
    ll.backward()
    for got, want in zip([ll.asnumpy(), a.grad.asnumpy(), b.grad.asnumpy(), p.grad.asnumpy()], expected):
        np.testing.assert_array_equal(got, want)


def test_thread_count_does_not_change_gradients():
    rng = np.random.default_rng(16)
    A, B, pi = random_model(rng, 6, 4)
    obs = random_padded(rng, 4, list(rng.integers(1, 80, 23)), T=80)
    results = under_thread_counts((1, 2, 4), lambda: grads_of(hmmop.hmm_forward, A, B, pi, obs))
    for r in results[1:]:
        for got, want in zip(r, results[0]):
            np.testing.assert_allclose(got, want, rtol=1e-12)
