"""EmissionHMM: one HMM core - initial and transition probabilities - and one emission component.

    model = GaussianHMM(3, n_features=2)             # a core holding a GaussianEmission
    model.fit(X, lengths)                            # EM (default) or method="gradient"
    model.score(X, lengths); model.decode(X, lengths); model.predict_proba(X, lengths)

The core owns what every family shares: pi (N,) and A (N, N) with their
structural zeros and Dirichlet priors, the fit loops (EM, gradient descent on
any MXNet optimizer, n_init, tol, divergence, progress), decoding,
posteriors, scoring, sampling of the state path, model choice and files.  The
emission component (hmmop.emissions) knows only its family: its parameters,
log-likelihoods, EM statistics and M-step, sampler, free parameters and file
fields; the core never asks which family it holds.

Everything runs on hmm_forward_dense's C batch driver: inference and EM call
the kernel directly (the E-step is one forward-backward in double whose
gradients are the expected counts, as in hmmop.em), gradient training goes
through the operator under MXNet autograd.

Data: X is a list of (T_i, D) arrays, one (T, D) array, or hmmlearn's
concatenated (n, D) with ``lengths``.  A row of NaN is a missing
observation: its log-emission is 0 in every state, so it is summed out.
Results per sequence are lists, as hmmop.HMM gives them.

Model files: format "hmmop.HMM", version 2 (a NumPy .npz loading with
allow_pickle=False): format, version, family (0-d str), A, pi, the emission's
fields as emission_NAME, meta (JSON: n_states, dtype, family, the emission's
meta, mask names) and mask_NAME for A/pi structural zeros.  hmmop.load reads
both versions (version 1: hmmop.HMM's categorical files).
"""
import itertools
import json
import math
import os

import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import _kernel
from ..fit.labels import check_labels, supervised_counts
from ..fit.monitor import DivergenceError, Monitor
from ..fit.priors import check_masks, check_prior, log_prior
from ..fit import distributed
from ..fit.together import TogetherTrainer, elementwise
from ..fit.trainer import Trainer, check_learning_rate
from ..nn.hmm_block import _masked_softmax
from ..ops import native
from ..ops.checks import check_sizes
from ..ops.dense import OP_TYPE as DENSE_OP
from ..ops.dense import _native_dense
from ..ops.model_axis import DENSE_OP_TYPE_BY_MODEL as DENSE_BY_MODEL_OP
from ..ops.ndview import view
from ..ops.threads import get_num_threads

FORMAT, VERSION = "hmmop.HMM", 2
CORE = ("A", "pi")
METHODS = ("em", "gradient")
DECODERS = ("viterbi", "map")
ENGINES = ("fused", "native", "custom", "ndarray")
_FLOOR = 1e-30


class EmissionHMM:
    """An HMM of N states whose emissions come from ``emission`` (an hmmop.emissions component).

    dtype: of gradient training and of the arrays in model files (inference
    and EM compute in float64).  mask: {"A": bool (N, N), "pi": bool (N,)},
    False marking a structural zero (exactly 0 in every method).  engine: the
    operator gradient training uses: 'fused' (native where loaded, else the
    CustomOp), 'native', 'custom' (CustomOp, Cython kernel) or 'ndarray'.
    """

    def __init__(self, n_states, emission, seed=None, dtype="float32", ctx=None, mask=None, engine="fused"):
        check_sizes({"A": (n_states, n_states), "pi": (n_states,)}, dtype)      # before any allocation
        if isinstance(n_states, bool) or int(n_states) != n_states or n_states < 1:
            raise ValueError(f"n_states must be a positive integer, got {n_states!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.n_states = int(n_states)
        self.emission = emission
        self.dtype = np.dtype(dtype)
        self.ctx = ctx or mx.cpu()
        self.engine = engine
        self.seed = seed
        self.mask = self._checked_masks(mask)
        n = self.n_states
        self._A = self._masked_uniform("A", np.full((n, n), 1.0 / n))
        self._pi = self._masked_uniform("pi", np.full(n, 1.0 / n))
        self.initialized = False     # emission parameters set (given, loaded or fitted)
        self.history_ = np.array([])
        self.histories_ = []
        self.inits_ = np.array([])

    # -- parameters -----------------------------------------------------------------------------
    A = property(lambda self: self._A.copy(), doc="(N, N) transition probabilities, float64")
    pi = property(lambda self: self._pi.copy(), doc="(N,) initial probabilities, float64")

    def set_probabilities(self, A=None, pi=None):
        """Set A (N, N) and/or pi (N,): distributions (rows summing to 1), zero where masked."""
        for name, value in (("A", A), ("pi", pi)):
            if value is None:
                continue
            shape = self._shape(name)
            value = np.array(value, dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            if not np.isfinite(value).all() or (value < 0).any():
                raise ValueError(f"{name} must hold finite non-negative probabilities")
            sums = value.sum(axis=-1)
            if not np.allclose(sums, 1.0, atol=1e-6):
                raise ValueError(f"{name} must sum to 1 along its last axis, got sums {np.round(sums, 6)}")
            if name in self.mask and (value[~self.mask[name]] != 0).any():
                raise ValueError(f"{name} has non-zero probabilities where its mask holds structural zeros")
            setattr(self, f"_{name}", value)            # as given (hmmlearn's convention), not renormalised

    @property
    def n_free_parameters(self):
        """Free scalars: per row of A and pi its free entries less one, plus the emission's."""
        total = self.emission.n_free_parameters
        for name in CORE:
            free = self.mask.get(name, np.ones(self._shape(name), dtype=bool))
            total += int(free.sum()) - int(np.prod(self._shape(name)[:-1]))
        return total

    # -- data -----------------------------------------------------------------------------------
    def _data(self, X, lengths=None, observed=False):
        """(rows (n, D) float64 checked by the emission, lengths, starts) of hmmlearn's form; observed:
        and the count of observed (not missing) rows, from the emission's checking pass where it
        counts them (Emission.prepare_counted; else prepare, then missing_rows)."""
        if observed:
            prepare_counted = getattr(self.emission, "prepare_counted", None)
            if prepare_counted is not None:
                rows, lengths, n_missing = prepare_counted(X, lengths)
            else:
                rows, lengths = self.emission.prepare(X, lengths)
                n_missing = int(np.count_nonzero(self.emission.missing_rows(rows)))
            return rows, lengths, np.cumsum(lengths) - lengths, len(rows) - n_missing
        rows, lengths = self.emission.prepare(X, lengths)
        return rows, lengths, np.cumsum(lengths) - lengths

    def _log_emission(self, rows, out=None, labels=None):
        """(n, N) float64 log-emissions of rows; -inf where ``labels`` (a fit.labels.Labels) rule a state out."""
        le = np.ascontiguousarray(self.emission.log_likelihood(rows, out=out), dtype=np.float64)
        return le if labels is None else labels.apply(le)

    def _labels(self, labels, lengths):
        """Checked labels (fit.labels.Labels) of data with ``lengths``, or None."""
        return check_labels(labels, lengths, self.n_states)

    def _split(self, values, lengths):
        ends = np.cumsum(lengths)
        return [values[e - L:e] for e, L in zip(ends.tolist(), lengths.tolist())]

    # -- scoring and inference ------------------------------------------------------------------
    def score_sequences(self, X, lengths=None, labels=None):
        """Per-sequence log-likelihoods, float64 (n_sequences,).  labels (fit/labels.py): known states
        of some steps; then log P(sequence, labels), -inf where no state path agrees with them."""
        rows, lengths, starts = self._data(X, lengths)
        return self._score_rows(rows, lengths, self._labels(labels, lengths))

    def _score_rows(self, rows, lengths, labels=None):
        """Per-sequence log-likelihoods (n_sequences,) float64 of rows already prepared (as _data gives
        them: a categorical model's symbol codes, not its tokens), labels a checked Labels or None."""
        lengths = np.asarray(lengths, dtype=np.int64)
        return _kernel.forward_dense(self._A, self._pi, self._log_emission(rows, labels=labels),
                                     np.cumsum(lengths) - lengths, lengths, get_num_threads()).ll

    def score(self, X, lengths=None, labels=None):
        """Total log-likelihood of the sequences (a float); with labels, log P(X, labels)."""
        return float(self.score_sequences(X, lengths, labels=labels).sum())

    def _posteriors(self, rows, lengths, starts, buffers=None, labels=None):
        """(ll, gamma, trans, start) of one forward-backward; buffers: None or two (n, N) float64 arrays
        for the log-emissions and the posteriors (an EM loop reuses them)."""
        le_out, gamma_out = buffers if buffers is not None else (None, None)
        return _kernel.posteriors_dense(self._A, self._pi, self._log_emission(rows, out=le_out, labels=labels),
                                        starts, lengths, get_num_threads(), gamma=gamma_out)

    def score_samples(self, X, lengths=None, labels=None):
        """(log-likelihood, posteriors): the total log-likelihood and predict_proba's posteriors,
        from one forward-backward (hmmlearn's score_samples, posteriors per sequence); with labels,
        log P(X, labels) and P(state_t | X, labels)."""
        rows, lengths, starts = self._data(X, lengths)
        ll, gamma, _, _ = self._posteriors(rows, lengths, starts, labels=self._labels(labels, lengths))
        return float(ll.sum()), self._gamma_list(ll, gamma, lengths)

    def predict_proba(self, X, lengths=None, labels=None):
        """State posteriors: a list of (T_i, N) float64 arrays, P(state_t = i | sequence[, labels]);
        NaN rows for a sequence no state path can explain."""
        return self.score_samples(X, lengths, labels=labels)[1]

    def _gamma_list(self, ll, gamma, lengths):
        out = self._split(gamma, lengths)
        for b in np.flatnonzero(ll == -np.inf):
            out[b] = np.full_like(out[b], np.nan)       # no posterior of an impossible sequence
        return out

    def decode(self, X, lengths=None, algorithm="viterbi", labels=None):
        """(log_prob, states): the most likely state path of each sequence.

        "viterbi": log_prob is the total log-probability of the best paths
        (ties broken as hmmlearn breaks them).  "map": each step's most
        probable state; log_prob is then the data's log-likelihood.  states:
        a list of int32 arrays.  labels: known states of some steps (fit/labels.py):
        the best path among those that agree with them (forced alignment); ValueError
        naming the sequence and step where none does.
        """
        if algorithm not in DECODERS:
            raise ValueError(f"algorithm must be one of {DECODERS}, got {algorithm!r}")
        rows, lengths, starts = self._data(X, lengths)
        labels = self._labels(labels, lengths)
        log_emission = self._log_emission(rows, labels=labels)
        if algorithm == "viterbi":
            log_prob, paths = _kernel.viterbi_dense(self._A, self._pi, log_emission, starts, lengths,
                                                    get_num_threads())
            self._check_possible(log_prob, labels, rows)
            return float(log_prob.sum()), self._split(paths, lengths)
        ll, gamma, _, _ = _kernel.posteriors_dense(self._A, self._pi, log_emission, starts, lengths,
                                                   get_num_threads())
        self._check_possible(ll, labels, rows)
        return float(ll.sum()), [g.argmax(axis=1).astype(np.int32) for g in self._split(gamma, lengths)]

    def predict(self, X, lengths=None, labels=None):
        """Viterbi state paths: a list of int32 arrays (with labels: the best that agree with them)."""
        return self.decode(X, lengths, labels=labels)[1]

    def _check_possible(self, ll, labels, rows):
        """ValueError naming the first sequence and step that no state path agreeing with ``labels``
        explains (ll (n_sequences,) its -inf); nothing without labels."""
        if labels is None:
            return
        bad = np.flatnonzero(ll == -np.inf)
        if bad.size:
            raise ValueError(f"labels: {self._why_impossible(int(bad[0]), labels, rows)}")

    def _why_impossible(self, b, labels, rows):
        s, L = int(labels.starts[b]), int(labels.lengths[b])
        return labels.why_impossible(b, self._log_emission(rows[s:s + L]), self._A > 0, self._pi > 0)

    def sample(self, n_sequences, length, seed=None):
        """(X, states): lists of n_sequences arrays of ``length`` observations (length, D) and their
        hidden states; seeded (the state paths by the C sampler, the observations by the emission)."""
        for label, value in (("n_sequences", n_sequences), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        rng = np.random.default_rng(seed)
        uniforms = rng.random((int(n_sequences), int(length), 2))
        _, states = _kernel.sample(self._A, np.ones((self.n_states, 1)), self._pi, uniforms, get_num_threads())
        X = self.emission.sample(states.ravel(), rng)
        return list(X.reshape((int(n_sequences), int(length)) + X.shape[1:])), list(states)

    def aic(self, X, lengths=None):
        """Akaike information criterion, -2 log-likelihood + 2 k (k = n_free_parameters)."""
        return -2 * self.score(X, lengths) + 2 * self.n_free_parameters

    def bic(self, X, lengths=None):
        """Bayesian information criterion, -2 log-likelihood + k log(observed rows)."""
        rows, lengths, _ = self._data(X, lengths)
        n_observed = int((~self.emission.missing_rows(rows)).sum())
        return -2 * float(self._score_rows(rows, lengths).sum()) + self.n_free_parameters * np.log(max(n_observed, 1))

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X, lengths=None, method="em", epochs=100, tol=None, n_init=1, seed=None, params=None,
            prior=None, progress=None, callback=None, optimizer="adam", learning_rate=0.05,
            optimizer_params=None, init="kmeans", batch_size=None, normalize=True, hybridize=True,
            kvstore=None, shard=True, labels=None):
        """Fit to X (see the module docstring); returns (and keeps in history_) each epoch's objective.

        method: "em" (Baum-Welch; ``epochs`` iterations, hmmlearn's order: E-step, M-step, then the
        convergence test) or "gradient" (any MXNet optimizer on softmax logits of A and pi and the
        emission's unconstrained parameters, hmmop.Trainer's loop: full batch, or shuffled
        minibatches of ``batch_size`` sequences drawn with ``seed``; normalize: the loss per
        observed row of each batch, else summed).  tol: stop when the objective per
        observed row changes by less than this.  params: which parameters to learn, hmmlearn's
        letters: 's' (pi), 't' (A) and the emission's (Gaussian: 'm' means, 'c' covariances);
        default all.  prior: Dirichlet concentrations {"A": a, "pi": p} (as hmmop.HMM's; the
        emission's priors are its own settings).  n_init: fits from that many starts - the
        current parameters (or, for a model not initialised yet, the emission's data-driven
        start, ``init``, seeded by ``seed``), then starts drawn with ``seed`` - keeping the best
        final log-likelihood (inits_ each start's, histories_ each history).  The history
        holds, before each update, the log-likelihood plus the log-prior of A and pi.  A
        non-finite objective raises DivergenceError (the model keeps the last finite parameters).

        kvstore: None, or "dist_sync" (or such a KVStore) to train as one worker of a
        data-parallel job started by ``hmmop launch`` (gradient training; see
        docs/distributed.md and hmmop.HMM.fit): every worker passes the same data and takes
        its share of the sequences (shard=True) or passes its own part (shard=False).

        labels: the known states of some steps (fit/labels.py: one int array per sequence, -1 where
        unknown, or boolean (T_i, N) masks; or the concatenated form): both methods then maximise
        log P(X, labels) - labelled steps anchor which state is which, the others are summed out -
        and history_ holds that objective.  Fully labelled data: one EM iteration gives the
        supervised estimate (fit_supervised computes it directly).  ValueError naming the sequence
        and step where no state path of a start's parameters agrees with the labels.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
            raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
        params = self._checked_params(params)
        if isinstance(prior, dict) and set(prior) - set(self._prior_names()):
            raise ValueError(f"prior may only name {self._prior_names()} (the emission's priors are its own "
                             f"settings), got {sorted(prior)}")
        prior = check_prior(prior, {n: self._shape(n) for n in self._prior_names() if n not in self._held()})
        Monitor(epochs, 1, tol, progress=False)          # checks epochs and tol before any work
        if method == "gradient":
            check_learning_rate(learning_rate)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        kv = distributed.kvstore(kvstore) if isinstance(kvstore, str) else kvstore
        if kv is not None and method == "em" and not self._distributed_em:
            raise ValueError(f"{type(self).__name__}: kvstore works with method='gradient' (EM over a "
                             f"kvstore is hmmop.HMM's)")
        # EM from parameters already set, one start: the data check and the first E-step's
        # log-emissions in one pass over X where the emission offers it (prepare_scored)
        scored = None
        if method == "em" and n_init == 1 and kv is None and labels is None and self.initialized \
                and epochs > 0 and hasattr(self.emission, "prepare_scored"):
            scored = self.emission.prepare_scored(X, lengths)
        if scored is not None:
            rows, lengths, n_missing, first_le = scored
            starts, n_observed = np.cumsum(lengths) - lengths, len(rows) - n_missing
        else:
            rows, lengths, starts, n_observed = self._data(X, lengths, observed=True)
            first_le = None
        labels = self._labels(labels, lengths)
        if kv is not None:
            rows, lengths, starts, labels = self._my_share(kv, rows, lengths, shard, labels)
            n_observed = int((~self.emission.missing_rows(rows)).sum())
            n_observed = distributed.allreduce_sum(kv, [n_observed], integers=True)[0]
        if n_observed == 0:
            raise ValueError("X: no observed row to fit (every row is missing or there is none)")
        gradient = {"optimizer": optimizer, "learning_rate": learning_rate, "optimizer_params": optimizer_params,
                    "batch_size": batch_size, "normalize": normalize, "hybridize": hybridize, "seed": seed}
        if method == "em" and n_init > 1 and kv is None and labels is None and \
                self._em_together(prior, callback, progress):
            return self._fit_em_starts(rows, lengths, starts, n_observed, epochs, tol, params, prior, seed, init,
                                       n_init)
        if method == "gradient" and n_init > 1 and kv is None and labels is None and \
                self._gradient_together(optimizer, callback):
            return self._fit_gradient_starts(rows, lengths, starts, epochs, tol, params, prior, progress, init,
                                             n_init, **gradient)
        def take(start):                    # one start after another
            if start or not self.initialized:
                self._start(rows, seed, start, init, params)
                if labels is not None:
                    self._align_start(rows, labels)
            if labels is not None:
                self._check_possible(self._score_rows(rows, lengths, labels), labels, rows)
            args = (rows, lengths, starts, n_observed, epochs, tol, params, prior, progress, callback)
            if method == "em":
                return self._fit_em(*args, labels=labels, first_le=first_le if start == 0 else None) \
                    if kv is None else self._fit_em_distributed(*args, kv, labels=labels)
            return self._fit_gradient(*args, kv=kv, labels=labels, **gradient)

        def score():
            ll = float(self._score_rows(rows, lengths, labels).sum())
            return ll if kv is None else distributed.allreduce_sum(kv, [ll])[0]
        return self._starts_ended(n_init, take, score)

    # -- n_init gradient starts trained together (one stack of models; see hmmop/fit/together.py) ------
    def _gradient_together(self, optimizer, callback):
        """Whether fit's gradient starts can train as one stack: a CPU model, an optimizer acting
        elementwise, no callback (it would see one start at a time)."""
        return self._starts_together and callback is None and elementwise(optimizer) \
            and self.ctx.device_type == "cpu"

    def _stack_block(self, n_models, sizes=None):
        """A gluon block of n_models models of this one's kind, parameters (K, ...), with
        set_stack(k, values), stacked(k) and the trainer's protocol: every model scores every sequence
        (n_init's starts together), or with sizes (K,) model k its sizes[k] sequences, the rows grouped
        by model in order, and a model index input (hmmop.fit_many)."""
        block = _DenseHMMBlock(self, n_models=n_models, sizes=sizes)
        block.initialize(ctx=self.ctx)
        return block

    def _gradient_tasks(self, X, lengths=None, n_init=1, seed=None, prior=None, params=None, init="kmeans"):
        """What fit(X, lengths, method="gradient", n_init=n_init, seed=seed, prior=prior, params=params,
        init=init) trains, for a stack shared with other models (hmmop.fit_many): (each start's block
        values, each start's snapshot, the learned names, the prior's weights), the starts drawn as
        fit draws them, and (rows, lengths) of the checked data."""
        params = self._checked_params(params)
        prior = check_prior(prior, {n: self._shape(n) for n in self._prior_names() if n not in self._held()})
        rows, lengths, _, n_observed = self._data(X, lengths, observed=True)
        if n_observed == 0:
            raise ValueError("X: no observed row to fit (every row is missing or there is none)")
        values, kept = self._gradient_start_values(rows, seed, init, params, n_init)
        learn = _DenseHMMBlock(self).learn_names(params)
        return (values, kept, learn, self._prior_weights(prior)), rows, lengths

    def _block_values(self):
        """The gradient block's values {name: NumPy of the model's dtype} for the current parameters."""
        return _DenseHMMBlock.values_of(self)

    def _take_stacked(self, block, k, learn):
        """The model's parameters ``learn`` from model k of a stacked block (as _store_block takes a
        trained block's).  Where the emission cannot hold them, DivergenceError (the model keeps the
        start's parameters)."""
        single = _DenseHMMBlock(self)
        single.initialize(ctx=self.ctx)
        single.restore(block.stacked(k))
        try:
            single.store_into(self, learn)
        except ValueError as exc:
            raise DivergenceError(f"training diverged: the parameters left the range the emission can hold "
                                  f"({exc}). The model keeps its start's parameters.", 0, np.array([])) from None

    def _fit_gradient_starts(self, rows, lengths, starts, epochs, tol, params, prior, progress, init, n_init,
                             optimizer, learning_rate, optimizer_params, batch_size, normalize, hybridize, seed):
        """fit's gradient training from n_init starts as one stack (hmmop.fit.together): the starts fit
        draws, each trained as fit trains it alone, then fit's choice among them."""
        values, kept = self._gradient_start_values(rows, seed, init, params, n_init)
        block = self._stack_block(n_init)
        for k, v in enumerate(values):
            block.set_stack(k, v)
        trainer = TogetherTrainer(block, optimizer, learning_rate, optimizer_params,
                                  learn=block.learn_names(params), normalize=normalize, ctx=self.ctx,
                                  prior=self._prior_weights(prior))
        if hybridize:
            block.hybridize()
        outcomes = trainer.fit(self._split(rows, lengths), epochs=epochs, batch_size=batch_size, tol=tol,
                               seed=seed, progress=progress, counts=self._observed_counts(rows, lengths))
        return self._gradient_starts_done(block, trainer.learn, outcomes, kept, rows, lengths)

    def _gradient_start_values(self, rows, seed, init, params, n_init):
        """The n_init starts fit trains, drawn in fit's order: ([block values {name: NumPy}],
        [the model's snapshot at each start])."""
        values, kept = [], []
        for start in range(n_init):
            if start or not self.initialized:
                self._start(rows, seed, start, init, params)
            values.append(self._block_values())
            kept.append(self._snapshot())
        return values, kept

    def _gradient_starts_done(self, block, learn, outcomes, kept, rows, lengths, first=0):
        """fit's end after the stack's models first .. first + len(outcomes) - 1 trained (outcomes:
        TogetherTrainer.fit's; kept: each start's snapshot, for the parameters not learned): each
        start's final log-likelihood in inits_, histories_, the best start's parameters and history_;
        the first start that diverged raises its DivergenceError, the model holding that start's
        last finite parameters (as fit leaves it)."""
        def take(k):
            history, error = outcomes[k]
            self._restore(kept[k])
            self._take_stacked(block, first + k, learn)
            if error is not None:
                raise error
            return history
        return self._starts_ended(len(outcomes), take, lambda: float(self._score_rows(rows, lengths).sum()))

    def _starts_ended(self, n_starts, take, score):
        """n_init's loop over the starts, in order: take(i) leaves start i's final parameters in the model
        (fitting it, or taking what a run of all the starts together left) and returns its history, or
        raises its DivergenceError (then history_ is the error's, as fit leaves it); score() is the
        model's final log-likelihood.  Then inits_ (each start's score; empty for one start),
        histories_, and the best start's parameters and history_."""
        best, inits, histories = None, [], []
        for i in range(n_starts):
            try:
                history = take(i)
            except DivergenceError as exc:
                self.history_ = exc.history
                raise
            histories.append(history)
            if n_starts == 1:
                best = (None, history, None)
                break
            best = self._kept_start(best, score(), history, inits)
        return self._chosen_start(best, inits, histories)

    def _prior_weights(self, prior):
        """Gradient training's prior weights {name: (a - 1) where not a structural zero}."""
        return {n: (a - 1) * self.mask.get(n, 1) for n, a in prior.items()}

    def _observed_counts(self, rows, lengths):
        """The observed (not missing) rows of each sequence: what gradient training normalises by."""
        return [len(r) - int(m.sum()) for r, m in zip(self._split(rows, lengths),
                                                       self._split(self.emission.missing_rows(rows), lengths))]

    def _kept_start(self, best, ll, history, inits):
        """n_init's running choice (ll, history, snapshot) after a start ending at ll (added to inits):
        the first of the best."""
        inits.append(ll)
        return (ll, history, self._snapshot()) if best is None or ll > best[0] else best

    def _chosen_start(self, best, inits, histories):
        """fit's end: inits_, histories_, the chosen start's history_ and parameters (snapshot None: the
        model's own, a single start's)."""
        self.inits_ = np.array(inits)
        self.histories_ = histories
        self.history_ = best[1]
        if best[2] is not None:
            self._restore(best[2])
        return self.history_

    # the n_init starts of an EM fit run together, one C call (where the emission's whole loop is in C)
    _starts_together = True

    def _em_together(self, prior, callback, progress):
        """Whether EM can run in C without reporting each iteration: the emission has the whole loop
        in C, a CPU model, no callback, no bar shown, the emission's own prior for it."""
        import sys
        return self._starts_together and getattr(self.emission, "fused_em_arrays", None) is not None \
            and self._em_in_c(prior, callback, None) \
            and not (sys.stderr.isatty() if progress is None else progress)

    def _em_in_c(self, prior, callback, labels):
        """Whether the emission's whole EM loop can run in C (em_iterations' fused path): it has one, a
        CPU model, no callback, no labels, and the emission's own prior for its parameters."""
        return getattr(self.emission, "fused_em", None) is not None and callback is None and labels is None \
            and self.ctx.device_type == "cpu" \
            and ("B" not in prior or np.array_equal(prior["B"], getattr(self.emission, "emission_prior", None)))

    def _em_task(self, starts, lengths, n_iter, tol, params, prior):
        """One task of _kernel.em_categorical_many: fit's EM from the current parameters on the sequences
        (starts, lengths) of the shared rows - em_iterations' loop (objective "map", tol absolute on
        the |change| rule: fit's).  The task's arrays are copies; _em_task_done stores the result."""
        B, prior_B, mask_B = self.emission.fused_em_arrays()
        learn = [name for letter, name in (("t", "A"), ("s", "pi")) if letter in params]
        learn += ["B"] if any(c not in "st" for c in params) else []
        return {"A": self._A.copy(), "B": B, "pi": self._pi.copy(), "starts": starts, "lengths": lengths,
                "n_iter": int(n_iter), "learn": learn,
                "prior": {**{n: prior[n] for n in CORE if n in prior}, "B": prior_B},
                "mask": {**{n: self.mask[n] for n in CORE if n in self.mask}, "B": mask_B},
                "objective_prior": tuple(prior), "tol": None if tol is None else float(tol), "tol_rule": "abs"}

    def _em_task_done(self, task):
        self._A, self._pi = task["A"], task["pi"]
        self.emission.fused_em_result(task["B"])
        self.initialized = True

    def _fit_em_starts(self, rows, lengths, starts, n_observed, epochs, tol, params, prior, seed, init, n_init):
        """fit's EM from n_init starts, all in one C call (threads over the starts): the same starts,
        results and choice as fitting them one after the other (bit for bit)."""
        tasks = self._em_start_tasks(rows, starts, lengths, n_observed, epochs, tol, params, prior, seed, init,
                                     n_init)
        outcomes = _kernel.em_categorical_many(tasks, np.ascontiguousarray(rows, dtype=np.int32),
                                               get_num_threads())
        return self._em_starts_done(tasks, outcomes, rows, lengths)

    def _em_start_tasks(self, rows, starts, lengths, n_observed, epochs, tol, params, prior, seed, init, n_init):
        """The n_init tasks of fit's EM (see _em_task): the starts fit draws, in its order.  rows: the
        data the starts are drawn from; starts, lengths: the sequences in the rows the C call gets."""
        tol = None if tol is None else tol * max(int(n_observed), 1)
        tasks = []
        for start in range(n_init):
            if start or not self.initialized:
                self._start(rows, seed, start, init, params)
            tasks.append(self._em_task(starts, lengths, epochs, tol, params, prior))
        return tasks

    def _em_starts_done(self, tasks, outcomes, rows, lengths):
        """fit's end after the tasks of _em_start_tasks ran (outcomes: em_categorical_many's): each
        start's final log-likelihood on (rows, lengths) in inits_ (empty for one start), histories_,
        the best start's parameters and history_; DivergenceError as fit raises it."""
        def take(i):
            history, stop, last = outcomes[i]
            self._em_task_done(tasks[i])
            if stop == "non-finite":
                self._em_diverged(last, history)
            return history
        return self._starts_ended(len(tasks), take, lambda: float(self._score_rows(rows, lengths).sum()))

    def fit_supervised(self, X, labels, lengths=None, params=None, prior=None):
        """The supervised estimate from fully labelled data, with no iteration; returns self.

        labels: every step's state (fit/labels.py's forms, no -1).  pi and A: the normalised counts
        of first states and of transitions, plus the Dirichlet ``prior``'s pseudo-counts (a - 1;
        hmmop's MAP rule, fit.priors.m_step), structural zeros kept; the emission: its M-step with
        the labels as posteriors (its own priors apply).  A state never seen (no counts, no prior)
        keeps its current row.  params: the letters to estimate (default all).  One EM iteration
        on the same labels gives the same parameters.  A mixture emission (GMM) makes one M-step
        from its current mixture (its components stay latent within a state: EM iterations with
        the same labels, fit(..., labels=...), converge them).  ValueError naming the sequence and step
        where the labels use a structural zero of A or pi.
        """
        params = self._checked_params(params)
        prior = check_prior(prior, {n: self._shape(n) for n in self._prior_names() if n not in self._held()})
        rows, lengths, starts = self._data(X, lengths)
        if labels is None:
            raise ValueError("labels: fit_supervised needs every step's state")
        labels = self._labels(labels, lengths)
        start, trans, gamma = supervised_counts(labels)
        for name, counts in (("pi", start), ("A", trans)):
            if name in self.mask and (counts[~self.mask[name]] > 0).any():
                b = next(b for b in range(len(lengths)) if "is 0" in
                         labels.why_impossible(b, None, self.mask.get("A"), self.mask.get("pi")))
                raise ValueError(f"labels: {labels.why_impossible(b, None, self.mask.get('A'), self.mask.get('pi'))} "
                                 f"- a structural zero")
        if not self.initialized:        # the emission's shapes (overwritten below) or, for a mixture, its start
            self._start(rows, self.seed, 0, getattr(self.emission, "supervised_init", "random"), params)
        for letter, name, counts in (("s", "pi", start), ("t", "A", trans)):
            if letter in params:
                setattr(self, f"_{name}", _counts_m_step(counts, getattr(self, f"_{name}"), prior.get(name),
                                                         self.mask.get(name)))
        letters = "".join(c for c in params if c not in "st")
        if letters:
            stats = self.emission.empty_stats()
            self.emission.accumulate(stats, rows, gamma)
            self.emission.m_step(stats, letters)
        self.initialized = True
        return self

    def _start(self, rows, seed, start, init, params):
        """Parameters of start number ``start``, as hmmlearn 0.3.3's _init draws them from one integer
        seed s: pi then A from RandomState(s).dirichlet(1/N each), the emission's data-driven start
        with s (Gaussian: KMeans(random_state=s)).  s is ``seed`` itself for start 0 when it is an
        int (so GaussianHMM(seed=s) starts where hmmlearn's GaussianHMM(random_state=s) does), else
        drawn from it.  A model that was never initialised gets everything; later starts only what
        ``params`` learns."""
        if start == 0 and isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            s = int(seed)
        else:
            s = int(np.random.default_rng(None if seed is None else [int(np.random.default_rng(seed)
                    .integers(2 ** 31 - 1)), start]).integers(2 ** 31 - 1))
        everything = not self.initialized
        rs = np.random.RandomState(s)
        n = self.n_states
        pi, A = rs.dirichlet(np.full(n, 1.0 / n)), rs.dirichlet(np.full(n, 1.0 / n), size=n)
        if everything or "s" in params:
            self._pi = self._masked_uniform("pi", pi)
        if everything or "t" in params:
            self._A = self._masked_uniform("A", A)
        letters = self._emission_letters() if everything else \
            "".join(c for c in self._emission_letters() if c in params)
        if letters:
            self.emission.initialize(rows, s, init=init, params=letters)
        self.initialized = True

    def _fit_em(self, rows, lengths, starts, n_observed, epochs, tol, params, prior, progress, callback,
                labels=None, first_le=None):
        """fit's EM: em_iterations with the Monitor's rules (tol per observed row, |change| < tol).  With
        no progress bar shown and no callback the loop runs whole (in C where em_iterations can);
        otherwise em_iterations reports each iteration to the Monitor (bar, callback).  first_le:
        the log-emissions of the current parameters, when the data check computed them."""
        import sys
        tol = None if tol is None else tol * max(int(n_observed), 1)
        if callback is None and not (sys.stderr.isatty() if progress is None else progress):
            return self.em_iterations(rows, lengths, starts, epochs, tol, params, prior, tol_rule="abs",
                                      labels=labels, first_le=first_le)[0]
        monitor = Monitor(epochs, n_observed, None, progress, callback, desc="hmmop EM")
        epochs_left = iter(monitor)

        def report(epoch, value):
            next(epochs_left)           # the bar's step and monitor.epoch
            monitor.report(value)       # history, bar, callback (the stop test is em_iterations')

        try:
            self.em_iterations(rows, lengths, starts, epochs, tol, params, prior, callback=report, tol_rule="abs",
                               labels=labels, first_le=first_le)
        finally:
            epochs_left.close()
        return monitor.result()

    def em_iterations(self, rows, lengths, starts, n_iter, tol=None, params=None, prior=None, objective="map",
                      callback=None, tol_rule="increase", labels=None, first_le=None):
        """Up to n_iter EM iterations from the current parameters: (history float64 (k,), converged bool).

        rows, lengths, starts: the data as _data gives them (rows checked by the emission; lengths
        and starts (n_sequences,) int64).  hmmlearn's order: E-step, M-step of the letters in
        params (default all; "s" pi, "t" A, then the emission's), then the test: stop after the
        first iteration with history[-1] - history[-2] < tol (an absolute tol, hmmlearn's rule;
        tol_rule="abs": |history[-1] - history[-2]| < tol; tol None: never early).  prior:
        Dirichlet concentrations {"A": a, "pi": p} (the emission's M-step uses its own prior).
        objective: "map" (history_'s: log-likelihood + log-prior of the parameters in prior) or
        "loglik" (hmmlearn's monitor_.history).  history[i]: the objective at E-step i, before
        that iteration's update.  callback(i, value) after each E-step.  The whole loop runs in
        C where the emission offers one (fused_em: CategoricalEmission), without a callback, on a
        CPU model; otherwise in Python.  A non-finite objective raises DivergenceError; the model
        keeps the parameters that gave it (those of the last M-step).  labels: a fit.labels.Labels
        of the rows (the E-step's forward-backward then runs on log P(X, labels)).  first_le: None,
        or the (n, N) float64 log-emissions of rows under the current parameters (the first
        E-step's, already computed: GaussianEmission.prepare_scored; not with labels).
        """
        if objective not in ("map", "loglik"):
            raise ValueError(f"objective must be 'map' or 'loglik', got {objective!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
        if tol_rule not in ("increase", "abs"):
            raise ValueError(f"tol_rule must be 'increase' or 'abs', got {tol_rule!r}")
        params = self._checked_params(params)
        prior = check_prior(prior, {n: self._shape(n) for n in self._prior_names()}) if prior else {}
        in_objective = tuple(prior) if objective == "map" else ()
        emission_params = "".join(c for c in params if c not in "st")
        if self._em_in_c(prior, callback, labels):
            A, pi = self._A.copy(), self._pi.copy()
            learn = [name for letter, name in (("t", "A"), ("s", "pi")) if letter in params]
            learn += ["B"] if emission_params else []
            history, stop, last = self.emission.fused_em(
                A, pi, rows, lengths, starts, int(n_iter), learn, {n: prior[n] for n in CORE if n in prior},
                {n: self.mask[n] for n in CORE if n in self.mask}, in_objective,
                None if tol is None else float(tol), tol_rule, get_num_threads())
            self._A, self._pi = A, pi
            if stop == "non-finite":
                self._em_diverged(last, history)
            return history, stop == "converged"
        history, converged = [], False
        # on memory from the C driver's cache of large blocks: reused from fit to fit, no page faults
        log_emission, gamma = (_kernel.big_empty(len(rows), self.n_states) for _ in range(2))
        if first_le is not None and labels is None:
            log_emission = first_le
        # the E-step and the M-step of A and pi in one C call (csrc/hmm_em.c), on one plan for the loop
        core = _kernel.EMDense(self.n_states, len(rows), starts, lengths,
                               [name for letter, name in (("t", "A"), ("s", "pi")) if letter in params],
                               {n: prior[n] for n in CORE if n in prior},
                               {n: self.mask[n] for n in CORE if n in self.mask}, in_objective, get_num_threads())
        self._A, self._pi = self._A.copy(), self._pi.copy()        # updated in place by core.step
        for i in range(int(n_iter)):
            le = log_emission if i == 0 and first_le is not None and labels is None else \
                self._log_emission(rows, out=log_emission, labels=labels)
            value = core.step(self._A, self._pi, le, gamma)
            if "B" in in_objective:
                value += log_prior({"B": self.emission.B}, {"B": prior["B"]})
            if not math.isfinite(value):
                self._em_diverged(value, history)
            history.append(value)
            if callback is not None:
                callback(i, value)
            if emission_params:
                stats = self.emission.empty_stats()
                self.emission.accumulate(stats, rows, gamma)
                self.emission.m_step(stats, emission_params)
            if tol is not None and i > 0:
                delta = history[-1] - history[-2]
                if (abs(delta) if tol_rule == "abs" else delta) < tol:
                    converged = True
                    break
        return np.array(history, dtype=np.float64), converged

    @staticmethod
    def _em_diverged(value, history):
        """Raise the Monitor's DivergenceError for a non-finite objective after ``history``."""
        monitor = Monitor(max(len(history), 1), 1, progress=False)
        for v in history:
            monitor.check(v)
        monitor.history, monitor.epoch = [float(v) for v in history], len(history)
        monitor.check(value)

    def _align_start(self, rows, labels):
        """Renumber a drawn start's states to fit the labelled steps: a data-driven start (k-means
        centres, random rows) numbers its states arbitrarily, and a few labels seldom pull EM out of
        a start whose states are permuted.  The order maximises the summed log-emission of the
        labelled steps under their labelled states (over all orders for N <= 8, greedily above).
        Only where states are exchangeable: no structural zeros."""
        if self.mask or getattr(self.emission, "mask", None) is not None:
            return
        seen = labels.known >= 0
        if not seen.any():
            return
        n = self.n_states
        le = self._log_emission(rows[seen])
        fit = np.zeros((n, n))          # fit[k, j]: how well the steps labelled k suit state j
        np.add.at(fit, labels.known[seen], np.where(np.isfinite(le), le, -1e30))
        if n <= 8:
            orders = np.array(list(itertools.permutations(range(n))))
            order = orders[int(np.argmax(fit[np.arange(n), orders].sum(axis=1)))]   # the first best: identity
        else:
            order, left = np.full(n, -1), fit.copy()
            for _ in range(n):
                k, j = np.unravel_index(int(np.argmax(left)), left.shape)
                order[k] = j
                left[k, :], left[:, j] = -np.inf, -np.inf
        if (order != np.arange(n)).any():
            self._permute_states(order)

    def _permute_states(self, order):
        """State k takes state order[k]'s parameters (A, pi and the emission's)."""
        self._A, self._pi = np.ascontiguousarray(self._A[order][:, order]), self._pi[order]
        self.emission = self.emission.permuted(order)

    def _fit_gradient(self, rows, lengths, starts, n_observed, epochs, tol, params, prior, progress, callback,
                      kv=None, optimizer="adam", learning_rate=0.05, optimizer_params=None, batch_size=None,
                      normalize=True, hybridize=True, seed=None, labels=None):
        """Gradient training of the block _gradient_block gives, on hmmop.Trainer's loop; the block's
        parameters go back into the model after (also after a divergence: the last finite ones).
        labels: the block adds their -inf to the log-emissions of each batch."""
        block = self._gradient_block(labels)
        trainer = Trainer(block, optimizer, learning_rate, optimizer_params, learn=block.learn_names(params),
                          normalize=normalize, ctx=self.ctx, prior=self._prior_weights(prior), kvstore=kv)
        if hybridize:
            block.hybridize()
        if callback is not None:
            user_callback = callback

            def callback(epoch, value):           # the model shows the parameters of the epoch
                self._store_block(block, trainer, epoch, during=True)
                user_callback(epoch, value)
        sequences = self._split(rows, lengths)
        counts = self._observed_counts(rows, lengths)
        try:
            history = trainer.fit(sequences, epochs=epochs, batch_size=batch_size, tol=tol, seed=seed,
                                  progress=progress, callback=callback, counts=counts)
        except DivergenceError:
            self._store_block(block, trainer, len(self.history_))
            raise
        self._store_block(block, trainer, len(history), history)
        return history

    def _gradient_block(self, labels=None):
        """The gluon block gradient training runs (hmmop.Trainer's protocol), holding the model's
        current parameters: the dense operator on the emission's log-likelihoods (and ``labels``'
        -inf where they rule a state out)."""
        block = _DenseHMMBlock(self, labels=labels)
        block.initialize(ctx=self.ctx)
        block.load_from(self)
        return block

    def _store_block(self, block, trainer, epoch, history=None, during=False):
        """The block's parameters into the model.  Where the emission cannot hold them (e.g. variances
        that overflowed while the objective stayed finite), those before the last step - or, failing
        that, the model's own stay - and DivergenceError says so (during: a look during training,
        for a callback; nothing is raised or restored then)."""
        try:
            block.store_into(self, trainer.learn)
            return
        except ValueError as exc:
            if during:
                return
            reason = str(exc)
        trainer.restore_last()
        try:
            block.store_into(self, trainer.learn)
        except ValueError:
            pass
        history = np.array([]) if history is None else history[:-1]
        raise DivergenceError(f"training diverged at epoch {max(epoch - 1, 0)}: the parameters left the range the "
                              f"emission can hold ({reason}). The model keeps the last parameters it could hold. "
                              f"Try a smaller learning rate (it is {trainer.learning_rate}).", max(epoch - 1, 0),
                              history)

    def _my_share(self, kv, rows, lengths, shard, labels=None):
        """(rows, lengths, starts, labels) of this worker: its shard of the sequences (shard=True, checking
        that every worker has the same data) or all of them (shard=False: the caller split the data)."""
        if shard:
            n = len(rows)
            total = distributed.allreduce_sum(kv, [n, len(lengths)], integers=True)
            if total != [n * kv.num_workers, len(lengths) * kv.num_workers]:
                raise distributed.DistributedError(
                    f"worker {kv.rank}: the workers were given different data ({len(lengths)} sequences, {n} "
                    f"observations here; {total[1]} sequences, {total[0]} observations over {kv.num_workers} "
                    f"workers); with shard=True every worker passes all of it")
            mine = distributed.shard(lengths.tolist(), kv.rank, kv.num_workers)
            sequences = self._split(rows, lengths)
            parts = [sequences[i] for i in mine]
            rows = np.concatenate(parts) if parts else rows[:0]
            lengths = lengths[mine]
            labels = None if labels is None else labels.take(np.asarray(mine, dtype=np.int64))
        return rows, lengths, np.cumsum(lengths) - lengths, labels

    _distributed_em = False

    def _fit_em_distributed(self, *args, **kwargs):
        raise NotImplementedError

    def _prior_names(self):
        """The names fit's ``prior`` may hold: A and pi (a family with Dirichlet emissions may add)."""
        return CORE

    def _held(self):
        """The names held fixed (never learned, no prior): none in the core (hmmop.HMM has ``fixed``)."""
        return ()

    def _snapshot(self):
        return self._A.copy(), self._pi.copy(), self.emission.fields()

    def _restore(self, snap):
        self._A, self._pi = snap[0].copy(), snap[1].copy()
        restored = type(self.emission).from_fields(self.n_states, snap[2], self.emission.meta())
        self.emission = restored

    def _checked_params(self, params):
        letters = "st" + self._emission_letters()
        if params is None:
            return letters
        if not isinstance(params, str) or set(params) - set(letters):
            raise ValueError(f"params must be a string of letters among {letters!r} "
                             f"(s: pi, t: A, then the emission's), got {params!r}")
        return "".join(c for c in letters if c in params)

    def _emission_letters(self):
        return getattr(self.emission, "params_letters", "mc")

    # -- files ----------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to ``path`` (.npz, version 2; see the module docstring)."""
        emission_fields = {f"emission_{k}": np.asarray(v, dtype=self.dtype)
                           for k, v in self.emission.fields().items()}
        meta = {"n_states": self.n_states, "dtype": self.dtype.name, "family": self.emission.family,
                "emission": self.emission.meta(), "mask": list(self.mask)}
        masks = {f"mask_{name}": value for name, value in self.mask.items()}
        with open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT), version=np.array(VERSION), family=np.array(self.emission.family),
                     A=self._A.astype(self.dtype), pi=self._pi.astype(self.dtype),
                     meta=np.array(json.dumps(meta)), **emission_fields, **masks)

    @classmethod
    def _from_fields(cls, fields, path, **kwargs):
        """The model a version-2 file's fields describe (cls: the family's model class)."""
        emission_fields = {k[len("emission_"):]: np.asarray(v, dtype=np.float64)
                           for k, v in fields.items() if k.startswith("emission_")}
        try:
            meta = json.loads(str(fields["meta"]))
            if not isinstance(meta, dict):
                raise ValueError("meta is not a JSON object")
            mask = {name: fields[f"mask_{name}"] for name in meta.get("mask", ())}
            emission = cls.EMISSION.from_fields(meta["n_states"], emission_fields, meta["emission"])
            model = cls._with_emission(meta["n_states"], emission, dtype=meta["dtype"], mask=mask or None,
                                       **kwargs)
            A, pi = (np.asarray(fields[k], dtype=np.float64) for k in CORE)
            model.set_probabilities(A=A / A.sum(axis=-1, keepdims=True), pi=pi / pi.sum())
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path!r} is not a complete hmmop model file ({what})") from None
        model.initialized = True
        return model

    @classmethod
    def load(cls, path, **kwargs):
        """Read a model written by save() (hmmop.load reads every format and family)."""
        model = load(path, **kwargs)
        if not isinstance(model, cls):
            raise ValueError(f"{path!r} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # -- helpers --------------------------------------------------------------------------------
    def _shape(self, name):
        n = self.n_states
        return {"A": (n, n), "pi": (n,)}[name]

    def _masked_uniform(self, name, value):
        """value restricted to the mask of ``name`` and renormalised."""
        if name not in self.mask:
            return np.array(value, dtype=np.float64)
        value = np.where(self.mask[name], value, 0.0)
        return value / value.sum(axis=-1, keepdims=True)

    def _checked_masks(self, mask):
        return check_masks(mask, {name: self._shape(name) for name in CORE})

    def __repr__(self):
        return (f"{type(self).__name__}(n_states={self.n_states}, emission={self.emission!r}, "
                f"dtype={self.dtype.name})")


class _DenseHMMBlock(gluon.HybridBlock):
    """Gradient training of an EmissionHMM: softmax logits of A and pi and the emission's raw
    parameters as gluon Parameters; block(X, observed, lengths[, bias]) -> ll (batch,) through
    hmm_forward_dense.  X (batch, T, D) with missing rows and padding 0, observed (batch, T, 1);
    with ``labels`` (a fit.labels.Labels of the sequences training passes) a fourth input, bias
    (batch, T, N): -inf where the labels rule a state out, else 0, added to the log-emissions."""

    def __init__(self, model, labels=None, n_models=None, sizes=None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.labels = labels
        self.emission = model.emission
        raw = self.emission.raw_parameters()
        self.raw_names = tuple(raw)
        n, dtype = model.n_states, model.dtype.name
        # n_models=K: K models stacked on a leading axis (n_init's starts trained together): every parameter
        # (K, ...), ll (K, batch) through hmm_forward_dense's model axis, log_prior (K,); no labels
        # sizes (K,): model k scores its sizes[k] sequences, the batch's rows grouped by model in order, and the
        # block takes a fourth input, the model index of each row (hmm_forward_dense's model-index form)
        self.n_models = None if n_models is None else int(n_models)
        self.firsts = None if sizes is None else np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        stack = () if n_models is None else (self.n_models,)
        shapes = {"A_logits": (n, n), "pi_logits": (n,), **{f"em_{k}": v.shape for k, v in raw.items()}}
        self.shapes = shapes
        self.masked = tuple(name for name in CORE if name in model.mask)
        # structural zeros of the emission's raw parameters (categorical B): pushed to -1e30 before its
        # log-likelihood, so they stay probability 0 (gradient 0) in imperative and hybridized runs alike
        raw_masks = getattr(self.emission, "raw_masks", lambda: {})()
        self.raw_masked = tuple(raw_masks)
        with self.name_scope():
            for name, shape in shapes.items():
                setattr(self, name, self.params.get(name, shape=stack + shape, dtype=dtype, init=mx.init.Zero()))
            for name in self.masked:
                setattr(self, f"{name}_mask", self.params.get_constant(
                    f"{name}_mask", mx.nd.array(np.broadcast_to(model.mask[name], stack + shapes[f"{name}_logits"]),
                                                dtype=dtype)))
            for name, value in raw_masks.items():
                setattr(self, f"em_{name}_mask", self.params.get_constant(
                    f"em_{name}_mask", mx.nd.array(np.broadcast_to(value, stack + np.shape(value)), dtype=dtype)))
        self._use_native = model.engine in ("fused", "native") and model.ctx.device_type == "cpu" \
            and _native_dense()
        if model.engine == "native" and not self._use_native:
            raise RuntimeError(f"engine 'native' is not available: {native.unavailable_reason()}")

    def named_parameters(self):
        return {name: getattr(self, name) for name in ("A_logits", "pi_logits")
                + tuple(f"em_{k}" for k in self.raw_names)}

    def letter(self, name):
        """The hmmlearn letter that learns parameter ``name``."""
        if name == "A_logits":
            return "t"
        if name == "pi_logits":
            return "s"
        return getattr(self.emission, "raw_letters", {"means": "m"}).get(name[3:], "c")

    # -- what hmmop.Trainer asks of a block (see fit/trainer.py) ----------------------------------
    def learn_names(self, params):
        """The names of the parameters that hmmlearn's letters ``params`` learn."""
        return tuple(name for name in self.named_parameters() if self.letter(name) in params)

    def learnable(self, learn):
        if not learn:
            raise ValueError("params names nothing to learn")
        return tuple(learn)

    def trainable(self, learn):
        out = []
        for name, p in self.named_parameters().items():
            p.grad_req = "write" if name in learn else "null"
            if name in learn:
                out.append(p)
        return out

    def state(self):
        return list(self.named_parameters().values())

    def inputs(self, rows, chosen, ctx):
        """(X (batch, T, D) with missing rows and padding 0, observed (batch, T, 1) 1/0, lengths (batch,))
        NDArrays of the sequences rows[i] (each (T_i, D), or (T_i,) symbols) for i in chosen (None: all)."""
        rows = rows if chosen is None else [rows[i] for i in chosen]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        flat = np.concatenate(rows) if rows else np.zeros((0, self.emission.n_features or 1))
        missing = self.emission.missing_rows(flat)
        flat = flat.reshape(len(flat), -1)          # (symbols: one column)
        batch, T, D = len(rows), max(1, int(lengths.max(initial=0))), flat.shape[1]
        dtype = self.model.dtype
        X = np.zeros((batch, T, D), dtype=dtype)
        observed = np.zeros((batch, T, 1), dtype=dtype)
        inside = np.arange(T)[None, :] < lengths[:, None]
        X[inside] = np.where(missing[:, None], 0, flat)
        observed[inside, 0] = ~missing
        out = (mx.nd.array(X, dtype=dtype, ctx=ctx), mx.nd.array(observed, dtype=dtype, ctx=ctx),
               mx.nd.array(lengths, dtype=np.int64, ctx=ctx))
        if self.labels is None:
            return out
        labels = self.labels if chosen is None else self.labels.take(np.asarray(chosen, dtype=np.int64))
        bias = np.zeros((batch, T, self.model.n_states), dtype=dtype)
        bias[inside] = labels.bias()
        return out + (mx.nd.array(bias, dtype=dtype, ctx=ctx),)

    def empty_inputs(self, ctx):
        D, dtype = self.emission.n_features or 1, self.model.dtype
        out = (mx.nd.zeros((1, 1, D), dtype=dtype, ctx=ctx), mx.nd.zeros((1, 1, 1), dtype=dtype, ctx=ctx),
               mx.nd.zeros((1,), dtype=np.int64, ctx=ctx))
        if self.labels is None:
            return out
        return out + (mx.nd.zeros((1, 1, self.model.n_states), dtype=dtype, ctx=ctx),)

    def hybrid_forward(self, F, X, observed, lengths, *bias, **params):
        A, pi = self.probabilities(F, params)
        raw = {k: params[f"em_{k}"] for k in self.raw_names}
        for k in self.raw_masked:
            raw[k] = raw[k] + (params[f"em_{k}_mask"] - 1) * 1e30
        model = None
        if self.n_models is None:
            le = F.broadcast_mul(self.emission.log_likelihood_nd(F, X, **raw), observed)
        else:
            parts = {k: _split_models(F, v, self.n_models) for k, v in raw.items()}
            mine = [{k: v[i] for k, v in parts.items()} for i in range(self.n_models)]
            if self.firsts is None:     # each model's log-likelihoods of the same rows, stacked: (K, batch, T, N)
                le = F.stack(*[self.emission.log_likelihood_nd(F, X, **raw_i) for raw_i in mine], axis=0)
                le = F.broadcast_mul(le, F.expand_dims(observed, axis=0))
            else:                       # each model's of its own rows, in the batch's order: (batch, T, N)
                (model,), bias = bias[:1], ()
                f = self.firsts
                le = [self.emission.log_likelihood_nd(F, F.slice_axis(X, axis=0, begin=f[i], end=f[i + 1]), **raw_i)
                      for i, raw_i in enumerate(mine)]
                le = F.broadcast_mul(le[0] if len(le) == 1 else F.concat(*le, dim=0), observed)
        if bias:                        # labels: -inf where they rule a state out (after the product: 0 * -inf)
            le = le + bias[0]
        if self._use_native:
            if self.n_models is not None:
                return native.forward_dense_many(F, A, pi, le, lengths, model)
            return native.forward_dense(F, A, pi, le, lengths)
        backend = "ndarray" if self.model.engine == "ndarray" else "auto"
        if model is not None:
            return F.Custom(A, pi, le, lengths, F.BlockGrad(model), op_type=DENSE_BY_MODEL_OP, backend=backend)
        return F.Custom(A, pi, le, lengths, op_type=DENSE_OP, backend=backend)

    def probabilities(self, F, params):
        out = []
        for name in CORE:
            logits = params[f"{name}_logits"]
            out.append(_masked_softmax(F, logits, params[f"{name}_mask"]) if name in self.masked
                       else F.softmax(logits, axis=-1))
        return out

    def log_prior(self, weights, ctx):
        values = {name: p.data(ctx) for name, p in self._reg_params.items()}
        probs = dict(zip(CORE, self.probabilities(mx.nd, values)))
        if self.n_models is None:
            return sum(mx.nd.sum(w * mx.nd.log(mx.nd.maximum(probs[name], 1e-300))) for name, w in weights.items())
        return sum(mx.nd.sum(mx.nd.broadcast_mul(w.expand_dims(0), mx.nd.log(mx.nd.maximum(probs[name], 1e-300))),
                             axis=tuple(range(1, w.ndim + 1))) for name, w in weights.items())

    @staticmethod
    def values_of(model):
        """{name: NumPy array of the model's dtype}: the block's parameters for the model's current ones."""
        values = {"A_logits": model._A, "pi_logits": model._pi}
        for name in CORE:
            with np.errstate(divide="ignore"):
                logits = np.log(np.maximum(values[f"{name}_logits"], _FLOOR))
            values[f"{name}_logits"] = np.where(model.mask[name], logits, 0.0) if name in model.mask else logits
        values.update({f"em_{k}": v for k, v in model.emission.raw_parameters().items()})
        return {name: np.asarray(value, dtype=model.dtype) for name, value in values.items()}

    def load_from(self, model):
        """The block's parameters from the model's current ones."""
        for name, value in self.values_of(model).items():
            getattr(self, name).set_data(mx.nd.array(value, dtype=model.dtype, ctx=model.ctx))

    def set_stack(self, k, values):
        """Model k's parameters (n_models) from values {name: NumPy array of the unstacked shape} (CPU)."""
        mx.nd.waitall()
        for name, value in values.items():
            view(getattr(self, name).data(self.model.ctx))[k] = value

    def stacked(self, k):
        """{name: NumPy copy} of model k's parameters (n_models; CPU)."""
        mx.nd.waitall()
        return {name: view(p.data(self.model.ctx))[k].copy() for name, p in self.named_parameters().items()}

    def snapshot(self):
        return {name: p.data(self.model.ctx).asnumpy() for name, p in self.named_parameters().items()}

    def restore(self, kept):
        for name, value in kept.items():
            getattr(self, name).set_data(mx.nd.array(value, dtype=self.model.dtype, ctx=self.model.ctx))

    def store_into(self, model, learn=None):
        """The model's parameters from the block's: those named in ``learn`` (default: all); the
        others keep the model's values exactly (the block holds them only to rounding)."""
        learn = tuple(self.named_parameters()) if learn is None else learn
        values = {name: p.data(model.ctx) for name, p in self._reg_params.items()}
        A, pi = (x.asnumpy().astype(np.float64) for x in self.probabilities(mx.nd, values))
        # the emission first: it refuses (ValueError) values it cannot hold, and then nothing changed
        if any(f"em_{k}" in learn for k in self.raw_names):
            model.emission.set_raw_parameters({k: self.named_parameters()[f"em_{k}"].data(model.ctx).asnumpy()
                                               .astype(np.float64) for k in self.raw_names})
        if "A_logits" in learn:
            model._A = A / A.sum(axis=-1, keepdims=True)
        if "pi_logits" in learn:
            model._pi = pi / pi.sum()

def _split_models(F, x, k):
    """[x[0], ..., x[k - 1]] of a stacked parameter x (k, ...), as F's expressions."""
    if k == 1:
        return [F.squeeze(x, axis=0)]
    parts = F.split(x, num_outputs=k, axis=0, squeeze_axis=True)
    return [parts[i] for i in range(k)]


def _counts_m_step(counts, current, prior, mask):
    """Rows of max(counts + prior - 1, 0) restricted to the mask and normalised (fit.priors.m_step's rule,
    without its "a zero stays zero": here counts are facts, not posteriors); rows with nothing keep
    ``current``'s."""
    x = counts if prior is None else np.maximum(prior - 1 + counts, 0)
    if mask is not None:
        x = np.where(mask, x, 0.0)
    total = x.sum(axis=-1, keepdims=True)
    return np.where(total > 0, x / np.where(total > 0, total, 1), current)


def load(path, **kwargs):
    """Read any hmmop model file: version 1 (hmmop.HMM, categorical) or version 2 (by family)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            fields = {k: f[k] for k in f.files}
    except Exception as exc:
        raise ValueError(f"{path!r} is not an hmmop model file (not a readable .npz: {exc})") from None
    if "format" not in fields or str(fields["format"]) != FORMAT or "version" not in fields:
        raise ValueError(f"{path!r} is not an hmmop model file (format {FORMAT!r})")
    version = int(fields["version"])
    if version == 1:
        from .hmm import HMM
        return HMM.load(path, **kwargs)
    if version != VERSION:
        raise ValueError(f"{path!r} has model file version {version}; this hmmop reads versions 1 and {VERSION}")
    missing = {"family", "A", "pi", "meta"} - set(fields)
    if missing:
        raise ValueError(f"{path!r} is not a complete hmmop model file (no {sorted(missing)})")
    family = str(fields["family"])
    cls = FAMILIES.get(family)
    if cls is None:
        raise ValueError(f"{path!r} holds emission family {family!r}, which this hmmop does not know "
                         f"(it knows {sorted(FAMILIES)})")
    return cls._from_fields(fields, path, **kwargs)


FAMILIES = {}       # family name -> model class; each family's module registers itself
