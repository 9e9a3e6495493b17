"""θ is a learned optimizer's weights; the inner params start where the task family says.

The meta-learner of Andrychowicz et al. 2016 and of every learned optimizer in
metaopt: ``tx(θ)`` is :func:`~metaopt.as_optax` of the optimizer with weights θ.
"""

import jax

from metaopt.core.optax_adapter import as_optax
from metaopt.core.registry import Entry
from metaopt.core.types import LearnedOptimizer, MetaLearner, Params, TaskConfig, TaskFamily, Theta


def learned_optimizer(lopt: LearnedOptimizer) -> MetaLearner:
    """The meta-learner whose θ is the weights of ``lopt``.

    Args:
      lopt: a learned optimizer (:func:`~metaopt.lstm_optimizer`,
        :func:`~metaopt.mlp_optimizer`, ...).

    Returns:
      A :class:`~metaopt.MetaLearner`: ``init`` is ``lopt.init``, ``init_params`` is
      ``family.init``, and ``tx(theta)`` is ``as_optax(lopt, theta)``.

    Example:
      >>> import jax
      >>> from metaopt import lstm_optimizer, quadratic_family
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> theta = learner.init(jax.random.key(0))
      >>> fam = quadratic_family()
      >>> cfg = fam.sample(jax.random.key(1))
      >>> learner.init_params(theta, fam, cfg, jax.random.key(2)).shape
      (10,)
    """
    if not isinstance(lopt, LearnedOptimizer):
        raise TypeError(f"lopt must be a LearnedOptimizer, got {type(lopt).__name__}")

    def init_params(theta: Theta, family: TaskFamily, cfg: TaskConfig, key: jax.Array) -> Params:
        del theta
        return family.init(cfg, key)

    return MetaLearner(
        name="learned_optimizer",
        config={"lopt": lopt.name, **lopt.config},
        init=lopt.init,
        init_params=init_params,
        tx=lambda theta: as_optax(lopt, theta),
    )


def _build(lopt: LearnedOptimizer, family: TaskFamily, options: None) -> MetaLearner:
    del family, options
    return learned_optimizer(lopt)


ENTRY = Entry(
    "learned_optimizer",
    _build,
    None,
    "θ is the learned optimizer's weights",
    frozenset({"optimizer"}),
)
