"""θ holds a learning rate per parameter: Meta-SGD (Li et al. 2017).

Li, Zhou, Chen, Li 2017 ("Meta-SGD: learning to learn quickly for few-shot learning")
meta-learn an initialization and, beside it, a learning rate for every parameter: one
inner step is ``φ = θ₀ − α ∘ ∇L(θ₀)``. :func:`per_parameter_sgd` is the update rule
alone, :func:`meta_sgd` the two together (a :func:`~metaopt.combine`).
"""

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import MetaLearner, Params, TaskConfig, TaskFamily, Theta
from metaopt.learners.combine import combine
from metaopt.learners.initialization import (
    Init,
    InnerSGDOptions,
    initializer,
    learned_initialization,
)


def scaled_sgd(rates: Params) -> optax.GradientTransformation:
    """SGD whose step size is ``rates`` elementwise: ``updates = -rates ∘ grads``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scaled_sgd(jnp.array([0.1, 1.0]))
      >>> tx.update(jnp.array([1.0, 2.0]), tx.init(None))[0]
      Array([-0.1, -2. ], dtype=float32)
    """

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda a, g: -a * g, rates, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def per_parameter_sgd(init: "Init | TaskFamily", learning_rate: float = 0.01) -> MetaLearner:
    """The meta-learner whose θ is one SGD learning rate per inner parameter.

    The inner params start where the task family says; combine with
    :func:`~metaopt.learned_initialization` to learn the start too (:func:`meta_sgd`).

    Args:
      init: gives the params' structure: ``init(key) -> params`` or a task family.
      learning_rate: every rate's initial value.

    Example:
      >>> import jax
      >>> from metaopt import quadratic_family
      >>> learner = per_parameter_sgd(quadratic_family(), 0.1)
      >>> learner.init(jax.random.key(0))[:3]
      Array([0.1, 0.1, 0.1], dtype=float32)
    """
    draw = initializer(init)
    learning_rate = checks.positive_float("learning_rate", learning_rate)

    def init_theta(key: jax.Array) -> Theta:
        return jax.tree.map(lambda p: jnp.full_like(p, learning_rate), draw(key))

    def init_params(theta: Theta, family: TaskFamily, cfg: TaskConfig, key: jax.Array) -> Params:
        del theta
        return family.init(cfg, key)

    return MetaLearner(
        name="per_parameter_sgd",
        config={"learning_rate": learning_rate},
        init=init_theta,
        init_params=init_params,
        tx=scaled_sgd,
    )


def meta_sgd(init: "Init | TaskFamily", learning_rate: float = 0.01) -> MetaLearner:
    """Meta-SGD: a learned initialization and a learned learning rate per parameter.

    θ is ``{"init": params, "rule": rates}``; train it with :func:`~metaopt.maml`
    (Li et al. take one inner step, with second-order meta-gradients).

    Example:
      >>> import jax
      >>> from metaopt import sinusoid_family
      >>> learner = meta_sgd(sinusoid_family())
      >>> sorted(learner.init(jax.random.key(0)))
      ['init', 'rule']
    """
    learner = combine(learned_initialization(init), per_parameter_sgd(init, learning_rate))
    return learner._replace(name="meta_sgd")


def _build(lopt, family: TaskFamily, options: InnerSGDOptions) -> MetaLearner:
    del lopt
    return meta_sgd(family, options.inner_lr)


ENTRY = Entry(
    "metasgd",
    _build,
    InnerSGDOptions,
    "θ is the initialization and a learning rate per parameter (Li et al. 2017)",
    frozenset({"initialization"}),
)
