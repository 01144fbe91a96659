"""Forced alignment: where each unit of a known word starts and ends in a recording of it.

    python examples/forced_alignment.py [--seed 3] [--word alignment] [--utterances 3] [--noise 1.5] [--quick]

The word's letters are its units (a repeated letter is one unit at two places).  Each letter has a fixed
3-D "acoustic" mean (UNIT_MEANS, drawn once from a seeded generator); a speaker says the word by holding
each unit for a random number of frames (MIN_FRAMES to MAX_FRAMES), each frame its unit's mean plus
Gaussian noise of standard deviation ``--noise`` (NumPy alone).

The model is a left-right hmmop.GaussianHMM with explicit parameters: one state per position of the word,
each state staying with probability STAY or moving to the next; pi starts in the first state; every other
entry of A and pi is a structural zero (``from_parameters(..., keep_zeros=True)``), so every path goes
through the units in order, never back.  Each state's Gaussian is its letter's mean with the noise's
covariance.  Alignment is ``decode(X, labels=labels)`` with the first frame labelled as the first unit and
the last frame as the last unit (-1 elsewhere): the best path that agrees with the labels and the
structure, so it ends in the word's last unit (a plain Viterbi path may stop before it: with the default
seed 3, that of the first utterance ends in the second-last unit).

Printed: each unit's true and aligned frames (start, end inclusive) of the first utterance, every
utterance's frame accuracy and largest boundary error, and ``score(X, labels=labels)`` = log P(frames,
the path starts at the first unit and ends at the last) next to ``score(X)`` = log P(frames); their
difference is log P(the path ends at the last unit | frames).  Last, a recording shorter than the word:
no path agrees, so score gives -inf and decode raises ValueError.  ``main(argv)`` returns a dict.
"""
import argparse
import string

import numpy as np

from hmmop import GaussianHMM

N_FEATURES = 3
UNIT_MEANS = dict(zip(string.ascii_lowercase, np.random.default_rng(2024).normal(0.0, 2.0, (26, N_FEATURES))))
STAY = 0.9                      # P(staying in a unit for one more frame): ten frames on average
MIN_FRAMES, MAX_FRAMES = 4, 15


def word_model(word, noise=1.0):
    """The left-right GaussianHMM of ``word`` (one state per letter, in order; see the module docstring)."""
    n = len(word)
    A = np.zeros((n, n))
    A[np.arange(n - 1), np.arange(n - 1)] = STAY
    A[np.arange(n - 1), np.arange(1, n)] = 1 - STAY
    A[n - 1, n - 1] = 1.0
    pi = np.zeros(n)
    pi[0] = 1.0
    means = np.array([UNIT_MEANS[c] for c in word])
    return GaussianHMM.from_parameters(A, pi, means, np.full((n, N_FEATURES), noise ** 2), covariance_type="diag",
                                       keep_zeros=True, dtype="float64")


def speak(rng, word, noise=1.0):
    """(frames (T, 3), states (T,)): one utterance of ``word``, each unit held MIN_FRAMES..MAX_FRAMES frames."""
    durations = rng.integers(MIN_FRAMES, MAX_FRAMES + 1, size=len(word))
    states = np.repeat(np.arange(len(word)), durations)
    means = np.array([UNIT_MEANS[c] for c in word])
    return means[states] + noise * rng.standard_normal((len(states), N_FEATURES)), states


def alignment_labels(n_frames, n_units, known=None):
    """(n_frames,) labels: the first frame in unit 0, the last in unit n_units - 1, -1 elsewhere;
    known: more {frame: unit} to impose."""
    labels = np.full(n_frames, -1)
    labels[0], labels[-1] = 0, n_units - 1
    for frame, unit in (known or {}).items():
        labels[frame] = unit
    return labels


def align(model, utterances, known=None):
    """(log P of the best paths, paths): forced alignment of a list of (T_i, D) utterances of the model's
    word; known: None or one {frame: unit} per utterance (more labels)."""
    labels = [alignment_labels(len(x), model.n_states, None if known is None else known[i])
              for i, x in enumerate(utterances)]
    return model.decode(utterances, labels=labels)


def segments(path, n_units):
    """[(unit, first frame, last frame)] of a path through units 0..n_units-1 in order (-1, -1: skipped)."""
    path = np.asarray(path)
    out = []
    for unit in range(n_units):
        frames = np.flatnonzero(path == unit)
        out.append((unit, int(frames[0]), int(frames[-1])) if frames.size else (unit, -1, -1))
    return out


def monotone(path, n_units):
    """Whether ``path`` starts at unit 0, ends at the last unit and moves by 0 or 1 unit per frame."""
    path = np.asarray(path)
    steps = np.diff(path)
    return bool(path[0] == 0 and path[-1] == n_units - 1 and ((steps == 0) | (steps == 1)).all())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=3, help="seed of the utterances")
    parser.add_argument("--word", default="alignment", help="the word (lower-case letters a-z)")
    parser.add_argument("--utterances", type=int, default=3)
    parser.add_argument("--noise", type=float, default=1.5, help="standard deviation of a frame's noise")
    parser.add_argument("--quick", action="store_true", help="one utterance")
    args = parser.parse_args(argv)
    word = args.word.lower()
    if not word or set(word) - set(string.ascii_lowercase):
        parser.error(f"--word must be letters a-z, got {args.word!r}")
    n_utterances = 1 if args.quick else args.utterances
    rng = np.random.default_rng(args.seed)
    spoken = [speak(rng, word, args.noise) for _ in range(n_utterances)]
    utterances, truths = [x for x, _ in spoken], [s for _, s in spoken]
    model = word_model(word, args.noise)
    n = len(word)

    log_prob, paths = align(model, utterances)
    labels = [alignment_labels(len(x), n) for x in utterances]
    results = {"word": word, "n_frames": [len(x) for x in utterances], "log_prob": log_prob, "utterances": []}
    print(f"forced alignment of {n_utterances} utterance(s) of {word!r} ({n} units, noise {args.noise}); "
          f"utterance 0 ({len(utterances[0])} frames):")
    print(f"{'unit':>6} {'true frames':>12} {'aligned':>10} {'error':>6}")
    for (unit, start, end), (_, t_start, t_end) in zip(segments(paths[0], n), segments(truths[0], n)):
        print(f"{unit:>3} {word[unit]:>2} {t_start:>5}-{t_end:<5} {start:>5}-{end:<5} "
              f"{max(abs(start - t_start), abs(end - t_end)):>5}")
    for i, (x, path, truth) in enumerate(zip(utterances, paths, truths)):
        found, true = segments(path, n), segments(truth, n)
        errors = [abs(a[k] - b[k]) for a, b in zip(found, true) for k in (1, 2)]
        error = max(errors)
        with_labels = model.score(x, labels=labels[i])
        free = model.score(x)
        plain = model.predict(x)[0]
        entry = {"accuracy": float(np.mean(path == truth)), "boundary_error": int(error),
                 "mean_boundary_error": float(np.mean(errors)), "plain_last_unit": int(plain[-1]),
                 "monotone": monotone(path, n), "segments": found, "true_segments": true,
                 "score_labels": with_labels, "score": free}
        results["utterances"].append(entry)
        print(f"utterance {i}: {len(x)} frames, frame accuracy {entry['accuracy']:.3f}, boundary error mean "
              f"{entry['mean_boundary_error']:.2f} max {error} frames, through all units in order: "
              f"{entry['monotone']} (plain Viterbi ends in unit {entry['plain_last_unit']})\n"
              f"    score(X, labels) {with_labels:.3f}, score(X) {free:.3f}: "
              f"P(ends at the last unit | X) = {np.exp(with_labels - free):.4f}")

    short = utterances[0][:n - 1]                   # fewer frames than units: no path agrees with the labels
    short_labels = alignment_labels(len(short), n)
    results["short_score"] = model.score(short, labels=short_labels)
    try:
        model.decode(short, labels=short_labels)
        results["short_error"] = None
    except ValueError as exc:
        results["short_error"] = str(exc)
    print(f"{n - 1} frames of {n} units: score(X, labels) = {results['short_score']}; decode: ValueError: "
          f"{results['short_error']}")
    return results


if __name__ == "__main__":
    main()
