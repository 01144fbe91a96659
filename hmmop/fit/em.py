"""Baum-Welch (EM) through the gradients of the hmm_forward operator.

Why the gradients are the E-step: P(obs) is a sum over state paths of
products in which every transition i->j contributes one factor A[i, j],
every emission of symbol k from state i one factor B[i, k], and the first
state i one factor pi[i].  For such a polynomial, x * dP/dx counts the
occurrences of x in each path, weighted by the path's probability, so with
ll = log P(obs):

    A[i, j] * dll/dA[i, j] = E[#transitions i -> j | obs]
    B[i, k] * dll/dB[i, k] = E[#emissions of k from state i | obs]
    pi[i]   * dll/dpi[i]   = P(state_1 = i | obs)

One EM iteration is therefore one forward + backward of the operator (on any
of its backends: the C kernel on a CPU, the NDArray path on a GPU) and a row
normalisation (the M-step).  A missing observation (-2) has emission 1, which
is no parameter, so it adds no emission count, as it should.

Shapes: A (N, N), B (N, M), pi (N,) float64 NumPy arrays throughout.
"""
import mxnet as mx
import numpy as np
from mxnet import autograd

from ..ops.categorical import hmm_forward
from ..ops.ndview import from_host
from .priors import NAMES, log_prior, m_step  # noqa: F401 (m_step: hmmop.em.m_step, as before)


def expected_counts(A, B, pi, obs, backend="auto", ctx=None):
    """Expected sufficient statistics of obs under (A, B, pi), summed over the batch.

    obs (T,) or (batch, T): symbols, -1 padding, -2 missing.  backend: as for
    hmm_forward.  Returns float64 NumPy (ll (batch,), start (N,), trans (N, N),
    emit (N, M)) - hmmlearn's stats['start'], ['trans'] and ['obs'].  An
    impossible sequence (ll = -inf) adds nothing.
    """
    ctx = ctx or mx.cpu()
    ll, counts = counts_of(lambda *p: hmm_forward(*p, obs, backend=backend), A, B, pi, ctx)
    return ll, counts["pi"], counts["A"], counts["B"]


def counts_of(forward, A, B, pi, ctx):
    """(ll (batch,), {name: expected counts}) from forward(A, B, pi) -> ll, an NDArray
    function of float64 NDArray parameters on ctx (the operator or the unroll)."""
    values = [np.ascontiguousarray(x, dtype=np.float64) for x in (A, B, pi)]
    params = [from_host(x, np.float64, ctx) for x in values]
    for x in params:
        x.attach_grad()
    with autograd.record():
        ll = forward(*params)
    ll.backward()
    counts = {name: v * p.grad.asnumpy() for name, v, p in zip(NAMES, values, params)}
    return ll.asnumpy().astype(np.float64), counts


def fit_em(forward, params, monitor, learn=NAMES, prior=None, masks=None, ctx=None, reduce=None, counts=None):
    """Baum-Welch iterations; returns the new {name: float64 array} for 'A', 'B', 'pi'.

    forward(A, B, pi) -> ll (batch,) NDArray: the data's log-likelihood under
    float64 NDArray parameters (see counts_of).  params: {name: float64 array}
    to start from.  monitor: a monitor.Monitor (epochs, tol, history, bar);
    its history records, before each update, the log-likelihood plus the
    log-prior (when there is a prior).  learn: names to update.  reduce:
    None, or reduce(ll_total, counts) -> (ll_total, counts) summed over the
    workers of a distributed job (every worker then makes the same M-step).
    counts: None, or counts(params) -> (ll (batch,), {name: expected counts}) computing the E-step
    some other way than through forward's gradients (forward is then unused).
    """
    prior, masks = prior or {}, masks or {}
    ctx = ctx or mx.cpu()
    params = dict(params)
    for _ in monitor:
        if counts is None:
            ll, expected = counts_of(forward, params["A"], params["B"], params["pi"], ctx)
        else:
            ll, expected = counts(params)
        ll = ll.sum()
        if reduce is not None:
            ll, expected = reduce(ll, expected)
        converged = monitor.report(ll + log_prior(params, prior))
        for name in learn:
            params[name] = m_step(name, expected[name], params[name], prior.get(name), masks.get(name))
        if converged:
            break
    return params
