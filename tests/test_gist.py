"""The seed gist's training loop, run on the fused operator."""
import numpy as np

from hmmop import unroll_forward
from hmmop.gist import GIST_PI, train_gist
from reference import hmmlearn_score


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_gist_printed_log_likelihoods_are_reproduced():
    lls, A, B = train_gist()
    # The numbers the gist printed at steps 0 and 900.
    assert abs(lls[0] - (-31.7185)) < 5e-4
    assert abs(lls[900] - (-30.9965)) < 5e-4
    assert np.all(np.diff(lls) > 0)          # SGD on this problem improves every step
    np.testing.assert_allclose(A.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(B.sum(axis=1), 1, rtol=1e-6)


def test_gist_training_equals_unroll_training():
    """The gist's loop on the op and on the unroll follow the same trajectory (300 of its 1000
    steps: the unroll takes ~13 s for all of them; test_trainer reproduces the whole run)."""
    fused = train_gist(steps=300, dtype=np.float64)
    unroll = train_gist(unroll_forward, steps=300, dtype=np.float64)
    for f, u in zip(fused, unroll):
        np.testing.assert_allclose(f, u, rtol=1e-9, atol=1e-12)


def test_gist_with_its_pi_is_the_correct_model():
    from hmmop.gist import GIST_A, GIST_B, GIST_OBS
    lls, _, _ = train_gist(pi=GIST_PI, steps=1, dtype=np.float64)
    expected = hmmlearn_score(softmax(GIST_A), softmax(GIST_B), GIST_PI, GIST_OBS)
    np.testing.assert_allclose(lls[0], expected, rtol=1e-12)
    assert abs(lls[0] - (-31.7185)) > 0.1    # pi matters, unlike in the gist
