"""The oracles themselves: hmmlearn, brute-force enumeration and finite differences agree."""
import numpy as np
import pytest

from reference import brute_force_ll, hmmlearn_score, numeric_grad, random_model, random_padded


@pytest.mark.parametrize("n,m,T", [(1, 2, 3), (2, 2, 1), (3, 4, 5), (4, 3, 6)])
def test_hmmlearn_equals_brute_force(n, m, T):
    rng = np.random.default_rng(100 + n * m * T)
    A, B, pi = random_model(rng, n, m)
    seq = rng.integers(0, m, T)
    np.testing.assert_allclose(hmmlearn_score(A, B, pi, seq), brute_force_ll(A, B, pi, seq), rtol=1e-12)


def test_numeric_grad_of_a_known_function():
    x = np.array([[0.3, -1.2], [2.0, 0.5]])
    np.testing.assert_allclose(numeric_grad(lambda: float(np.sum(np.sin(x) * x)), x),
                               np.sin(x) + x * np.cos(x), rtol=1e-8)


def test_random_padded_layout():
    obs = random_padded(np.random.default_rng(0), 3, [4, 0, 2], T=5)
    assert obs.shape == (3, 5)
    np.testing.assert_array_equal((obs >= 0).sum(axis=1), [4, 0, 2])
    assert ((obs[:, :4] >= 0) | (obs[:, :4] == -1)).all() and (obs[obs >= 0] < 3).all()
