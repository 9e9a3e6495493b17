"""Judging optimizers: loss curves, learning-rate tuning, validation, reports.

Example:
  >>> import metaopt
  >>> len(metaopt.evaluation.log_grid(1e-3, 1e-1, 3))
  3
"""

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

__all__ = [
    "TuneResult",
    "baseline_optimizers",
    "evaluate",
    "learner_curves",
    "log_grid",
    "loss_curves",
    "tune_learning_rate",
    "validation_loss",
]
