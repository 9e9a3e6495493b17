"""metaopt: learned optimizers and meta-learning in JAX.

A short flat top for the headline (pretrained optimizers, ``as_optax``, ``save`` and
``load``, ``meta_train``, the estimators, learners, optimizers and the common task
families) and sub-namespaces by role: ``metaopt.tasks``, ``metaopt.optimizers``,
``metaopt.learners``, ``metaopt.estimators``, ``metaopt.evaluation``, ``metaopt.io``,
``metaopt.train``. The package is layered (each layer imports only from the ones
before it); see ``docs/architecture.md``.
"""

import importlib
import warnings

from metaopt import _moved
from metaopt.core.optax_adapter import as_optax
from metaopt.core.sharding import task_mesh
from metaopt.core.types import (
    EpisodicLearner,
    Estimator,
    LearnedOptimizer,
    MetaLearner,
    TaskFamily,
)
from metaopt.core.unroll import unroll
from metaopt.estimators.episodic import episodic
from metaopt.estimators.es import es
from metaopt.estimators.full_bptt import full_bptt
from metaopt.estimators.maml import fomaml, maml
from metaopt.estimators.mixture import mixture
from metaopt.estimators.nres import nres
from metaopt.estimators.pes import pes
from metaopt.estimators.pretraining import pretraining
from metaopt.estimators.reptile import reptile
from metaopt.estimators.tbptt import tbptt
from metaopt.evaluation.evaluate import evaluate
from metaopt.io.pretrained import load, pretrained, pretrained_names
from metaopt.io.serialization import save
from metaopt.learners.adapt import adapt
from metaopt.learners.combine import combine
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.learners.learning_rates import meta_sgd, per_parameter_sgd
from metaopt.learners.mann import memory_augmented_network
from metaopt.learners.matching import matching_network
from metaopt.learners.prototypical import prototypical_network
from metaopt.optimizers.lstm import lstm_optimizer
from metaopt.optimizers.mlp import mlp_optimizer
from metaopt.optimizers.orthogonal import orthogonal_optimizer
from metaopt.optimizers.versatile import versatile_optimizer
from metaopt.tasks.augment import rescaled
from metaopt.tasks.fewshot import fewshot_family
from metaopt.tasks.quadratic import quadratic_family
from metaopt.tasks.regression import mlp_regression_family
from metaopt.tasks.sinusoid import sinusoid_family
from metaopt.train.loop import MetaTrainingDiverged, MetaTrainResult, MetaTrainState, meta_train
from metaopt.train.meta_step import MetaState, make_meta_step

_moved.install()

# Names that left the flat top for their role's namespace; they keep working, with a
# warning, for one release.
_DEMOTED = {
    "replicate": "metaopt.core.sharding",
    "shard_tasks": "metaopt.core.sharding",
    "init_inner": "metaopt.core.unroll",
    "InnerState": "metaopt.core.unroll",
    "baseline_optimizers": "metaopt.evaluation",
    "learner_curves": "metaopt.evaluation",
    "log_grid": "metaopt.evaluation",
    "loss_curves": "metaopt.evaluation",
    "tune_learning_rate": "metaopt.evaluation",
    "validation_loss": "metaopt.evaluation",
    "TuneResult": "metaopt.evaluation",
    "Objective": "metaopt.estimators",
    "final_loss": "metaopt.estimators",
    "held_out": "metaopt.estimators",
    "trajectory_mean": "metaopt.estimators",
    "HorizonSchedule": "metaopt.estimators",
    "constant_schedule": "metaopt.estimators",
    "log_uniform_schedule": "metaopt.estimators",
    "init_meta_train_state": "metaopt.train",
    "log_and_sign": "metaopt.optimizers",
    "query_accuracy": "metaopt.tasks",
    "initial_params": "metaopt.learners",
}


def __getattr__(name: str):
    if name in _DEMOTED:
        module = _DEMOTED[name]
        warnings.warn(
            f"metaopt.{name} has moved to {module}.{name}; the top-level name goes away in "
            "the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'metaopt' has no attribute {name!r}")


__version__ = "0.2.0"

# Sub-namespaces by role: metaopt.tasks, .optimizers, .learners, .estimators,
# .evaluation, .io, .train, .experiments.
from metaopt import (  # noqa: E402
    estimators,
    evaluation,
    io,
    learners,
    optimizers,
    tasks,
    train,
)

__all__ = [
    "EpisodicLearner",
    "Estimator",
    "LearnedOptimizer",
    "MetaLearner",
    "MetaState",
    "MetaTrainResult",
    "MetaTrainState",
    "MetaTrainingDiverged",
    "TaskFamily",
    "adapt",
    "as_optax",
    "combine",
    "episodic",
    "es",
    "estimators",
    "evaluate",
    "evaluation",
    "fewshot_family",
    "fomaml",
    "full_bptt",
    "io",
    "learned_initialization",
    "learned_optimizer",
    "learners",
    "load",
    "lstm_optimizer",
    "make_meta_step",
    "maml",
    "matching_network",
    "memory_augmented_network",
    "meta_sgd",
    "meta_train",
    "mixture",
    "mlp_optimizer",
    "mlp_regression_family",
    "nres",
    "optimizers",
    "orthogonal_optimizer",
    "per_parameter_sgd",
    "pes",
    "pretrained",
    "pretrained_names",
    "pretraining",
    "prototypical_network",
    "quadratic_family",
    "reptile",
    "rescaled",
    "save",
    "sinusoid_family",
    "task_mesh",
    "tasks",
    "tbptt",
    "train",
    "unroll",
    "versatile_optimizer",
]
