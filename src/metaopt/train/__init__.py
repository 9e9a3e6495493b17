"""The meta-training loop, its meta-step and hooks, and the run layer beside it.

``metaopt train`` as a function is ``metaopt.train.train_run.train_run`` (the module
shares the name, so it is not re-exported here).

Example:
  >>> import metaopt
  >>> metaopt.train.TrainConfig(meta_steps=2).meta_steps
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
]
