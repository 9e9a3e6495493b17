"""metaopt: learned optimizers and meta-learning in JAX."""

from metaopt.evaluate import (
    TuneResult,
    baseline_optimizers,
    evaluate,
    log_grid,
    loss_curves,
    tune_learning_rate,
)
from metaopt.lstm import lstm_optimizer
from metaopt.meta_train import (
    MetaTrainingDiverged,
    MetaTrainResult,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
    truncation_lengths,
)
from metaopt.mlp_lopt import mlp_optimizer
from metaopt.optax_adapter import as_optax
from metaopt.preprocess import log_and_sign
from metaopt.pretrained import load, pretrained, pretrained_names
from metaopt.quadratic import quadratic_family
from metaopt.regression import mlp_regression_family
from metaopt.serialization import save
from metaopt.truncated_bptt import TaskBatch, init_task_batch, tbptt_gradient
from metaopt.types import LearnedOptimizer, TaskFamily
from metaopt.unroll import InnerState, init_inner, unroll

__version__ = "0.1.0"

__all__ = [
    "InnerState",
    "LearnedOptimizer",
    "MetaTrainResult",
    "MetaTrainState",
    "MetaTrainingDiverged",
    "TaskBatch",
    "TaskFamily",
    "TuneResult",
    "as_optax",
    "baseline_optimizers",
    "evaluate",
    "init_inner",
    "init_meta_train_state",
    "init_task_batch",
    "load",
    "log_and_sign",
    "log_grid",
    "loss_curves",
    "lstm_optimizer",
    "meta_train",
    "mlp_optimizer",
    "mlp_regression_family",
    "pretrained",
    "pretrained_names",
    "quadratic_family",
    "save",
    "tbptt_gradient",
    "truncation_lengths",
    "tune_learning_rate",
    "unroll",
]
