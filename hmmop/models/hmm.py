"""HMM: a discrete hidden Markov model trained by gradient descent or EM with hmmop.

    model = HMM(n_states=4, n_symbols=3, seed=0)          # random, seeded
    model = HMM.from_probabilities(A, B, pi)              # or given (keep_zeros=True: structural zeros)
    history = model.fit(sequences, epochs=1000)           # the gist's SGD loop (method="em": Baum-Welch)
    model.score(sequences)                                # total log-likelihood
    log_prob, states = model.decode(sequences)            # Viterbi; predict, predict_proba, sample
    model.save("model.npz"); HMM.load("model.npz")

HMM is the model core (hmmop.models.core.EmissionHMM: A, pi, the fit loops -
EM, gradient descent on hmmop.Trainer with minibatches and kvstore, n_init,
tol, divergence - files and model choice) with a categorical emission
component (hmmop.emissions.CategoricalEmission: B, its M-step and prior).
What is categorical here: the gluon block it trains (HMMBlock on
hmm_forward, which gathers from B rather than reading dense log-emissions),
inference on the categorical kernels (inference.py), the seed gist's
defaults (gradient descent, plain SGD), ``fixed`` parameters, and its file
format (version 1).  The parameters live in NumPy (float64) in the core and
the component; the block's logits are written from them before gradient
training (unless it already holds them) and read back after.

A (N, N) row-stochastic transitions, B (N, M) emissions (states x symbols,
like hmmlearn's emissionprob_), pi (N,) initial probabilities.

Model file format (version 1): a NumPy .npz archive that loads with
allow_pickle=False, holding
  format   0-d str  "hmmop.HMM"
  version  0-d int  1
  A, B, pi          the probabilities, in the model's dtype
  meta     0-d str  JSON: {"n_states": N, "n_symbols": M, "dtype": "float32",
                           "symbols": [token, ...] or null, "fixed": [names],
                           "mask": [names], "tokens": "chars"|"words"|"ints"|null}
  mask_NAME         bool, for each name in meta["mask"]: False at structural zeros
Files without "mask" in meta (older ones) have no structural zeros.
"""
import json
import os

import mxnet as mx
import numpy as np

from .. import _kernel, inference
from ..data import encode_flat, encode_padded, pad
from ..emissions.categorical import CategoricalEmission
from ..fit import distributed
from ..fit.em import fit_em
from ..fit.monitor import Monitor
from ..fit.priors import check_masks, check_prior
from ..nn.hmm_block import NAMES, HMMBlock, check_settings, learn_names, learnable, param_name
from ..ops import checks
from ..ops.checks import check_sizes
from ..ops.ndview import from_host, view
from ..ops.threads import get_num_threads
from .core import ENGINES as CORE_ENGINES
from .core import EmissionHMM

FORMAT, VERSION = "hmmop.HMM", 1
# Probabilities below this become this before their log is taken for the
# logits: no -inf logits (an optimizer's weight decay would turn them to NaN).
_FLOOR = 1e-30
METHODS = ("gradient", "em")
DECODERS = ("viterbi", "map")
_LETTERS = {"pi": "s", "A": "t", "B": "e"}        # hmmlearn's letter of each parameter


class HMM(EmissionHMM):
    """A discrete HMM: the model core with a categorical emission component.

    n_states, n_symbols: N >= 1, M >= 1 (M may be left out when ``symbols``,
    the vocabulary of tokens, is given).  Random initialisation draws each
    row from a flat Dirichlet with ``seed``.  fixed: names among 'A', 'B',
    'pi' held as given probabilities and never learned (see from_probabilities).
    mask: {name: boolean array of the parameter's shape} for learned
    parameters; False marks a structural zero, a probability that stays
    exactly 0 in every method.  tokens: a label of how the data's text
    splits into symbols ("chars", "words", "ints": the command line's), kept
    in model files.  ``block`` is the HMMBlock gradient training runs.
    """

    _distributed_em = True

    def __init__(self, n_states, n_symbols=None, symbols=None, seed=None, dtype="float32",
                 engine="fused", fixed=(), mask=None, ctx=None, tokens=None):
        if symbols is not None:
            symbols = list(symbols)
            if len(set(symbols)) != len(symbols):
                raise ValueError("symbols: the vocabulary has repeated tokens")
            if n_symbols is None:
                n_symbols = len(symbols)
            elif n_symbols != len(symbols):
                raise ValueError(f"n_symbols = {n_symbols} but the vocabulary has {len(symbols)} symbols")
        if n_symbols is None:
            raise ValueError("give n_symbols or a symbol vocabulary (symbols=...)")
        for label, value in (("n_states", n_states), ("n_symbols", n_symbols)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
        # A, B, pi together, in the block's dtype, before anything is allocated
        check_sizes({"A": (n_states, n_states), "B": (n_states, n_symbols), "pi": (n_states,)}, dtype)
        self.n_states, self.n_symbols = int(n_states), int(n_symbols)
        self.symbols = symbols
        self.tokens = tokens        # how text maps to symbols ("chars", "words", "ints"; the CLI's), kept in files
        masks = self._checked_masks(mask, fixed)
        emission = CategoricalEmission(self.n_states, self.n_symbols, mask=masks.get("B"), symbols=symbols)
        EmissionHMM.__init__(self, self.n_states, emission, seed=seed, dtype=dtype, ctx=ctx,
                             mask={n: masks[n] for n in ("A", "pi") if n in masks},
                             engine=engine if engine in CORE_ENGINES else "fused")
        self.mask = masks
        self._engine = engine
        self._fixed = check_settings(engine, fixed)
        # The HMMBlock is made on first use (``block``): a gluon block costs ~3 ms to make, which a model
        # that is only ever fitted by EM, or trained in a stack with others (fit_many), need not pay.
        self._block = None
        self._in_block = False          # whether the block's parameters (or _pending ones) are the model's
        self._pending = None            # {parameter name: NumPy}: what a block not made yet is to hold
        self.set_probabilities(**self._random_probabilities(np.random.default_rng(seed)))
        self.initialized = True

    fixed = property(lambda self: self._fixed, doc="names of the parameters held as given")

    @property
    def block(self):
        """The HMMBlock gradient training runs, holding the model's parameters as logits (made on first use)."""
        if self._block is None:
            block = HMMBlock(self.n_states, self.n_symbols, engine=self._engine, dtype=self.dtype.name,
                             fixed=self._fixed, mask=self.mask)
            block.initialize(ctx=self.ctx)
            self._block = block
            if self._in_block:          # logits a stack trained (fit_many): the block takes them as they are
                for n in NAMES:
                    self._write(n, self._pending[block.param_name(n)])
            self._pending = None
        return self._block

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_probabilities(cls, A, B, pi, symbols=None, keep_zeros=False, mask=None, **kwargs):
        """A model with the given A (N, N), B (N, M), pi (N,).  Learned ones must be
        distributions (rows summing to 1); fixed ones need only be non-negative.
        keep_zeros=True makes every exact zero of a learned parameter a
        structural zero (kept exactly 0 by every method); mask ({name: bool
        array}, False = structural zero) says it per entry and takes precedence."""
        A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
        if A.ndim != 2 or B.ndim != 2:
            raise ValueError(f"A and B must be 2-D, got shapes {A.shape} and {B.shape}")
        mask = dict(mask or {})
        if keep_zeros:
            fixed = kwargs.get("fixed", ())
            for name, value in (("A", A), ("B", B), ("pi", np.asarray(pi, dtype=np.float64))):
                if name not in fixed and name not in mask:
                    mask[name] = value > 0
        model = cls(A.shape[0], B.shape[1], symbols=symbols, mask=mask or None, **kwargs)
        model.set_probabilities(A=A, B=B, pi=pi)
        return model

    @classmethod
    def from_logits(cls, A, B, pi=None, **kwargs):
        """A model whose learned parameters start at the given softmax logits
        (the seed gist's style); pi may be left out for a fixed one set later."""
        A, B = np.asarray(A), np.asarray(B)
        model = cls(A.shape[0], B.shape[1], **kwargs)
        model.set_logits(A=A, B=B, pi=pi)
        return model

    def set_probabilities(self, A=None, B=None, pi=None):
        """Set any of A, B, pi from probabilities (checked)."""
        for name, value in (("A", A), ("B", B), ("pi", pi)):
            if value is None:
                continue
            value = self._checked(name, value, distribution=name not in self.fixed)
            self._store(name, value)
        self._in_block = False

    def set_logits(self, A=None, B=None, pi=None):
        """Set any of the learned A, B, pi from softmax logits."""
        given = {}
        for name, value in (("A", A), ("B", B), ("pi", pi)):
            if value is None:
                continue
            if name in self.fixed:
                raise ValueError(f"{name} is fixed: set it with set_probabilities")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != self._shape(name) or not np.isfinite(value).all():
                raise ValueError(f"{name} logits must be finite with shape {self._shape(name)}, "
                                 f"got shape {value.shape}")
            given[name] = value
        self._to_block()
        for name, value in given.items():
            self._write(name, value)
        self._from_block(given)

    # -- the probabilities ----------------------------------------------------------------------
    def probabilities(self):
        """(A, B, pi) as float64 NumPy arrays."""
        return self._A.copy(), self.emission._B.copy(), self._pi.copy()

    A = property(lambda self: self._A.copy(), doc="(N, N) transition probabilities, float64")
    B = property(lambda self: self.emission._B.copy(), doc="(N, M) emission probabilities, float64")
    pi = property(lambda self: self._pi.copy(), doc="(N,) initial probabilities, float64")

    # -- training -------------------------------------------------------------------------------
    def fit(self, sequences, lengths=None, method="gradient", epochs=1000, optimizer="sgd",
            learning_rate=1e-2, optimizer_params=None, batch_size=None, learn=None, normalize=True,
            tol=None, seed=None, progress=None, callback=None, hybridize=True, n_init=1, prior=None,
            kvstore=None, shard=True, labels=None):
        """Fit to ``sequences`` (see data.encode; ``lengths`` for hmmlearn's (X, lengths) form).

        method: "gradient" (the gist's softmax-logit descent with any MXNet
        optimizer, see Trainer) or "em" (Baum-Welch; ``epochs`` is the
        number of iterations; optimizer settings unused).  learn: which of 'A',
        'B', 'pi' to learn (default: every one not fixed).  n_init: fits from
        that many starts - the current parameters, then random ones drawn with
        ``seed`` - keeping the one with the best final log-likelihood (inits_
        holds each start's; it stays empty for n_init=1; histories_ each
        start's history).  prior: Dirichlet
        concentrations {"A": a, "B": b, "pi": p} (fit/priors.py).  Returns (and
        keeps in history_) each epoch's log-likelihood - plus the log-prior,
        if any - before that epoch's update.  A non-finite objective raises
        DivergenceError, the model keeping the last finite parameters.

        kvstore: None, or "dist_sync" to train as one worker of a data-parallel
        job started by ``hmmop launch`` (fit/distributed.py; docs/distributed.md).
        Every worker passes the same sequences and takes its share of them
        (shard=True: by rank, balanced by symbol count; shard=False: the
        sequences given are already this worker's part).  The workers start from
        rank 0's parameters and sum gradients (or EM's expected counts) and
        log-likelihoods over the job each step, so every worker ends with the
        same model and the same history, that of the whole data; one learning
        rate means the same on 1 or k workers.  Sums travel in float32: expect
        agreement with a one-process fit to about 1e-6 relative.  Writing files
        is left to the caller: usually rank 0 (distributed.kvstore().rank).

        labels: known states of some steps (see EmissionHMM.fit and hmmop/fit/labels.py); gradient
        training with labels runs the dense operator (its engine: 'fused', native where loaded).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        params = self._params_of(learn)
        # The random starts' stream: with HMM(seed=s) and fit(seed=s), default_rng(s)
        # would draw start 1 equal to the model's own initialisation.
        self._starts = np.random.default_rng([int(seed), 1] if isinstance(seed, (int, np.integer)) else seed)
        kept = self._use_emission_prior(prior)
        try:
            return EmissionHMM.fit(self, sequences, lengths, method=method, epochs=epochs, tol=tol,
                                   n_init=n_init, seed=seed, params=params, prior=prior, progress=progress,
                                   callback=callback, optimizer=optimizer, learning_rate=learning_rate,
                                   optimizer_params=optimizer_params, batch_size=batch_size,
                                   normalize=normalize, hybridize=hybridize and self._engine != "unroll",
                                   kvstore=kvstore, shard=shard, labels=labels)
        finally:
            self.emission.emission_prior = kept
            if method == "em":
                self._in_block = False          # EM wrote A, pi, B: the block no longer holds them

    def _em_tasks(self, rows, starts, lengths, epochs=100, tol=None, n_init=1, seed=None, prior=None, learn=None):
        """fit(rows of those sequences, method="em", ...)'s tasks for _kernel.em_categorical_many
        (hmmop.fit_many and hmmop.select run many models' fits in one call): rows (n,) int32 the
        shared symbols, (starts, lengths) this model's sequences in them.  _em_starts_done(tasks,
        outcomes, its rows, its lengths) finishes the fit exactly as fit would."""
        params = self._params_of(learn)
        self._starts = np.random.default_rng([int(seed), 1] if isinstance(seed, (int, np.integer)) else seed)
        kept = self._use_emission_prior(prior)
        try:
            prior = check_prior(prior, {n: self._shape(n) for n in NAMES if n not in self.fixed})
            n_observed = int(sum(np.count_nonzero(rows[s:s + L] >= 0)
                                 for s, L in zip(np.asarray(starts).tolist(), np.asarray(lengths).tolist())))
            return self._em_start_tasks(rows, starts, lengths, n_observed, epochs, tol, params, prior, seed,
                                        "random", n_init)
        finally:
            self.emission.emission_prior = kept

    def _gradient_tasks(self, rows, lengths, n_init=1, seed=None, prior=None, learn=None):
        """What fit(those sequences, method="gradient", n_init=n_init, seed=seed, prior=prior,
        learn=learn) trains, for a stack shared with other models (hmmop.fit_many): (each start's
        block values, each start's snapshot, the learned names, the prior's weights), the starts
        drawn as fit draws them.  rows (n,) int32, lengths: this model's sequences."""
        params = self._params_of(learn)
        self._starts = np.random.default_rng([int(seed), 1] if isinstance(seed, (int, np.integer)) else seed)
        prior = check_prior(prior, {n: self._shape(n) for n in NAMES if n not in self.fixed})
        values, kept = self._gradient_start_values(rows, seed, "random", params, n_init)
        return values, kept, learn_names(params), self._prior_weights(prior)

    def _em_starts_done(self, tasks, outcomes, rows, lengths):
        try:
            return EmissionHMM._em_starts_done(self, tasks, outcomes, rows, lengths)
        finally:
            self._in_block = False

    def fit_supervised(self, sequences, labels, lengths=None, learn=None, prior=None):
        """The supervised estimate from fully labelled ``sequences`` (labels: every step's state), no
        iteration: normalised counts of first states, transitions and emitted symbols, plus the
        Dirichlet ``prior``'s pseudo-counts (a - 1); see EmissionHMM.fit_supervised.  Returns self."""
        params = self._params_of(learn)
        kept = self._use_emission_prior(prior)
        try:
            return EmissionHMM.fit_supervised(self, sequences, labels, lengths, params=params, prior=prior)
        finally:
            self.emission.emission_prior = kept
            self._in_block = False

    def em_iterations(self, *args, **kwargs):
        try:
            return EmissionHMM.em_iterations(self, *args, **kwargs)
        finally:
            self._in_block = False
    em_iterations.__doc__ = EmissionHMM.em_iterations.__doc__

    def _params_of(self, learn):
        """hmmlearn's letters of the names ``learn`` (default: every parameter not fixed)."""
        learn = learnable(self._fixed, learn)
        return "".join(_LETTERS[n] for n in ("pi", "A", "B") if n in learn)

    def _use_emission_prior(self, prior):
        """Give the emission the prior's "B" for a fit; returns the emission's own, to put back."""
        prior_B = None if not isinstance(prior, dict) else prior.get("B")
        kept = self.emission.emission_prior
        if prior_B is not None and "B" not in self.fixed:
            try:
                self.emission.emission_prior = np.broadcast_to(np.asarray(prior_B, dtype=np.float64),
                                                               self._shape("B")).copy()
            except ValueError:
                pass                    # the core's check of the prior says what is wrong
        return kept

    def _prior_names(self):
        return NAMES

    def _held(self):
        return self.fixed

    def _start(self, rows, seed, start, init, params):
        """Start number ``start`` > 0 of n_init: flat-Dirichlet rows from the fit's stream."""
        draws = self._random_probabilities(self._starts)
        self.set_probabilities(**{n: p for n, p in draws.items() if n not in self.fixed})

    def _snapshot(self):
        return self.probabilities()

    def _permute_states(self, order):
        A, B, pi = self.probabilities()
        for name, value in zip(NAMES, (A[order][:, order], B[order], pi[order])):
            if name not in self.fixed:
                self._store(name, value)
        self._in_block = False

    def _restore(self, snap):
        for name, value in zip(NAMES, snap):
            self._store(name, value)
        self._in_block = False

    def _gradient_block(self, labels=None):
        """The HMMBlock on hmm_forward; with labels the core's block on hmm_forward_dense (the
        categorical operator takes no per-step mask), which learns the same softmax logits."""
        if labels is not None:
            return EmissionHMM._gradient_block(self, labels)
        self._to_block()
        return self.block

    def _stack_block(self, n_models, sizes=None):
        """An HMMBlock of n_models stacked models with this one's settings (fit's starts together; with a
        model index input, fit_many's models on their own sequences: sizes is not needed)."""
        block = HMMBlock(self.n_states, self.n_symbols, engine=self._engine, dtype=self.dtype.name,
                         fixed=self.fixed, mask=self.mask, n_models=n_models)
        block.initialize(ctx=self.ctx)
        return block

    def _block_values(self):
        """The block's values {parameter name: NumPy} for the current parameters (what a gradient fit
        starts from), without making a block that is not there."""
        if not self._in_block:
            return {param_name(n, self._fixed): np.asarray(v, dtype=self.dtype) for n, v in self._logits().items()}
        if self._block is None:
            return {name: value.copy() for name, value in self._pending.items()}
        mx.nd.waitall()
        return {self.block.param_name(n): view(self._param(n).data(self.ctx)).copy() for n in NAMES}

    def _take_stacked(self, block, k, learn):
        """The model's parameters ``learn`` from model k of a stacked block (as _store_block takes a
        trained block's, bit for bit); its block (made or not yet) then holds them."""
        values = block.stacked(k)
        if self._block is None:
            self._pending = values
        else:
            for n in NAMES:
                self._write(n, values[self.block.param_name(n)])
        self._in_block = True
        for name, value in zip(NAMES, block.stacked_probabilities(k)):
            if name in learn:
                self._store(name, value)

    def _store_block(self, block, trainer, epoch, history=None, during=False):
        if block is not self.block:
            EmissionHMM._store_block(self, block, trainer, epoch, history, during)
            self._in_block = False
            return
        self._from_block(trainer.learn)

    def _fit_em_distributed(self, rows, lengths, starts, n_observed, epochs, tol, params, prior, progress,
                            callback, kv, labels=None):
        """EM as one worker of a kvstore job: the expected counts and log-likelihoods summed over the
        workers each iteration (through the operator, fit/em.py; with labels, from the C
        forward-backward on log P(X, labels)), rank 0's parameters to start."""
        sequences = self._split(rows, lengths)
        obs = from_host(pad(sequences) if sequences else np.full((1, 1), -1), np.int32, self.ctx)
        n_symbols = distributed.allreduce_sum(kv, [len(rows)], integers=True)[0]
        self._to_block()
        distributed.broadcast(kv, [p.data(self.ctx) for p in self.block.state()])
        self._from_block(NAMES)
        learn = tuple(n for n in NAMES if _LETTERS[n] in params)
        monitor = Monitor(epochs, n_symbols, tol, progress, callback, desc="hmmop EM")
        result = fit_em(lambda A, B, pi: self.block.loglik(mx.nd, A, B, pi, obs),
                        dict(zip(NAMES, self.probabilities())), monitor, learn=learn, prior=prior,
                        masks=self.mask, ctx=self.ctx, reduce=_CountSum(kv, self._shape),
                        counts=None if labels is None else lambda p: self._labelled_counts(p, rows, lengths, starts,
                                                                                           labels))
        for name in learn:
            self._store(name, result[name])
        self._in_block = False
        return monitor.result()

    def _labelled_counts(self, params, rows, lengths, starts, labels):
        """(ll (batch,), expected counts {"A", "B", "pi"}) under ``params`` given the labels."""
        for name in NAMES:
            self._store(name, params[name])
        ll, gamma, trans, start = self._posteriors(rows, lengths, starts, labels=labels)
        stats = self.emission.empty_stats()
        self.emission.accumulate(stats, rows, gamma)
        return ll, {"A": trans, "B": stats["obs"], "pi": start}

    # -- scoring and inference ------------------------------------------------------------------
    def score_sequences(self, sequences, lengths=None, labels=None):
        """Per-sequence log-likelihoods, float64 array (number of sequences,); with labels (known
        states, hmmop/fit/labels.py) log P(sequence, labels), -inf where no path agrees with them."""
        if labels is not None:
            return EmissionHMM.score_sequences(self, sequences, lengths, labels=labels)
        return self._score_padded(self._padded(sequences, lengths))

    def score_samples(self, sequences, lengths=None, labels=None):
        """(log-likelihood, posteriors): the total log-likelihood (a float) and the state
        posteriors as predict_proba gives them, from one forward-backward (hmmlearn's
        score_samples, with the posteriors per sequence); labels: given the known states."""
        if labels is not None:
            return EmissionHMM.score_samples(self, sequences, lengths, labels=labels)
        flat, lens = encode_flat(sequences, self.n_symbols, self.symbols, lengths)
        ll, gamma = inference.posteriors(*self.probabilities(), flat, lengths=lens)
        return float(ll.sum()), gamma

    def decode(self, sequences, lengths=None, algorithm="viterbi", labels=None):
        """(log_prob, states): the most likely state path of each sequence.

        "viterbi": log_prob is the total log-probability of the best paths.
        "map": each step's most probable state (argmax of the posteriors);
        log_prob is then the data's log-likelihood (hmmlearn gives the sum of
        the posterior maxima there).  states: a list of int32 arrays.  labels:
        the best paths that agree with the known states (forced alignment).
        """
        if labels is not None:
            return EmissionHMM.decode(self, sequences, lengths, algorithm=algorithm, labels=labels)
        if algorithm not in DECODERS:
            raise ValueError(f"algorithm must be one of {DECODERS}, got {algorithm!r}")
        flat, lens = encode_flat(sequences, self.n_symbols, self.symbols, lengths)
        if algorithm == "viterbi":
            log_prob, paths = inference.viterbi(*self.probabilities(), flat, lengths=lens)
            return float(log_prob.sum()), paths
        ll, gamma = inference.posteriors(*self.probabilities(), flat, lengths=lens)
        return float(ll.sum()), [g.argmax(axis=1).astype(np.int32) for g in gamma]

    def predict(self, sequences, lengths=None, labels=None):
        """Viterbi state paths: a list of int32 arrays."""
        return self.decode(sequences, lengths, labels=labels)[1]

    def predict_proba(self, sequences, lengths=None, labels=None):
        """State posteriors: a list of (T_i, N) float64 arrays, P(state_t = i | sequence[, labels])."""
        if labels is not None:
            return EmissionHMM.predict_proba(self, sequences, lengths, labels=labels)
        flat, lens = encode_flat(sequences, self.n_symbols, self.symbols, lengths)
        return inference.posteriors(*self.probabilities(), flat, lengths=lens)[1]

    def sample(self, n_sequences, length, seed=None):
        """(sequences, states): lists of n_sequences arrays of ``length`` symbols (tokens
        when the model has a vocabulary) and of their hidden states; seeded."""
        obs, states = inference.sample(*self.probabilities(), n_sequences, length, seed=seed)
        if self.symbols is not None:
            kinds = {type(s) for s in self.symbols}
            vocab = np.array(self.symbols, dtype=None if len(kinds) == 1 else object)
            obs = vocab[obs]
        return list(obs), list(states)

    @property
    def n_free_parameters(self):
        """Free scalars of the learned parameters: per row, its free entries less one
        (fixed parameters and structural zeros do not count)."""
        total = 0
        for name in NAMES:
            if name not in self.fixed:
                free = self.mask.get(name, np.ones(self._shape(name), dtype=bool))
                total += int(free.sum()) - int(np.prod(self._shape(name)[:-1]))
        return total

    def bic(self, sequences, lengths=None):
        """Bayesian information criterion, -2 log-likelihood + k log(observed symbols)."""
        obs = self._padded(sequences, lengths)
        n_observed = np.count_nonzero(obs >= 0)
        return -2 * float(self._score_padded(obs).sum()) + self.n_free_parameters * np.log(n_observed)

    def _score_padded(self, obs):
        """ll (batch,) float64 of padded symbols (batch, T), by the categorical batch driver."""
        obs32, lengths = checks.prepare_obs(np.asarray(obs), self.n_symbols)
        A, B, pi = (np.ascontiguousarray(x) for x in self.probabilities())
        return _kernel.forward(A, B, pi, obs32, lengths, get_num_threads()).ll

    def _padded(self, sequences, lengths):
        return encode_padded(sequences, self.n_symbols, self.symbols, lengths)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to ``path`` (.npz, format in the module docstring)."""
        if self.symbols is not None and not all(isinstance(s, (str, int)) for s in self.symbols):
            raise TypeError("only str or int symbols can be saved")
        A, B, pi = (x.astype(self.dtype) for x in self.probabilities())
        meta = {"n_states": self.n_states, "n_symbols": self.n_symbols, "dtype": self.dtype.name,
                "symbols": self.symbols, "fixed": list(self.fixed), "mask": list(self.mask),
                "tokens": self.tokens}
        masks = {f"mask_{name}": value for name, value in self.mask.items()}
        with open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT), version=np.array(VERSION), A=A, B=B, pi=pi,
                     meta=np.array(json.dumps(meta)), **masks)

    @classmethod
    def load(cls, path, engine="fused", ctx=None):
        """Read a model written by save(); ValueError if ``path`` is not one."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                fields = {k: f[k] for k in f.files}
        except Exception as exc:
            raise ValueError(f"{path!r} is not an hmmop model file (not a readable .npz: {exc})") from None
        missing = {"format", "version", "A", "B", "pi", "meta"} - set(fields)
        if missing or str(fields["format"]) != FORMAT:
            raise ValueError(f"{path!r} is not an hmmop model file (format {FORMAT!r} with A, B, pi, meta)")
        if int(fields["version"]) != VERSION:
            raise ValueError(f"{path!r} has model file version {int(fields['version'])}; "
                             f"this hmmop reads version {VERSION}")
        meta = json.loads(str(fields["meta"]))
        try:
            mask = {name: fields[f"mask_{name}"] for name in meta.get("mask", ())}
        except KeyError as exc:
            raise ValueError(f"{path!r} is not a complete hmmop model file (no {exc.args[0]})") from None
        return cls.from_probabilities(fields["A"], fields["B"], fields["pi"], symbols=meta["symbols"],
                                      dtype=meta["dtype"], fixed=tuple(meta.get("fixed", ())),
                                      mask=mask or None, engine=engine, ctx=ctx,
                                      tokens=meta.get("tokens"))

    # -- helpers --------------------------------------------------------------------------------
    def _store(self, name, value):
        """The model's own copy of parameter ``name`` (float64 NumPy)."""
        value = np.array(value, dtype=np.float64, order="C")
        if name == "B":
            self.emission._B = value
        else:
            setattr(self, f"_{name}", value)

    def _to_block(self):
        """Write the model's parameters into the block (learned ones as logits), unless it holds them."""
        if self._in_block:
            if self._block is None:
                self.block                  # made now: it takes the pending logits
            return
        for name, value in self._logits().items():
            self._write(name, value)
        self._in_block = True

    def _logits(self):
        """{name: float64 NumPy} what the block holds for the model's parameters: logits of the learned
        ones (log of the probabilities; 0 at structural zeros), the fixed ones' probabilities."""
        out = {}
        for name, value in zip(NAMES, self.probabilities()):
            if name not in self.fixed:
                with np.errstate(divide="ignore"):
                    value = np.log(np.maximum(value, _FLOOR))
                if name in self.mask:
                    value = np.where(self.mask[name], value, 0.0)   # masked logits: never read, never move
            out[name] = value
        return out

    def _from_block(self, names):
        """The model's parameters ``names`` from the block's (after training, or new logits); the
        others keep their values (the block holds them to rounding)."""
        values = self.block.probabilities(mx.nd, self.block.values(self.ctx))
        for name, value in zip(NAMES, values):
            if name in names:
                self._store(name, value.asnumpy())
        self._in_block = True

    def _param(self, name):
        return getattr(self.block, self.block.param_name(name))

    def _write(self, name, value):
        """Copy ``value`` (NumPy) into parameter ``name``'s storage.

        A copy into param.data() rather than gluon's set_data, whose indexing
        machinery costs ~0.1 ms a call.  The same thing here: the block lives
        on one context and no kvstore holds a copy of it - also in distributed
        training, where the servers only sum gradients and each worker keeps
        and updates its own copy (the workers agree by starting from rank 0's
        values, broadcast when a fit starts).  set_data would be wrong there
        besides: with a gluon Trainer that updates on a dist kvstore, it
        resets the store, which raises.
        """
        from_host(value, self.dtype, self.ctx).copyto(self._param(name).data(self.ctx))

    def _shape(self, name):
        n, m = self.n_states, self.n_symbols
        return {"A": (n, n), "B": (n, m), "pi": (n,)}[name]

    def _random_probabilities(self, rng):
        """{name: probabilities}, each row a flat-Dirichlet draw restricted to its mask."""
        n, m = self.n_states, self.n_symbols
        draws = {"A": rng.dirichlet(np.ones(n), size=n), "B": rng.dirichlet(np.ones(m), size=n),
                 "pi": rng.dirichlet(np.ones(n))}
        for name, free in self.mask.items():
            value = np.where(free, draws[name], 0.0)
            draws[name] = value / value.sum(axis=-1, keepdims=True)
        return draws

    def _checked_masks(self, mask, fixed=()):
        """{name: bool array} of the learned parameters whose mask has a False (others: none)."""
        return check_masks(mask, {name: self._shape(name) for name in NAMES}, fixed)

    def _checked(self, name, value, distribution):
        value = np.asarray(value, dtype=np.float64)
        if value.shape != self._shape(name):
            raise ValueError(f"{name} must have shape {self._shape(name)}, got {value.shape}")
        if not np.isfinite(value).all() or (value < 0).any():
            raise ValueError(f"{name} must hold finite non-negative probabilities")
        if name in self.mask and (value[~self.mask[name]] != 0).any():
            raise ValueError(f"{name} has non-zero probabilities where its mask holds structural zeros")
        if distribution:
            sums = value.sum(axis=-1)
            if not np.allclose(sums, 1.0, atol=1e-6):
                raise ValueError(f"{name} must sum to 1 along its last axis, got sums {np.round(sums, 6)}")
        return value

    def __repr__(self):
        return (f"HMM(n_states={self.n_states}, n_symbols={self.n_symbols}, dtype={self.dtype.name}, "
                f"engine={self._engine!r}, fixed={self.fixed}, masked={tuple(self.mask)})")


class _CountSum:
    """EM over a kvstore: sums the log-likelihood and the expected counts over the workers."""

    def __init__(self, kv, shape):
        self.shapes = [(1,)] + [shape(n) for n in NAMES]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.buffer = mx.nd.zeros(sum(self.sizes), dtype="float32")
        self.summer = distributed.Allreduce(kv, [self.buffer])

    def __call__(self, ll, counts):
        flat = np.concatenate([np.atleast_1d(ll)] + [np.ravel(counts[n]) for n in NAMES])
        self.buffer[:] = flat.astype(np.float32)
        summed = self.summer([self.buffer])[0].asnumpy().astype(np.float64)
        parts = np.split(summed, np.cumsum(self.sizes)[:-1])
        return float(parts[0][0]), {n: p.reshape(s) for n, p, s in zip(NAMES, parts[1:], self.shapes[1:])}
