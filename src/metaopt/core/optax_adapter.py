"""A learned optimizer with fixed meta-parameters, as an optax transformation."""

from typing import Any

import optax

from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta


def as_optax(lopt: LearnedOptimizer, theta: Theta) -> optax.GradientTransformationExtraArgs:
    """Wraps ``(lopt, theta)`` as an optax transformation.

    The result is used exactly like ``optax.adam(...)``: it returns additive updates,
    so ``optax.apply_updates(params, updates)`` takes the step. Extra keyword arguments
    to ``update`` (``value=``, ...) are accepted, so it drops into code written for
    optax's extra-args optimizers, and ignored: no learned optimizer reads the loss.

    ``theta`` may be a traced value, which is how meta-training differentiates through
    the transformation.

    Args:
      lopt: the learned optimizer architecture.
      theta: its meta-parameters.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from metaopt.optimizers.lstm import lstm_optimizer
      >>> lopt = lstm_optimizer()
      >>> tx = as_optax(lopt, lopt.init(jax.random.key(0)))
      >>> params = jnp.zeros(4)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.ones(4), state, params)
      >>> params = optax.apply_updates(params, updates)

    """

    def init_fn(params: Params) -> PyTree:
        return lopt.init_state(theta, params)

    def update_fn(
        updates: PyTree, state: PyTree, params: Params | None = None, **extra_args: Any
    ) -> tuple[PyTree, PyTree]:
        del extra_args
        return lopt.update(theta, updates, state, params)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
