"""The baseline: the seed gist's scaled forward recursion, unrolled with autograd.

One small NDArray operation at a time, so MXNet's autograd derives the
backward.  Same contract as hmm_forward, with the gist's bugs fixed: pi is
used (the gist broadcast it away), any number of states, a batch of rows,
-1 padding honoured by masks, -2 (a missing observation) read from an
all-ones emission row.  Only the gradient of an impossible sequence
differs: autograd of log(0) gives NaN where the fused op gives zero.
unroll_forward_dense does the same for hmm_forward_dense (log-emissions in,
lengths for padding).
"""
import mxnet as mx
import numpy as np

from .checks import (checked_dense_inputs, checked_dense_many_inputs, checked_inputs, checked_many_inputs,
                     has_dense_model_axis, has_model_axis)


def unroll_forward(A, B, pi, obs, model=None):
    """Per-sequence log-likelihood ll (batch,) by the autograd unroll.

    A (N, N), B (N, M), pi (N,) NDArrays of one float dtype; obs (T,) or
    (batch, T) as for hmm_forward.  Costs about ten NDArray operations per
    time step, whatever the batch size.  A model axis as for hmm_forward:
    A (K, N, N), B (K, N, M), pi (K, N) give ll (K, batch), and with model
    (batch,) of model indices ll (batch,) (see _unroll_many).
    """
    if model is not None or has_model_axis(getattr(A, "shape", ()), getattr(B, "shape", ()),
                                           getattr(pi, "shape", ())):
        return _unroll_many(A, B, pi, obs, model)
    A, B, pi, obs, obs_np = checked_inputs(A, B, pi, obs)
    obs_np = obs_np.reshape(-1, obs_np.shape[-1]).astype(np.int64)
    batch, T = obs_np.shape
    ctx, dtype = A.context, A.dtype
    ll = mx.nd.zeros((batch,), ctx=ctx, dtype=dtype)
    if T == 0:
        return ll
    valid_np = obs_np != -1                               # observed or missing
    m = B.shape[1]
    # Symbols as (T, batch) rows: missing (-2) -> M, the all-ones row of BT (emission 1
    # in every state); padding clipped to symbol 0 and masked out below.
    symbols = np.where(obs_np == -2, m, np.maximum(obs_np, 0))
    steps = mx.nd.array(symbols.T, ctx=ctx, dtype=np.int32)
    masks = mx.nd.array(valid_np.T, ctx=ctx, dtype=dtype)
    BT = mx.nd.concat(B.T, mx.nd.ones((1, B.shape[0]), ctx=ctx, dtype=dtype), dim=0)   # (M + 1, N)
    alpha = None
    for t in range(T):
        if not valid_np[:, t].any():
            break
        emit = mx.nd.take(BT, steps[t])                   # (batch, N)
        f = (pi.reshape((1, -1)) if t == 0 else mx.nd.dot(alpha, A)) * emit
        c = f.sum(axis=1)
        if not valid_np[:, t].all():
            mask = masks[t]                               # padded rows: c := 1
            c = c * mask + (1 - mask)
        alpha = f / c.reshape((-1, 1))
        ll = ll + mx.nd.log(c)
    return ll


def _unroll_many(A, B, pi, obs, model):
    """unroll_forward with a model axis: each (model, sequence) row gathers its model's A, B^T
    and pi by index, then the same steps (batch_dot for the transition)."""
    A, B, pi, obs, obs_np, _, model_np = checked_many_inputs(A, B, pi, obs, model)
    obs_np = obs_np.reshape(-1, obs_np.shape[-1]).astype(np.int64)
    k, n, m = B.shape
    batch0, T = obs_np.shape
    if model_np is None:
        model_np = np.repeat(np.arange(k), batch0)
        obs_np = np.tile(obs_np, (k, 1))
    out_shape = (batch0,) if model is not None else (k, batch0)
    ctx, dtype = A.context, A.dtype
    batch = obs_np.shape[0]
    valid_np = obs_np != -1
    # Zeros in the recorded graph, so that ll.backward() works (zero gradients) even when no step is run.
    ll = mx.nd.zeros((batch,), ctx=ctx, dtype=dtype) + (A.sum() + B.sum() + pi.sum()) * 0
    index = mx.nd.array(model_np, ctx=ctx, dtype=np.int32)
    symbols = np.where(obs_np == -2, m, np.maximum(obs_np, 0)) + model_np[:, None] * (m + 1)
    steps = mx.nd.array(symbols.T, ctx=ctx, dtype=np.int32)
    masks = mx.nd.array(valid_np.T, ctx=ctx, dtype=dtype)
    BT = mx.nd.concat(mx.nd.transpose(B, axes=(0, 2, 1)), mx.nd.ones((k, 1, n), ctx=ctx, dtype=dtype),
                      dim=1).reshape((k * (m + 1), n))
    Ag = mx.nd.take(A, index)                              # (batch, N, N)
    pig = mx.nd.take(pi, index)                            # (batch, N)
    alpha = None
    for t in range(T):
        if not valid_np[:, t].any():
            break
        emit = mx.nd.take(BT, steps[t])
        pred = pig if t == 0 else mx.nd.batch_dot(alpha.expand_dims(1), Ag).reshape((batch, n))
        f = pred * emit
        c = f.sum(axis=1)
        if not valid_np[:, t].all():
            mask = masks[t]
            c = c * mask + (1 - mask)
        alpha = f / c.reshape((-1, 1))
        ll = ll + mx.nd.log(c)
    return ll.reshape(out_shape)


def unroll_forward_dense(A, pi, log_emission, lengths, model=None):
    """Per-sequence log-likelihood ll (batch,) of hmm_forward_dense, by the autograd unroll.

    A (N, N), pi (N,), log_emission (batch, T, N) NDArrays of one float dtype
    on one context (computed in that dtype); lengths (batch,) integers in
    [0, T].  Each step is shifted by s = max_i(log pred_i + le_i), taken from
    detached values (ll does not depend on the shift, so its derivative is
    exactly zero), which keeps large scores finite.  An impossible sequence
    gives ll = -inf (its gradient is NaN, as autograd of log 0 makes it).
    A scaled forward, with the limits noted in hmmop/ops/dense_ndarray.py (in
    float32 a state is kept down to ~1e-38 of its step's total, not ~1e-308).
    A model axis as for hmm_forward_dense: A (K, N, N), pi (K, N) with
    log_emission (K, batch, T, N) give ll (K, batch), and with model (batch,)
    and log_emission (batch, T, N), ll (batch,); each row gathers its model's
    A (batch_dot) and pi by index.
    """
    if model is not None or has_dense_model_axis(getattr(A, "shape", ()), getattr(pi, "shape", ()),
                                                 getattr(log_emission, "shape", ())):
        A, pi, log_emission, _, lengths_np, _, model_np = checked_dense_many_inputs(A, pi, log_emission, lengths,
                                                                                    model)
        k, n = pi.shape
        batch0 = len(lengths_np)
        out_shape = (batch0,) if model is not None else (k, batch0)
        if model_np is None:
            model_np = np.repeat(np.arange(k), batch0)
            lengths_np = np.tile(lengths_np, k)
            log_emission = log_emission.reshape((k * batch0,) + log_emission.shape[2:])
        index = mx.nd.array(model_np, ctx=A.context, dtype=np.int32)
        Ag, rows = mx.nd.take(A, index), len(model_np)                          # (rows, N, N)
        ll = _unroll_dense(mx.nd.take(pi, index),
                           lambda alpha: mx.nd.batch_dot(alpha.expand_dims(1), Ag).reshape((rows, n)),
                           A.sum() * 0 + pi.sum() * 0, log_emission, lengths_np)
        return ll.reshape(out_shape)
    A, pi, log_emission, _, lengths_np = checked_dense_inputs(A, pi, log_emission, lengths)
    return _unroll_dense(pi.reshape((1, -1)), lambda alpha: mx.nd.dot(alpha, A),
                         mx.nd.zeros_like(A).sum() + mx.nd.zeros_like(pi).sum(), log_emission, lengths_np)


def _unroll_dense(first, advance, anchor, log_emission, lengths_np):
    """The steps of unroll_forward_dense over the rows (batch, T, N) of log_emission, lengths_np
    (batch,) int64: first the first step's pred ((1, N) or (batch, N)), advance(alpha) the next
    step's; anchor: a zero in the recorded graph of the parameters."""
    batch, T, n = log_emission.shape
    ctx, dtype = log_emission.context, log_emission.dtype
    steps = int(lengths_np.max()) if batch else 0
    if steps == 0:
        # Zeros that are still in the recorded graph (zero gradient to every input), so
        # that ll.backward() works as for any other lengths.
        return mx.nd.broadcast_add(mx.nd.zeros_like(log_emission).sum(axis=(1, 2)), anchor)
    ll = mx.nd.zeros((batch,), ctx=ctx, dtype=dtype)
    big = float(np.finfo(dtype).max)
    # exp(le - s) <= 1 / pred for a reachable state: below exp(cap) for any pred that is a
    # normal number, so the cap only touches states of pred 0 (or subnormal), where it keeps
    # pred * exp(le - s) from becoming 0 * inf = NaN.
    cap = float(np.log(big)) - 1.0
    valid_np = np.arange(steps)[:, None] < lengths_np[None, :]               # (steps, batch)
    masks = mx.nd.array(valid_np, ctx=ctx, dtype=dtype)
    le = mx.nd.transpose(log_emission.slice_axis(axis=1, begin=0, end=steps), axes=(1, 0, 2))
    # Padding may hold anything (NaN, inf): replaced by 0, not multiplied by a mask.
    le = mx.nd.where(mx.nd.broadcast_to(masks.expand_dims(2), le.shape), le, mx.nd.zeros_like(le))
    alpha = None
    for t in range(steps):
        pred = first if t == 0 else advance(alpha)
        emission = le[t]
        x = mx.nd.broadcast_add(mx.nd.log(pred.detach()), emission.detach())
        s = mx.nd.maximum(x.max(axis=1, keepdims=True), -big)          # -inf: an impossible step
        factor = mx.nd.exp(mx.nd.minimum(mx.nd.broadcast_sub(emission, s), cap))
        f = mx.nd.broadcast_mul(pred, factor)
        c = f.sum(axis=1, keepdims=True)
        alpha = mx.nd.broadcast_div(f, mx.nd.maximum(c, float(np.finfo(dtype).tiny)))
        if not valid_np[t].all():
            # Padded rows: c := 1 and s := 0 (s is finite), so they add 0 and pass back no
            # gradient, even where c is 0 there (a `where` would still pass 0 * d log c = NaN).
            mask = masks[t].reshape((batch, 1))
            c = c * mask + (1 - mask)
            s = s * mask
        ll = ll + (s + mx.nd.log(c)).reshape((batch,))
    return ll
