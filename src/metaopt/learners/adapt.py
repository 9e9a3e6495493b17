"""Adapting a meta-learned initialization to a new task, in a user's own code."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.types import MetaLearner, Params, Theta
from metaopt.core.unroll import InnerState, inner_step


def initial_params(learner: MetaLearner, theta: Theta) -> Params:
    """The params a learned initialization θ starts every task from.

    Example:
      >>> import jax
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> learner = learned_initialization(sinusoid_family())
      >>> theta = learner.init(jax.random.key(0))
      >>> initial_params(learner, theta) is theta
      True
    """
    if not isinstance(learner, MetaLearner):
        raise TypeError(f"learner must be a MetaLearner, got {type(learner).__name__}")
    if learner.config.get("initialization") != "learned":
        raise ValueError(
            f"learner {learner.name!r} takes its initial params from the task family; "
            "adapting needs a learned initialization (learned_initialization, meta_sgd, "
            "or a combine() of one)"
        )
    return learner.init_params(theta, None, None, None)


def adapt(
    learner: MetaLearner,
    theta: Theta,
    loss_fn: Callable[[Params, Any], jax.Array],
    batch: Any,
    *,
    steps: int,
) -> Params:
    """Trains θ's initialization on ``batch`` for ``steps`` updates of θ's inner rule.

    The few-shot use of a meta-learned initialization: given a new task's support set,
    take the steps meta-training took (or a few more). Traceable, and one
    ``lax.scan``: ``jax.jit(lambda th, b: adapt(learner, th, loss_fn, b, steps=5))``
    compiles it.

    Args:
      learner: a learner with a learned initialization (:func:`~metaopt.maml`'s
        :func:`~metaopt.learned_initialization`, :func:`~metaopt.meta_sgd`, ...).
      theta: its meta-trained θ.
      loss_fn: ``loss_fn(params, batch) -> scalar``, e.g. a flax model's loss.
      batch: the support set, any pytree.
      steps: inner updates (zero returns the initialization).

    Returns:
      The adapted params.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from metaopt import learned_initialization
      >>> learner = learned_initialization(lambda k: jnp.zeros(2), optax.sgd(0.5))
      >>> loss = lambda p, b: jnp.sum((p - b) ** 2)
      >>> adapt(learner, jnp.zeros(2), loss, jnp.array([1.0, -1.0]), steps=1)
      Array([ 1., -1.], dtype=float32)
    """
    steps = checks.non_negative_int("steps", steps)
    params = initial_params(learner, theta)
    tx = learner.tx(theta)

    def step(state, _):
        state, _ = inner_step(loss_fn, tx, state, batch, second_order=True)
        return state, None

    start = InnerState(params, tx.init(params), jnp.zeros((), jnp.int32))
    final, _ = jax.lax.scan(step, start, None, length=steps)
    return final.params
