"""One meta-step: an estimator's meta-gradient, then the meta-optimizer's update of θ."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core.types import Estimator, PyTree, Theta


class MetaState(NamedTuple):
    """The arrays a meta-step carries.

    Attributes:
      theta: the meta-parameters.
      meta_opt_state: the meta-optimizer's state.
      estimator_state: the estimator's state (opaque; a leading task axis).
    """

    theta: Theta
    meta_opt_state: optax.OptState
    estimator_state: PyTree


MetaStep = Callable[[MetaState, jax.Array], tuple[MetaState, dict[str, jax.Array]]]


def make_meta_step(estimator: Estimator, meta_optimizer: optax.GradientTransformation) -> MetaStep:
    """Builds ``meta_step(state, key) -> (state, metrics)``, pure and not yet jitted.

    An update whose meta-loss or meta-gradient is not finite is skipped
    (``metrics["skipped"]`` is 1): θ and the meta-optimizer state stay as they were,
    while the estimator state advances, so the next meta-step meets new tasks or steps.
    Meta-gradient clipping is a transformation in the meta-optimizer, e.g.
    ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))``.

    Example:
      >>> import jax, optax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family, tbptt
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> est = tbptt(learner, quadratic_family(), num_tasks=2, truncation=5, horizon=10)
      >>> theta = learner.init(jax.random.key(0))
      >>> opt = optax.adam(1e-3)
      >>> state = MetaState(theta, opt.init(theta), est.init(theta, jax.random.key(1)))
      >>> state, metrics = make_meta_step(est, opt)(state, jax.random.key(2))
      >>> int(metrics["skipped"])
      0
    """

    def meta_step(state: MetaState, key: jax.Array) -> tuple[MetaState, dict[str, jax.Array]]:
        grad, est_state, metrics = estimator.estimate(state.theta, state.estimator_state, key)
        grad_norm = optax.tree.norm(grad)
        finite = jnp.isfinite(metrics["meta_loss"]) & jnp.isfinite(grad_norm)

        def update():
            updates, opt_state = meta_optimizer.update(grad, state.meta_opt_state, state.theta)
            return optax.apply_updates(state.theta, updates), opt_state

        # A branch rather than a select of every leaf: the update's state must not see a
        # non-finite gradient, and one branch costs less than three selects per leaf of θ.
        theta, opt_state = jax.lax.cond(finite, update, lambda: (state.theta, state.meta_opt_state))
        metrics = dict(metrics, grad_norm=grad_norm, skipped=(~finite).astype(jnp.int32))
        return MetaState(theta, opt_state, est_state), metrics

    return meta_step
