"""The meta-training distribution of the ``versatile`` learned optimizer.

A mixture of small, diverse task families, each under random reparameterization
(:func:`~metaopt.tasks.augment.rescaled`), trained by PES over horizons of hundreds to
thousands of steps with a log-loss objective, so that families whose losses differ by
orders of magnitude pull on θ equally:

- digits MLP classifiers with one hidden layer of 8 to 64 sigmoid, ReLU or tanh units,
  small initial weights, minibatches of 32;
- digits MLP classifiers with two hidden layers of 16 to 64 units, larger initial
  weights, minibatches of 128;
- student-teacher regression with a two-hidden-layer ReLU MLP, He-initialized;
- noisy student-teacher regression with a deep, narrow ReLU MLP (four hidden layers of
  32) on minibatches of 16, where large steps stall at a noise floor.

None of the problems of :mod:`metaopt.evaluation.suite` is among them. Conv nets are left
out on purpose: vmapped over tasks with their own kernels they run as grouped
convolutions, five times the cost of the rest of the mixture on a CPU, and the suite's
conv net then tests a genuinely unseen architecture.
"""

import jax
import jax.numpy as jnp

from metaopt.core.types import Estimator, MetaLearner, TaskFamily
from metaopt.estimators.mixture import mixture
from metaopt.estimators.objectives import Objective, custom
from metaopt.estimators.pes import pes
from metaopt.estimators.schedules import log_uniform_schedule
from metaopt.tasks.augment import rescaled
from metaopt.tasks.classification import mixed_mlp_classifier_family
from metaopt.tasks.datasets import digits
from metaopt.tasks.regression import mlp_regression_family

MAX_LOSS = 1e4


def _log_loss(family: TaskFamily, cfg, params, key: jax.Array) -> jax.Array:
    loss = family.loss(cfg, params, key)
    loss = jnp.where(jnp.isfinite(loss), loss, MAX_LOSS)
    return jnp.log(jnp.clip(loss, 1e-8, MAX_LOSS))


def log_loss_objective() -> Objective:
    """The mean of log training losses over each truncation; a diverged loss counts as 1e4.

    Example:
      >>> log_loss_objective().name
      'log_loss'
    """
    return custom("log_loss", _log_loss)


def versatile_families(max_scale: float = 10.0) -> list[TaskFamily]:
    """The meta-training task families, each rescaled by up to ``max_scale``.

    Example:
      >>> len(versatile_families())
      4
    """
    data = digits()
    families = [
        mixed_mlp_classifier_family(
            data, widths=(8, 16, 32, 64), num_layers=1, batch_size=32, init_std=0.05
        ),
        mixed_mlp_classifier_family(
            data, widths=(16, 32, 64), num_layers=2, batch_size=128, init_std=0.2
        ),
        mlp_regression_family(input_dim=8, hidden_sizes=(32, 32), batch_size=64),
        mlp_regression_family(
            input_dim=8, hidden_sizes=(32, 32, 32, 32), batch_size=16, noise_std=0.1
        ),
    ]
    return [rescaled(f, max_scale=max_scale) for f in families]


def versatile_estimator(
    learner: MetaLearner,
    *,
    num_tasks: int = 8,
    truncation: int = 50,
    min_horizon: int = 200,
    max_horizon: int = 2000,
    std: float = 0.01,
    max_scale: float = 10.0,
) -> Estimator:
    """PES over every family of :func:`versatile_families`, averaged per meta-step.

    Args:
      learner: the meta-learner (a learned optimizer).
      num_tasks: tasks per family in each meta-batch.
      truncation: inner steps per truncation.
      min_horizon: the shortest task horizon.
      max_horizon: the longest task horizon (horizons are log-uniform in between).
      std: PES perturbation standard deviation.
      max_scale: the largest random rescaling of a parameter tensor.

    Example:
      >>> from metaopt import learned_optimizer
      >>> from metaopt.optimizers.versatile import versatile_optimizer
      >>> est = versatile_estimator(learned_optimizer(versatile_optimizer()), num_tasks=2,
      ...     truncation=10, min_horizon=20, max_horizon=40)
      >>> est.function_steps
      160
    """
    return pes_mixture(
        learner,
        versatile_families(max_scale),
        objective=log_loss_objective(),
        num_tasks=num_tasks,
        truncation=truncation,
        min_horizon=min_horizon,
        max_horizon=max_horizon,
        std=std,
    )


def pes_mixture(
    learner: MetaLearner,
    families: list[TaskFamily],
    *,
    objective: Objective,
    num_tasks: int,
    truncation: int,
    min_horizon: int,
    max_horizon: int,
    std: float,
) -> Estimator:
    """Desynchronized PES on each of ``families`` at log-uniform horizons, as one mixture.

    The meta-training recipe the shipped general-purpose optimizers share.

    Example:
      >>> from metaopt import learned_optimizer, mlp_optimizer, quadratic_family
      >>> est = pes_mixture(learned_optimizer(mlp_optimizer()), [quadratic_family()] * 2,
      ...     objective=log_loss_objective(), num_tasks=2, truncation=5, min_horizon=10,
      ...     max_horizon=20, std=0.01)
      >>> est.function_steps
      40
    """
    schedule = log_uniform_schedule(min_horizon, max_horizon)
    return mixture(
        [
            pes(
                learner,
                family,
                num_tasks=num_tasks,
                truncation=truncation,
                horizon=schedule,
                objective=objective,
                std=std,
                desync=True,
            )
            for family in families
        ]
    )
