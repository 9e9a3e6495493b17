"""Problems whose full-horizon meta-gradient is exact: per-coordinate learning rates.

A diagnostic needs a meta-learner small enough that the exact meta-gradient is cheap
(full backprop through the whole inner run) and rich enough that its direction means
something. θ = per-coordinate log learning rates of SGD on ``dim``-dimensional
quadratics is both: a handful of numbers, and a gradient with a direction to compare.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.types import MetaLearner, Params, TaskConfig, TaskFamily, Theta
from metaopt.estimators.objectives import Objective
from metaopt.tasks.quadratic import quadratic_family


class Problem(NamedTuple):
    """What an estimator diagnostic measures on.

    Attributes:
      learner: the meta-learner whose θ is differentiated.
      family: the task family.
      theta: the meta-parameters at which every gradient is taken (held fixed).
      objective: the meta-objective; the trajectory mean if None.
      num_tasks: tasks per estimate (the estimators' meta-batch).
      second_order: whether truncated and full BPTT keep the inner loss's second
        derivatives. The exact gradient always does, so False shows the bias of
        dropping them.
    """

    learner: MetaLearner
    family: TaskFamily
    theta: Theta
    objective: Objective | None = None
    num_tasks: int = 4
    second_order: bool = True


def sgd_learning_rates(dim: int, learning_rate: float = 0.005, spread: float = 0.3) -> MetaLearner:
    """SGD with one learning rate per coordinate: θ = ``{"log_lr": (dim,)}``.

    Args:
      dim: the number of coordinates of the optimizee's (vector) params.
      learning_rate: the median initial learning rate.
      spread: ``init`` draws ``log_lr ~ log(learning_rate) + spread · N(0, 1)``.

    Returns:
      A :class:`~metaopt.MetaLearner` whose ``tx(θ)`` scales gradients by
      ``-exp(log_lr)``; the params start where the task family says.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> learner = sgd_learning_rates(3)
      >>> theta = {"log_lr": jnp.log(jnp.array([0.1, 0.2, 0.5]))}
      >>> tx = learner.tx(theta)
      >>> updates, _ = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
      >>> [round(float(u), 3) for u in updates]
      [-0.1, -0.2, -0.5]
    """
    dim = checks.positive_int("dim", dim)
    learning_rate = checks.positive_float("learning_rate", learning_rate)
    if isinstance(spread, bool) or not isinstance(spread, int | float) or spread < 0:
        raise ValueError(f"spread must be a non-negative number, got {spread!r}")
    spread = float(spread)

    def init(key: jax.Array) -> Theta:
        noise = jax.random.normal(key, (dim,))
        return {"log_lr": jnp.log(learning_rate) + spread * noise}

    def init_params(theta: Theta, family: TaskFamily, cfg: TaskConfig, key: jax.Array) -> Params:
        del theta
        return family.init(cfg, key)

    def tx(theta: Theta) -> optax.GradientTransformation:
        rates = jnp.exp(theta["log_lr"])

        def update(grads, state, params=None):
            del params
            return jax.tree.map(lambda g: -rates * g, grads), state

        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    config = {"dim": dim, "learning_rate": learning_rate, "spread": spread}
    return MetaLearner("sgd_learning_rates", config, init, init_params, tx)


def quadratic_learning_rates(
    dim: int = 10,
    *,
    learning_rate: float = 0.005,
    spread: float = 0.3,
    num_tasks: int = 4,
    seed: int = 0,
) -> Problem:
    """The default problem: per-coordinate SGD learning rates on random quadratics.

    Args:
      dim: the quadratics' dimension, and the number of learning rates.
      learning_rate: the median learning rate of θ.
      spread: the spread of θ's log learning rates around it.
      num_tasks: tasks per estimate.
      seed: draws θ.

    Returns:
      A :class:`Problem` on :func:`~metaopt.quadratic_family` with the trajectory-mean
      objective and exact second derivatives.

    Example:
      >>> problem = quadratic_learning_rates(dim=4)
      >>> problem.theta["log_lr"].shape, problem.family.name
      ((4,), 'quadratic')
    """
    learner = sgd_learning_rates(dim, learning_rate, spread)
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    theta = learner.init(jax.random.key(checks.non_negative_int("seed", seed)))
    return Problem(learner, quadratic_family(dim), theta, None, num_tasks, True)
