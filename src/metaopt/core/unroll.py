"""Inner training as one ``lax.scan`` over optimizee steps.

A truncated unroll is the same scan on a shorter length: its final
:class:`InnerState` is the next truncation's starting state.
"""

from typing import NamedTuple

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
    loss_and_grad = jax.value_and_grad(family.loss, argnums=1)

    def step(carry: InnerState, step_key: jax.Array) -> tuple[InnerState, jax.Array]:
        loss, grads = loss_and_grad(cfg, carry.params, step_key)
        if not second_order:
            grads = jax.lax.stop_gradient(grads)
        updates, opt_state = tx.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        return InnerState(params, opt_state, carry.step + 1), loss

    # Rematerializing each step in the backward pass is faster than storing its
    # activations: the step is cheap to recompute and the stored residuals cost more
    # in memory traffic than they save. It has no effect when nothing differentiates.
    return jax.lax.scan(jax.checkpoint(step), state, jax.random.split(key, num_steps))
