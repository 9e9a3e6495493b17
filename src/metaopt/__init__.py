"""metaopt: learned optimizers and meta-learning in JAX.

The flat public namespace. The package is layered (each layer imports only from the
ones before it): ``core`` (protocols, unroll, optax adapter), ``tasks``, ``optimizers``,
``io``, ``learners``, ``evaluation``, ``estimators``, ``train``, ``diagnostics``,
``cli``. See ``docs/architecture.md``.
"""

from metaopt.core.optax_adapter import as_optax
from metaopt.core.sharding import replicate, shard_tasks, task_mesh
from metaopt.core.types import Estimator, LearnedOptimizer, MetaLearner, TaskFamily
from metaopt.core.unroll import InnerState, init_inner, unroll
from metaopt.estimators.es import es
from metaopt.estimators.full_bptt import full_bptt
from metaopt.estimators.maml import fomaml, maml
from metaopt.estimators.mixture import mixture
from metaopt.estimators.objectives import (
    Objective,
    final_loss,
    held_out,
    trajectory_mean,
)
from metaopt.estimators.pes import pes
from metaopt.estimators.pretraining import pretraining
from metaopt.estimators.reptile import reptile
from metaopt.estimators.schedules import (
    HorizonSchedule,
    constant_schedule,
    log_uniform_schedule,
)
from metaopt.estimators.tbptt import tbptt
from metaopt.evaluation.evaluate import (
    TuneResult,
    baseline_optimizers,
    evaluate,
    learner_curves,
    log_grid,
    loss_curves,
    tune_learning_rate,
    validation_loss,
)
from metaopt.io.pretrained import load, pretrained, pretrained_names
from metaopt.io.serialization import save
from metaopt.learners.adapt import adapt, initial_params
from metaopt.learners.combine import combine
from metaopt.learners.initialization import learned_initialization
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.learners.learning_rates import meta_sgd, per_parameter_sgd
from metaopt.optimizers.lstm import lstm_optimizer
from metaopt.optimizers.mlp import mlp_optimizer
from metaopt.optimizers.orthogonal import orthogonal_optimizer
from metaopt.optimizers.preprocess import log_and_sign
from metaopt.optimizers.versatile import versatile_optimizer
from metaopt.tasks.augment import rescaled
from metaopt.tasks.fewshot import fewshot_family, query_accuracy
from metaopt.tasks.quadratic import quadratic_family
from metaopt.tasks.regression import mlp_regression_family
from metaopt.tasks.sinusoid import sinusoid_family
from metaopt.train.loop import (
    MetaTrainingDiverged,
    MetaTrainResult,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
)
from metaopt.train.meta_step import MetaState, make_meta_step

__version__ = "0.2.0"

__all__ = [
    "Estimator",
    "HorizonSchedule",
    "InnerState",
    "LearnedOptimizer",
    "MetaLearner",
    "MetaState",
    "MetaTrainResult",
    "MetaTrainState",
    "MetaTrainingDiverged",
    "Objective",
    "TaskFamily",
    "TuneResult",
    "adapt",
    "as_optax",
    "baseline_optimizers",
    "combine",
    "constant_schedule",
    "es",
    "evaluate",
    "fewshot_family",
    "final_loss",
    "fomaml",
    "full_bptt",
    "held_out",
    "init_inner",
    "init_meta_train_state",
    "initial_params",
    "learned_initialization",
    "learned_optimizer",
    "learner_curves",
    "load",
    "log_and_sign",
    "log_grid",
    "log_uniform_schedule",
    "loss_curves",
    "lstm_optimizer",
    "make_meta_step",
    "maml",
    "meta_sgd",
    "meta_train",
    "mixture",
    "mlp_optimizer",
    "mlp_regression_family",
    "orthogonal_optimizer",
    "per_parameter_sgd",
    "pes",
    "pretrained",
    "pretrained_names",
    "pretraining",
    "quadratic_family",
    "query_accuracy",
    "replicate",
    "reptile",
    "rescaled",
    "save",
    "shard_tasks",
    "sinusoid_family",
    "task_mesh",
    "tbptt",
    "trajectory_mean",
    "tune_learning_rate",
    "unroll",
    "validation_loss",
    "versatile_optimizer",
]
