"""The ``hmmop`` command line: fit, score, decode, sample, inspect and benchmark on plain files.

    hmmop fit book.txt --states 2            # -> book.hmmop.npz
    hmmop info book.hmmop.npz
    hmmop score book.hmmop.npz other.txt
    hmmop decode book.hmmop.npz other.txt --posteriors
    hmmop sample book.hmmop.npz --n 5 --length 80
    hmmop fit walk.csv --emissions gaussian --states 3 --covariance full   # numeric rows
    hmmop select book.txt --states 2..8 --out best.hmmop.npz   # the number of states, by BIC
    hmmop sample walk.hmmop.npz --n 5 --length 80 --out more.csv
    hmmop bench --quick
    hmmop launch -n 2 -- hmmop fit book.txt --states 2 --kvstore dist_sync

Categorical models read symbol sequences (hmmop.cli.files.read_sequences),
Gaussian models numeric rows (hmmop.cli.files.read_features), in fit and select; score, decode,
sample and info take the model class from the model file (hmmop.load).
fit, score and decode take ``--labels FILE``, the known states of some steps
(hmmop.cli.files.read_labels): fit then maximises log P(data, labels), score
prints log P(sequence, labels), decode the best path agreeing with them.

Results go to stdout (plain lines, TSV or JSON); messages and progress to
stderr.  A user's mistake prints one line "hmmop CMD: error: ..." and exits
with 2 (usage: a bad option, an output that exists) or 1 (data: a missing
or unreadable file, an unknown token, a fit that diverged); a traceback is a
bug.  ``python -m hmmop`` is the same command.
"""
import argparse
import contextlib
import json
import math
import os
import re
import shlex
import sys
import time

import numpy as np

from ..emissions.gaussian import COVARIANCE_TYPES
from ..fit import distributed
from ..fit.monitor import DivergenceError
from ..models import GaussianHMM
from ..models import select as select_models
from ..models import load as load_model
from ..models.hmm import HMM
from ..models.many import CRITERIA
from ..ops.checks import check_sizes
from . import benchmarks, plots
from .files import (TOKENS, UNKNOWN, DataError, _load_arrays, check_features, format_features, format_sequence,
                    read_features, read_labels, read_sequences, with_vocabulary, write_features)


class UsageError(Exception):
    """A bad combination of options (exit status 2)."""


def main(argv=None):
    """Run the command line with ``argv`` (default sys.argv[1:]); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = args.run(args)
        return 0 if status is None else status
    except BrokenPipeError:                  # e.g. `hmmop decode ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # no second error at exit
        return 0
    except UsageError as exc:
        return _fail(args, exc, 2)
    except (DataError, DivergenceError, ImportError, ValueError, OSError,
            distributed.DistributedError) as exc:       # ImportError: matplotlib, scikit-learn missing
        return _fail(args, exc, 1)


def _fail(args, exc, status):
    print(f"hmmop {args.command}: error: {exc}", file=sys.stderr)
    if distributed.in_job() and distributed._store is not None:
        # A worker that has joined a job: leave at once, without the final barrier (the other
        # workers would never reach it); the launcher sees the status and stops the job.
        distributed.exit_now(status)
    return status


# -- the sub-commands -----------------------------------------------------------------------------
def fit(args):
    out = args.out or _default_out(args.data)
    _check_new(out, args.force)
    if args.plot:
        _check_new(args.plot, args.force)
        plots.check_available()             # before the fit, not after it
    _check_labels_input(args)
    if args.emissions == "gaussian":
        return _fit_gaussian(args, out)
    if args.covariance is not None or args.init is not None:
        raise UsageError(f"{'--covariance' if args.covariance is not None else '--init'} applies to "
                         f"--emissions gaussian")
    args.tokens = args.tokens or "chars"
    args.method = args.method or "gradient"
    args.lr = 0.1 if args.lr is None else args.lr
    args.epochs = args.epochs or 300
    sequences, tokens, lines = read_sequences(args.data, args.tokens)
    labels = _read_labels(args, sequences, lines, args.states)
    kv, rank = None, 0
    if args.kvstore:
        kv = distributed.kvstore(args.kvstore)        # waits for the whole job to start
        rank = kv.rank
    n_symbols, symbols = _vocabulary(args.data, sequences, tokens)
    n = sum(len(s) for s in sequences)
    N = args.states
    _check_size(args, {"A": (N, N), "B": (N, n_symbols), "pi": (N,)}, f"{n_symbols} distinct symbols")
    model = HMM(args.states, n_symbols, symbols=symbols, seed=args.seed, dtype=args.dtype, tokens=tokens)
    workers = f", {kv.num_workers} workers ({args.kvstore})" if kv is not None else ""
    if rank == 0:
        _say(f"fitting {args.states} states to {len(sequences)} sequences, {n} symbols, {n_symbols} distinct "
             f"({args.method}{', ' + args.optimizer + ' lr ' + str(args.lr) if args.method == 'gradient' else ''}"
             f", up to {args.epochs} epochs{', ' + str(args.n_init) + ' starts' if args.n_init > 1 else ''}"
             f"{workers}{_labels_note(labels)})")
    start = time.perf_counter()
    with _labels_errors(args):
        model.fit(sequences, method=args.method, epochs=args.epochs, optimizer=args.optimizer,
                  learning_rate=args.lr, batch_size=args.batch_size, tol=args.tol, seed=args.seed,
                  n_init=args.n_init, kvstore=kv, progress=None if rank == 0 else False, labels=labels)
    seconds = time.perf_counter() - start
    if rank != 0:               # every worker has the same model: rank 0 writes it
        return
    ll = model.score(sequences)
    model.save(out)
    _say(f"log-likelihood {ll / n:.6f} per symbol (total {ll:.6g}){_labelled_ll(model, sequences, labels, n, 'symbol')}"
         f" after {len(model.history_)} epochs in {seconds:.2f} s; model written to {out}")
    if args.plot:
        plots.training_curve(model.histories_, n, args.plot, title=f"{args.data}: {args.states} states")
        _say(f"training curve written to {args.plot}")


def _fit_gaussian(args, out):
    """fit --emissions gaussian: a GaussianHMM of numeric rows."""
    if args.tokens is not None:
        raise UsageError("--tokens applies to --emissions categorical (Gaussian data are numeric rows)")
    if args.batch_size is not None or args.kvstore:
        raise UsageError(f"{'--batch-size' if args.batch_size is not None else '--kvstore'} applies to "
                         f"--emissions categorical (Gaussian models train on all sequences at once, here)")
    method = args.method or "em"
    lr = 0.05 if args.lr is None else args.lr
    epochs = args.epochs or (100 if method == "em" else 1000)
    covariance = args.covariance or "diag"
    sequences, _, lines = read_features(args.data)
    labels = _read_labels(args, sequences, lines, args.states)
    D = sequences[0].shape[1]
    n = _observed(sequences)
    rows = sum(len(s) for s in sequences)
    N = args.states
    covars = {"spherical": (N,), "diag": (N, D), "full": (N, D, D), "tied": (D, D)}[covariance]
    _check_size(args, {"A": (N, N), "pi": (N,), "means": (N, D), "covars": covars},
                f"{D} feature{'s' * (D != 1)}, {covariance} covariances")
    model = GaussianHMM(args.states, D, covariance_type=covariance, seed=args.seed, dtype=args.dtype)
    _say(f"fitting {args.states} Gaussian states ({covariance} covariances) to {len(sequences)} sequences, "
         f"{n} observations of {D} feature{'s' * (D != 1)}{f' ({rows - n} missing)' if rows > n else ''} "
         f"({method}{', ' + args.optimizer + ' lr ' + str(lr) if method == 'gradient' else ''}"
         f", up to {epochs} epochs{', ' + str(args.n_init) + ' starts' if args.n_init > 1 else ''}"
         f"{_labels_note(labels)})")
    start = time.perf_counter()
    with _labels_errors(args):
        model.fit(sequences, method=method, epochs=epochs, tol=args.tol, n_init=args.n_init, seed=args.seed,
                  optimizer=args.optimizer, learning_rate=lr, progress=None, init=args.init or "kmeans",
                  labels=labels)
    seconds = time.perf_counter() - start
    ll = model.score(sequences)
    model.save(out)
    _say(f"log-likelihood {ll / n:.6f} per observation (total {ll:.6g})"
         f"{_labelled_ll(model, sequences, labels, n, 'observation')} after {len(model.history_)} epochs in "
         f"{seconds:.2f} s; model written to {out}")
    if args.plot:
        plots.training_curve(model.histories_, n, args.plot, title=f"{args.data}: {args.states} Gaussian states",
                             unit="observation")
        _say(f"training curve written to {args.plot}")


def select(args):
    """select: a model for every N of --states (hmmop.select), the table and the chosen N: categorical
    HMMs of symbol sequences, or (--emissions gaussian) GaussianHMMs of numeric rows."""
    for path in (args.out, args.plot):
        if path:
            _check_new(path, args.force)
    if args.out and args.plot and os.path.abspath(args.out) == os.path.abspath(args.plot):
        raise UsageError("--out and --plot name the same file")
    if args.plot:
        plots.check_available()             # before the fits, not after them
    options = dict(states=args.states, n_init=args.n_init, epochs=args.epochs, tol=args.tol, seed=args.seed,
                   criterion=args.criterion, dtype=args.dtype)
    if args.emissions == "gaussian":
        if args.tokens is not None:
            raise UsageError("--tokens applies to --emissions categorical (Gaussian data are numeric rows)")
        covariance = args.covariance or "diag"
        sequences, _, _ = read_features(args.data)
        D = sequences[0].shape[1]
        n = _observed(sequences)
        data = f"{n} observations of {D} feature{'s' * (D != 1)}"
        fits = f"{covariance} covariances, em"
        options.update(family=GaussianHMM, n_features=D, covariance_type=covariance)
    else:
        if args.covariance is not None:
            raise UsageError("--covariance applies to --emissions gaussian")
        _check_categorical_data(args)
        sequences, tokens, _ = read_sequences(args.data, args.tokens or "chars")
        n_symbols, symbols = _vocabulary(args.data, sequences, tokens)
        largest = max(args.states)
        try:
            check_sizes({"A": (largest, largest), "B": (largest, n_symbols), "pi": (largest,)}, args.dtype)
        except ValueError as exc:
            raise UsageError(f"--states {_states_shown(args.states)} with {n_symbols} distinct symbols: "
                             f"{exc}") from None
        n = sum(len(s) for s in sequences)
        data = f"{n} symbols, {n_symbols} distinct"
        fits = "em"
        options.update(n_symbols=n_symbols, symbols=symbols, tokens=tokens)
    models = len(args.states)
    _say(f"fitting {models} model{'s' * (models != 1)} ({_states_shown(args.states)} states) to {len(sequences)} "
         f"sequences, {data} ({fits}, {args.n_init} start{'s' * (args.n_init != 1)} each, "
         f"up to {args.epochs} epochs{'' if args.tol is None else ', tol ' + str(args.tol)}; "
         f"criterion {args.criterion})")
    start = time.perf_counter()
    choice = select_models(sequences, **options)
    seconds = time.perf_counter() - start
    chosen = choice.best_n_states
    if args.json:
        print(_json({"states": choice.states, "loglik": _numbers(choice.loglik), "aic": _numbers(choice.aic),
                     "bic": _numbers(choice.bic), "n_parameters": choice.n_parameters.tolist(),
                     "criterion": choice.criterion, "chosen": chosen}))
    else:
        print(choice.table())
        print(f"chosen: {chosen} states ({_CHOSEN_BY[args.criterion]})")
    _say(f"{models * args.n_init} EM fits in {seconds:.2f} s")
    if args.out:
        choice.best.save(args.out)
        _say(f"model with {chosen} states written to {args.out}")
    if args.plot:
        plots.selection(choice.states, choice.loglik, choice.aic, choice.bic, chosen, args.criterion, args.plot,
                        title=f"{args.data}: {data}")
        _say(f"criteria against the number of states written to {args.plot}")


_CHOSEN_BY = {"bic": "smallest BIC", "aic": "smallest AIC", "loglik": "largest log-likelihood"}
_GAUSSIAN_SELECT = ("this looks like numeric rows, which select fits with --emissions gaussian (categorical HMMs "
                    "read symbols: give --tokens to read the file as text)")


def _check_categorical_data(args):
    """A DataError naming select's limitation for what looks like Gaussian data: a .npy/.npz file of
    floating-point numbers, or a .csv/.tsv file read without an explicit --tokens."""
    path = args.data
    if path != "-" and path.endswith((".npy", ".npz")):
        try:
            X, _ = _load_arrays(path)
        except DataError:
            return                          # read_sequences says what is wrong with it
        if X.dtype.kind in "fc":
            raise DataError(f"{path}: X holds {X.dtype} numbers, not integer codes; {_GAUSSIAN_SELECT}")
    elif args.tokens is None and path.lower().endswith((".csv", ".tsv")):
        raise DataError(f"{path}: a .csv/.tsv file is read as numeric rows; {_GAUSSIAN_SELECT} (to select a "
                        f"categorical model of its text, give --tokens chars, words or ints)")


def _vocabulary(path, sequences, tokens):
    """(n_symbols, symbols) of categorical data as fit and select model it: integer codes 0..max
    (symbols None; a negative code is a DataError), else the sorted distinct tokens."""
    if tokens == "ints":
        if any(len(s) and np.min(s) < 0 for s in sequences):
            raise DataError(f"{path}: integer codes must be >= 0")
        return int(max(int(np.max(s)) for s in sequences if len(s))) + 1, None
    symbols = sorted({tok for seq in sequences for tok in seq})
    return len(symbols), symbols


def _states_shown(states):
    """--states' numbers as a short text: 2..8 for a run of consecutive ones, else 2, 3, 5."""
    if len(states) > 2 and states == list(range(states[0], states[-1] + 1)):
        return f"{states[0]}..{states[-1]}"
    return ", ".join(str(n) for n in states)


def _states_list(text):
    """An argparse type: --states A..B (A to B inclusive) or a comma list 2,3,5 (or one number), as
    a list of distinct positive integers, in the order given."""
    text = text.strip()
    form = "a range A..B (inclusive) or a comma list such as 2,3,5 of positive integers"
    if ".." in text:
        low, _, high = text.partition("..")
        try:
            low, high = int(low), int(high)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}") from None
        if low < 1:
            raise argparse.ArgumentTypeError(f"{text}: the numbers of states must be >= 1")
        if high < low:
            raise argparse.ArgumentTypeError(f"{text}: an empty range ({high} < {low}); write the smaller number "
                                             f"first")
        return list(range(low, high + 1))
    try:
        states = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}") from None
    if any(n < 1 for n in states):
        raise argparse.ArgumentTypeError(f"{text}: the numbers of states must be >= 1")
    repeated = sorted({n for n in states if states.count(n) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{text}: {', '.join(map(str, repeated))} given more than once")
    return states


def _numbers(values):
    """Floats for JSON: a non-finite one (the -inf of an impossible sequence) as null - JSON has no
    infinities, and Python's -Infinity breaks other readers."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).ravel()]


def _json(obj):
    return json.dumps(obj, allow_nan=False)


def score(args):
    model, sequences, n, labels = _model_and_data(args)
    lls = model.score_sequences(sequences, labels=labels)
    total = float(lls.sum())
    unit = "observation" if isinstance(model, GaussianHMM) else "symbol"
    if args.json:
        print(_json({"log_likelihoods": _numbers(lls), "total": _numbers([total])[0], f"{unit}s": n}))
    else:
        for ll in lls:
            print(repr(float(ll)))
    what = "log P(data, labels)" if labels is not None else "log-likelihood"
    _say(f"total {what} {total:.6g} over {len(lls)} sequences, "
         f"{total / max(n, 1):.6f} per {unit} ({n} {unit}s)")
    impossible = np.flatnonzero(lls == -np.inf) if labels is not None else ()
    if len(impossible):
        _say(f"{len(impossible)} sequence{'s' * (len(impossible) != 1)} with no state path that agrees with "
             f"the labels (log-probability -inf; the first: sequence {impossible[0]}, "
             f"{_labels_where(args, int(impossible[0]))})")


def decode(args):
    if args.plot:
        _check_new(args.plot, args.force)
        plots.check_available()
    model, sequences, _, labels = _model_and_data(args)
    with _labels_errors(args):
        _, paths = model.decode(sequences, labels=labels)
    if isinstance(model, GaussianHMM):      # numeric rows: the observed values where the symbol would be
        names = args.feature_names or [f"x{d}" for d in range(model.n_features)]
        columns, cells = names, lambda obs: [repr(float(v)) for v in obs]
        what = "observations and posteriors"

        def plot_options(k):
            return dict(tokens=None, observations=sequences[k], feature_names=names)
    else:
        columns, cells = ["symbol"], lambda tok: [_shown(tok)]
        what = "posteriors"

        def plot_options(k):
            return dict(tokens=[_shown(t) for t in sequences[k]])
    if args.posteriors:
        gamma = model.predict_proba(sequences, labels=labels)
        print("\t".join(["sequence", "step"] + columns + ["viterbi"]
                        + [f"state_{i}" for i in range(model.n_states)]))
        for b, (seq, path, g) in enumerate(zip(sequences, paths, gamma)):
            for t, (obs, state, row) in enumerate(zip(seq, path, g)):
                print("\t".join([str(b), str(t)] + cells(obs) + [str(state)] + [f"{p:.6g}" for p in row]))
    else:
        for path in paths:
            print(" ".join(str(s) for s in path))
    if args.plot:
        k = args.sequence
        if not 0 <= k < len(sequences):
            raise UsageError(f"--sequence {k}: the data has sequences 0..{len(sequences) - 1}")
        gamma = model.predict_proba([sequences[k]], labels=None if labels is None else [labels[k]])[0]
        options = plot_options(k)
        plots.posteriors(gamma, paths[k], options.pop("tokens"), args.plot, title=f"{args.data}, sequence {k}",
                         **options)
        _say(f"{what} of sequence {k} written to {args.plot}")


def sample(args):
    if args.out:
        _check_new(args.out, args.force)
    model = _load(args.model)
    sequences, states = model.sample(args.n, args.length, seed=args.seed)
    if isinstance(model, GaussianHMM):
        if args.out:
            write_features(args.out, sequences, states)
            _say(f"{args.n} sequences of {args.length} observations written to {args.out}")
        else:
            sys.stdout.write(format_features(sequences, "\t"))
        return
    if args.out and args.out.endswith(".npz"):
        raise UsageError("a categorical model's samples are written as text; give --out a text file name")
    text = "".join(format_sequence(seq, model.tokens or "ints") + "\n" for seq in sequences)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        _say(f"{args.n} sequences of {args.length} symbols written to {args.out}")
    else:
        sys.stdout.write(text)


def info(args):
    if args.plot:
        _check_new(args.plot, args.force)
        plots.check_available()
    model = _load(args.model)
    if isinstance(model, GaussianHMM):
        return _info_gaussian(args, model)
    A, B, pi = model.probabilities()
    names = [_shown(s) for s in model.symbols] if model.symbols is not None else \
        [str(k) for k in range(model.n_symbols)]
    print(f"model\t{args.model}")
    print(f"states\t{model.n_states}")
    print(f"symbols\t{model.n_symbols}")
    print(f"dtype\t{model.dtype.name}")
    print(f"tokens\t{model.tokens or 'ints'}")
    if model.symbols is not None:
        print(f"vocabulary\t{' '.join(names[:200])}{' ...' if len(names) > 200 else ''}")
    if model.mask:
        print(f"structural zeros\t{', '.join(model.mask)}")
    print(f"free parameters\t{model.n_free_parameters}")
    _print_transitions(pi, A)
    for i in range(model.n_states):
        top = np.argsort(-B[i], kind="stable")[:args.top]
        print(f"state {i} emits\t" + "  ".join(f"{names[k]} {B[i, k]:.3f}" for k in top))
    if args.plot:
        plots.emissions(B, names, args.plot, title=f"{args.model}: emissions")
        _say(f"emission heat map written to {args.plot}")


def _info_gaussian(args, model):
    """info of a Gaussian model: sizes, initial and transition probabilities, means and covariances."""
    covars = model.covars
    print(f"model\t{args.model}")
    print("family\tgaussian")
    print(f"states\t{model.n_states}")
    print(f"features\t{model.n_features}")
    print(f"covariance\t{model.covariance_type}")
    print(f"dtype\t{model.dtype.name}")
    if model.mask:
        print(f"structural zeros\t{', '.join(model.mask)}")
    print(f"free parameters\t{model.n_free_parameters}")
    _print_transitions(model.pi, model.A)
    print("feature\t" + "\t".join(f"x{d}" for d in range(model.n_features)))
    for i in range(model.n_states):
        print(f"state {i} mean\t" + "\t".join(f"{v:.6g}" for v in model.means[i]))
        print(f"state {i} sd\t" + "\t".join(f"{math.sqrt(max(v, 0.0)):.6g}" for v in np.diag(covars[i])))
        if model.covariance_type == "full":
            for d in range(model.n_features):
                print(f"state {i} covariance {d}\t" + "\t".join(f"{v:.6g}" for v in covars[i, d]))
    if model.covariance_type == "tied":
        for d in range(model.n_features):
            print(f"tied covariance {d}\t" + "\t".join(f"{v:.6g}" for v in covars[0, d]))
    if args.plot:
        plots.means(model.means, covars, None, args.plot, title=f"{args.model}: Gaussian means")
        _say(f"means heat map written to {args.plot}")


def _print_transitions(pi, A):
    print("initial\t" + "\t".join(f"{p:.4f}" for p in pi))
    print("transitions\t" + "\t".join(f"to {j}" for j in range(len(pi))))
    for i in range(len(pi)):
        print(f"from {i}\t" + "\t".join(f"{p:.4f}" for p in A[i]))


def launch(args):
    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if len(command) == 1 and " " in command[0]:      # -- "hmmop fit data.txt ...", quoted whole
        command = shlex.split(command[0])
    if not command:
        raise UsageError("no command to run: give it after --, e.g. "
                         "hmmop launch -n 2 -- hmmop fit data.txt --states 4 --kvstore dist_sync")
    hosts = distributed.read_hosts(args.hosts) if args.hosts else None
    return distributed.launch(args.workers, args.servers, command, timeout=args.timeout, hosts=hosts,
                              port=args.port)


def bench(args):
    if args.plot:
        _check_new(args.plot, args.force)
        plots.check_available()
    benchmarks.main(quick=args.quick, plot=args.plot, out=sys.stdout, err=sys.stderr)


# -- helpers ----------------------------------------------------------------------------------------
def _model_and_data(args):
    """(model, sequences with the model's vocabulary applied, number of symbols, labels); for a Gaussian
    model (model, numeric sequences of its width, number of observed rows, labels).  labels: --labels'
    states per sequence (-1 unknown; with --unknown skip, those of skipped tokens dropped), or None."""
    _check_labels_input(args)
    model = _load(args.model)
    args.feature_names = None
    if isinstance(model, GaussianHMM):
        if args.tokens is not None or args.unknown is not None:
            raise UsageError(f"{'--tokens' if args.tokens is not None else '--unknown'} applies to categorical "
                             f"models; {args.model} is a Gaussian model (numeric rows)")
        sequences, names, lines = read_features(args.data)
        check_features(sequences, lines, args.data, model.n_features)
        args.feature_names = names
        return model, sequences, _observed(sequences), _read_labels(args, sequences, lines, model.n_states)
    tokens = args.tokens or model.tokens or "ints"
    sequences, tokens, lines = read_sequences(args.data, tokens)
    labels = _read_labels(args, sequences, lines, model.n_states)
    if model.symbols is not None:
        if tokens == "ints":
            raise UsageError(f"the model has a vocabulary of {model.tokens or 'tokens'}; "
                             f"read the data with --tokens chars or words")
        unknown = args.unknown or "error"
        if labels is not None and unknown == "skip":        # the labels of skipped tokens go with them
            known = set(model.symbols)
            labels = [lab[np.array([tok in known for tok in seq], dtype=bool)] if len(seq) else lab
                      for seq, lab in zip(sequences, labels)]
        sequences = with_vocabulary(sequences, lines, model.symbols, unknown, args.data)
    elif tokens != "ints":
        raise UsageError("the model takes integer codes; read the data with --tokens ints")
    return model, sequences, sum(len(s) for s in sequences), labels


def _check_labels_input(args):
    """A usage error for --labels and the data both on standard input."""
    if getattr(args, "labels", None) == "-" and args.data == "-":
        raise UsageError("--labels - and DATA - would both read standard input; give one of them a file")


def _read_labels(args, sequences, lines, n_states):
    """--labels' states of each sequence (files.read_labels), or None without --labels; keeps the
    labels' line of each sequence (args.label_lines) for messages."""
    args.label_lines = None
    if args.labels is None:
        return None
    labels, args.label_lines = read_labels(args.labels, [len(s) for s in sequences], n_states, args.data, lines)
    return labels


def _labels_where(args, b):
    """--labels' file and the line of sequence b's labels, for messages."""
    return f"{'standard input' if args.labels == '-' else args.labels}, line {args.label_lines[b]}"


@contextlib.contextmanager
def _labels_errors(args):
    """The models' ValueError for labels that no state path agrees with ("labels: sequence b, step t:
    ...") as a DataError naming --labels' file and line (status 1)."""
    try:
        yield
    except ValueError as exc:
        message = str(exc)
        match = re.match(r"labels: sequence (\d+)", message)
        if args.labels is None or match is None or isinstance(exc, DataError):
            raise
        raise DataError(f"{_labels_where(args, int(match.group(1)))}: {message[len('labels: '):]}") from None


def _labels_note(labels):
    """The fit message's note on --labels."""
    if labels is None:
        return ""
    known = sum(int((lab >= 0).sum()) for lab in labels)
    total = sum(len(lab) for lab in labels)
    return f", {known} of {total} steps labelled"


def _labelled_ll(model, sequences, labels, n, unit):
    """The fit message's log P(data, labels) per symbol (observation), with --labels (fit's objective)."""
    if labels is None:
        return ""
    ll = model.score(sequences, labels=labels)
    return f", log P(data, labels) {ll / max(n, 1):.6f} per {unit} (total {ll:.6g})"


def _load(path):
    """The model in ``path``: an HMM (file version 1) or a GaussianHMM (version 2)."""
    try:
        model = load_model(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such model file") from None
    if not isinstance(model, (HMM, GaussianHMM)):
        raise DataError(f"{path}: the command line reads categorical and Gaussian models, not a "
                        f"{type(model).__name__}")
    return model


def _check_size(args, shapes, data):
    """A usage error naming --states when the model's parameters (``shapes``) cannot be allocated."""
    try:
        check_sizes(shapes, args.dtype)
    except ValueError as exc:
        raise UsageError(f"--states {args.states} with {data}: {exc}") from None


def _observed(sequences):
    """Number of observed (not all-NaN) rows of numeric sequences."""
    return int(sum((~np.isnan(s).all(axis=1)).sum() for s in sequences))


def _default_out(data):
    stem = "model" if data == "-" else os.path.splitext(os.path.basename(data))[0]
    return f"{stem}.hmmop.npz"


def _check_new(path, force):
    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists; add --force to overwrite it")


def _shown(token):
    """A token as one visible, tab-free field."""
    if token is None:
        return "?"
    return {" ": "␣", "\t": "⇥", "\n": "⏎"}.get(token, str(token)) if isinstance(token, str) else str(token)


def _say(message):
    print(message, file=sys.stderr)


def _number(convert, ok, what):
    """An argparse type: convert(text), which must satisfy ok(value); else a usage error."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
_non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _parser():
    parser = argparse.ArgumentParser(
        prog="hmmop", description="Hidden Markov models on plain files: fit, score, decode, sample. Categorical "
        "models read symbol sequences (text, one per line); Gaussian models (fit --emissions gaussian) read "
        "numeric rows (CSV/TSV, a blank line between sequences, or .npy/.npz arrays).",
        epilog="Run 'hmmop COMMAND --help' for a command's options and an example.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, run, help, example):
        p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=run)
        return p

    def data_options(p):
        p.add_argument("--tokens", choices=TOKENS, default=None,
                       help="categorical models: how a line splits into symbols (default: as the model was "
                            "fitted); a Gaussian model reads numeric rows")
        p.add_argument("--unknown", choices=UNKNOWN, default=None,
                       help="categorical models: a token the model does not know: an error (default), "
                            "skipped, or a missing observation")

    def force(p):
        p.add_argument("--force", action="store_true", help="overwrite output files that exist")

    def labels(p, what):
        p.add_argument("--labels", metavar="FILE", default=None,
                       help="known states of some steps: one line per sequence of DATA (same order), one "
                            "whitespace-separated entry per step (symbol or row), a state index or - for "
                            f"unknown; {what}")

    p = command("fit", fit, "Fit an HMM to the sequences of a file: symbols, one sequence per line "
                "(categorical), or numeric rows, one observation per line (--emissions gaussian).",
                "hmmop fit book.txt --states 2 --plot curve.png\n"
                "  hmmop fit walk.csv --emissions gaussian --states 3 --covariance full")
    p.add_argument("data", help="categorical: text file (one sequence per non-empty line) or .npy/.npz codes; "
                                "gaussian: CSV/TSV/whitespace-separated numbers (one row per step, a blank line "
                                "between sequences, empty/nan/NA a missing value, an optional header line of "
                                "names, # comments), a .npy (T, D) sequence or a .npz with X (n, D) and "
                                "optional lengths; - for stdin (text)")
    p.add_argument("--states", type=_positive_int, required=True, help="number of hidden states")
    p.add_argument("--emissions", choices=("categorical", "gaussian"), default="categorical",
                   help="the emission family: categorical symbols (default) or Gaussian vectors")
    p.add_argument("--covariance", choices=COVARIANCE_TYPES, default=None,
                   help="gaussian: the covariance type (default diag)")
    p.add_argument("--init", choices=("kmeans", "random"), default=None,
                   help="gaussian: the means' start, k-means (default; needs scikit-learn) or random rows")
    p.add_argument("--tokens", choices=TOKENS, default=None,
                   help="categorical: how a line splits into symbols: characters (default), words, or "
                        "integer codes")
    p.add_argument("--method", choices=("gradient", "em"), default=None,
                   help="gradient descent (default for categorical) or Baum-Welch EM (default for gaussian)")
    p.add_argument("--optimizer", default="adam", help="MXNet optimizer for --method gradient (default adam)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default 0.1 categorical, 0.05 gaussian)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs, or EM iterations (default 300 categorical; gaussian 100 EM, 1000 gradient)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="categorical: sequences per step (default: all, one step per epoch)")
    p.add_argument("--n-init", type=_positive_int, default=1, help="fits from that many starts; keep the best")
    p.add_argument("--tol", type=_non_negative_float, default=1e-6,
                   help="stop when an epoch changes the log-likelihood per symbol (per observation) by less "
                        "(default 1e-6)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initialisation and minibatches")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--out", help="model file to write (default: DATA's name with .hmmop.npz)")
    p.add_argument("--plot", metavar="CURVE.png", help="draw the training curve (needs matplotlib)")
    p.add_argument("--kvstore", choices=distributed.DIST_TYPES, default=None,
                   help="categorical: train as one worker of a job started by 'hmmop launch' (each worker reads all of "
                        "DATA and trains on its share; rank 0 writes the model)")
    labels(p, "the fit then maximises log P(data, labels)")
    force(p)

    p = command("select", select, "Choose the number of states: fit a categorical HMM for every N of --states "
                "(EM, --n-init starts each, all in one call), or a Gaussian HMM of numeric rows (--emissions "
                "gaussian), and print each N's log-likelihood, AIC and BIC and the N the criterion picks.",
                "hmmop select book.txt --states 2..8 --seed 0 --out best.hmmop.npz --plot criteria.png\n"
                "  hmmop select codes.npz --states 2,3,5 --criterion aic --json\n"
                "  hmmop select walk.csv --emissions gaussian --covariance full --states 1..5")
    p.add_argument("data", help="text file (one sequence per non-empty line) or .npy/.npz integer codes (X, "
                                "optional lengths); - for stdin (text)")
    p.add_argument("--states", type=_states_list, required=True, metavar="A..B|N,N,...",
                   help="the numbers of states to try: a range A..B (inclusive) or a comma list such as 2,3,5")
    p.add_argument("--tokens", choices=TOKENS, default=None,
                   help="how a line splits into symbols: characters (default), words, or integer codes")
    p.add_argument("--n-init", type=_positive_int, default=10, help="EM starts per N; keep the best (default 10)")
    p.add_argument("--epochs", type=_positive_int, default=100, help="EM iterations per start (default 100)")
    p.add_argument("--tol", type=_non_negative_float, default=None,
                   help="stop a start when an iteration changes the log-likelihood per symbol by less (default: "
                        "run every epoch)")
    p.add_argument("--criterion", choices=CRITERIA, default="bic",
                   help="bic, aic (the smallest wins) or loglik (the largest; it always favours more states); "
                        "default bic")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the starts (N states use seed + N, as in hmmop.select)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the models' dtype (default float32, as fit)")
    p.add_argument("--emissions", choices=("categorical", "gaussian"), default="categorical",
                   help="categorical symbols (default) or Gaussian vectors (numeric rows)")
    p.add_argument("--covariance", choices=COVARIANCE_TYPES, default=None,
                   help="gaussian: the covariance type (default diag)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (states, loglik, aic, bic, n_parameters, criterion, chosen) "
                        "instead of the table")
    p.add_argument("--out", metavar="BEST.npz", help="write the chosen model, as fit writes models (default: none)")
    p.add_argument("--plot", metavar="CRITERIA.png",
                   help="draw AIC, BIC and the log-likelihood against N, the chosen N marked (needs matplotlib)")
    force(p)

    p = command("score", score, "Per-sequence log-likelihoods of a file under a model (and the total).",
                "hmmop score book.hmmop.npz chapter2.txt --json")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--json", action="store_true", help="one JSON object instead of one number per line "
                   "(the -inf of an impossible sequence written as null)")
    labels(p, "prints log P(sequence, labels)")
    data_options(p)

    p = command("decode", decode, "The most likely state path (Viterbi) of each sequence, one per line.",
                "hmmop decode book.hmmop.npz chapter2.txt --posteriors > posteriors.tsv")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--posteriors", action="store_true",
                   help="per-step state probabilities as TSV (sequence, step, symbol, viterbi, state_i...; "
                        "for a Gaussian model the row's values, one column per feature, replace symbol)")
    p.add_argument("--plot", metavar="STATES.png",
                   help="draw one sequence's posteriors and path (and, for a Gaussian model, its values)")
    p.add_argument("--sequence", type=int, default=0, help="which sequence --plot draws (default 0)")
    labels(p, "the best path agreeing with them (forced alignment), posteriors given them")
    data_options(p)
    force(p)

    p = command("sample", sample, "Draw sequences from a model, written as the data would be (a Gaussian "
                "model's: numeric rows, a blank line between sequences).",
                "hmmop sample book.hmmop.npz --n 5 --length 80 --seed 1\n"
                "  hmmop sample walk.hmmop.npz --n 5 --length 80 --out more.npz")
    p.add_argument("model")
    p.add_argument("--n", type=_positive_int, default=5, help="number of sequences (default 5)")
    p.add_argument("--length", type=_positive_int, default=80, help="steps per sequence (default 80)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", metavar="FILE",
                   help="write to FILE instead of stdout; Gaussian: .npz (X, lengths, states), .csv "
                        "(comma-separated) or any other name (tab-separated, as stdout)")
    force(p)

    p = command("info", info, "Show a model: sizes, vocabulary, transitions, each state's likeliest symbols "
                "(Gaussian: each state's means, standard deviations and, full or tied, covariances).",
                "hmmop info book.hmmop.npz --plot emissions.png")
    p.add_argument("model")
    p.add_argument("--top", type=_positive_int, default=8,
                   help="categorical: symbols shown per state (default 8)")
    p.add_argument("--plot", metavar="EMISSIONS.png",
                   help="draw the emission matrix as a heat map (Gaussian: the means per state and feature)")
    force(p)

    p = command("launch", launch,
                "Run COMMAND as the workers of a distributed (parameter-server) job, with its scheduler and "
                "servers; stop the whole job when any process fails.",
                "hmmop launch -n 2 -- hmmop fit book.txt --states 8 --kvstore dist_sync --out book.npz")
    p.add_argument("-n", "--workers", type=_positive_int, required=True, help="number of workers")
    p.add_argument("-s", "--servers", type=_positive_int, default=1, help="number of servers (default 1)")
    p.add_argument("--hosts", metavar="FILE",
                   help="run servers and workers over ssh on these hosts (one per line), round-robin; "
                        "default: all on this machine over loopback")
    p.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                   help="stop the job (status 124) when it runs longer than S seconds")
    p.add_argument("--port", type=_number(int, lambda v: 1 <= v <= 65535, "a port number"), default=None,
                   help="the scheduler's port (default: a free one)")
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the worker's command line, after --")

    p = command("bench", bench, "Benchmark hmmop against the autograd unroll and hmmlearn on this machine.",
                "hmmop bench --quick --plot bench.png")
    p.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    p.add_argument("--plot", metavar="BENCH.png", help="draw the tables")
    force(p)
    return parser
