"""Inner training as one ``lax.scan`` over optimizee steps.

A truncated unroll is the same scan on a shorter length: its final
:class:`InnerState` is the next truncation's starting state.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.types import Params, PyTree, TaskConfig, TaskFamily


class InnerState(NamedTuple):
    """What one task's inner training carries from step to step.

    Attributes:
      params: the optimizee's parameters.
      opt_state: the optimizer's state.
      step: how many updates have been applied so far (int32 scalar).

    """

    params: Params
    opt_state: PyTree
    step: jax.Array


def init_inner(
    family: TaskFamily,
    tx: optax.GradientTransformation,
    cfg: TaskConfig,
    key: jax.Array,
) -> InnerState:
    """Draws initial params for task ``cfg`` and initializes ``tx`` on them.

    Example:
      >>> import jax, optax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> fam = quadratic_family()
      >>> cfg = fam.sample(jax.random.key(0))
      >>> state = init_inner(fam, optax.sgd(0.01), cfg, jax.random.key(1))
      >>> int(state.step)
      0

    """
    params = family.init(cfg, key)
    return InnerState(params, tx.init(params), jnp.zeros((), jnp.int32))


def inner_step(
    loss_fn: Callable[[Params, Any], jax.Array],
    tx: optax.GradientTransformation,
    state: InnerState,
    data: Any,
    *,
    second_order: bool = False,
) -> tuple[InnerState, jax.Array]:
    """One inner update: ``loss_fn``'s gradient, ``tx``'s update of it, applied.

    The one inner step of metaopt: the unroll below, the truncation engine every
    estimator runs, adaptation curves and :func:`~metaopt.adapt` all take it.

    Args:
      loss_fn: ``loss_fn(params, data) -> scalar``.
      tx: the inner optimizer.
      state: params, optimizer state and step count before the update.
      data: what this step's loss reads (a minibatch key, a support set).
      second_order: if False, the gradient fed to ``tx`` is wrapped in
        ``stop_gradient``, so differentiating through the step drops second
        derivatives of the loss.

    Returns:
      ``(state, loss)``: the state after the update and the loss before it.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.sgd(0.5)
      >>> state = InnerState(jnp.ones(2), tx.init(jnp.ones(2)), jnp.zeros((), jnp.int32))
      >>> state, loss = inner_step(lambda p, _: jnp.sum(p**2), tx, state, None)
      >>> state.params, float(loss), int(state.step)
      (Array([0., 0.], dtype=float32), 2.0, 1)
    """
    loss, grads = jax.value_and_grad(loss_fn)(state.params, data)
    if not second_order:
        grads = jax.lax.stop_gradient(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return InnerState(params, opt_state, state.step + 1), loss


def unroll(
    family: TaskFamily,
    tx: optax.GradientTransformation,
    cfg: TaskConfig,
    state: InnerState,
    key: jax.Array,
    num_steps: int,
    *,
    second_order: bool = False,
) -> tuple[InnerState, jax.Array]:
    """Runs ``num_steps`` steps of ``tx`` on one task.

    Args:
      family: the task family; ``family.loss(cfg, params, key)`` is minimized.
      tx: the optimizer (hand-designed or :func:`~metaopt.as_optax` of a learned one).
      cfg: the task configuration.
      state: where to start.
      key: split into one minibatch key per step.
      num_steps: length of the unroll (a Python int).
      second_order: if False (the default, as in Andrychowicz et al.), the gradient
        fed to ``tx`` is wrapped in ``stop_gradient``, so differentiating through the
        unroll drops second derivatives of the loss.

    Returns:
      ``(final_state, losses)`` where ``losses[i]`` is the loss at the params before
      update ``i``, on that step's minibatch.

    Example:
      >>> import jax, optax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> fam = quadratic_family()
      >>> cfg = fam.sample(jax.random.key(0))
      >>> tx = optax.sgd(0.01)
      >>> state = init_inner(fam, tx, cfg, jax.random.key(1))
      >>> state, losses = unroll(fam, tx, cfg, state, jax.random.key(2), num_steps=5)
      >>> losses.shape, int(state.step)
      ((5,), 5)

    """
    num_steps = checks.non_negative_int("num_steps", num_steps)

    def step(carry: InnerState, step_key: jax.Array) -> tuple[InnerState, jax.Array]:
        return inner_step(
            functools.partial(family.loss, cfg), tx, carry, step_key, second_order=second_order
        )

    # Rematerializing each step in the backward pass is faster than storing its
    # activations: the step is cheap to recompute and the stored residuals cost more
    # in memory traffic than they save. It has no effect when nothing differentiates.
    return jax.lax.scan(jax.checkpoint(step), state, jax.random.split(key, num_steps))
