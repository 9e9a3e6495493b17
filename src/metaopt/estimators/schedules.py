"""How long each task trains before it is replaced by a fresh one: horizon schedules.

A truncated estimator trains every task of its meta-batch for a *horizon* of inner
steps, a truncation at a time; when a task reaches its horizon, a fresh task takes
its place. A schedule draws each new task's horizon. Log-uniform horizons
(learned_optimization's ``LogUniformLengthSchedule``) mix short and long runs, so a
learned optimizer meets early and late training in one meta-batch.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks


class HorizonSchedule(NamedTuple):
    """Draws the horizon (inner steps) of each new task.

    Attributes:
      name: ``"constant"`` or ``"log_uniform"``.
      sample: ``sample(key) -> int32 scalar``, a horizon in
        ``[min_horizon, max_horizon]``.
      min_horizon: the shortest horizon it draws.
      max_horizon: the longest horizon it draws.
    """

    name: str
    sample: object
    min_horizon: int
    max_horizon: int


def constant_schedule(horizon: int) -> HorizonSchedule:
    """Every task trains for ``horizon`` steps.

    Example:
      >>> import jax
      >>> int(constant_schedule(100).sample(jax.random.key(0)))
      100
    """
    horizon = checks.positive_int("horizon", horizon)
    return HorizonSchedule(
        "constant", lambda key: jnp.asarray(horizon, jnp.int32), horizon, horizon
    )


def log_uniform_schedule(min_horizon: int, max_horizon: int) -> HorizonSchedule:
    """Horizons drawn log-uniformly between ``min_horizon`` and ``max_horizon``.

    Example:
      >>> import jax
      >>> s = log_uniform_schedule(10, 1000)
      >>> h = jax.vmap(s.sample)(jax.random.split(jax.random.key(0), 1000))
      >>> bool((h >= 10).all() and (h <= 1000).all()), bool((h < 100).mean() > 0.3)
      (True, True)
    """
    min_horizon = checks.positive_int("min_horizon", min_horizon)
    max_horizon = checks.positive_int("max_horizon", max_horizon)
    if min_horizon > max_horizon:
        raise ValueError(f"min_horizon ({min_horizon}) must not exceed max_horizon ({max_horizon})")
    lo, hi = jnp.log(min_horizon), jnp.log(max_horizon + 1)

    def sample(key: jax.Array) -> jax.Array:
        h = jnp.floor(jnp.exp(jax.random.uniform(key, (), minval=lo, maxval=hi)))
        return jnp.clip(h, min_horizon, max_horizon).astype(jnp.int32)

    return HorizonSchedule("log_uniform", sample, min_horizon, max_horizon)


def as_schedule(horizon: "int | HorizonSchedule", truncation: int | None = None) -> HorizonSchedule:
    """``horizon`` as a schedule, checked against the truncation length.

    Raises:
      ValueError: ``truncation`` exceeds the schedule's shortest horizon (a task would
        be replaced twice within one truncation).
    """
    schedule = horizon if isinstance(horizon, HorizonSchedule) else constant_schedule(horizon)
    if truncation is not None and truncation > schedule.min_horizon:
        raise ValueError(
            f"truncation ({truncation}) must not exceed the horizon schedule's shortest "
            f"horizon ({schedule.min_horizon})"
        )
    return schedule
