"""Slow, obviously-right references the fast code is compared against."""
import itertools

import mxnet as mx
import numpy as np
from hmmlearn import hmm

import hmmop


def random_model(rng, n, m, dtype=np.float64):
    """Random row-stochastic A (n, n), B (n, m) and pi (n,) as NumPy arrays."""
    A = rng.random((n, n)) + 0.05
    B = rng.random((n, m)) + 0.05
    pi = rng.random(n) + 0.05
    A /= A.sum(axis=1, keepdims=True)
    B /= B.sum(axis=1, keepdims=True)
    pi /= pi.sum()
    return A.astype(dtype), B.astype(dtype), pi.astype(dtype)


def hmmlearn_model(A, B, pi, **kwargs):
    """hmmlearn's CategoricalHMM (the oracle) holding copies of A, B, pi; kwargs go to its constructor."""
    model = hmm.CategoricalHMM(n_components=A.shape[0], **kwargs)
    model.n_features = B.shape[1]
    model.startprob_ = np.array(pi, dtype=np.float64)
    model.transmat_ = np.array(A, dtype=np.float64)
    model.emissionprob_ = np.array(B, dtype=np.float64)
    return model


def hmmlearn_score(A, B, pi, seq):
    """log P(seq) from hmmlearn's CategoricalHMM (the oracle); seq: 1-D ints."""
    return hmmlearn_model(A, B, pi).score(np.asarray(seq, dtype=np.int64).reshape(-1, 1))


def brute_force_ll(A, B, pi, seq):
    """log of the sum over every state path of P(path, seq): O(N^T), tiny cases only."""
    n = A.shape[0]
    total = 0.0
    for path in itertools.product(range(n), repeat=len(seq)):
        p = pi[path[0]] * B[path[0], seq[0]]
        for t in range(1, len(seq)):
            p *= A[path[t - 1], path[t]] * B[path[t], seq[t]]
        total += p
    return np.log(total)


def marginal_ll(A, B, pi, seq):
    """log P(observed part of seq): the sum of P(seq) over every symbol at each missing (-2) step,
    by plain brute force (the definition of marginalising; equals emission 1 when B's rows sum to 1)."""
    if not seq:
        return 0.0
    holes = [t for t, o in enumerate(seq) if o == -2]
    total = 0.0
    for fill in itertools.product(range(B.shape[1]), repeat=len(holes)):
        full = list(seq)
        for t, k in zip(holes, fill):
            full[t] = k
        total += np.exp(brute_force_ll(A, B, pi, full))
    return np.log(total)


def params(A, B, pi, dtype=np.float64, grad_req="write"):
    """A, B, pi as NDArrays with gradients attached."""
    out = [mx.nd.array(x, dtype=dtype) for x in (A, B, pi)]
    for x in out:
        x.attach_grad(grad_req=grad_req)
    return out


def grads_of(fn, A, B, pi, obs, head=None, dtype=np.float64):
    """(ll, dA, dB, dpi) of sum_b head[b] * ll[b] as NumPy arrays."""
    a, b, p = params(A, B, pi, dtype)
    with mx.autograd.record():
        ll = fn(a, b, p, obs)
    ll.backward(None if head is None else mx.nd.array(head, dtype=dtype))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in (a, b, p)]


def with_grads(fn, arrays, dtype, head):
    """(ll, then each array's gradient) NumPy of sum head * fn(*arrays) through MXNet autograd; arrays:
    NumPy, as NDArrays of dtype."""
    arrays = [mx.nd.array(x, dtype=dtype) for x in arrays]
    for x in arrays:
        x.attach_grad()
    with mx.autograd.record():
        ll = fn(*arrays)
    ll.backward(mx.nd.array(head, dtype=dtype))
    return [ll.asnumpy()] + [x.grad.asnumpy() for x in arrays]


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar f() w.r.t. every entry of the float64 array x (in place)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def random_padded(rng, m, lengths, T=None):
    """(batch, T) int64 observations with row b holding lengths[b] symbols, then -1."""
    T = max(lengths) if T is None else T
    obs = np.full((len(lengths), T), -1, dtype=np.int64)
    for b, L in enumerate(lengths):
        obs[b, :L] = rng.integers(0, m, L)
    return obs


def under_thread_counts(counts, fn):
    """[fn() run with hmmop.set_num_threads(c) for c in counts], restoring the default after."""
    results = []
    try:
        for c in counts:
            hmmop.set_num_threads(c)
            results.append(fn())
    finally:
        hmmop.set_num_threads(None)
    return results
