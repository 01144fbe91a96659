"""Many categorical HMMs fitted in one call: one model per group of sequences, and model selection.

    models = hmmop.fit_many(sequences, groups, n_states=3, n_symbols=4, n_init=5)   # {group: HMM}
    choice = hmmop.select(sequences, states=range(2, 9), n_symbols=4, n_init=10)
    choice.best, choice.best_n_states, choice.table()

Every model's EM (all its starts) runs in one C call (csrc/hmm_em.h, hmm_em_categorical_many): the
tasks are spread over the threads, one task per thread, so hundreds of small fits stop paying
Python's and MXNet's per-call cost each.  Each model's result is bit for bit what fitting it alone
gives (``HMM(n_states, n_symbols, seed=s).fit(its sequences, method="em", seed=s, ...)``), since a
task runs exactly the loop a single fit runs.  Models of different sizes share the call (select
fits every N in its range together: no model is embedded in a larger one, no work is wasted).

fit_many(..., method="gradient") trains every model's starts as slices of one stack of parameters,
each sequence scored by its own model through hmm_forward's model-index form (hmmop.fit.together):
one forward, backward and optimizer update per epoch for all of them.
"""
import numpy as np

from .. import _kernel
from ..data import encode_flat
from ..fit.monitor import DivergenceError
from ..fit.together import ELEMENTWISE, TogetherTrainer, elementwise
from ..ops.threads import get_num_threads
from .hmm import HMM

CRITERIA = ("bic", "aic", "loglik")


def _encoded(sequences, n_symbols, symbols, lengths):
    """(rows (n,) int32, lengths (n_sequences,) int64, starts) of the sequences, checked as HMM.fit does."""
    if n_symbols is None and symbols is not None:
        n_symbols = len(list(symbols))
    if n_symbols is None:
        raise ValueError("give n_symbols or a symbol vocabulary (symbols=...)")
    rows, lengths = encode_flat(sequences, n_symbols, None if symbols is None else list(symbols), lengths)
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    lengths = np.asarray(lengths, dtype=np.int64)
    return rows, lengths, np.cumsum(lengths) - lengths, n_symbols


def _part(rows, lengths, starts, idx):
    """(rows, lengths, starts in the shared rows) of the sequences idx."""
    own = np.concatenate([rows[s:s + L] for s, L in zip(starts[idx].tolist(), lengths[idx].tolist())]) \
        if len(idx) else rows[:0]
    return own, lengths[idx], starts[idx]


def _run(jobs, rows, names):
    """jobs: [(model, tasks, own rows, own lengths)]; all tasks in one C call, then every model finished
    (one whose EM diverged keeps what fit leaves it: the parameters that gave the non-finite objective);
    then the first DivergenceError, naming its model (names[k])."""
    tasks = [t for _, ts, _, _ in jobs for t in ts]
    outcomes = _kernel.em_categorical_many(tasks, rows, get_num_threads())
    at, failed = 0, None
    for name, (model, ts, own, own_lengths) in zip(names, jobs):
        try:
            model._em_starts_done(ts, outcomes[at:at + len(ts)], own, own_lengths)
        except DivergenceError as exc:
            if failed is None:
                failed = DivergenceError(f"{name}: {exc}", exc.epoch, exc.history)
        at += len(ts)
    if failed is not None:
        raise failed


def _seed(seed, i):
    return None if seed is None else int(seed) + i


def fit_many(sequences, groups, n_states, n_symbols=None, symbols=None, lengths=None, n_init=1, epochs=None,
             tol=None, seed=None, prior=None, learn=None, method="em", optimizer=None, learning_rate=None,
             optimizer_params=None, normalize=True, progress=None, family=None, **model_kwargs):
    """One model per group of sequences, all fitted in one call; returns {group: model}.

    sequences: as the model's fit takes them (HMM: lists of symbols or tokens; the other families:
    a list of (T_i, D) arrays; or hmmlearn's concatenated form with ``lengths``).  groups:
    (n_sequences,) one hashable label per sequence; the dict keeps the groups' order of first
    appearance.  family: None (hmmop.HMM, categorical) or a family's class (hmmop.GaussianHMM, GMMHMM,
    PoissonHMM, MultinomialHMM).  The model of the i-th group is ``HMM(n_states, n_symbols,
    symbols=symbols, seed=seed + i, **model_kwargs)`` (or ``family(n_states, seed=seed + i,
    **model_kwargs)``, e.g. n_features=, covariance_type=) fitted with ``fit(its sequences,
    method=method, epochs=epochs, tol=tol, n_init=n_init, seed=seed + i, prior=prior, ...)`` with
    learn=learn (HMM: names among 'A', 'B', 'pi') or params=learn (a family: hmmlearn's letters),
    and for gradient training optimizer, learning_rate, optimizer_params, normalize (None: the
    model's fit's defaults; full batches; progress: one bar) - seed None: unseeded; epochs None:
    fit's default.  The same results: bit for bit for EM and for HMM's gradient training without a
    prior, else to rounding.  Each model keeps history_, histories_ and inits_ as fit leaves them.

    HMM's EM: every model's whole loop runs in one C call.  Gradient (every family): every model (and
    each of its starts) is one slice of one stack of parameters, each sequence scored by its own
    model through the operators' model-index form - one forward, backward and optimizer update per
    epoch for all (hmmop.fit.together; optimizers acting elementwise only, e.g. "sgd", "adam").  The
    other families' EM runs the groups' fits one after another (their M-step is Python's).  A
    non-finite objective raises DivergenceError naming the group, after every model is finished.
    """
    if method not in ("em", "gradient"):
        raise ValueError(f"method must be 'em' or 'gradient', got {method!r}")
    if family is not None and family is not HMM:
        return _fit_many_family(family, sequences, groups, n_states, lengths, n_init, epochs, tol, seed, prior,
                                learn, method, optimizer, learning_rate, optimizer_params, normalize, progress,
                                model_kwargs, n_symbols, symbols)
    epochs = 100 if epochs is None else epochs
    rows, lengths, starts, n_symbols = _encoded(sequences, n_symbols, symbols, lengths)
    members = _members(groups, len(lengths))
    models, jobs = {}, []
    for i, (g, idx) in enumerate(members.items()):
        model = HMM(n_states, n_symbols, symbols=symbols, seed=_seed(seed, i), **model_kwargs)
        own, own_lengths, own_starts = _part(rows, lengths, starts, idx)
        if method == "em":
            tasks = model._em_tasks(rows, own_starts, own_lengths, epochs, tol, n_init, _seed(seed, i), prior,
                                    learn)
        else:
            tasks = model._gradient_tasks(own, own_lengths, n_init, _seed(seed, i), prior, learn)
        jobs.append((model, tasks, own, own_lengths))
        models[g] = model
    names = [f"group {g!r}" for g in models]
    if method == "em":
        _run(jobs, rows, names)
    else:
        _run_gradient(jobs, n_init, names, epochs=epochs, tol=tol, optimizer=optimizer or "sgd",
                      learning_rate=1e-2 if learning_rate is None else learning_rate,
                      optimizer_params=optimizer_params, normalize=normalize, progress=progress)
    return models


def _members(groups, n_sequences):
    """{group: (its sequences' indices,) int64} in the order the groups first appear."""
    groups = list(groups)
    if len(groups) != n_sequences:
        raise ValueError(f"groups: {len(groups)} labels for {n_sequences} sequences")
    members = {}
    for b, g in enumerate(groups):
        members.setdefault(g, []).append(b)
    return {g: np.asarray(idx, dtype=np.int64) for g, idx in members.items()}


def _fit_many_family(family, sequences, groups, n_states, lengths, n_init, epochs, tol, seed, prior, learn, method,
                     optimizer, learning_rate, optimizer_params, normalize, progress, model_kwargs, n_symbols,
                     symbols):
    """fit_many for a family of the core (GaussianHMM, ...): EM one group after another, gradient training
    as one stack (the dense operator's model-index form)."""
    if n_symbols is not None or symbols is not None:
        raise ValueError(f"n_symbols and symbols are hmmop.HMM's; {family.__name__} takes its own settings "
                         f"(e.g. n_features=)")
    probe = family(n_states, **model_kwargs)            # checks the settings; reads the data's form
    rows, lengths = probe.emission.prepare(sequences, lengths)
    starts = np.cumsum(lengths) - lengths
    members = _members(groups, len(lengths))
    models, jobs, failed = {}, [], None
    epochs = (100 if method == "em" else 1000) if epochs is None else epochs
    for i, (g, idx) in enumerate(members.items()):
        model = family(n_states, seed=_seed(seed, i), **model_kwargs)
        own, own_lengths, _ = _part(rows, lengths, starts, idx)
        models[g] = model
        if method == "em":
            try:
                model.fit(own, own_lengths, method="em", epochs=epochs, tol=tol, n_init=n_init, seed=_seed(seed, i),
                          params=learn, prior=prior, progress=False)
            except DivergenceError as exc:
                failed = failed or DivergenceError(f"group {g!r}: {exc}", exc.epoch, exc.history)
            continue
        tasks, own, own_lengths = model._gradient_tasks(own, own_lengths, n_init, _seed(seed, i), prior, learn)
        jobs.append((model, tasks, own, own_lengths))
    if method == "gradient":
        _run_gradient(jobs, n_init, [f"group {g!r}" for g in models], epochs=epochs, tol=tol,
                      optimizer=optimizer or "adam", learning_rate=0.05 if learning_rate is None else learning_rate,
                      optimizer_params=optimizer_params, normalize=normalize, progress=progress)
    if failed is not None:
        raise failed
    return models


def _run_gradient(jobs, n_init, names, epochs, tol, optimizer, learning_rate, optimizer_params, normalize,
                  progress):
    """jobs: [(model, its _gradient_tasks, own rows, own lengths)]; every start of every model one slice of
    one stacked block (model k * n_init + j: start j of model k, trained on model k's sequences), trained
    together; then every model finished as its fit finishes, and the first DivergenceError raised."""
    if not elementwise(optimizer):
        raise ValueError(f"optimizer: fit_many trains with one of {ELEMENTWISE}, got {optimizer!r}")
    first = jobs[0][0]
    sizes = [len(own_lengths) for _, _, _, own_lengths in jobs for _ in range(n_init)]
    block = first._stack_block(len(jobs) * n_init, sizes)
    sequences, counts, model_of = [], [], []
    for k, (model, (values, _, _, _), own, own_lengths) in enumerate(jobs):
        for j, v in enumerate(values):
            block.set_stack(k * n_init + j, v)
            seqs = model._split(own, own_lengths)
            sequences += seqs
            counts += model._observed_counts(own, own_lengths)
            model_of += [k * n_init + j] * len(seqs)
    _, _, learn, weights = jobs[0][1]
    trainer = TogetherTrainer(block, optimizer, learning_rate, optimizer_params, learn=learn, normalize=normalize,
                              ctx=first.ctx, prior=weights)
    block.hybridize()
    outcomes = trainer.fit(sequences, epochs=epochs, tol=tol, progress=progress, counts=counts, model_of=model_of)
    failed = None
    for k, (name, (model, (_, kept, _, _), own, own_lengths)) in enumerate(zip(names, jobs)):
        try:
            model._gradient_starts_done(block, trainer.learn, outcomes[k * n_init:(k + 1) * n_init], kept, own,
                                        own_lengths, first=k * n_init)
        except DivergenceError as exc:
            if failed is None:
                failed = DivergenceError(f"{name}: {exc}", exc.epoch, exc.history)
    if failed is not None:
        raise failed


class Selection:
    """select's result: the candidates' scores and models.

    states: the numbers of states tried; loglik, aic, bic: (len(states),) float64 of each N's best
    start (its final log-likelihood; aic = -2 ll + 2 k, bic = -2 ll + k log(observed symbols),
    k = n_parameters); inits: each N's starts' final log-likelihoods; models: {N: the best start's
    HMM}; criterion, best_n_states, best (that model).
    """

    def __init__(self, states, models, rows, lengths, criterion):
        self.states = list(states)
        self.models = models
        self.criterion = criterion
        self.loglik = np.array([float(models[n]._score_rows(rows, lengths).sum()) for n in self.states])
        # the observed rows (a symbol, or a row that is not missing): what BIC's log counts
        n_observed = int(np.count_nonzero(rows >= 0)) if rows.ndim == 1 else \
            int((~models[self.states[0]].emission.missing_rows(rows)).sum())
        self.n_parameters = np.array([models[n].n_free_parameters for n in self.states])
        self.aic = -2 * self.loglik + 2 * self.n_parameters
        self.bic = -2 * self.loglik + self.n_parameters * np.log(max(n_observed, 1))
        self.inits = {n: models[n].inits_ if len(models[n].inits_) else self.loglik[i:i + 1]
                      for i, n in enumerate(self.states)}
        values = self.values()
        pick = int(np.argmax(values)) if criterion == "loglik" else int(np.argmin(values))
        self.best_n_states = self.states[pick]
        self.best = models[self.best_n_states]

    def values(self):
        """The criterion's value per N."""
        return {"bic": self.bic, "aic": self.aic, "loglik": self.loglik}[self.criterion]

    def table(self):
        """A text table: N, free parameters, log-likelihood, AIC, BIC, and the chosen N marked."""
        lines = [f"{'states':>6} {'params':>6} {'loglik':>14} {'AIC':>14} {'BIC':>14}"]
        for i, n in enumerate(self.states):
            mark = "  <- " + self.criterion if n == self.best_n_states else ""
            lines.append(f"{n:>6} {self.n_parameters[i]:>6} {self.loglik[i]:>14.3f} {self.aic[i]:>14.3f} "
                         f"{self.bic[i]:>14.3f}{mark}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Selection(states={self.states}, criterion={self.criterion!r}, best_n_states={self.best_n_states})"


def select(sequences, states=range(2, 9), n_symbols=None, symbols=None, lengths=None, n_init=10, epochs=100,
           tol=None, seed=None, prior=None, criterion="bic", family=None, **model_kwargs):
    """Fit an HMM for every number of states in ``states`` (n_init EM starts each, all in one call) and
    choose one by ``criterion`` ("bic", "aic": the smallest; "loglik": the largest); returns a
    Selection.  The model for N states is what ``HMM(N, n_symbols, seed=seed + N,
    **model_kwargs).fit(sequences, method="em", n_init=n_init, seed=seed + N, epochs=epochs,
    tol=tol, prior=prior)`` gives, bit for bit, whatever else ``states`` holds.  A non-finite EM
    objective raises DivergenceError naming N, after every model is finished.

    family: None (hmmop.HMM) or a family's class (hmmop.GaussianHMM, GMMHMM, PoissonHMM,
    MultinomialHMM) with its settings in model_kwargs (e.g. n_features=, covariance_type=): the
    model for N states is ``family(N, seed=seed + N, **model_kwargs).fit(sequences, lengths,
    method="em", ...)``, the sizes fitted one after another (their M-step is Python's); the
    criteria are the models' own aic/bic (k log of the observed rows).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    states = [int(n) for n in states]
    if not states or any(n < 1 for n in states) or len(set(states)) != len(states):
        raise ValueError(f"states must be distinct positive integers, got {states}")
    if family is not None and family is not HMM:
        return _select_family(family, sequences, states, lengths, n_init, epochs, tol, seed, prior, criterion,
                              model_kwargs, n_symbols, symbols)
    rows, lengths, starts, n_symbols = _encoded(sequences, n_symbols, symbols, lengths)
    models, jobs = {}, []
    for n in states:
        model = HMM(n, n_symbols, symbols=symbols, seed=_seed(seed, n), **model_kwargs)
        tasks = model._em_tasks(rows, starts, lengths, epochs, tol, n_init, _seed(seed, n), prior)
        jobs.append((model, tasks, rows, lengths))
        models[n] = model
    _run(jobs, rows, [f"{n} states" for n in states])
    return Selection(states, models, rows, lengths, criterion)


def _select_family(family, sequences, states, lengths, n_init, epochs, tol, seed, prior, criterion, model_kwargs,
                   n_symbols, symbols):
    """select for a family of the core (GaussianHMM, ...): every size fitted by EM, one after another."""
    if n_symbols is not None or symbols is not None:
        raise ValueError(f"n_symbols and symbols are hmmop.HMM's; {family.__name__} takes its own settings "
                         f"(e.g. n_features=)")
    rows, lengths = family(states[0], **model_kwargs).emission.prepare(sequences, lengths)
    models, failed = {}, None
    for n in states:
        models[n] = family(n, seed=_seed(seed, n), **model_kwargs)
        try:
            models[n].fit(rows, lengths, method="em", epochs=epochs, tol=tol, n_init=n_init, seed=_seed(seed, n),
                          prior=prior, progress=False)
        except DivergenceError as exc:
            failed = failed or DivergenceError(f"{n} states: {exc}", exc.epoch, exc.history)
    if failed is not None:
        raise failed
    return Selection(states, models, rows, lengths, criterion)
