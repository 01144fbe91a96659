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


def _scaled_forward(state, emit, first, advance):
    """The scaled forward recursion both forward classes run: emit (steps of (batch, N) emission rows),
    first (the first step's predictions: pi, broadcast or (batch, N)), advance(alpha) -> the next
    step's predictions.  Sets state.pred, state.alpha (lists per step) and state.scale (steps, batch,
    1), the scales as the backward divides by them; returns ll (batch,) over state.valid's steps."""
    state.pred, state.alpha, scales, guarded = [], [], [], []
    alpha = None
    for t in range(len(emit)):
        pred = first if t == 0 else advance(alpha)
        f = mx.nd.broadcast_mul(pred, emit[t])
        c = f.sum(axis=1, keepdims=True)
        # max(c, tiny) keeps alpha at 0, not NaN, after an impossible step.
        cg = mx.nd.maximum(c, TINY)
        alpha = mx.nd.broadcast_div(f, cg)
        state.pred.append(pred)
        state.alpha.append(alpha)
        scales.append(c)
        guarded.append(cg)
    state.scale = mx.nd.stack(*guarded, axis=0)                   # (steps, batch, 1)
    logc = mx.nd.log(mx.nd.concat(*scales, dim=1)).T              # (steps, batch)
    return mx.nd.where(state.valid, logc, mx.nd.zeros_like(logc)).sum(axis=0)


def _scaled_backward(state, g, batch, n, back):
    """The backward recursion of _scaled_forward's state: g (batch,) the head gradient (0 for an
    impossible sequence), back(u) -> u . A^T for the rows' own A.  Returns (us: per step (batch, N),
    u_t = B[:, o_t] / c_t * w_t with w_t = g * beta_hat_t; demit (steps * batch, N): d ll / d B[:, o_t]
    = pred_t * w_t / c_t), zero on padding."""
    steps = len(state.pred)
    w = mx.nd.broadcast_to(g.reshape((-1, 1)), (batch, n))        # g * beta_hat
    inv = mx.nd.broadcast_div(state.valid.expand_dims(2), state.scale)   # (steps, batch, 1): 1 / c_t, 0 on padding
    emit_c = _rows(mx.nd.broadcast_mul(state.emit, inv), steps)
    us, ws = [None] * steps, [None] * steps
    for t in range(steps - 1, -1, -1):
        ws[t] = w
        us[t] = emit_c[t] * w
        if t > 0:
            w_new = back(us[t])
            w = mx.nd.where(state.valid[t], w_new, w) if state.padded[t] else w_new
    pred = mx.nd.concat(mx.nd.broadcast_to(state.pred[0], (batch, n)), *state.pred[1:], dim=0)
    return us, pred * mx.nd.concat(*ws, dim=0) * inv.reshape((-1, 1))


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
        self.ll = _scaled_forward(self, _rows(self.emit, steps), pi64.reshape((1, -1)),
                                  lambda alpha: mx.nd.dot(alpha, self.A))

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
        us, demit = _scaled_backward(self, g, batch, n, lambda u: mx.nd.dot(u, self.A, transpose_b=True))
        dpi = us[0].sum(axis=0)
        if steps > 1:
            dA = mx.nd.dot(mx.nd.concat(*self.alpha[:-1], dim=0), mx.nd.concat(*us[1:], dim=0),
                           transpose_a=True)
        else:
            dA = mx.nd.zeros((n, n), ctx=ctx, dtype=F64)
        # d ll / d B[:, o_t], summed per symbol by a one-hot product; its last column gathers the
        # missing steps (the constant ones row) and is dropped.
        onehot = mx.nd.one_hot(self.symbols.reshape((-1,)), m + 1, dtype=F64)  # (steps*batch, M+1)
        dBT = mx.nd.dot(onehot, demit, transpose_a=True).slice_axis(axis=0, begin=0, end=m)
        return dA, dBT.T, dpi


class NDArrayForwardMany:
    """State of one forward pass of hmm_forward with a model axis, kept for the backward.

    NDArrayForwardMany(A, B, pi, obs, lengths, model): A (K, N, N), B (K, N, M), pi (K, N)
    NDArrays of float32/float64; obs (batch, T) NDArray of the symbols on the same context;
    lengths (batch,) NumPy int64 from checks.prepare_obs; model None (every model scores every
    sequence: ll (K, batch)) or (batch,) NumPy int64 model indices in [0, K) (ll (batch,)).

    The recursion of NDArrayForward, run once over all (model, sequence) rows: each row gathers
    its model's A (batch_dot), its emission rows (one take from the K stacked B^T, each with its
    all-ones row M) and pi.  The backward's sums over rows (dA, dB, dpi) are NDArrayForward's
    products, one per model (batch_dot over the models), each over that model's rows gathered in
    the order a call on its sequences alone has them, then zero rows: so every model's numbers
    are those of NDArrayForward on its own sequences.  Sets self.ll, a float64 NDArray of ll's
    shape.
    """

    def __init__(self, A, B, pi, obs, lengths, model=None):
        ctx = A.context
        self.k, self.n, self.m = k, n, m = B.shape
        batch0 = len(lengths)
        self.out_shape = (k, batch0) if model is None else (batch0,)
        obs = obs.reshape((batch0, -1))
        if model is None:       # every model, every sequence: rows (model, sequence), model-major
            model = np.repeat(np.arange(k, dtype=np.int64), batch0)
            lengths = np.tile(lengths, k)
            obs = mx.nd.tile(obs, reps=(k, 1)) if k > 1 else obs
        self.batch = batch = len(lengths)
        self.steps = steps = int(lengths.max()) if batch else 0
        if steps == 0:
            self.ll = mx.nd.zeros(self.out_shape, ctx=ctx, dtype=F64)
            return
        self._plan_sums(model, lengths, ctx)
        index = mx.nd.array(model, ctx=ctx, dtype=F64)                    # (batch,)
        # Copies (take): the backward may run after MXNet has reused the inputs' memory.
        self.Ag = mx.nd.take(A.astype(F64, copy=False), index)             # (batch, N, N)
        pig = mx.nd.take(pi.astype(F64, copy=False), index)                # (batch, N)
        self.padded = [bool((lengths <= t).any()) for t in range(steps)]
        obs = obs.slice_axis(axis=1, begin=0, end=steps)
        self.valid = (obs != -1).astype(F64).T                            # (steps, batch)
        symbols = mx.nd.maximum(obs, 0) + (obs == -2) * m                 # (batch, steps), in [0, M]
        self.symbols = symbols.astype(np.int32).T                          # (steps, batch)
        # Row model * (M + 1) + symbol of the K stacked (M + 1, N) tables B^T + ones row.
        rows = mx.nd.broadcast_add(symbols.astype(F64), index.reshape((-1, 1)) * (m + 1))
        B64 = B.astype(F64, copy=False)
        BT1 = mx.nd.concat(mx.nd.transpose(B64, axes=(0, 2, 1)), mx.nd.ones((k, 1, n), ctx=ctx, dtype=F64),
                           dim=1).reshape((k * (m + 1), n))
        self.emit = mx.nd.take(BT1, rows.T)                                # (steps, batch, N)
        ll = _scaled_forward(self, _rows(self.emit, steps), pig,
                             lambda alpha: mx.nd.batch_dot(alpha.expand_dims(1), self.Ag).reshape((batch, n)))
        self.ll_rows = ll
        self.ll = ll.reshape(self.out_shape)

    def _plan_sums(self, model, lengths, ctx):
        """Gather tables for the backward's sums: each model's rows in the step-major
        (steps * batch) row space, in NDArrayForward's order for that model alone (its steps: its
        longest sequence) - for dpi (step 0), dA (steps >= 1, with the step before) and dB (every
        step).  A sum's rounding depends on its length (BLAS cuts long sums into blocks by it), so
        models are grouped by that length: one product per group, its result placed back by the
        model order (self.*_order).  A model without rows of a sum gets zeros there."""
        k, batch = self.k, self.batch
        own = [np.flatnonzero(model == q) for q in range(k)]
        own_steps = [int(lengths[r].max()) if r.size else 0 for r in own]

        def span(q, first):            # step-major rows t * batch + b, t in [first, own_steps[q])
            t = np.arange(first, own_steps[q])
            return (t[:, None] * batch + own[q][None, :]).reshape(-1)

        def groups(rows_of):
            """[(index NDArray (models, width), ...)] per width > 0, and the order (K,) that takes
            the groups' stacked results (then one zero entry) back to model order."""
            rows = [rows_of(q) for q in range(k)]
            widths = sorted({r.size for r in rows if r.size})
            tables, placed, order = [], 0, np.full(k, -1, dtype=np.int64)
            for w in widths:
                members = [q for q in range(k) if rows[q].size == w]
                tables.append(tuple(mx.nd.array(np.stack([rows[q] for q in members]) + shift, ctx=ctx, dtype=F64)
                                    for shift in (0, -batch)))
                order[members] = placed + np.arange(len(members))
                placed += len(members)
            order[order < 0] = placed                # the zero entry after the groups
            return tables, mx.nd.array(order, ctx=ctx, dtype=F64)

        self.sum_pi = groups(lambda q: own[q] if own_steps[q] else own[q][:0])
        self.sum_a = groups(lambda q: span(q, 1))      # u rows; the alpha rows: shifted by -batch
        self.sum_b = groups(lambda q: span(q, 0))

    @staticmethod
    def _per_model(groups, product, zero):
        """Each group's product (models of the group, ...) stacked, then zero, put in model order."""
        tables, order = groups
        parts = [product(table) for table in tables]
        return mx.nd.take(mx.nd.concat(*parts, zero.expand_dims(0), dim=0), order)

    def backward(self, gll):
        """(dA (K, N, N), dB (K, N, M), dpi (K, N)) float64 NDArrays of sum gll * ll."""
        k, n, m, steps, batch = self.k, self.n, self.m, self.steps, self.batch
        ctx = self.ll.context
        if steps == 0:
            return (mx.nd.zeros((k, n, n), ctx=ctx, dtype=F64), mx.nd.zeros((k, n, m), ctx=ctx, dtype=F64),
                    mx.nd.zeros((k, n), ctx=ctx, dtype=F64))
        g = gll.astype(F64, copy=False).reshape((-1,))
        g = mx.nd.where(self.ll_rows == -np.inf, mx.nd.zeros_like(g), g)
        us, demit = _scaled_backward(self, g, batch, n, lambda u: mx.nd.batch_dot(
            u.expand_dims(1), self.Ag, transpose_b=True).reshape((batch, n)))
        zero = mx.nd.zeros((n,), ctx=ctx, dtype=F64)
        u_all = mx.nd.concat(*us, dim=0)                                  # (steps * batch, N)
        dpi = self._per_model(self.sum_pi, lambda ix: mx.nd.take(u_all, ix[0]).sum(axis=1), zero)
        alpha_all = mx.nd.concat(*self.alpha, dim=0)
        dA = self._per_model(self.sum_a, lambda ix: mx.nd.batch_dot(mx.nd.take(alpha_all, ix[1]),
                                                                    mx.nd.take(u_all, ix[0]), transpose_a=True),
                             mx.nd.zeros((n, n), ctx=ctx, dtype=F64))
        symbols = self.symbols.reshape((-1,)).astype(F64)

        def dBT(ix):                   # (models, M + 1, N): one-hot(symbols)^T . demit per model
            onehot = mx.nd.one_hot(mx.nd.take(symbols, ix[0]), m + 1, dtype=F64)
            return mx.nd.batch_dot(onehot, mx.nd.take(demit, ix[0]), transpose_a=True)

        dBT = self._per_model(self.sum_b, dBT, mx.nd.zeros((m + 1, n), ctx=ctx, dtype=F64))
        dB = mx.nd.transpose(dBT.slice_axis(axis=1, begin=0, end=m), axes=(0, 2, 1))
        return dA, dB, dpi
