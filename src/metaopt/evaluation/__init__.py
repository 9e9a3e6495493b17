"""Judging optimizers: loss curves, learning-rate tuning, validation, held-out suites.

The held-in selection suite (``selection_problems``) is for choices; the report suite
(``report_problems``) only reports. Both score held-out loss (``judge_problem``).

Example:
  >>> import metaopt
  >>> len(metaopt.evaluation.log_grid(1e-3, 1e-1, 3))
  3
"""

from metaopt.evaluation.episodes import (
    episode_accuracies,
    episode_validation_loss,
    held_out_episodes,
    mean_and_interval,
)
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
from metaopt.evaluation.judge import judge_problem, summarize_suite
from metaopt.evaluation.report_suite import report_problems
from metaopt.evaluation.scoring import ScoredProblem, baselines, run_curves
from metaopt.evaluation.selection import selection_problems

__all__ = [
    "ScoredProblem",
    "TuneResult",
    "baseline_optimizers",
    "baselines",
    "episode_accuracies",
    "episode_validation_loss",
    "evaluate",
    "held_out_episodes",
    "judge_problem",
    "learner_curves",
    "log_grid",
    "loss_curves",
    "mean_and_interval",
    "report_problems",
    "run_curves",
    "selection_problems",
    "summarize_suite",
    "tune_learning_rate",
    "validation_loss",
]
