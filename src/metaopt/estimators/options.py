"""What every estimator's registry entry shares: the run's size and common options.

An estimator declares itself in its own module as an
:class:`~metaopt.core.registry.Entry` whose ``build(learner, family, run, options)``
takes a :class:`RunSpec` (tasks per meta-batch, inner steps per task) and an instance of
its options dataclass. Truncated estimators share :class:`TruncatedOptions`;
:func:`horizon_schedule` and :func:`objective_of` turn its plain values into the
schedule and objective the factories take.
"""

import dataclasses
from typing import NamedTuple

from metaopt.core import checks
from metaopt.core.registry import option
from metaopt.estimators.objectives import OBJECTIVE_NAMES, Objective, objective_by_name
from metaopt.estimators.schedules import (
    HorizonSchedule,
    constant_schedule,
    log_uniform_schedule,
)

REMAT = ("none", "step", "dots", "nested")
SCHEDULES = ("constant", "log_uniform")


class RunSpec(NamedTuple):
    """The size of a meta-training run that every estimator takes.

    Attributes:
      num_tasks: tasks per meta-batch.
      horizon: inner steps per task (the longest, under a log-uniform schedule).
    """

    num_tasks: int
    horizon: int


def objective_option() -> str:
    """The ``objective`` field every estimator with a meta-objective declares."""
    return option(
        "mean",
        "meta-objective: trajectory mean of the training loss, the final loss, or the "
        "family's held-out loss (eval_*)",
        choices=OBJECTIVE_NAMES,
    )


@dataclasses.dataclass(frozen=True)
class TruncatedOptions:
    """Options of estimators that meta-train on truncations of each task's horizon.

    Example:
      >>> TruncatedOptions(truncation=10).truncation
      10
    """

    truncation: int = option(20, "inner steps per meta-gradient", check=checks.positive_int)
    schedule: str = option("constant", "how long each task trains", choices=SCHEDULES)
    min_horizon: int | None = option(
        None, "log_uniform: the shortest horizon", check=checks.positive_int, optional=True
    )
    desync: bool = option(False, "start tasks at random step offsets")
    objective: str = objective_option()


def horizon_schedule(run: RunSpec, options: TruncatedOptions) -> HorizonSchedule:
    """The horizon schedule ``options`` describe for ``run``.

    Example:
      >>> horizon_schedule(RunSpec(8, 100), TruncatedOptions()).max_horizon
      100
    """
    if options.schedule == "log_uniform":
        if options.min_horizon is None:
            raise ValueError("schedule 'log_uniform' needs min_horizon")
        return log_uniform_schedule(options.min_horizon, run.horizon)
    return constant_schedule(run.horizon)


def objective_of(options) -> Objective:
    """``options.objective`` as an :class:`Objective` (a name, or one already built)."""
    value = options.objective
    return value if isinstance(value, Objective) else objective_by_name(value)


def truncated_kwargs(run: RunSpec, options: TruncatedOptions) -> dict:
    """The keyword arguments a truncated estimator's factory takes from ``run`` and ``options``."""
    return dict(
        num_tasks=run.num_tasks,
        truncation=options.truncation,
        horizon=horizon_schedule(run, options),
        objective=objective_of(options),
        desync=options.desync,
    )


@dataclasses.dataclass(frozen=True)
class PerturbedOptions(TruncatedOptions):
    """Options of the evolution-strategies estimators (ES, PES and their kin).

    Example:
      >>> PerturbedOptions().std
      0.01
    """

    std: float = option(
        0.01, "standard deviation of the perturbations of θ", check=checks.positive_float
    )
    perturbations: int = option(1, "antithetic pairs per task", check=checks.positive_int)


# The run settings PES and NRES start from on the command line (``Entry.defaults``):
# with them, ``metaopt train --task quadratic --estimator pes`` (either learned optimizer)
# ends below tuned Adam on held-out quadratics in a few minutes on 2 CPU cores, where
# the options' own defaults (σ = 0.01, one pair, truncation 20, meta-rate 1e-3, 500
# meta-steps) do not; benchmarks/estimator_defaults.py holds the search and its record.
ONLINE_ES_DEFAULTS = {
    "std": 0.1,
    "perturbations": 4,
    "truncation": 10,
    "desync": True,
    "clip": 1.0,
    "meta_lr": 1e-2,
    "meta_steps": 3000,
    "validate_every": 100,
    "validation_tasks": 128,
}


def perturbed_kwargs(run: RunSpec, options: PerturbedOptions) -> dict:
    """:func:`truncated_kwargs` plus the perturbation scale and count."""
    return truncated_kwargs(run, options) | dict(
        std=options.std, num_perturbations=options.perturbations
    )
