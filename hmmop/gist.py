"""The seed gist's problem and its training loop on the fused operator: ``python -m hmmop.gist``.

The gist learns softmax logits of A and B by plain SGD (lr 1e-2, 1000 steps)
on one sequence of 30 symbols.  Its forward recursion broadcast pi away, so
what it printed is the log-likelihood with pi = ones; ``train_gist`` with
``pi=None`` reproduces those numbers exactly, and with the gist's pi it
trains the model the gist meant.
"""
import time

import mxnet as mx
import numpy as np

from .ops.categorical import hmm_forward

# The gist's initial values (used as logits, as the gist does).  B is stored
# states x symbols, the transpose of the gist's layout.
GIST_A = np.array([[0.8, 0.2, 0.0, 0.0],
                   [0.1, 0.5, 0.4, 0.0],
                   [0.0, 0.4, 0.2, 0.4],
                   [0.0, 0.0, 0.4, 0.6]])
GIST_B = np.array([[0.7, 0.15, 0.15],
                   [0.1, 0.4, 0.5],
                   [0.2, 0.7, 0.1],
                   [0.1, 0.3, 0.6]])
GIST_PI = np.array([0.6, 0.1, 0.2, 0.1])
GIST_OBS = np.array([0, 0, 1, 0, 0, 0, 2, 2, 0, 2, 2, 1, 2, 1, 2, 2, 0, 1, 2, 2,
                     1, 1, 1, 0, 2, 0, 1, 2, 0, 0], dtype=np.int32)


def train_gist(ll_fn=hmm_forward, pi=None, steps=1000, lr=1e-2, dtype=np.float32,
               report_every=100, report=None):
    """Run the gist's training loop with ``ll_fn(A, B, pi, obs) -> ll (1,)``.

    pi: (4,) initial probabilities, or None for the gist's effective pi = ones.
    report(step, ll) is called every report_every steps.
    Returns (lls, A, B): lls (steps,) float64 log-likelihood before each
    update, A (4, 4) and B (4, 3) the final softmaxed probabilities.
    """
    A_logits = mx.nd.array(GIST_A, dtype=dtype)
    B_logits = mx.nd.array(GIST_B, dtype=dtype)
    pi = mx.nd.array(np.ones(4) if pi is None else pi, dtype=dtype)
    obs = mx.nd.array(GIST_OBS, dtype=np.int32)
    for p in (A_logits, B_logits):
        p.attach_grad()
    lls = []
    for step in range(steps):
        with mx.autograd.record():
            ll = ll_fn(mx.nd.softmax(A_logits, axis=1), mx.nd.softmax(B_logits, axis=1), pi, obs)
            loss = -ll
        loss.backward()
        for p in (A_logits, B_logits):
            p[:] = p - lr * p.grad
        lls.append(ll)
        if report is not None and step % report_every == 0:
            report(step, float(ll.asscalar()))
    lls = np.array([float(x.asscalar()) for x in lls])
    return lls, mx.nd.softmax(A_logits, axis=1).asnumpy(), mx.nd.softmax(B_logits, axis=1).asnumpy()


def main():
    np.set_printoptions(precision=3, suppress=True)
    for title, pi in (("The gist reproduced (its pi is broadcast away: pi = ones)", None),
                      ("The model the gist meant (pi = [0.6, 0.1, 0.2, 0.1])", GIST_PI)):
        print(f"== {title}")
        start = time.perf_counter()
        _, A, B = train_gist(pi=pi, report=lambda s, ll: print(f"{s} - log-likelihood {ll:.4f}"))
        print(f"1000 steps in {time.perf_counter() - start:.2f} s")
        print("A =\n", A, "\nB (states x symbols) =\n", B, "\n")


if __name__ == "__main__":
    main()
