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


def _dense_forward(state, log_emission, lengths, logpi, advance):
    """The scaled forward both forward classes run over rows (batch, T, N) of log_emission, lengths
    (batch,) NumPy int64: logpi the first step's log pred ((1, N) or (batch, N)), advance(alpha) the
    next step's pred.  Sets on state what the backward needs (steps, padded, valid, le, alpha, shift,
    scale, ll_rows); returns ll_rows, the rows' ll, a float64 NDArray (batch,)."""
    ctx = log_emission.context
    state.batch, state.T, state.n = batch, T, n = log_emission.shape
    state.ctx = ctx
    state.steps = steps = int(lengths.max()) if batch else 0
    if steps == 0:
        state.ll_rows = mx.nd.zeros((batch,), ctx=ctx, dtype=F64)
        return state.ll_rows
    # Steps where some row has ended: only there does the backward need a `where`.
    state.padded = [bool((lengths <= t).any()) for t in range(steps)]
    valid_np = np.arange(steps)[:, None] < lengths[None, :]             # (steps, batch)
    state.valid = from_host(valid_np, F64, ctx)
    mask3 = mx.nd.broadcast_to(state.valid.expand_dims(2), (steps, batch, n))
    le = mx.nd.transpose(log_emission.slice_axis(axis=1, begin=0, end=steps).astype(F64),
                         axes=(1, 0, 2))                                 # (steps, batch, N)
    # Padding may hold NaN or inf: replace it (not multiply it) by 0, a neutral step.
    state.le = mx.nd.where(mask3, le, mx.nd.zeros_like(le))
    le_rows = _rows(state.le, steps)
    state.alpha, shifts, sums, clamped = [], [], [], []
    alpha = None
    for t in range(steps):
        logpred = logpi if t == 0 else mx.nd.log(advance(alpha))
        x = mx.nd.broadcast_add(logpred, le_rows[t])
        s = mx.nd.maximum(x.max(axis=1, keepdims=True), -MAX_F64)
        f = mx.nd.exp(mx.nd.broadcast_sub(x, s))
        c = f.sum(axis=1, keepdims=True)
        cg = mx.nd.maximum(c, 1.0)          # c >= 1 unless the step is impossible (c = 0)
        alpha = mx.nd.broadcast_div(f, cg)
        state.alpha.append(alpha)
        shifts.append(s)
        sums.append(c)
        clamped.append(cg)
    state.shift = mx.nd.stack(*shifts, axis=0)                  # (steps, batch, 1)
    state.scale = mx.nd.stack(*clamped, axis=0)                 # (steps, batch, 1)
    terms = (state.shift + mx.nd.log(mx.nd.stack(*sums, axis=0))).reshape((steps, batch))
    state.ll_rows = mx.nd.where(state.valid, terms, mx.nd.zeros_like(terms)).sum(axis=0)
    return state.ll_rows


def _dense_backward(state, gll, back):
    """The backward recursion of _dense_forward's state (steps > 0): gll (batch,) the head gradient,
    back(u) -> u . A^T for the rows' own A.  Returns (g (batch,): gll, 0 for an impossible sequence;
    us: per step (batch, N), d ll / d pred_t; alpha (steps, batch, N); dle (batch, T, N): g * gamma,
    zero past the lengths), float64."""
    n, batch, T, steps, ctx = state.n, state.batch, state.T, state.steps, state.ctx
    g = gll.astype(F64, copy=False).reshape((batch,))
    # An impossible sequence (ll = -inf) contributes nothing.
    g = mx.nd.where(state.ll_rows == -np.inf, mx.nd.zeros_like(g), g)
    # r = exp(le - s) / c, zero on padding; the cap keeps it finite (see the module doc).
    expo = mx.nd.broadcast_sub(mx.nd.broadcast_sub(state.le, state.shift), mx.nd.log(state.scale))
    mask3 = mx.nd.broadcast_to(state.valid.expand_dims(2), (steps, batch, n))
    r = mx.nd.where(mask3, mx.nd.exp(mx.nd.minimum(expo, LOG_CAP)), mx.nd.zeros_like(expo))
    r_rows = _rows(r, steps)
    bh = mx.nd.ones((batch, n), ctx=ctx, dtype=F64)
    us, bhs = [None] * steps, [None] * steps
    for t in range(steps - 1, -1, -1):
        bhs[t] = bh
        us[t] = mx.nd.minimum(r_rows[t] * bh, MAX_F64)
        if t > 0:
            bh_new = mx.nd.minimum(back(us[t]), MAX_F64)
            bh = mx.nd.where(state.valid[t], bh_new, bh) if state.padded[t] else bh_new
    alpha = mx.nd.stack(*state.alpha, axis=0)                  # (steps, batch, N)
    gamma = alpha * mx.nd.stack(*bhs, axis=0) * mask3          # zero past the lengths
    dle = mx.nd.broadcast_mul(mx.nd.transpose(gamma, axes=(1, 0, 2)), g.reshape((batch, 1, 1)))
    if steps < T:
        dle = mx.nd.concat(dle, mx.nd.zeros((batch, T - steps, n), ctx=ctx, dtype=F64), dim=1)
    return g, us, alpha, dle


class NDArrayForwardDense:
    """State of one forward pass of hmm_forward_dense, kept for the backward.

    NDArrayForwardDense(A, pi, log_emission, lengths): A (N, N), pi (N,),
    log_emission (batch, T, N) NDArrays of one float dtype on one context;
    lengths (batch,) NumPy int64 in [0, T], already checked.  Sets self.ll, a
    float64 NDArray (batch,) on that context (0 for length 0, -inf for an
    impossible sequence).
    """

    def __init__(self, A, pi, log_emission, lengths):
        n = log_emission.shape[2]
        # Copies: the backward may run after MXNet has reused the inputs' memory.
        self.A = A.astype(F64, copy=True)
        logpi = mx.nd.log(pi.astype(F64, copy=False)).reshape((1, n))
        self.ll = _dense_forward(self, log_emission, lengths, logpi, lambda alpha: mx.nd.dot(alpha, self.A))

    def backward(self, gll):
        """(dA (N, N), dpi (N,), dlog_emission (batch, T, N)): float64 NDArrays, the gradients
        of sum_b gll[b] ll[b]; gll (batch,) NDArray of any float dtype."""
        n, batch, T, steps, ctx = self.n, self.batch, self.T, self.steps, self.ctx
        if steps == 0:
            return (mx.nd.zeros((n, n), ctx=ctx, dtype=F64), mx.nd.zeros((n,), ctx=ctx, dtype=F64),
                    mx.nd.zeros((batch, T, n), ctx=ctx, dtype=F64))
        g, us, alpha, dle = _dense_backward(self, gll, lambda u: mx.nd.dot(u, self.A, transpose_b=True))
        # g goes on the bounded factors (alpha in [0, 1], g in a dot with u_1): never inf * 0.
        dpi = mx.nd.dot(g.reshape((1, batch)), us[0]).reshape((n,))
        if steps > 1:
            ga = mx.nd.broadcast_mul(alpha.slice_axis(axis=0, begin=0, end=steps - 1),
                                     g.reshape((1, batch, 1))).reshape((-1, n))
            dA = mx.nd.dot(ga, mx.nd.concat(*us[1:], dim=0), transpose_a=True)
        else:
            dA = mx.nd.zeros((n, n), ctx=ctx, dtype=F64)
        return dA, dpi, dle


class NDArrayForwardDenseMany:
    """State of one forward pass of hmm_forward_dense with a model axis, kept for the backward.

    NDArrayForwardDenseMany(A, pi, log_emission, lengths, model): A (K, N, N), pi (K, N) NDArrays of
    one float dtype; lengths (batch,) NumPy int64, checked; model None (every model scores every
    sequence: log_emission (K, batch, T, N), ll (K, batch)) or (batch,) NumPy int64 model indices in
    [0, K) (log_emission (batch, T, N), ll (batch,)).

    The recursion of NDArrayForwardDense run once over all (model, sequence) rows, each row with its
    model's A (batch_dot) and pi gathered by index; the backward sums each model's rows by a product
    with the rows' one-hot model indices.  So the numbers agree with a call per model to rounding (the
    sums run in another order), not bit for bit.  Sets self.ll, a float64 NDArray of ll's shape.
    """

    def __init__(self, A, pi, log_emission, lengths, model=None):
        ctx = A.context
        k, n = pi.shape
        batch0 = len(lengths)
        self.k, self.out_shape, self.le_shape = k, ((k, batch0) if model is None else (batch0,)), log_emission.shape
        if model is None:       # every model, every sequence: rows (model, sequence), model-major
            model = np.repeat(np.arange(k, dtype=np.int64), batch0)
            lengths = np.tile(lengths, k)
            log_emission = log_emission.reshape((k * batch0,) + log_emission.shape[2:])
        index = mx.nd.array(model, ctx=ctx, dtype=F64)                     # (rows,)
        self.onehot = mx.nd.one_hot(index, k, dtype=F64)                   # (rows, K)
        # Copies (take): the backward may run after MXNet has reused the inputs' memory.
        self.Ag = mx.nd.take(A.astype(F64, copy=False), index)              # (rows, N, N)
        logpi = mx.nd.log(mx.nd.take(pi.astype(F64, copy=False), index))   # (rows, N)
        rows = len(model)
        ll = _dense_forward(self, log_emission, lengths, logpi,
                            lambda alpha: mx.nd.batch_dot(alpha.expand_dims(1), self.Ag).reshape((rows, n)))
        self.ll = ll.reshape(self.out_shape)

    def backward(self, gll):
        """(dA (K, N, N), dpi (K, N), dlog_emission shaped as log_emission): float64 NDArrays of
        sum gll * ll."""
        k, n, rows, steps, ctx = self.k, self.n, self.batch, self.steps, self.ctx
        if steps == 0:
            return (mx.nd.zeros((k, n, n), ctx=ctx, dtype=F64), mx.nd.zeros((k, n), ctx=ctx, dtype=F64),
                    mx.nd.zeros(self.le_shape, ctx=ctx, dtype=F64))
        g, us, alpha, dle = _dense_backward(self, gll.reshape((-1,)), lambda u: mx.nd.batch_dot(
            u.expand_dims(1), self.Ag, transpose_b=True).reshape((rows, n)))
        dpi = mx.nd.dot(self.onehot, mx.nd.broadcast_mul(us[0], g.reshape((rows, 1))), transpose_a=True)
        if steps > 1:
            ga = mx.nd.broadcast_mul(alpha.slice_axis(axis=0, begin=0, end=steps - 1), g.reshape((1, rows, 1)))
            per_row = mx.nd.batch_dot(mx.nd.transpose(ga, axes=(1, 2, 0)),                  # (rows, N, steps-1)
                                      mx.nd.stack(*us[1:], axis=1))                          # (rows, steps-1, N)
            dA = mx.nd.dot(self.onehot, per_row.reshape((rows, n * n)), transpose_a=True).reshape((k, n, n))
        else:
            dA = mx.nd.zeros((k, n, n), ctx=ctx, dtype=F64)
        return dA, dpi, dle.reshape(self.le_shape)
