"""Every learned-optimizer architecture metaopt knows by name.

Each architecture declares its :class:`~metaopt.core.registry.Entry` in its own module;
``entry.build(**config)`` rebuilds the architecture from the ``config`` it reports, so
saved files (:mod:`metaopt.io.serialization`) and the command line
(``metaopt train --lopt NAME``, with the entry's options as flags) both go through here.

Adding an architecture: a module with its factory and ``ENTRY``, and one line below.

Example:
  >>> OPTIMIZERS["lstm"].build(hidden_size=8).config["hidden_size"]
  8
"""

from typing import Any

from metaopt.core.registry import Entry, Registry
from metaopt.core.types import LearnedOptimizer
from metaopt.optimizers import lstm, mlp, orthogonal, versatile
from metaopt.optimizers.split import conv_and_rest_optimizer


def build_optimizer(name: str, config: dict[str, Any]) -> LearnedOptimizer:
    """Rebuilds a learned optimizer from its registered name and its ``config``.

    Example:
      >>> build_optimizer("mlp", {}).name
      'mlp'
    """
    return OPTIMIZERS[name].build(**config)


def _conv_and_rest(
    conv: dict[str, Any] | None = None, rest: dict[str, Any] | None = None, **lstm_options: Any
) -> LearnedOptimizer:
    """Two optimizers from their saved records, or two LSTMs with ``lstm_options``."""
    if conv is None and rest is None:
        return conv_and_rest_optimizer(
            lstm.lstm_optimizer(**lstm_options), lstm.lstm_optimizer(**lstm_options)
        )
    return conv_and_rest_optimizer(
        build_optimizer(conv["name"], dict(conv["config"])),
        build_optimizer(rest["name"], dict(rest["config"])),
    )


OPTIMIZERS = Registry(
    "learned optimizer",
    [
        lstm.ENTRY,
        mlp.ENTRY,
        versatile.ENTRY,
        orthogonal.ENTRY,
        Entry(
            "conv_and_rest",
            _conv_and_rest,
            lstm.LSTMOptions,
            "two LSTMs: one for convolution kernels, one for the other params",
        ),
    ],
)
