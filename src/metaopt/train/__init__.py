"""The meta-training loop, its meta-step and hooks, and the run layer beside it.

Example:
  >>> import metaopt
  >>> metaopt.train.TrainConfig(epochs=2).epochs
  2
"""

from metaopt.train.config import TrainConfig
from metaopt.train.loop import (
    MetaTrainingDiverged,
    MetaTrainResult,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
)
from metaopt.train.meta_step import MetaState, make_meta_step
from metaopt.train.run import checkpointed_meta_train
from metaopt.train.train_run import train_run

__all__ = [
    "MetaState",
    "MetaTrainResult",
    "MetaTrainState",
    "MetaTrainingDiverged",
    "TrainConfig",
    "checkpointed_meta_train",
    "init_meta_train_state",
    "make_meta_step",
    "meta_train",
    "train_run",
]
