"""Learned-optimizer architectures, one per module, each citing its paper.

Example:
  >>> import metaopt
  >>> metaopt.optimizers.lstm_optimizer(hidden_size=8).name
  'lstm'
"""

from metaopt.optimizers.lstm import lstm_optimizer
from metaopt.optimizers.mlp import mlp_optimizer
from metaopt.optimizers.preprocess import log_and_sign
from metaopt.optimizers.registry import OPTIMIZERS, build_optimizer
from metaopt.optimizers.split import conv_and_rest_optimizer
from metaopt.optimizers.versatile import versatile_optimizer

__all__ = [
    "OPTIMIZERS",
    "build_optimizer",
    "conv_and_rest_optimizer",
    "log_and_sign",
    "lstm_optimizer",
    "mlp_optimizer",
    "versatile_optimizer",
]
