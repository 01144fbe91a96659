"""Missing observations (-2): the symbol is marginalised out (emission 1 in every state).

All three backends - the Cython kernel, the NDArray path and the autograd unroll - against
brute-force enumeration, finite differences of it, and each other."""
import functools
import itertools

import mxnet as mx
import numpy as np
import pytest

import hmmop
from reference import grads_of, marginal_ll, numeric_grad, params, random_model

MISSING, PAD = -2, -1

BACKENDS = {
    "cython": functools.partial(hmmop.hmm_forward, backend="cython"),
    "ndarray": functools.partial(hmmop.hmm_forward, backend="ndarray"),
    "unroll": hmmop.unroll_forward,
}

# Missing steps at the start, in the middle, at the end (before padding and in the last
# column), consecutive; a row all missing; an empty row.
OBS = np.array([[-2, 0, 1, 1, -1, -1],
                [0, 1, -2, 1, 0, -1],
                [1, 0, 1, -2, -1, -1],
                [0, 1, 1, 0, 1, -2],
                [0, -2, -2, -2, 1, -1],
                [-2, -2, -2, -2, -1, -1],
                [-1, -1, -1, -1, -1, -1]], dtype=np.int64)


def row(seq):
    """A row of OBS without its padding."""
    return [int(o) for o in seq if o != PAD]


def brute_force_missing_ll(A, B, pi, seq):
    """log of the sum over every state path of P(path, seq), emission factor 1 at a -2 step."""
    n = A.shape[0]
    if not seq:
        return 0.0

    def emit(state, o):
        return 1.0 if o == MISSING else B[state, o]

    total = 0.0
    for path in itertools.product(range(n), repeat=len(seq)):
        p = pi[path[0]] * emit(path[0], seq[0])
        for t in range(1, len(seq)):
            p *= A[path[t - 1], path[t]] * emit(path[t], seq[t])
        total += p
    return np.log(total)


def unnormalised_model(seed, n, m):
    """A random model scaled off the simplex, so that emission 1 and sum_k B[i, k] differ."""
    A, B, pi = random_model(np.random.default_rng(seed), n, m)
    return A * 1.3, B * np.linspace(0.5, 0.9, n)[:, None], pi * 0.8


@pytest.fixture(scope="module")
def stochastic():
    A, B, pi = random_model(np.random.default_rng(1), 3, 2)
    want = np.array([marginal_ll(A, B, pi, row(r)) for r in OBS])
    return A, B, pi, want


def test_references_agree(stochastic):
    A, B, pi, want = stochastic
    # Emission 1 is the marginal for a row-stochastic B ...
    got = [brute_force_missing_ll(A, B, pi, row(r)) for r in OBS]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # ... and missing steps do change the likelihood (they are not dropped from the sequence):
    # A's rows are scaled off the simplex, so each missing step changes the result.
    dropped = [brute_force_missing_ll(A * 1.3, B, pi, [o for o in row(r) if o != MISSING]) for r in OBS]
    kept = [brute_force_missing_ll(A * 1.3, B, pi, row(r)) for r in OBS]
    assert all(abs(d - k) > 1e-3 for d, k, r in zip(dropped, kept, OBS) if MISSING in r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ll_marginalises_missing_steps(backend, stochastic):
    A, B, pi, want = stochastic
    ll = BACKENDS[backend](*params(A, B, pi), OBS).asnumpy()
    np.testing.assert_allclose(ll, want, rtol=1e-12, atol=1e-14)
    # 1-D obs, and obs as floats holding the symbols.
    ll1 = BACKENDS[backend](*params(A, B, pi), OBS[4]).asnumpy()
    np.testing.assert_allclose(ll1, want[4:5], rtol=1e-12)
    llf = BACKENDS[backend](*params(A, B, pi), mx.nd.array(OBS, dtype=np.float32)).asnumpy()
    np.testing.assert_allclose(llf, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ll_uses_emission_one_off_the_simplex(backend):
    A, B, pi = unnormalised_model(2, 3, 2)
    want = [brute_force_missing_ll(A, B, pi, row(r)) for r in OBS]
    ll = BACKENDS[backend](*params(A, B, pi), OBS).asnumpy()
    np.testing.assert_allclose(ll, want, rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def finite_differences():
    """Parameters off the simplex, head weights, and float64 central differences of the
    brute-force reference sum_b head[b] * ll[b] w.r.t. A, B and pi."""
    A, B, pi = unnormalised_model(3, 3, 2)
    head = np.random.default_rng(3).normal(size=len(OBS))
    rows = [row(r) for r in OBS]

    def objective():
        return sum(h * brute_force_missing_ll(A, B, pi, r) for h, r in zip(head, rows))

    fd = [numeric_grad(objective, x) for x in (A, B, pi)]
    return A, B, pi, head, fd


@pytest.fixture(scope="module")
def all_grads(finite_differences):
    A, B, pi, head, _ = finite_differences
    return {name: grads_of(fn, A, B, pi, OBS, head) for name, fn in BACKENDS.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_finite_differences(backend, finite_differences, all_grads):
    *_, fd = finite_differences
    _, dA, dB, dpi = all_grads[backend]
    for got, want in zip((dA, dB, dpi), fd):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["ndarray", "unroll"])
def test_backends_agree(backend, all_grads):
    for got, want in zip(all_grads[backend], all_grads["cython"]):
        assert got.dtype == want.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [0, 2])
def test_missing_steps_give_b_no_gradient(backend, k):
    # The only observed symbol is k: every other column of dB is exactly zero.
    A, B, pi = unnormalised_model(4, 3, 3)
    obs = [[-2, -2, k, -2, -1], [-2, -2, -2, -2, -2]]
    ll, dA, dB, dpi = grads_of(BACKENDS[backend], A, B, pi, obs)
    others = [j for j in range(3) if j != k]
    np.testing.assert_array_equal(dB[:, others], 0)
    # d ll / d B[i, k] = P(state i at step 2 | observed) / B[i, k], from the brute force.
    post = np.array([np.exp(brute_force_missing_ll(A, B * (np.arange(3) == i)[:, None], pi,
                                                  row(obs[0]))
                            - ll[0]) for i in range(3)])
    np.testing.assert_allclose(dB[:, k], post / B[:, k], rtol=1e-10)
    # The all-missing row still differentiates A and pi (they are used as given).
    _, dA1, dB1, dpi1 = grads_of(BACKENDS[backend], A, B, pi, [[-2, -2, -2, -2, -2]])
    np.testing.assert_array_equal(dB1, 0)
    assert np.abs(dA1).min() > 0 and np.abs(dpi1).min() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_close_to_float64(backend):
    rng = np.random.default_rng(5)
    A, B, pi = random_model(rng, 4, 3)
    obs = np.full((4, 40), PAD, dtype=np.int64)
    for b, L in enumerate([40, 17, 0, 33]):
        obs[b, :L] = np.where(rng.random(L) < 0.25, MISSING, rng.integers(0, 3, L))
    obs[1, :5] = MISSING
    assert (obs == MISSING).sum() > 15
    head = rng.normal(size=4)
    g64 = grads_of(BACKENDS[backend], A, B, pi, obs, head)
    g32 = grads_of(BACKENDS[backend], A, B, pi, obs, head, dtype=np.float32)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("fn", [BACKENDS["cython"], BACKENDS["ndarray"], hmmop.hmm_forward,
                                hmmop.unroll_forward], ids=["cython", "ndarray", "auto", "unroll"])
@pytest.mark.parametrize("obs,where", [([[0, 1, -2], [0, -1, -2]], r"obs\[1, 2\] = -2\b"),
                                       ([[0, -2, -1], [-2, -3, 1]], r"obs\[1, 1\] = -3\b"),
                                       ([[0, -2, -1, -2]], r"obs\[0, 3\] = -2\b")])
def test_bad_negative_symbols_are_errors(fn, obs, where):
    A, B, pi = params(*random_model(np.random.default_rng(6), 2, 2))
    with pytest.raises(ValueError, match=where):
        fn(A, B, pi, np.array(obs, dtype=np.int64))
