"""Two meta-learners as one: where inner training starts from one, its rule from the other.

A learned initialization with a learned optimizer, or with per-parameter learning rates
(Meta-SGD), is one θ, ``{"init": θ_start, "rule": θ_rule}``, meta-trained jointly by any
estimator.
"""

import jax

from metaopt.core.types import MetaLearner, Params, TaskConfig, TaskFamily, Theta


def combine(start: MetaLearner, rule: MetaLearner) -> MetaLearner:
    """θ = ``{"init": ..., "rule": ...}``: ``start`` gives the initial params, ``rule`` the update.

    Args:
      start: its ``init_params`` decides where tasks start (e.g.
        :func:`~metaopt.learned_initialization`).
      rule: its ``tx`` is the inner update rule (e.g.
        :func:`~metaopt.learned_optimizer`, :func:`~metaopt.per_parameter_sgd`).

    Example:
      >>> import jax
      >>> from metaopt import (learned_initialization, learned_optimizer, mlp_optimizer,
      ...     sinusoid_family)
      >>> fam = sinusoid_family()
      >>> learner = combine(learned_initialization(fam), learned_optimizer(mlp_optimizer()))
      >>> theta = learner.init(jax.random.key(0))
      >>> cfg = fam.sample(jax.random.key(1))
      >>> learner.init_params(theta, fam, cfg, jax.random.key(2)) is theta["init"]
      True
    """
    for arg, value in (("start", start), ("rule", rule)):
        if not isinstance(value, MetaLearner):
            raise TypeError(f"{arg} must be a MetaLearner, got {type(value).__name__}")

    def init(key: jax.Array) -> Theta:
        k_start, k_rule = jax.random.split(key)
        return {"init": start.init(k_start), "rule": rule.init(k_rule)}

    def init_params(theta: Theta, family: TaskFamily, cfg: TaskConfig, key: jax.Array) -> Params:
        return start.init_params(theta["init"], family, cfg, key)

    config = {
        "initialization": start.config.get("initialization", "family"),
        "init": {"name": start.name, **start.config},
        "rule": {"name": rule.name, **rule.config},
    }
    return MetaLearner(
        name=f"{start.name}+{rule.name}",
        config=config,
        init=init,
        init_params=init_params,
        tx=lambda theta: rule.tx(theta["rule"]),
    )
