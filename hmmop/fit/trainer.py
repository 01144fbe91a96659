"""Trainer: the seed gist's training loop as a library, for every model family.

Minimises the negative log-likelihood of a model's gluon block by gradient
descent with any MXNet optimizer (default: plain SGD, learning rate 1e-2, as
in the gist), over full batches or shuffled minibatches of variable-length
sequences, on one process or as one worker of a kvstore job.

The block is any gluon block that follows this protocol (HMMBlock for
categorical HMMs; the core's dense block, hmmop.models.core, for the other
families):
  block.learnable(learn) -> tuple: the checked names to learn
  block.trainable(learn) -> [Parameter]: those names' gluon Parameters, their
      grad_req set ("write" for learned, "null" for the others)
  block.state() -> [Parameter]: every parameter a worker takes from rank 0
  block.inputs(rows, chosen, ctx) -> tuple of NDArrays: the batch of
      sequences rows[i] for i in chosen (all for None) as block(*inputs) takes
      it; block.empty_inputs(ctx): a batch with no data (ll 0, gradient 0)
  block(*inputs) -> ll (batch,); block.log_prior(weights, ctx) -> NDArray
      (1,): sum over names of w * log(max(p, tiny)), weights {name: NDArray}
"""
import math

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..ops.ndview import view
from . import distributed
from .monitor import Monitor


def check_learning_rate(learning_rate):
    """ValueError unless learning_rate is a positive finite number."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number)) \
            or not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")


def state_in_weight_dtype(optimizer):
    """``optimizer`` (an mx.optimizer.Optimizer, changed in place and returned) with its state made in
    each weight's dtype: MXNet 1.9.1's rmsprop, adagrad, adadelta and ftrl create float32 state
    whatever the weight's dtype, which their update operators then refuse for float64 weights."""
    create = optimizer.create_state

    def create_state(index, weight):
        return _cast_state(create(index, weight), weight.dtype)
    optimizer.create_state = create_state
    return optimizer


def _cast_state(state, dtype):
    """The optimizer state ``state`` (None, an NDArray, or tuples / lists of them) with its floating
    NDArrays in ``dtype``."""
    if isinstance(state, mx.nd.NDArray):
        floating = np.issubdtype(np.dtype(state.dtype), np.floating)
        return state.astype(dtype) if floating and np.dtype(state.dtype) != np.dtype(dtype) else state
    if isinstance(state, (tuple, list)):
        return type(state)(_cast_state(x, dtype) for x in state)
    return state


class Trainer:
    """Gradient-descent training of ``block`` (an HMMBlock, or a block with its protocol above).

    learn: which parameters to update by name (HMMBlock: 'A', 'B', 'pi';
    default: every one the block does not hold fixed); the others are
    frozen.  normalize=True divides the
    loss by the number of symbols in each batch, so that one learning rate
    suits any amount of data; normalize=False is the gist's summed loss.
    prior: {name: (a - 1) weights as float64 arrays of the parameter's shape}
    (see priors.py): the log-prior sum(w * log p) is added to the objective,
    each minibatch carrying its share (its symbols / all symbols), so that an
    epoch adds it once.

    kvstore: None (one process) or "dist_sync" (or such a KVStore): data-parallel
    training, this process being one worker of a job (see distributed.py and
    ``hmmop launch``) that trains on its own part of the data.  Every worker
    starts from rank 0's parameters (broadcast here), each step sums the
    gradients, the objective and the symbol count over the workers through the
    kvstore, and every worker applies the optimizer to the same sums, so all
    end with the same parameters; the loss is normalised by the global symbol
    count.  The servers only sum (float32): no optimizer is sent to them, so
    any MXNet optimizer works.
    """

    def __init__(self, block, optimizer="sgd", learning_rate=1e-2, optimizer_params=None,
                 learn=None, normalize=True, ctx=None, prior=None, kvstore=None):
        learn = block.learnable(learn)
        check_learning_rate(learning_rate)
        self.block = block
        self.learn = learn
        self.normalize = bool(normalize)
        self.ctx = ctx or mx.cpu()
        self.learning_rate = learning_rate
        self._learned = block.trainable(learn)
        opt_params = {"learning_rate": learning_rate, **(optimizer_params or {})}
        opt = mx.optimizer.create(optimizer, **opt_params) if isinstance(optimizer, str) else optimizer
        if isinstance(opt, mx.optimizer.Optimizer):
            state_in_weight_dtype(opt)
            self.gluon_trainer = gluon.Trainer({p.name: p for p in self._learned}, opt, kvstore=None)
        else:                       # (gluon's own error for anything else)
            self.gluon_trainer = gluon.Trainer({p.name: p for p in self._learned}, optimizer, opt_params,
                                               kvstore=None)
        self.dtype = self._learned[0].dtype
        self._prior = {name: mx.nd.array(w, dtype=self.dtype, ctx=self.ctx) for name, w in (prior or {}).items()}
        self.kv = distributed.kvstore(kvstore) if isinstance(kvstore, str) else kvstore
        # Plain SGD (the gist's, and the default) is applied here as the one fused
        # operator gluon's SGD runs (multi_sgd_update: the same learning rate, no
        # weight decay, gradients rescaled by 1 as step(1) does), without gluon's
        # Python layers around it: ~60 us of a ~500 us step at the gist's size.
        # Bit for bit what gluon.Trainer gives (a test compares them).
        self._plain_sgd = isinstance(optimizer, str) and optimizer.lower() == "sgd" \
            and set(opt_params) == {"learning_rate"} and self.kv is None
        if self.kv is not None:
            distributed.broadcast(self.kv, [p.data(self.ctx) for p in block.state()])
            self._stat = mx.nd.zeros(2, dtype="float32", ctx=self.ctx)
            self._sum = distributed.Allreduce(self.kv, [p.grad(self.ctx) for p in self._learned] + [self._stat])

    def step(self, obs, n_symbols, prior_share=1.0):
        """One update on a batch: obs, the block's input (HMMBlock: (batch, T) int32 NDArray), or
        a tuple of its inputs (block.inputs); returns the batch's objective as a
        float (waiting for the step): its summed ll, plus prior_share times the
        log-prior when there is a prior.  With a kvstore: the objective summed over
        the workers (obs None: a step with no data, for a worker that has fewer
        minibatches than another)."""
        if self.kv is not None:
            return float(self._dist_step(obs, n_symbols, prior_share).asscalar())
        inputs = obs if isinstance(obs, tuple) else (obs,)
        # The loss is -objective (/ n_symbols): its head gradient, rather than more
        # operators in the step (MXNet's per-operator cost is most of a small step).
        # Without a prior the per-sequence ll (batch,) is the head itself (each with
        # the same gradient) and the host sums them: no sum operator either.
        scale = n_symbols if self.normalize else 1
        with autograd.record():
            ll = self.block(*inputs)
            if self._prior:
                ll = ll.sum() + prior_share * self.block.log_prior(self._prior, self.ctx)
        ll.backward(out_grad=self._head_gradient(scale, ll.shape[0]))
        self._update()
        # Reading the value waits for it: without a wait, a loop of steps would queue
        # its work in MXNet's engine faster than it runs, holding its memory.
        return float(ll.asnumpy().sum(dtype=np.float64))

    def _update(self):
        """The optimizer's update of the learned parameters from their gradients (rescaled by 1)."""
        if self._plain_sgd:
            weights = [p.data(self.ctx) for p in self._learned]
            pairs = [x for p, w in zip(self._learned, weights) for x in (w, p.grad(self.ctx))]
            mx.nd.multi_sgd_update(*pairs, out=weights, num_weights=len(weights), rescale_grad=1.0,
                                   lrs=[float(self.learning_rate * p.lr_mult) for p in self._learned],
                                   wds=(0.0,) * len(weights))
        else:
            self.gluon_trainer.step(1)

    def _head_gradient(self, n, size):
        """d loss / d ll = -1/n as a (size,) NDArray, kept per (n, size): minibatches repeat sizes."""
        cache = self.__dict__.setdefault("_heads", {})
        if (n, size) not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[n, size] = mx.nd.full((size,), -1.0 / n, dtype=self.dtype, ctx=self.ctx)
        return cache[n, size]

    def _dist_step(self, obs, count, prior_share):
        if obs is None:             # no data: a batch of padding, ll 0, gradient 0
            obs, prior_share = self.block.empty_inputs(self.ctx), 0.0
        inputs = obs if isinstance(obs, tuple) else (obs,)
        with autograd.record():
            objective = self.block(*inputs).sum()
            if self._prior:
                objective = objective + prior_share * self.block.log_prior(self._prior, self.ctx)
            loss = -objective
        loss.backward()
        self._stat[0] = objective.astype("float32")
        self._stat[1] = count
        self._sum([p.grad(self.ctx) for p in self._learned] + [self._stat])
        # The gradients are now sums over the workers, the same on each; step(n) divides them by n.
        total = float(self._stat[1].asscalar())
        self.gluon_trainer.step(max(total, 1.0) if self.normalize else 1)
        return self._stat[0]

    def fit(self, rows, epochs=1000, batch_size=None, tol=None, seed=None, progress=None,
            callback=None, counts=None):
        """Train on encoded sequences (HMMBlock: a list of int32 arrays, see data.encode; any
        block: a list of what its ``inputs`` takes).  counts: the observations each
        sequence holds (default: its length), what tol, normalize and the prior's
        shares count.

        An epoch is one pass over the data: one step with batch_size=None (the
        gist's loop), else one step per shuffled minibatch.  Stops early when
        the epoch's objective per symbol changes by less than tol.
        progress: True/False, or None for a tqdm bar only on a terminal.
        callback(epoch, value) is called after each epoch.  Returns the history:
        float64 array of each epoch's objective (total log-likelihood, plus the
        log-prior if any), summed over the batches as they were before their
        updates.  Raises monitor.DivergenceError when the objective becomes
        NaN or -inf, after restoring the last parameters whose objective was
        finite.
        """
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        rng = np.random.default_rng(seed)
        counts = [len(r) for r in rows] if counts is None else [int(c) for c in counts]
        total_symbols = local_symbols = sum(counts)
        n_steps = None
        if self.kv is not None:
            # This worker's rows are its part of the data: the totals are sums over the workers,
            # and every worker takes as many steps per epoch as the one with most minibatches.
            mine = 1 if batch_size is None else -(-len(rows) // batch_size)
            totals = distributed.allreduce_sum(
                self.kv, [local_symbols] + [mine if w == self.kv.rank else 0 for w in range(self.kv.num_workers)],
                integers=True)
            total_symbols, n_steps = totals[0], max(totals[1:])
        monitor = Monitor(epochs, total_symbols, tol, progress, callback,
                          advice=f"Try a smaller learning rate (it is {self.learning_rate}).")
        full = None
        if batch_size is None or (batch_size >= len(rows) and self.kv is None):
            full = [(self.block.inputs(rows, None, self.ctx) if rows else None, local_symbols)]
        self._snapshots = snapshots = _Snapshots([p.data(self.ctx) for p in self._learned])
        for epoch in monitor:
            total = 0.0
            for obs, count in full or self._minibatches(rows, counts, batch_size, rng, n_steps):
                snapshots.take()
                value = self.step(obs, count if self.kv is not None else max(count, 1),
                                  count / max(total_symbols, 1))
                if not math.isfinite(value):
                    snapshots.restore_previous()
                monitor.check(value)
                total += value
            if monitor.report(total):
                break
        return monitor.result()

    def restore_last(self):
        """Put back the learned parameters as they were before the last step of fit."""
        self._snapshots.restore(1)

    def _minibatches(self, rows, counts, batch_size, rng, n_steps=None):
        """Shuffled minibatches; then (None, 0) steps up to n_steps (a worker with less data)."""
        order = rng.permutation(len(rows))
        steps = 0
        for start in range(0, len(rows), batch_size):
            chosen = order[start:start + batch_size]
            count = sum(counts[i] for i in chosen)
            steps += 1
            yield self.block.inputs(rows, chosen, self.ctx), count
        for _ in range(steps, n_steps or 0):
            yield None, 0


class _Snapshots:
    """The learned parameters before the previous step and before this one: when a
    step's objective is not finite, its parameters are the bad ones, and the
    previous step's are the last with a finite objective.

    On a CPU context a snapshot is a NumPy copy through a view of the parameter's
    memory (after waiting for its last update): an MXNet copy per parameter per
    step cost about 30 us each, a tenth of a training step at the gist's size.
    """

    def __init__(self, arrays):
        self.arrays = arrays
        self.on_cpu = all(a.context.device_type == "cpu" for a in arrays)
        copy = (lambda a: a.asnumpy()) if self.on_cpu else (lambda a: a.copy())
        self.kept = [[copy(a) for a in arrays] for _ in range(2)]

    def take(self):
        """Keep the parameters as they are now (before a step)."""
        self.kept.reverse()
        for a, keep in zip(self.arrays, self.kept[1]):
            if self.on_cpu:
                a.wait_to_read()
                np.copyto(keep, view(a, keep.shape, keep.dtype))
            else:
                a.copyto(keep)

    def restore_previous(self):
        """Put back the parameters as they were before the previous step."""
        self.restore(0)

    def restore(self, which):
        """Put back the parameters as they were before the previous step (0) or this one (1)."""
        if self.on_cpu:
            mx.nd.waitall()             # nothing may still read or write them (a rare path)
        for a, keep in zip(self.arrays, self.kept[which]):
            if self.on_cpu:
                np.copyto(view(a, keep.shape, keep.dtype), keep)
            else:
                keep.copyto(a)
