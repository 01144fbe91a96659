"""The baseline: the seed gist's scaled forward recursion, unrolled with autograd.

One small NDArray operation at a time, so MXNet's autograd derives the
backward.  Same contract as hmm_forward, with the gist's bugs fixed: pi is
used (the gist broadcast it away), any number of states, a batch of rows,
-1 padding honoured by masks, -2 (a missing observation) read from an
all-ones emission row.  Only the gradient of an impossible sequence
differs: autograd of log(0) gives NaN where the fused op gives zero.
"""
import mxnet as mx
import numpy as np

from .checks import checked_inputs


def unroll_forward(A, B, pi, obs):
    """Per-sequence log-likelihood ll (batch,) by the autograd unroll.

    A (N, N), B (N, M), pi (N,) NDArrays of one float dtype; obs (T,) or
    (batch, T) as for hmm_forward.  Costs about ten NDArray operations per
    time step, whatever the batch size.
    """
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
