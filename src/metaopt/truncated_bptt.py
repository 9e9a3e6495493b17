"""Meta-gradients by truncated backpropagation through time.

The meta-loss of one truncation of ``K`` inner steps starting at step ``t0`` is

    L(θ) = mean over tasks of (1/K) Σ_{t=t0+1..t0+K} w_t f(θ_t),

with the meta-parameters entering through every update; the state at ``t0`` is a
constant (it was produced by the previous truncation). This is the estimator of
Andrychowicz et al. 2016 with ``w_t = 1``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.optax_adapter import as_optax
from metaopt.types import LearnedOptimizer, TaskConfig, TaskFamily, Theta
from metaopt.unroll import InnerState, init_inner, unroll


class TaskBatch(NamedTuple):
    """A meta-batch of tasks mid-training; every leaf has a leading task axis."""

    cfgs: TaskConfig
    inner: InnerState


def init_task_batch(
    family: TaskFamily,
    lopt: LearnedOptimizer,
    theta: Theta,
    key: jax.Array,
    num_tasks: int,
) -> TaskBatch:
    """Samples ``num_tasks`` tasks and their initial params and optimizer states.

    Example:
      >>> import jax
      >>> from metaopt.lstm import lstm_optimizer
      >>> from metaopt.quadratic import quadratic_family
      >>> lopt = lstm_optimizer()
      >>> batch = init_task_batch(
      ...     quadratic_family(), lopt, lopt.init(jax.random.key(0)), jax.random.key(1), 4)
      >>> batch.inner.params.shape
      (4, 10)

    """
    k_cfg, k_init = jax.random.split(key)
    cfgs = jax.vmap(family.sample)(jax.random.split(k_cfg, num_tasks))
    tx = as_optax(lopt, theta)
    inner = jax.vmap(lambda c, k: init_inner(family, tx, c, k))(
        cfgs, jax.random.split(k_init, num_tasks)
    )
    return TaskBatch(cfgs, inner)


def truncated_meta_loss(
    theta: Theta,
    lopt: LearnedOptimizer,
    family: TaskFamily,
    batch: TaskBatch,
    key: jax.Array,
    num_steps: int,
    *,
    weights: jax.Array | None = None,
    second_order: bool = False,
) -> tuple[jax.Array, tuple[TaskBatch, jax.Array]]:
    """The meta-loss of one truncation, vmapped over the task batch.

    Args:
      theta: meta-parameters (the argument to differentiate).
      lopt: learned optimizer architecture.
      family: task family the batch was drawn from.
      batch: tasks and their inner states at the start of the truncation.
      key: randomness for the minibatches of this truncation.
      num_steps: truncation length ``K``.
      weights: ``w_t`` for ``t = 1..horizon`` (index ``t - 1``); ones if None.
      second_order: keep the second derivatives of the inner loss.

    Returns:
      ``(meta_loss, (new_batch, mean_loss))``; ``mean_loss`` is the unweighted mean of
      ``f(θ_t)`` over the truncation and the tasks, for reporting.

    """
    tx = as_optax(lopt, theta)

    def one_task(cfg, inner, task_key):
        k_unroll, k_last = jax.random.split(task_key)
        inner_end, losses = unroll(
            family, tx, cfg, inner, k_unroll, num_steps, second_order=second_order
        )
        # losses[i] is f(θ_{t0+i}); the meta-loss wants f(θ_{t0+1}) .. f(θ_{t0+K}).
        last = family.loss(cfg, inner_end.params, k_last)
        trajectory = jnp.concatenate([losses[1:], last[None]])
        if weights is None:
            weighted = trajectory
        else:
            weighted = weights[inner.step + jnp.arange(num_steps)] * trajectory
        return jnp.mean(weighted), jnp.mean(trajectory), inner_end

    num_tasks = batch.inner.step.shape[0]
    task_keys = jax.random.split(key, num_tasks)
    meta_losses, mean_losses, inner = jax.vmap(one_task)(batch.cfgs, batch.inner, task_keys)
    return jnp.mean(meta_losses), (TaskBatch(batch.cfgs, inner), jnp.mean(mean_losses))


def tbptt_gradient(
    theta: Theta,
    lopt: LearnedOptimizer,
    family: TaskFamily,
    batch: TaskBatch,
    key: jax.Array,
    num_steps: int,
    *,
    weights: jax.Array | None = None,
    second_order: bool = False,
) -> tuple[Theta, TaskBatch, dict[str, jax.Array]]:
    """Truncated-BPTT meta-gradient of one truncation.

    Returns:
      ``(meta_grad, new_batch, metrics)`` with metrics ``meta_loss`` (weighted, the
      differentiated quantity) and ``loss`` (unweighted mean inner loss).

    Example:
      >>> import jax
      >>> from metaopt.lstm import lstm_optimizer
      >>> from metaopt.quadratic import quadratic_family
      >>> lopt, fam = lstm_optimizer(), quadratic_family()
      >>> theta = lopt.init(jax.random.key(0))
      >>> batch = init_task_batch(fam, lopt, theta, jax.random.key(1), 8)
      >>> grad, batch, metrics = tbptt_gradient(
      ...     theta, lopt, fam, batch, jax.random.key(2), num_steps=5)
      >>> int(batch.inner.step[0])
      5

    """
    (meta_loss, (new_batch, mean_loss)), grad = jax.value_and_grad(
        truncated_meta_loss, has_aux=True
    )(
        theta,
        lopt,
        family,
        batch,
        key,
        num_steps,
        weights=weights,
        second_order=second_order,
    )
    return grad, new_batch, {"meta_loss": meta_loss, "loss": mean_loss}
