"""What every fitting loop shares: the epoch loop with its progress bar, the history
of the objective, the tolerance test, the callback, and the divergence check."""
import math
import sys

import numpy as np
from tqdm.auto import tqdm


class DivergenceError(RuntimeError):
    """A fit's objective became non-finite (NaN or -inf).

    ``epoch`` is the epoch where it happened; the model keeps the last
    parameters whose objective was finite, and ``history`` (also the model's
    history_) holds the finite part of the history.
    """

    def __init__(self, message, epoch, history):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


class Monitor:
    """Epoch loop of a fit: ``for epoch in monitor: ...; if monitor.report(value): break``.

    n_symbols: symbols in the data (tol and the bar are per symbol).  tol:
    stop when the objective per symbol changes by less than this.  progress:
    True/False, or None for a tqdm bar only when stderr is a terminal.
    callback(epoch, value) after each report.  advice: what the divergence
    error suggests (e.g. a smaller learning rate).
    """

    def __init__(self, epochs, n_symbols, tol=None, progress=None, callback=None, advice="",
                 desc="hmmop"):
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if tol is not None and not tol >= 0:
            raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
        self.epochs = int(epochs)
        self.n_symbols = max(int(n_symbols), 1)
        self.tol, self.callback, self.advice = tol, callback, advice
        show = sys.stderr.isatty() if progress is None else bool(progress)
        self._bar = tqdm(range(self.epochs), disable=not show, desc=desc, unit="epoch", leave=False)
        self.history = []
        self.epoch = -1
        self._finite_seen = False

    def __iter__(self):
        try:
            for self.epoch in self._bar:
                yield self.epoch
        finally:
            self._bar.close()

    def check(self, value):
        """Raise DivergenceError if value (the objective, or a minibatch's part of it) is not
        finite.  Call it for every step: it tells a bad start from a divergence."""
        if math.isfinite(value):
            self._finite_seen = True
            return
        if not self._finite_seen:
            raise DivergenceError(
                f"the objective is {value} at the first step: the data has probability 0 under the "
                f"starting parameters (a symbol a state cannot emit, or a forbidden transition?)",
                self.epoch, self.result())
        was = f" (it was {self.history[-1]:.6g} at epoch {self.epoch - 1})" if self.history else ""
        raise DivergenceError(
            f"training diverged at epoch {self.epoch}: the objective became {value}{was}. The model "
            f"keeps the last parameters with a finite objective. {self.advice}".rstrip(),
            self.epoch, self.result())

    def report(self, value):
        """Record this epoch's objective; returns True when the fit has converged (tol)."""
        self.check(value)
        self.history.append(float(value))
        if not self._bar.disable:       # (set_postfix costs ~10 us even on a hidden bar)
            self._bar.set_postfix(ll_per_symbol=f"{value / self.n_symbols:.5f}")
        if self.callback is not None:
            self.callback(self.epoch, value)
        return self.tol is not None and len(self.history) > 1 and \
            abs(self.history[-1] - self.history[-2]) / self.n_symbols < self.tol

    def result(self):
        """The history as a float64 array."""
        return np.array(self.history, dtype=np.float64)
