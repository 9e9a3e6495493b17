"""The pieces of a run that a :class:`~metaopt.train.config.TrainConfig` names.

Every name is looked up in its registry (``TASKS``, ``OPTIMIZERS``, ``LEARNERS``,
``ESTIMATORS``) and built with the run's options, so a newly registered entry needs
nothing here.
"""

from typing import NamedTuple

import jax
import optax
from jax.sharding import Mesh

from metaopt.core.sharding import check_divisible, select_devices, task_mesh
from metaopt.core.types import Estimator, LearnedOptimizer, MetaLearner, TaskFamily
from metaopt.estimators.options import RunSpec
from metaopt.estimators.registry import ESTIMATORS
from metaopt.learners.registry import LEARNERS
from metaopt.optimizers.registry import OPTIMIZERS
from metaopt.tasks.registry import TASKS
from metaopt.train.config import TrainConfig


def build_family(task: str, split: str = "train") -> TaskFamily:
    """The family a task name stands for; ``split`` picks a dataset's split.

    Example:
      >>> build_family("quadratic").name
      'quadratic'
    """
    return TASKS[task].build(split)


def build_lopt(config: TrainConfig) -> LearnedOptimizer:
    """The learned optimizer ``config.lopt`` names, with its options from ``config``.

    Example:
      >>> build_lopt(TrainConfig(lopt="mlp")).name
      'mlp'
    """
    entry = OPTIMIZERS[config.lopt]
    options = entry.make_options(config.options)
    return entry.build(**({} if options is None else vars(options)))


def build_learner(config: TrainConfig, lopt: LearnedOptimizer, family: TaskFamily) -> MetaLearner:
    """The meta-learner ``config.learner`` names.

    Example:
      >>> from metaopt import lstm_optimizer, sinusoid_family
      >>> build_learner(TrainConfig(learner="metasgd"), lstm_optimizer(), sinusoid_family()).name
      'meta_sgd'
    """
    return LEARNERS[config.learner].build(lopt, family, config.entry_options("learner"))


def build_estimator(config: TrainConfig, lopt: LearnedOptimizer, family: TaskFamily) -> Estimator:
    """The estimator ``config.estimator`` names, over ``family``, meta-learning ``lopt``.

    Example:
      >>> from metaopt import lstm_optimizer, quadratic_family
      >>> est = build_estimator(TrainConfig(estimator="pes"), lstm_optimizer(),
      ...     quadratic_family())
      >>> est.name, est.config["std"]
      ('pes', 0.1)
    """
    learner = build_learner(config, lopt, family)
    run = RunSpec(num_tasks=config.tasks, horizon=config.horizon)
    entry = ESTIMATORS[config.estimator]
    return entry.build(learner, family, run, config.entry_options("estimator"))


def meta_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam at ``config.meta_lr``, after clipping the meta-gradient's norm if ``clip``."""
    adam = optax.adam(config.meta_lr)
    if config.clip is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip), adam)


class Components(NamedTuple):
    """What a run of a configuration is made of."""

    lopt: LearnedOptimizer
    estimator: Estimator
    validation_family: TaskFamily
    meta_optimizer: optax.GradientTransformation


def components(config: TrainConfig) -> Components:
    """The learned optimizer, estimator, validation family and meta-optimizer of a run."""
    lopt = build_lopt(config)
    return Components(
        lopt,
        build_estimator(config, lopt, build_family(config.task, "train")),
        build_family(config.task, "val"),
        meta_optimizer(config),
    )


def run_mesh(config: TrainConfig) -> Mesh | None:
    """The mesh a run's task batch is split over; None for one device in one process.

    ``config.devices`` devices (all visible ones if None), the same number from every
    process; ``config.tasks`` and ``config.validation_tasks`` must be multiples of it.

    Example:
      >>> run_mesh(TrainConfig(devices=1)) is None
      True
    """
    devices = select_devices(config.devices)
    if len(devices) == 1 and jax.process_count() == 1:
        return None
    mesh = task_mesh(devices)
    check_divisible("tasks", config.tasks, mesh)
    check_divisible("validation_tasks", config.validation_tasks, mesh)
    return mesh
