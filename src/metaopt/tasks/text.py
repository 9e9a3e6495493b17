"""Character-level text that ships with Python, split into train, validation and test.

- :func:`pydoc_topics`: the English help pages of ``pydoc_data.topics`` (about 0.5 MB in
  CPython 3.11), the text of the transformer language-model family;
- :func:`python_source`: the source code of a fixed list of standard-library modules,
  a different kind of text for problems that must not share a dataset with it.

:func:`char_dataset` cuts a text into contiguous blocks and deals them out to the splits
(eight blocks of ten to train, one to validation, one to test), so every split samples
the whole text and no window of one split overlaps another's.
"""

import collections
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

from metaopt.core import checks

UNKNOWN = "\0"
SOURCE_MODULES = (
    "argparse", "ast", "collections", "dataclasses", "difflib", "email.message",
    "enum", "fractions", "functools", "inspect", "json.decoder", "logging",
    "pathlib", "pydoc", "statistics", "string", "textwrap", "typing",
)  # fmt: skip


class TextData(NamedTuple):
    """A character-level corpus.

    Attributes:
      name: identifier, e.g. ``"pydoc_topics"``.
      vocab: the characters, index 0 standing for every character not in it.
      splits: ``{"train", "val", "test"}`` to int32 token arrays.
    """

    name: str
    vocab: str
    splits: dict[str, np.ndarray]

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """The tokens of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {name!r}")
        return self.splits[name]


def char_dataset(
    text: str, *, name: str = "text", block: int = 2048, max_vocab: int = 96
) -> TextData:
    """Tokenizes ``text`` by character and deals its blocks to train, validation and test.

    Block ``i`` goes to validation if ``i % 10 == 8``, to test if ``i % 10 == 9``, else to
    train. The vocabulary is the ``max_vocab - 1`` characters most frequent in the
    training blocks (ties broken by code point), plus an unknown token at index 0.

    Example:
      >>> data = char_dataset("abcab" * 2000, block=100, max_vocab=3)
      >>> data.vocab_size, [len(data.split(s)) for s in ("train", "val", "test")]
      (3, [8000, 1000, 1000])
      >>> data.split("train")[:5].tolist()  # 'c' is the least frequent: unknown
      [1, 2, 0, 1, 2]
    """
    block = checks.positive_int("block", block)
    max_vocab = checks.positive_int("max_vocab", max_vocab)
    if max_vocab < 2:
        raise ValueError(f"max_vocab must be at least 2, got {max_vocab}")
    if len(text) < 10 * block:
        raise ValueError(f"text must hold at least 10 blocks of {block} characters")
    blocks = [text[i : i + block] for i in range(0, len(text), block)]
    parts = {
        "train": "".join(b for i, b in enumerate(blocks) if i % 10 < 8),
        "val": "".join(b for i, b in enumerate(blocks) if i % 10 == 8),
        "test": "".join(b for i, b in enumerate(blocks) if i % 10 == 9),
    }
    counts = collections.Counter(parts["train"])
    counts.pop(UNKNOWN, None)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))[: max_vocab - 1]
    vocab = UNKNOWN + "".join(ranked)
    index = {c: i for i, c in enumerate(vocab)}
    splits = {
        s: np.fromiter((index.get(c, 0) for c in t), np.int32, len(t)) for s, t in parts.items()
    }
    return TextData(name=name, vocab=vocab, splits=splits)


def pydoc_topics(*, block: int = 2048, max_vocab: int = 96) -> TextData:
    """The help topics of ``pydoc_data.topics``, in key order, as a character corpus.

    Example:
      >>> data = pydoc_topics()
      >>> data.vocab_size, len(data.split("train")) > 300_000
      (96, True)
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return char_dataset(text, name="pydoc_topics", block=block, max_vocab=max_vocab)


def python_source(
    modules: tuple[str, ...] = SOURCE_MODULES, *, block: int = 2048, max_vocab: int = 96
) -> TextData:
    """The source code of standard-library ``modules``, concatenated, as a character corpus.

    Example:
      >>> data = python_source(("string", "textwrap", "difflib"))
      >>> data.name, data.vocab[1]  # the most frequent character of Python source
      ('python_source', ' ')
    """
    texts = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise ValueError(f"modules: {module!r} has no Python source file")
        texts.append(Path(spec.origin).read_text(encoding="utf-8"))
    return char_dataset("\n\n".join(texts), name="python_source", block=block, max_vocab=max_vocab)
