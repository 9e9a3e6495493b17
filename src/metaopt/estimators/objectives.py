"""What a meta-gradient minimizes: the meta-objective measured along inner training.

After every inner update an objective *measures* the new params (the training loss on a
fresh minibatch, a held-out loss, a classification error) and weighs the measurement:
the trajectory mean Σ w_t f(θ_t) of Andrychowicz et al. 2016, or only the loss at the
end of a task's horizon. Evolution strategies (ES, PES) only need the values, so their
objective may be non-differentiable.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core.types import Params, TaskConfig, TaskFamily

Measure = Callable[[TaskFamily, TaskConfig, Params, jax.Array], jax.Array]


class Objective(NamedTuple):
    """A meta-objective.

    Attributes:
      name: ``"mean"``, ``"final"``, ``"eval_mean"``, ``"eval_final"`` or a user's.
      measure: ``measure(family, cfg, params, key) -> scalar`` after each update.
      final_only: count only the measurement at the end of a task's horizon;
        otherwise the mean over the truncation, weighted by ``weights``.
      weights: ``w_t`` for ``t = 1..max_horizon`` (index ``t - 1``), or None for ones.
    """

    name: str
    measure: Measure
    final_only: bool = False
    weights: jax.Array | None = None


def _train_loss(family: TaskFamily, cfg: TaskConfig, params: Params, key: jax.Array):
    return family.loss(cfg, params, key)


def _eval_loss(family: TaskFamily, cfg: TaskConfig, params: Params, key: jax.Array):
    if family.eval_loss is None:
        raise ValueError(
            f"the held-out objective needs family.eval_loss, but task family "
            f"{family.name!r} has none"
        )
    return family.eval_loss(cfg, params, key)


def trajectory_mean(weights: jax.Array | None = None) -> Objective:
    """The mean training loss after each update, ``(1/K) Σ w_t f(θ_t)`` per truncation.

    Example:
      >>> trajectory_mean().name
      'mean'
    """
    return Objective("mean", _train_loss, False, None if weights is None else jnp.asarray(weights))


def final_loss() -> Objective:
    """The training loss at the end of each task's horizon.

    Example:
      >>> final_loss().final_only
      True
    """
    return Objective("final", _train_loss, True)


def held_out(final_only: bool = False) -> Objective:
    """The family's ``eval_loss`` (a query set, a validation split) after each update.

    Example:
      >>> held_out().name, held_out(final_only=True).name
      ('eval_mean', 'eval_final')
    """
    return Objective("eval_final" if final_only else "eval_mean", _eval_loss, final_only)


def custom(name: str, measure: Measure, *, final_only: bool = False) -> Objective:
    """Any measurement of the params, e.g. a classification error (ES and PES only).

    Example:
      >>> err = custom("error", lambda fam, cfg, p, k: (fam.loss(cfg, p, k) > 1.0) * 1.0)
      >>> err.name
      'error'
    """
    return Objective(name, measure, final_only)


_BY_NAME = {
    "mean": trajectory_mean,
    "final": final_loss,
    "eval_mean": held_out,
    "eval_final": lambda: held_out(final_only=True),
}
# The objectives a run configuration names.
OBJECTIVE_NAMES = tuple(_BY_NAME)


def objective_by_name(name: str) -> Objective:
    """``"mean"``, ``"final"``, ``"eval_mean"`` or ``"eval_final"``.

    Example:
      >>> objective_by_name("final").final_only
      True
    """
    if name not in _BY_NAME:
        raise ValueError(f"objective must be one of {list(_BY_NAME)}, got {name!r}")
    return _BY_NAME[name]()


def coefficients(
    objective: Objective, step_before: jax.Array, horizon: jax.Array, length: int
) -> jax.Array:
    """The weight of the measurement taken after update ``step_before + 1``."""
    if objective.final_only:
        return step_before + 1 == horizon
    w = 1.0 if objective.weights is None else objective.weights[step_before]
    return jnp.asarray(w) / length
