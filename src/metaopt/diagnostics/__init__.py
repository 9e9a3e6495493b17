"""Diagnostics of meta-gradient estimators against exact meta-gradients.

:func:`estimator_report` measures, on a problem whose full-horizon meta-gradient is exact
by backprop, each estimator's bias, variance and cosine similarity to it as functions of
truncation length and horizon, and its memory and time per meta-step;
:func:`plot_report` and :func:`format_report` show the result. :func:`window_report`
measures one meta-step's estimate window by window: its variance is the meta-gradient
noise at a given compute.
"""

from metaopt.diagnostics.estimator_quality import (
    estimator_report,
    format_report,
    step_cost,
    summarize,
)
from metaopt.diagnostics.gradients import (
    ESTIMATORS,
    horizon_estimate,
    make_estimator,
    particle_estimates,
    particle_truths,
    true_gradient,
    truncation_estimates,
    window_losses,
)
from metaopt.diagnostics.per_truncation import (
    predicted_error_variance,
    window_estimates,
    window_report,
    window_truths,
)
from metaopt.diagnostics.plot import plot_report
from metaopt.diagnostics.problems import Problem, quadratic_learning_rates, sgd_learning_rates

__all__ = [
    "ESTIMATORS",
    "Problem",
    "estimator_report",
    "format_report",
    "horizon_estimate",
    "make_estimator",
    "particle_estimates",
    "particle_truths",
    "plot_report",
    "predicted_error_variance",
    "quadratic_learning_rates",
    "sgd_learning_rates",
    "step_cost",
    "summarize",
    "true_gradient",
    "truncation_estimates",
    "window_estimates",
    "window_losses",
    "window_report",
    "window_truths",
]
