"""Deprecated: the run layer moved beside the loop, to :mod:`metaopt.train`.

``train_run``, ``RunOutcome``, ``saved_config`` and ``initial_state`` are in
:mod:`metaopt.train.train_run`; ``checkpointed_meta_train``, ``MetaTrainRun`` and
``RunStopped`` in :mod:`metaopt.train.run`; the ``build_*`` functions, ``meta_optimizer``
and ``run_mesh`` in :mod:`metaopt.train.build`. This module keeps the old path working
for one release.
"""

import warnings

from metaopt.train.build import (
    build_estimator,
    build_family,
    build_learner,
    build_lopt,
    meta_optimizer,
    run_mesh,
)
from metaopt.train.config import steps_per_epoch
from metaopt.train.run import MetaTrainRun, RunStopped, checkpointed_meta_train
from metaopt.train.train_run import RunOutcome, initial_state, saved_config, train_run

warnings.warn(
    "metaopt.cli.run has moved: import train_run, RunOutcome, saved_config and "
    "initial_state from metaopt.train.train_run, checkpointed_meta_train from "
    "metaopt.train.run, and the build_* functions from metaopt.train.build",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "MetaTrainRun",
    "RunOutcome",
    "RunStopped",
    "build_estimator",
    "build_family",
    "build_learner",
    "build_lopt",
    "checkpointed_meta_train",
    "initial_state",
    "meta_optimizer",
    "run_mesh",
    "saved_config",
    "steps_per_epoch",
    "train_run",
]
