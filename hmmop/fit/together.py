"""Gradient training of K models side by side: each step one forward, one backward and one optimizer
update for all of them, through a block whose parameters carry a leading model axis.

    trainer = TogetherTrainer(block, optimizer="sgd", learning_rate=1e-2)   # block.n_models = K
    outcomes = trainer.fit(rows, epochs=1000, tol=1e-6)                     # K (history, error) pairs

Two forms, as the operator's model axis has them:
- every model trains on every sequence (``model_of=None``): restarts of one fit (``n_init``);
- ``model_of`` (n_rows,) gives each sequence's model: one model per group of sequences (fit_many).

Each model follows the trajectory its own Trainer.fit would: the operator's model axis is bit for bit
K separate calls, softmax works row by row, and the optimizers allowed here (``ELEMENTWISE``) update
every entry from its own gradient and state alone, so an update of the stack is K updates (LAMB and
LARS scale a whole array by its norm, SGLD draws noise from one stream: those run one fit after
another).  Per model, as Trainer.fit per fit: the objective before each update (summed over the
epoch's minibatches), the normalisation by the model's own observations, its share of the prior, the
tol test, and divergence - a model whose objective turns non-finite goes back to its last
parameters with a finite objective and stops there (its DivergenceError is its outcome), and a model
that converged stops too: from then on its slice of every parameter is put back after each update
(its optimizer state runs on unused).  The others go on until every model stopped or the epochs ran
out.
"""
import sys

import mxnet as mx
import numpy as np
from mxnet import autograd
from tqdm.auto import tqdm

from ..ops.ndview import from_host, view
from .monitor import DivergenceError, Monitor
from .trainer import Trainer

# MXNet's optimizers that update each entry from its own gradient and state only
ELEMENTWISE = ("sgd", "nag", "signum", "adam", "adamax", "nadam", "adagrad", "adadelta", "rmsprop", "ftrl",
               "ftml")


def elementwise(optimizer):
    """Whether ``optimizer`` (a name) updates a stack of models exactly as each model alone."""
    return isinstance(optimizer, str) and optimizer.lower() in ELEMENTWISE


class TogetherTrainer(Trainer):
    """Trainer.fit for the K models of ``block`` (block.n_models = K, parameters (K, ...)) at once.

    Arguments as Trainer's (no kvstore); optimizer: a name among ELEMENTWISE.  prior: {name: (a - 1)
    weights of the parameter's unstacked shape}, the same for every model."""

    def __init__(self, block, optimizer="sgd", learning_rate=1e-2, optimizer_params=None, learn=None,
                 normalize=True, ctx=None, prior=None):
        if not elementwise(optimizer):
            raise ValueError(f"optimizer: models train together only with one of {ELEMENTWISE}, got "
                             f"{optimizer!r}")
        if getattr(block, "n_models", None) is None:
            raise ValueError("block: TogetherTrainer needs a block with a model axis (n_models)")
        super().__init__(block, optimizer, learning_rate, optimizer_params, learn, normalize, ctx, prior)
        self.k = block.n_models

    def fit(self, rows, epochs=1000, batch_size=None, tol=None, seed=None, progress=None, counts=None,
            model_of=None):
        """Train every model on ``rows`` (a list of what block.inputs takes; counts: each row's
        observations, default its length), or with model_of (n_rows,) ints each model on its rows
        (full batches only).  An epoch: one step, or (model_of None) one per shuffled minibatch of
        batch_size rows drawn with ``seed`` - the same minibatches for every model, as K fits with
        that seed draw them.  Returns K pairs (history float64 array, DivergenceError or None): a
        model that diverged holds its last parameters with a finite objective, its error says where."""
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        Monitor(epochs, 1, tol, progress=False)          # checks epochs and tol before any work
        counts = np.array([len(r) for r in rows] if counts is None else counts, dtype=np.int64)
        if model_of is not None:
            if batch_size is not None:
                raise ValueError("batch_size: models trained on their own sequences take full batches only")
            model_of = np.asarray(model_of, dtype=np.int64)
            if model_of.shape != (len(rows),) or (len(rows) and (model_of.min() < 0 or model_of.max() >= self.k)):
                raise ValueError(f"model_of must hold a model index in [0, {self.k}) for each of the "
                                 f"{len(rows)} sequences")
            totals = np.bincount(model_of, weights=counts, minlength=self.k).astype(np.int64)
        else:
            totals = np.full(self.k, counts.sum(), dtype=np.int64)
        errors = [None] * self.k
        self._stack = stack = _Stack([p.data(self.ctx) for p in self._learned], self.k)
        # Monitor's bookkeeping for K models at once (the same tests in the same float arithmetic)
        history = np.zeros((int(epochs), self.k))
        done = np.zeros(self.k, dtype=np.int64)              # epochs in each model's history
        finite_seen = np.zeros(self.k, dtype=bool)
        per_symbol = np.maximum(totals, 1).astype(np.float64)
        rng = np.random.default_rng(seed)
        full = None
        if batch_size is None or batch_size >= len(rows):
            full = [(self._inputs(rows, None, model_of), totals)]
        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(range(int(epochs)), disable=not show, desc=f"hmmop ({self.k} models)", unit="epoch",
                   leave=False)
        try:
            for epoch in bar:
                total = np.zeros(self.k)
                for inputs, per_model in full or self._minibatches_all(rows, counts, batch_size, rng):
                    stack.take()
                    values = self.step_all(inputs, np.maximum(per_model, 1), per_model / np.maximum(totals, 1),
                                           model_of)
                    stack.hold()
                    finite = np.isfinite(values)
                    for k in np.flatnonzero(~finite & stack.running):
                        stack.stop(k, restore=True)
                        errors[k] = self._divergence(epochs, totals[k], tol, epoch, history[:done[k], k],
                                                     finite_seen[k], values[k])
                    finite_seen |= finite
                    total += values
                running = stack.running.copy()
                history[epoch, running] = total[running]
                done[running] = epoch + 1
                if tol is not None and epoch > 0:
                    change = np.abs(history[epoch] - history[epoch - 1]) / per_symbol
                    for k in np.flatnonzero(running & (change < tol)):
                        stack.stop(k)
                if show:
                    bar.set_postfix(running=int(stack.running.sum()))
                if not stack.running.any():
                    break
        finally:
            bar.close()
        stack.hold()
        return [(history[:done[k], k].copy(), errors[k]) for k in range(self.k)]

    def _divergence(self, epochs, n_symbols, tol, epoch, history, finite_seen, value):
        """The DivergenceError Monitor raises for a model in this state."""
        monitor = Monitor(epochs, n_symbols, tol, progress=False,
                          advice=f"Try a smaller learning rate (it is {self.learning_rate}).")
        monitor.epoch, monitor.history, monitor._finite_seen = epoch, [float(x) for x in history], bool(finite_seen)
        try:
            monitor.check(value)
        except DivergenceError as exc:
            return exc
        raise AssertionError("_divergence of a finite value")

    def _inputs(self, rows, chosen, model_of):
        inputs = self.block.inputs(rows, chosen, self.ctx)
        if model_of is None:
            return inputs
        return inputs + (from_host(model_of, np.int32, self.ctx),)

    def _minibatches_all(self, rows, counts, batch_size, rng):
        order = rng.permutation(len(rows))
        for start in range(0, len(rows), batch_size):
            chosen = order[start:start + batch_size]
            yield self._inputs(rows, chosen, None), np.full(self.k, counts[chosen].sum(), dtype=np.int64)

    def step_all(self, inputs, scale, prior_share, model_of=None):
        """One update of every model on a batch; returns each model's objective (K,) float64 before
        it: its summed ll, plus its prior_share of its log-prior.  scale (K,): each model's divisor of
        the loss (its observations in the batch) when normalize is on."""
        scale = scale if self.normalize else np.ones(self.k)
        with autograd.record():
            ll = self.block(*inputs)
            lp = self.block.log_prior(self._prior, self.ctx) if self._prior else None
        heads = [self._head(-1.0 / scale, ll.shape, model_of)]
        if lp is not None:
            heads.append(self._head(-np.asarray(prior_share) / scale, (self.k,), model_of))
        autograd.backward([ll, lp] if lp is not None else [ll], head_grads=heads)
        self._update()
        ll = ll.asnumpy().astype(np.float64)
        values = ll.sum(axis=1) if model_of is None else np.bincount(model_of, weights=ll, minlength=self.k)
        if lp is not None:
            values = values + prior_share * lp.asnumpy().astype(np.float64)
        return values


    def _head(self, per_model, shape, model_of):
        """The head gradient: per_model (K,) for each model's ll entries, as an NDArray of ``shape``
        ((K, batch), or (batch,) with model_of), kept while the same (full batches repeat it)."""
        key = (per_model.tobytes(), shape)
        cache = self.__dict__.setdefault("_heads_all", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            if shape == per_model.shape:
                value = per_model
            else:
                value = np.broadcast_to(per_model[:, None], shape) if model_of is None else per_model[model_of]
            cache[key] = from_host(value, self.dtype, self.ctx)
        return cache[key]


class _Stack:
    """The learned (K, ...) parameters of a stack of models on the CPU (NumPy views): each model's
    slices before the previous step and before this one (as Trainer's snapshots), which models still
    run, and the values a stopped model's slices are held at."""

    def __init__(self, arrays, k):
        self.arrays = arrays
        if any(a.context.device_type != "cpu" for a in arrays):
            raise ValueError("models train together on a CPU context only")
        self.views = [view(a) for a in arrays]
        self.kept = [[v.copy() for v in self.views] for _ in range(2)]
        self.running = np.ones(k, dtype=bool)
        self.held = [v.copy() for v in self.views]      # a stopped model's slices, as it stopped

    def take(self):
        """Keep the parameters as they are now (before a step)."""
        mx.nd.waitall()
        self.kept.reverse()
        for v, keep in zip(self.views, self.kept[1]):
            np.copyto(keep, v)

    def stop(self, k, restore=False):
        """Model k stops: held from now on at its parameters before the previous step (restore: its
        objective now is not finite, so the step before it made them bad) or as they are."""
        mx.nd.waitall()                 # (no update may still be writing them)
        self.running[k] = False
        for v, held, before in zip(self.views, self.held, self.kept[0]):
            held[k] = before[k] if restore else v[k]
            v[k] = held[k]

    def hold(self):
        """Put the stopped models' slices back (after an update moved them)."""
        stopped = ~self.running
        if not stopped.any():
            return
        mx.nd.waitall()
        for v, held in zip(self.views, self.held):
            v[stopped] = held[stopped]
