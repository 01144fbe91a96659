"""examples/crf_segmentation.py at a small size: a few hundred characters of pydoc_data.topics prose, a few
short epochs; the tagger (embeddings + convolutions + hmmop.CRF) must segment held-out stdlib docstrings
far better than any fixed-width segmentation (the trivial baseline: a word every k characters)."""
import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("crf_segmentation",
                                                  os.path.join(ROOT, "examples", "crf_segmentation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_texts_and_tags(example):
    train, held = example.training_words(), example.evaluation_words()
    assert len(train) > 10000 and len(held) > 1000
    assert all(w.isalpha() and w.islower() for w in train[:1000] + held[:1000])
    (chars, tags), = example.sequences(["the", "cat"], 40)
    np.testing.assert_array_equal(chars, [19, 7, 4, 2, 0, 19])
    np.testing.assert_array_equal(tags, [0, 1, 1, 0, 1, 1])
    assert example.spans(tags, 6) == {(0, 3), (3, 6)}
    assert example.prf([tags], [tags], [6]) == (1.0, 1.0, 1.0)
    assert example.prf([[0, 1, 1, 1, 1, 1]], [tags], [6])[2] == 0.0


def test_small_tagger_beats_fixed_width_segmentation(example):
    train = example.sequences(example.training_words()[:150], 40)            # ~800 characters
    held = example.sequences(example.evaluation_words()[:100], 40)           # ~550 characters
    lengths = [len(c) for c, _ in held]
    gold = [t for _, t in held]
    baseline = max(example.prf([np.where(np.arange(n) % k == 0, example.BEGIN, example.INSIDE) for n in lengths],
                               gold, lengths)[2] for k in range(1, 10))
    lines = []
    _, crf, history = example.train(train, held, epochs=4, batch_size=2, lr=0.02, seed=0, log=lines.append)
    assert len(lines) == 4 and "F1" in lines[-1] and "s/epoch" in lines[-1]
    assert history[-1]["nll"] < history[0]["nll"]
    assert history[-1]["f1"] > max(0.15, 2 * baseline), (history, baseline)
