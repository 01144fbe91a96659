"""The NDArray path of hmm_forward: forward and hand-derived backward as MXNet
NDArray operations on the inputs' context (the GPU route; also forced on the
CPU with backend='ndarray').

Same mathematics as csrc/hmm_kernel.c (see the derivation there), vectorised
over the batch: one loop over time steps, each step a small fixed set of
operations on (batch, N) arrays.  Everything is computed in float64, like the
kernel.  Cost per time step:
  forward : 5 operations - dot(alpha, A), * emissions, sum, max(c, tiny), / c
  backward: 2 operations - u = (emissions / c) * w, w = dot(u, A^T); plus one
            `where` on steps where some row is padding.
Everything else is a handful of whole-array operations: before the forward
loop the emission rows of all steps are gathered at once (take + split) from
B^T extended with an all-ones row M;
before the backward loop they are divided by the scale factors at once; after
it, dA and dB are each one matrix product over all steps (sum_t
alpha_{t-1}^T u_t, and one-hot(obs)^T (pred * w / c), the one-hot having
M + 1 columns of which the last, the missing steps', is dropped).

Missing observations (-2) are ordinary steps whose symbol is M, the all-ones
row: emission 1 in every state, so the symbol is marginalised out; B gets no
gradient from them.  Padding (-1) is handled by masks: padded steps get zero
emissions in the backward and are left out of ll, so they add nothing, and
the backward message w passes through them unchanged.  The symbols are copied
to the host once per call, to check them (the same errors as the kernel) and
to know which steps hold padding.
"""
import mxnet as mx
import numpy as np

F64 = np.float64
TINY = float(np.finfo(np.float64).tiny)


def _rows(x, count):
    """Split x (count, ...) along axis 0 into a list of count arrays without that axis."""
    if count == 1:
        return [x.reshape(x.shape[1:])]
    return list(mx.nd.split(x, num_outputs=count, axis=0, squeeze_axis=True))


class NDArrayForward:
    """State of one forward pass, kept for the backward.

    NDArrayForward(A, B, pi, obs, lengths): A (N, N), B (N, M), pi (N,)
    NDArrays of float32/float64; obs (batch, T) NDArray of the symbols on the
    same context (-2: missing, -1: padding); lengths (batch,) NumPy int64 from
    checks.prepare_obs (missing steps count as part of a sequence).
    Sets self.ll, a float64 NDArray (batch,).
    """

    def __init__(self, A, B, pi, obs, lengths):
        ctx = A.context
        # Copies: the backward may run after MXNet has reused the inputs' memory.
        self.A = A.astype(F64, copy=True)
        B64 = B.astype(F64, copy=False)            # only read here, into BT1 (a copy)
        self.n, self.m = n, m = B.shape
        pi64 = pi.astype(F64, copy=True)
        batch = len(lengths)
        self.steps = steps = int(lengths.max()) if batch else 0
        if steps == 0:
            self.ll = mx.nd.zeros((batch,), ctx=ctx, dtype=F64)
            return
        # Steps where some row has ended: only there are masks needed.
        self.padded = [bool((lengths <= t).any()) for t in range(steps)]
        obs = obs.reshape((batch, -1)).slice_axis(axis=1, begin=0, end=steps)
        self.valid = (obs != -1).astype(F64).T                     # (steps, batch)
        # Symbols (steps, batch): missing (-2) -> M, the all-ones row; padding -> 0, masked.
        symbols = mx.nd.maximum(obs, 0) + (obs == -2) * m
        self.symbols = symbols.astype(np.int32).T
        BT1 = mx.nd.concat(B64.T, mx.nd.ones((1, n), ctx=ctx, dtype=F64), dim=0)   # (M + 1, N)
        self.emit = mx.nd.take(BT1, self.symbols)                 # (steps, batch, N)
        emit = _rows(self.emit, steps)
        self.pred, self.alpha, scales, guarded = [], [], [], []
        alpha = None
        for t in range(steps):
            pred = pi64.reshape((1, -1)) if t == 0 else mx.nd.dot(alpha, self.A)
            f = mx.nd.broadcast_mul(pred, emit[t])
            c = f.sum(axis=1, keepdims=True)
            # max(c, tiny) keeps alpha at 0, not NaN, after an impossible step.
            cg = mx.nd.maximum(c, TINY)
            alpha = mx.nd.broadcast_div(f, cg)
            self.pred.append(pred)
            self.alpha.append(alpha)
            scales.append(c)
            guarded.append(cg)
        self.scale = mx.nd.stack(*guarded, axis=0)                # (steps, batch, 1)
        logc = mx.nd.log(mx.nd.concat(*scales, dim=1)).T           # (steps, batch)
        self.ll = mx.nd.where(self.valid, logc, mx.nd.zeros_like(logc)).sum(axis=0)

    def backward(self, gll):
        """(dA (N, N), dB (N, M), dpi (N,)) float64 NDArrays of sum_b gll[b] ll[b]."""
        n, m, steps = self.n, self.m, self.steps
        ctx = self.ll.context
        if steps == 0:
            return (mx.nd.zeros((n, n), ctx=ctx, dtype=F64), mx.nd.zeros((n, m), ctx=ctx, dtype=F64),
                    mx.nd.zeros((n,), ctx=ctx, dtype=F64))
        g = gll.astype(F64, copy=False)
        batch = g.shape[0]
        # An impossible sequence (ll = -inf) contributes nothing.
        g = mx.nd.where(self.ll == -np.inf, mx.nd.zeros_like(g), g)
        w = mx.nd.broadcast_to(g.reshape((-1, 1)), (batch, n))     # g * beta_hat
        # B[:, o_t] / c_t, zero on padding: then u_t = emit_c[t] * w_t.
        inv = mx.nd.broadcast_div(self.valid.expand_dims(2), self.scale)   # (steps, batch, 1)
        emit_c = _rows(mx.nd.broadcast_mul(self.emit, inv), steps)
        us, ws = [None] * steps, [None] * steps
        for t in range(steps - 1, -1, -1):
            ws[t] = w
            us[t] = emit_c[t] * w
            if t > 0:
                w_new = mx.nd.dot(us[t], self.A, transpose_b=True)
                w = mx.nd.where(self.valid[t], w_new, w) if self.padded[t] else w_new
        dpi = us[0].sum(axis=0)
        if steps > 1:
            dA = mx.nd.dot(mx.nd.concat(*self.alpha[:-1], dim=0), mx.nd.concat(*us[1:], dim=0),
                           transpose_a=True)
        else:
            dA = mx.nd.zeros((n, n), ctx=ctx, dtype=F64)
        # d ll / d B[:, o_t] = pred_t * w_t / c_t, summed per symbol by a one-hot product;
        # its last column gathers the missing steps (the constant ones row) and is dropped.
        pred = mx.nd.concat(mx.nd.broadcast_to(self.pred[0], (batch, n)), *self.pred[1:], dim=0)
        demit = pred * mx.nd.concat(*ws, dim=0) * inv.reshape((-1, 1))
        onehot = mx.nd.one_hot(self.symbols.reshape((-1,)), m + 1, dtype=F64)  # (steps*batch, M+1)
        dBT = mx.nd.dot(onehot, demit, transpose_a=True).slice_axis(axis=0, begin=0, end=m)
        return dA, dBT.T, dpi
