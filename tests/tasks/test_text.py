"""Character corpora: blocks dealt to the splits, the vocabulary by frequency."""

import collections

import numpy as np
import pytest

from metaopt.tasks.text import char_dataset, pydoc_topics, python_source


def test_blocks_are_dealt_eight_one_one():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh"), size=5_000))
    data = char_dataset(text, block=100, max_vocab=9)
    decode = {i: c for i, c in enumerate(data.vocab)}
    parts = {s: "".join(decode[i] for i in data.split(s)) for s in ("train", "val", "test")}
    blocks = [text[i : i + 100] for i in range(0, len(text), 100)]
    assert parts["val"] == "".join(blocks[8::10])
    assert parts["test"] == "".join(blocks[9::10])
    assert parts["train"] == "".join(b for i, b in enumerate(blocks) if i % 10 < 8)


def test_vocabulary_is_the_most_frequent_training_characters():
    text = "a" * 500 + "b" * 300 + "c" * 200 + "d" * 100 + "e" * 50
    text = text * 20
    data = char_dataset(text, block=23, max_vocab=4)
    counts = collections.Counter(
        "".join(text[i : i + 23] for i in range(0, len(text), 23) if (i // 23) % 10 < 8)
    )
    top = [c for c, _ in counts.most_common(3)]
    assert data.vocab == "\0" + "".join(top)
    unknown = {c for c in text if c not in top}
    assert (data.split("train") == 0).sum() == sum(counts[c] for c in unknown)


def test_shipped_corpora_are_distinct_and_large():
    english, code = pydoc_topics(), python_source()
    assert min(len(english.split("train")), len(code.split("train"))) > 300_000
    assert english.vocab != code.vocab


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="block"):
        char_dataset("abc" * 100, block=100)
    with pytest.raises(ValueError, match="max_vocab"):
        char_dataset("abc" * 1000, block=10, max_vocab=1)
    with pytest.raises(ValueError, match="modules"):
        python_source(("sys",))
    with pytest.raises(ValueError, match="split"):
        pydoc_topics().split("dev")
