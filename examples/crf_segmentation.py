"""Word segmentation of English with its spaces removed: a character tagger with hmmop.CRF on top.

    python examples/crf_segmentation.py [--epochs 4] [--encoder conv|lstm] [--train-chars N]

Each character is tagged B (begins a word) or I (inside one), the classic CRF formulation of Chinese word
segmentation; the labels come from the text itself.  Model: character embeddings (a-z) -> a gluon
encoder (two 1-D convolutions of width 5, the second dilated by 2: 13 characters of context; or a BiLSTM)
-> a Dense layer of 2 emission scores per character -> hmmop.CRF(2), with I forbidden as a sequence's first
tag (allowed_start), trained end to end with Adam on the CRF's NLL.

Texts (no network needed, they ship with every CPython):
- training: the English prose of the standard library's pydoc_data/topics.py (the documentation topics of
  ``help()``): lines indented like code, holding ``>>>``, or with fewer than 80% letters and spaces are
  dropped; words are runs of letters, lowercased;
- evaluation: the docstrings of a fixed list of stdlib modules (EVAL_MODULES), filtered the same way.
Sequences are runs of consecutive words of up to MAX_CHARS characters.  Evaluation decodes each sequence
(Viterbi in C) and scores the predicted words against the true ones by their character spans: word-level
precision, recall and F1.  Printed per epoch: the training NLL per character, the evaluation P/R/F1 and the
time of the epoch.
"""
import argparse
import importlib
import re
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from hmmop.nn.crf import CRF

EVAL_MODULES = ("argparse", "collections", "json", "logging", "subprocess", "textwrap", "unittest", "csv",
                "zipfile", "tarfile", "http.client", "email", "pathlib", "shutil", "threading", "socket",
                "functools", "itertools", "random", "string", "datetime", "calendar", "configparser")
MAX_CHARS = 80
BEGIN, INSIDE = 0, 1        # the tags B and I


def prose_lines(text):
    """The lines of ``text`` that read as prose (see the module docstring)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("    ") or ">>>" in line or "..." in line[:6]:
            continue
        s = line.strip()
        if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
            continue
        out.append(s)
    return out


def words_of(lines):
    return [w for line in lines for w in re.findall(r"[a-z]+", line.lower())]


def training_words():
    from pydoc_data import topics
    return words_of(prose_lines("\n".join(topics.topics[k] for k in sorted(topics.topics))))


def evaluation_words():
    docs = []
    for name in EVAL_MODULES:
        module = importlib.import_module(name)
        docs.append(module.__doc__ or "")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if not attr.startswith("_") and getattr(obj, "__module__", None) == name and obj.__doc__:
                docs.append(obj.__doc__)
    return words_of(prose_lines("\n".join(docs)))


def sequences(words, max_chars=MAX_CHARS):
    """[(chars (L,) int32 in 0..25, tags (L,) B/I)]: consecutive words packed into runs of <= max_chars."""
    out, cur = [], []
    for w in words:
        w = w[:max_chars]
        if sum(map(len, cur)) + len(w) > max_chars:
            out.append(cur)
            cur = []
        cur.append(w)
    if cur:
        out.append(cur)
    result = []
    for ws in out:
        chars = np.frombuffer("".join(ws).encode(), dtype=np.uint8).astype(np.int32) - ord("a")
        tags = np.concatenate([[BEGIN] + [INSIDE] * (len(w) - 1) for w in ws]).astype(np.int32)
        result.append((chars, tags))
    return result


def pad(batch):
    """(chars (n, T) int32 padded with 26, tags (n, T), lengths (n,)) of a list of sequences."""
    lengths = np.array([len(c) for c, _ in batch])
    T = int(lengths.max())
    chars = np.full((len(batch), T), 26, dtype=np.int32)
    tags = np.zeros((len(batch), T), dtype=np.int32)
    for i, (c, t) in enumerate(batch):
        chars[i, :len(c)], tags[i, :len(t)] = c, t
    return chars, tags, lengths


class Tagger(gluon.HybridBlock):
    """chars (n, T) -> emission scores (n, T, 2)."""

    def __init__(self, encoder="conv", dim=32, hidden=128, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        with self.name_scope():
            self.embed = gluon.nn.Embedding(27, dim)
            if encoder == "conv":
                self.conv1 = gluon.nn.Conv1D(hidden, 5, padding=2, activation="relu")
                self.conv2 = gluon.nn.Conv1D(hidden, 5, padding=4, dilation=2, activation="relu")
            else:
                self.lstm = gluon.rnn.LSTM(hidden // 2, bidirectional=True, layout="NTC")
            self.out = gluon.nn.Dense(2, flatten=False)

    def hybrid_forward(self, F, chars):
        x = self.embed(chars)                                  # (n, T, dim)
        if self.encoder == "conv":
            x = F.transpose(x, (0, 2, 1))                      # (n, dim, T)
            x = self.conv2(self.conv1(x))
            x = F.transpose(x, (0, 2, 1))
        else:
            x = self.lstm(x)
        return self.out(x)


def spans(tags, length):
    """Set of (start, end) word spans of a B/I tag row."""
    starts = np.flatnonzero(np.asarray(tags[:length]) == BEGIN).tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return set(zip(starts, starts[1:] + [length]))


def prf(pred_rows, gold_rows, lengths):
    """Word-level (precision, recall, F1) of predicted against gold tag rows."""
    hit = n_pred = n_gold = 0
    for p, g, L in zip(pred_rows, gold_rows, lengths):
        sp, sg = spans(p, L), spans(g, L)
        hit += len(sp & sg)
        n_pred += len(sp)
        n_gold += len(sg)
    precision, recall = hit / max(n_pred, 1), hit / max(n_gold, 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def evaluate(tagger, crf, data, batch_size=256):
    pred, gold, lens = [], [], []
    for i in range(0, len(data), batch_size):
        chars, tags, lengths = pad(data[i:i + batch_size])
        paths, _ = crf.decode(tagger(mx.nd.array(chars, dtype="int32")), lengths)
        pred += paths
        gold += list(tags)
        lens += lengths.tolist()
    return prf(pred, gold, lens)


def train(train_data, eval_data, epochs=4, encoder="conv", batch_size=32, lr=0.01, seed=0, log=print):
    """Train; return (tagger, crf, history: [{'epoch', 'nll', 'precision', 'recall', 'f1', 'seconds'}])."""
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    tagger = Tagger(encoder)
    crf = CRF(2, allowed_start=[True, False])
    tagger.initialize(mx.init.Xavier())
    crf.initialize()
    tagger.hybridize()
    crf.hybridize()
    params = tagger.collect_params()
    params.update(crf.collect_params())
    trainer = gluon.Trainer(params, "adam", {"learning_rate": lr})
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(len(train_data))
        total, chars_seen = 0.0, 0
        for i in range(0, len(order), batch_size):
            chars, tags, lengths = pad([train_data[j] for j in order[i:i + batch_size]])
            with autograd.record():
                nll = crf(tagger(mx.nd.array(chars, dtype="int32")), mx.nd.array(tags, dtype="int32"),
                          mx.nd.array(lengths, dtype="int64"))
                loss = nll.sum() / float(lengths.sum())
            loss.backward()
            trainer.step(1)
            total += float(nll.sum().asscalar())
            chars_seen += int(lengths.sum())
        seconds = time.perf_counter() - start
        p, r, f = evaluate(tagger, crf, eval_data)
        history.append({"epoch": epoch, "nll": total / chars_seen, "precision": p, "recall": r, "f1": f,
                        "seconds": seconds})
        log(f"epoch {epoch}: train NLL/char {total / chars_seen:.4f}  eval P {p:.3f} R {r:.3f} F1 {f:.3f}  "
            f"({seconds:.1f} s/epoch)")
    return tagger, crf, history


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--encoder", choices=("conv", "lstm"), default="conv")
    ap.add_argument("--train-chars", type=int, default=None, help="use only about this many training characters")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train_data, eval_data = sequences(training_words()), sequences(evaluation_words())
    if args.train_chars:
        n = np.searchsorted(np.cumsum([len(c) for c, _ in train_data]), args.train_chars) + 1
        train_data = train_data[:n]
    print(f"training: pydoc_data.topics prose, {len(train_data)} sequences, "
          f"{sum(len(c) for c, _ in train_data)} characters; evaluation: docstrings of {len(EVAL_MODULES)} "
          f"stdlib modules, {len(eval_data)} sequences, {sum(len(c) for c, _ in eval_data)} characters")
    _, _, history = train(train_data, eval_data, epochs=args.epochs, encoder=args.encoder, seed=args.seed)
    best = max(history, key=lambda h: h["f1"])
    print(f"final F1 {history[-1]['f1']:.3f} (best {best['f1']:.3f} at epoch {best['epoch']}), "
          f"{np.mean([h['seconds'] for h in history]):.1f} s per epoch")


if __name__ == "__main__":
    main()
