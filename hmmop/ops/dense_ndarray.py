"""The NDArray path of hmm_forward_dense: forward and hand-derived backward as
MXNet NDArray operations on the inputs' context (any context, the GPU route
included), computed in float64 like hmmop/ops/ndarray_path.py and vectorised over
the batch: one loop over time steps, whole-array operations around it.

Derivation.  Per step t and row b, with pred_1 = pi and pred_t = alpha_{t-1} A:
    x_t   = log pred_t + le_t                  (le: log_emission, (N,))
    s_t   = max_i x_t,i                        (the step's shift; see below)
    f_t   = exp(x_t - s_t),  c_t = sum_i f_t,i,  alpha_t = f_t / c_t
    ll    = sum_{t < length} (s_t + log c_t)
Any shift leaves ll unchanged (it is subtracted inside and added back), so s_t
is a constant for the derivatives.  Taking the shift from log pred + le rather
than from le alone is the robust choice: the largest f is exactly 1, so c_t is
in [1, N] whenever the step is possible, whatever the scale of le and even when
the state of largest emission has pred 0.  All x = -inf (an impossible step)
gives s = -inf, clamped to -MAX_F64 so that f = 0, c = 0 and ll = -inf with no
NaN; c is clamped to >= 1 where it divides, so alpha becomes 0, not NaN.

With r_t = exp(le_t - s_t) / c_t (so that alpha_t = pred_t * r_t) and the
scaled backward variable bh (bh_last = 1, bh_{t-1} = (r_t * bh_t) A^T):
    d ll / d pred_t   = u_t = r_t * bh_t
    d ll / d A        = sum_t alpha_{t-1}^T u_t        d ll / d pi = u_1
    d ll / d le_t     = alpha_t * bh_t = gamma_t       (the state posteriors)
The head gradient g (batch,) is applied after the loop, so bh and u stay
non-negative: they are clamped at MAX_F64, which keeps inf (and so 0 * inf =
NaN) out of the products.  They only exceed it where the true derivative does
(d ll / d A[j, i] for a state i unreachable at t yet of huge emission).
Padding: log-emissions past a length are replaced by 0 before anything (they
may hold anything), their ll terms and r are masked to 0, and bh passes through
padded steps unchanged.  An impossible sequence (ll = -inf) gets g = 0.

Limits, those of any scaled forward: alpha keeps a state only down to ~1e-308
of its step's total, so a state that falls further behind and later leads by
as much (only possible through zeros of A, or entries spread far apart) is lost
(ll comes out too small) - the C driver of the native and Cython operators
checks for that and recomputes those sequences in log space, this path does
not (a per-step check and a log-space recomputation of some rows would mean
host round trips or a second, log-space graph; left for now); and the
derivative for a zero of A or pi into a state unreachable at that step is a
huge r times a tiny bh, which comes out 0 or clamped once either leaves the
float64 range (the true value is then astronomically large or small anyway).

Cost per time step: forward 10 operations (dot, log, add, max, clamp, sub,
exp, sum, clamp, div), backward 4 (mul, clamp, dot, clamp) plus one `where`
on steps where some row is padding.
"""
import mxnet as mx
import numpy as np

from .ndview import from_host

F64 = np.float64
MAX_F64 = float(np.finfo(np.float64).max)
# The cap on r's exponent: exp(LOG_CAP) is finite.  r <= 1 / pred for a reachable state, below
# exp(LOG_CAP) for any normal pred, so the cap only bites at pred 0 (or subnormal).
LOG_CAP = 709.0


def _rows(x, count):
    """Split x (count, ...) along axis 0 into a list of count arrays without that axis."""
    if count == 1:
        return [x.reshape(x.shape[1:])]
    return list(mx.nd.split(x, num_outputs=count, axis=0, squeeze_axis=True))


class NDArrayForwardDense:
    """State of one forward pass of hmm_forward_dense, kept for the backward.

    NDArrayForwardDense(A, pi, log_emission, lengths): A (N, N), pi (N,),
    log_emission (batch, T, N) NDArrays of one float dtype on one context;
    lengths (batch,) NumPy int64 in [0, T], already checked.  Sets self.ll, a
    float64 NDArray (batch,) on that context (0 for length 0, -inf for an
    impossible sequence).
    """

    def __init__(self, A, pi, log_emission, lengths):
        ctx = A.context
        self.batch, self.T, self.n = batch, T, n = log_emission.shape
        self.ctx = ctx
        # Copies: the backward may run after MXNet has reused the inputs' memory.
        self.A = A.astype(F64, copy=True)
        self.steps = steps = int(lengths.max()) if batch else 0
        if steps == 0:
            self.ll = mx.nd.zeros((batch,), ctx=ctx, dtype=F64)
            return
        # Steps where some row has ended: only there does the backward need a `where`.
        self.padded = [bool((lengths <= t).any()) for t in range(steps)]
        valid_np = np.arange(steps)[:, None] < lengths[None, :]             # (steps, batch)
        self.valid = from_host(valid_np, F64, ctx)
        mask3 = mx.nd.broadcast_to(self.valid.expand_dims(2), (steps, batch, n))
        le = mx.nd.transpose(log_emission.slice_axis(axis=1, begin=0, end=steps).astype(F64),
                             axes=(1, 0, 2))                                 # (steps, batch, N)
        # Padding may hold NaN or inf: replace it (not multiply it) by 0, a neutral step.
        self.le = mx.nd.where(mask3, le, mx.nd.zeros_like(le))
        le_rows = _rows(self.le, steps)
        logpi = mx.nd.log(pi.astype(F64, copy=False)).reshape((1, n))
        self.alpha, shifts, sums, clamped = [], [], [], []
        alpha = None
        for t in range(steps):
            logpred = logpi if t == 0 else mx.nd.log(mx.nd.dot(alpha, self.A))
            x = mx.nd.broadcast_add(logpred, le_rows[t])
            s = mx.nd.maximum(x.max(axis=1, keepdims=True), -MAX_F64)
            f = mx.nd.exp(mx.nd.broadcast_sub(x, s))
            c = f.sum(axis=1, keepdims=True)
            cg = mx.nd.maximum(c, 1.0)          # c >= 1 unless the step is impossible (c = 0)
            alpha = mx.nd.broadcast_div(f, cg)
            self.alpha.append(alpha)
            shifts.append(s)
            sums.append(c)
            clamped.append(cg)
        self.shift = mx.nd.stack(*shifts, axis=0)                  # (steps, batch, 1)
        self.scale = mx.nd.stack(*clamped, axis=0)                 # (steps, batch, 1)
        terms = (self.shift + mx.nd.log(mx.nd.stack(*sums, axis=0))).reshape((steps, batch))
        self.ll = mx.nd.where(self.valid, terms, mx.nd.zeros_like(terms)).sum(axis=0)

    def backward(self, gll):
        """(dA (N, N), dpi (N,), dlog_emission (batch, T, N)): float64 NDArrays, the gradients
        of sum_b gll[b] ll[b]; gll (batch,) NDArray of any float dtype."""
        n, batch, T, steps, ctx = self.n, self.batch, self.T, self.steps, self.ctx
        if steps == 0:
            return (mx.nd.zeros((n, n), ctx=ctx, dtype=F64), mx.nd.zeros((n,), ctx=ctx, dtype=F64),
                    mx.nd.zeros((batch, T, n), ctx=ctx, dtype=F64))
        g = gll.astype(F64, copy=False).reshape((batch,))
        # An impossible sequence (ll = -inf) contributes nothing.
        g = mx.nd.where(self.ll == -np.inf, mx.nd.zeros_like(g), g)
        # r = exp(le - s) / c, zero on padding; the cap keeps it finite (see the module doc).
        expo = mx.nd.broadcast_sub(mx.nd.broadcast_sub(self.le, self.shift), mx.nd.log(self.scale))
        mask3 = mx.nd.broadcast_to(self.valid.expand_dims(2), (steps, batch, n))
        r = mx.nd.where(mask3, mx.nd.exp(mx.nd.minimum(expo, LOG_CAP)), mx.nd.zeros_like(expo))
        r_rows = _rows(r, steps)
        bh = mx.nd.ones((batch, n), ctx=ctx, dtype=F64)
        us, bhs = [None] * steps, [None] * steps
        for t in range(steps - 1, -1, -1):
            bhs[t] = bh
            us[t] = mx.nd.minimum(r_rows[t] * bh, MAX_F64)
            if t > 0:
                bh_new = mx.nd.minimum(mx.nd.dot(us[t], self.A, transpose_b=True), MAX_F64)
                bh = mx.nd.where(self.valid[t], bh_new, bh) if self.padded[t] else bh_new
        # g goes on the bounded factors (alpha in [0, 1], g in a dot with u_1): never inf * 0.
        dpi = mx.nd.dot(g.reshape((1, batch)), us[0]).reshape((n,))
        alpha = mx.nd.stack(*self.alpha, axis=0)                  # (steps, batch, N)
        if steps > 1:
            ga = mx.nd.broadcast_mul(alpha.slice_axis(axis=0, begin=0, end=steps - 1),
                                     g.reshape((1, batch, 1))).reshape((-1, n))
            dA = mx.nd.dot(ga, mx.nd.concat(*us[1:], dim=0), transpose_a=True)
        else:
            dA = mx.nd.zeros((n, n), ctx=ctx, dtype=F64)
        gamma = alpha * mx.nd.stack(*bhs, axis=0) * mask3          # zero past the lengths
        dle = mx.nd.broadcast_mul(mx.nd.transpose(gamma, axes=(1, 0, 2)), g.reshape((batch, 1, 1)))
        if steps < T:
            dle = mx.nd.concat(dle, mx.nd.zeros((batch, T - steps, n), ctx=ctx, dtype=F64), dim=1)
        return dA, dpi, dle
