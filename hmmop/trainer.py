"""Trainer: the seed gist's training loop as a library.

Minimises the negative log-likelihood of an HMMBlock by gradient descent on
its logits with any MXNet optimizer (default: plain SGD, learning rate 1e-2,
as in the gist), over full batches or shuffled minibatches of -1 padded
variable-length sequences.
"""
import sys

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from .block import NAMES
from .data import pad


class Trainer:
    """Gradient-descent training of ``block`` (an HMMBlock).

    learn: which of 'A', 'B', 'pi' to update (default: every one the block
    does not hold fixed); the others are frozen.  normalize=True divides the
    loss by the number of symbols in each batch, so that one learning rate
    suits any amount of data; normalize=False is the gist's summed loss.
    """

    def __init__(self, block, optimizer="sgd", learning_rate=1e-2, optimizer_params=None,
                 learn=None, normalize=True, ctx=None):
        learn = tuple(n for n in NAMES if n not in block.fixed) if learn is None else tuple(learn)
        bad = [n for n in learn if n not in NAMES]
        if bad:
            raise ValueError(f"learn may only name {NAMES}, got {bad}")
        held = [n for n in learn if n in block.fixed]
        if held:
            raise ValueError(f"cannot learn {held}: the model holds them as fixed probabilities")
        if not learn:
            raise ValueError("learn names no parameter: there is nothing to train")
        self.block = block
        self.learn = learn
        self.normalize = bool(normalize)
        self.ctx = ctx or mx.cpu()
        params = {}
        for name in NAMES:
            if name in block.fixed:
                continue
            p = getattr(block, block.param_name(name))
            p.grad_req = "write" if name in learn else "null"
            if name in learn:
                params[p.name] = p
        opt_params = {"learning_rate": learning_rate, **(optimizer_params or {})}
        self.gluon_trainer = gluon.Trainer(params, optimizer, opt_params)

    def step(self, obs, n_symbols):
        """One update on obs (batch, T) int32 NDArray; returns the batch's summed ll (NDArray)."""
        with autograd.record():
            ll = self.block(obs).sum()
            loss = -ll / n_symbols if self.normalize else -ll
        loss.backward()
        self.gluon_trainer.step(1)
        return ll

    def fit(self, rows, epochs=1000, batch_size=None, tol=None, seed=None, progress=None,
            callback=None):
        """Train on encoded sequences (a list of int32 arrays, see data.encode).

        An epoch is one pass over the data: one step with batch_size=None (the
        gist's loop), else one step per shuffled minibatch.  Stops early when
        the epoch's log-likelihood per symbol changes by less than tol.
        progress: True/False, or None for a tqdm bar only on a terminal.
        callback(epoch, ll) is called after each epoch.  Returns the history:
        float64 array of each epoch's total log-likelihood, summed over the
        batches as they were before their updates.
        """
        if epochs < 1 or int(epochs) != epochs:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if tol is not None and not tol >= 0:
            raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
        rng = np.random.default_rng(seed)
        total_symbols = sum(len(r) for r in rows)
        full = None
        if batch_size is None or batch_size >= len(rows):
            full = [(mx.nd.array(pad(rows), ctx=self.ctx, dtype=np.int32), total_symbols)]
        show = sys.stderr.isatty() if progress is None else bool(progress)
        history = []
        bar = tqdm(range(int(epochs)), disable=not show, desc="hmmop", unit="epoch", leave=False)
        for epoch in bar:
            total = 0.0
            for obs, count in full or self._minibatches(rows, batch_size, rng):
                # Reading each step's value waits for it: without a wait, Python
                # would queue an epoch's steps in MXNet's engine, holding their memory.
                total += float(self.step(obs, max(count, 1)).asscalar())
            history.append(total)
            bar.set_postfix(ll_per_symbol=f"{history[-1] / total_symbols:.5f}")
            if callback is not None:
                callback(epoch, history[-1])
            if tol is not None and len(history) > 1 and \
                    abs(history[-1] - history[-2]) / total_symbols < tol:
                break
        bar.close()
        return np.array(history)

    def _minibatches(self, rows, batch_size, rng):
        order = rng.permutation(len(rows))
        for start in range(0, len(rows), batch_size):
            chosen = order[start:start + batch_size]
            count = sum(len(rows[i]) for i in chosen)
            yield mx.nd.array(pad(rows, chosen), ctx=self.ctx, dtype=np.int32), count
