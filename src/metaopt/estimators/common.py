"""Argument checks and perturbations shared by the estimator factories."""

import itertools
import math

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np

from metaopt.core import checks
from metaopt.core.types import MetaLearner, TaskFamily, Theta
from metaopt.estimators.objectives import Objective, trajectory_mean
from metaopt.estimators.schedules import HorizonSchedule, as_schedule


def check_problem(
    learner: MetaLearner,
    family: TaskFamily,
    horizon: "int | HorizonSchedule",
    truncation: int | None,
    objective: Objective | None,
) -> tuple[HorizonSchedule, Objective]:
    """Checks what every estimator is given; returns the schedule and objective."""
    if not isinstance(learner, MetaLearner):
        raise TypeError(
            f"learner must be a MetaLearner (e.g. metaopt.learned_optimizer(lopt)), "
            f"got {type(learner).__name__}"
        )
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily, got {type(family).__name__}")
    if truncation is not None:
        truncation = checks.positive_int("truncation", truncation)
    schedule = as_schedule(horizon, truncation)
    objective = trajectory_mean() if objective is None else objective
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    if objective.weights is not None and objective.weights.shape != (schedule.max_horizon,):
        raise ValueError(
            f"objective weights must have shape (max_horizon,) = ({schedule.max_horizon},), "
            f"got {objective.weights.shape}"
        )
    if objective.name.startswith("eval") and family.eval_loss is None:
        raise ValueError(
            f"objective {objective.name!r} needs family.eval_loss, but task family "
            f"{family.name!r} has none"
        )
    return schedule, objective


def truncated_config(
    num_tasks: int,
    truncation: int,
    schedule: HorizonSchedule,
    objective: Objective,
    desync: bool,
    **extra,
) -> dict:
    """The ``config`` record every truncated estimator reports, plus its own settings.

    Example:
      >>> from metaopt.estimators.schedules import constant_schedule
      >>> cfg = truncated_config(4, 5, constant_schedule(10), trajectory_mean(), False, std=0.1)
      >>> cfg["max_horizon"], cfg["objective"], cfg["std"]
      (10, 'mean', 0.1)
    """
    return dict(
        num_tasks=num_tasks,
        truncation=truncation,
        schedule=schedule.name,
        min_horizon=schedule.min_horizon,
        max_horizon=schedule.max_horizon,
        objective=objective.name,
        desync=bool(desync),
        **extra,
    )


def check_std(std: float) -> float:
    """The perturbation standard deviation σ of ES and PES."""
    return checks.positive_float("std", std)


def perturbations(theta: Theta, key: jax.Array, num: int, std: float) -> Theta:
    """``num`` Gaussian perturbations ε ~ N(0, σ² I) of ``theta`` (a leading axis).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> eps = perturbations({"a": jnp.zeros(3)}, jax.random.key(0), 4, 0.1)
      >>> eps["a"].shape
      (4, 3)
    """
    leaves, treedef = jax.tree.flatten(theta)
    if not leaves:
        return theta
    # One draw for the whole of θ, cut into its leaves. Each draw is a loop of Threefry
    # rounds, so one per leaf multiplies the fixed cost of a small meta-step's noise.
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    flat = std * standard_normal(key, (num, sum(sizes))).astype(jnp.result_type(*leaves))
    ends = itertools.accumulate(sizes)
    eps = [
        flat[:, end - size : end].reshape(num, *jnp.shape(x)).astype(jnp.result_type(x))
        for x, size, end in zip(leaves, sizes, ends, strict=True)
    ]
    return jax.tree.unflatten(treedef, eps)


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Float32 draws of N(0, 1), two per Threefry hash.

    ``jax.random.normal`` with JAX's partitionable Threefry (the default, which keeps
    results independent of how an array is split over devices) hashes one counter per
    number and keeps one word of the hash's two. Here counter ``i`` and ``i + size/2``
    are hashed together and both words are used, so a draw costs half the hashes; each
    number is still a function of the key and its index alone, whatever the devices.
    The key may be of any implementation: it only seeds the hash's key.

    Example:
      >>> import jax
      >>> z = standard_normal(jax.random.key(0), (2, 3))
      >>> z.shape, z.dtype
      ((2, 3), dtype('float32'))
    """
    size = math.prod(shape)
    if size == 0:
        return jnp.zeros(shape, jnp.float32)
    k1, k2 = jax.random.bits(key, (2,), jnp.uint32)
    bits = jex_random.threefry_2x32((k1, k2), jnp.arange(size, dtype=jnp.uint32))
    # The top 23 bits as a mantissa: uniform on [1, 2), then on (-1, 1), then the
    # inverse of the normal's CDF, as jax.random.normal does.
    one_to_two = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32)
    lo = np.nextafter(np.float32(-1), np.float32(0))
    u = jnp.maximum(lo, (one_to_two - 1) * (1 - lo) + lo)
    return (np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)).reshape(shape)


def weighted_mean(weights: jax.Array, tree: Theta) -> Theta:
    """Σ_i weights[i] · tree[i] / n over the leading axis of every leaf."""
    n = weights.shape[0]
    return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1) / n, tree)
