"""Several estimators as one: a meta-batch drawn from several task families.

Task families with different parameter shapes cannot share one ``vmap``, so each keeps
its own estimator (and its own state, tasks and truncations), and one meta-step runs
all of them inside the same compiled program and averages their meta-gradients. This
is how a learned optimizer meets a diverse meta-training distribution in every
meta-step (Metz et al. 2022, VeLO; Moudgil et al. 2025, Celo).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaopt.core.types import Estimator, PyTree, Theta, rebindable


def mixture(estimators: Sequence[Estimator], weights: Sequence[float] | None = None) -> Estimator:
    """The weighted mean of several estimators' meta-gradients, one meta-step for all.

    The estimators must share one meta-learner (the same θ). Their meta-losses should be
    on comparable scales, e.g. a log-loss objective, since the meta-gradients are summed.

    Args:
      estimators: one estimator per task family.
      weights: non-negative weights, normalized to sum to one; equal if None.

    Returns:
      An :class:`~metaopt.Estimator` whose state is the tuple of the estimators'
      states. Its metrics are the weighted ``meta_loss`` and ``loss`` and, per member
      ``i``, ``meta_loss_i``.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, mlp_optimizer, pes, quadratic_family
      >>> learner = learned_optimizer(mlp_optimizer())
      >>> ests = [pes(learner, quadratic_family(d), num_tasks=2, truncation=5, horizon=10)
      ...         for d in (4, 8)]
      >>> est = mixture(ests)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, state, metrics = est.estimate(
      ...     theta, est.init(theta, jax.random.key(1)), jax.random.key(2))
      >>> est.function_steps, sorted(metrics)
      (40, ['loss', 'meta_loss', 'meta_loss_0', 'meta_loss_1'])
    """
    estimators = tuple(estimators)
    if not estimators or not all(isinstance(e, Estimator) for e in estimators):
        raise TypeError("estimators must be a non-empty sequence of Estimator")
    learner = estimators[0].learner
    same = [
        e.learner.name == learner.name and e.learner.config == learner.config for e in estimators
    ]
    if not all(same):
        raise ValueError("estimators must all estimate for the same meta-learner")
    if weights is None:
        weights = [1.0] * len(estimators)
    weights = [float(w) for w in weights]
    if len(weights) != len(estimators) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"weights must be {len(estimators)} non-negative numbers with a positive sum, "
            f"got {weights}"
        )
    total = sum(weights)
    weights = [w / total for w in weights]

    def build(members: tuple[Estimator, ...]) -> Estimator:
        def init(theta: Theta, key: jax.Array) -> PyTree:
            keys = jax.random.split(key, len(members))
            return tuple(e.init(theta, k) for e, k in zip(members, keys, strict=True))

        def estimate(theta: Theta, state: PyTree, key: jax.Array):
            keys = jax.random.split(key, len(members))
            grad = jax.tree.map(jnp.zeros_like, theta)
            states, metrics = [], {"meta_loss": 0.0, "loss": 0.0}
            for i, (e, s, k, w) in enumerate(zip(members, state, keys, weights, strict=True)):
                g, s, m = e.estimate(theta, s, k)
                grad = jax.tree.map(lambda a, b, w=w: a + w * b, grad, g)
                states.append(s)
                metrics["meta_loss"] += w * m["meta_loss"]
                metrics["loss"] += w * m["loss"]
                metrics[f"meta_loss_{i}"] = m["meta_loss"]
            return grad, tuple(states), metrics

        return Estimator(
            name="mixture",
            config={"members": [dict(e.config, name=e.name) for e in members], "weights": weights},
            init=init,
            estimate=estimate,
            function_steps=sum(e.function_steps for e in members),
            learner=learner,
        )

    return rebindable(build, estimators)
