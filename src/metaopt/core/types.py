"""The protocols metaopt is built on: task families, optimizers, learners, estimators.

Task families, learned optimizers, meta-learners and meta-gradient estimators.
Each is a NamedTuple of pure functions, so they compose by plain function calls and
every piece of state they touch is an explicit pytree argument.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

PyTree = Any
Params = PyTree
Theta = PyTree
TaskConfig = PyTree


class TaskFamily(NamedTuple):
    """A family of optimization problems.

    Attributes:
      name: short identifier, e.g. ``"quadratic"``.
      sample: ``sample(key) -> cfg`` draws one task configuration (a pytree of arrays),
        so ``jax.vmap(sample)(keys)`` draws a batch of tasks.
      init: ``init(cfg, key) -> params`` draws the optimizee's initial parameters.
      loss: ``loss(cfg, params, key) -> scalar``; ``key`` draws a minibatch for
        data-driven tasks and is ignored by deterministic ones.
      data: arrays the functions read (a dataset on device), or None.
      bind: ``bind(data) -> TaskFamily`` rebuilds the family over other arrays of the
        same shapes. metaopt's compiled functions take ``data`` as an argument and
        call ``bind`` on the traced value, so a dataset is never baked into a
        program as a constant. None for families without data.
      eval_loss: ``eval_loss(cfg, params, key) -> scalar``, a held-out loss (a query
        set, a validation split) that a meta-objective may measure instead of
        ``loss``; None if the family has none.
    """

    name: str
    sample: Callable[[jax.Array], TaskConfig]
    init: Callable[[TaskConfig, jax.Array], Params]
    loss: Callable[[TaskConfig, Params, jax.Array], jax.Array]
    data: PyTree = None
    bind: "Callable[[PyTree], TaskFamily] | None" = None
    eval_loss: Callable[[TaskConfig, Params, jax.Array], jax.Array] | None = None


def with_data(family, data: PyTree):
    """Returns ``family`` (or an estimator) reading ``data``, e.g. a traced ``jit`` argument.

    Example:
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> fam = quadratic_family()
      >>> with_data(fam, None) is fam
      True
    """
    return family if family.bind is None else family.bind(data)


class LearnedOptimizer(NamedTuple):
    """A learned optimizer: an update rule whose weights ``theta`` are meta-learned.

    Attributes:
      name: architecture identifier, e.g. ``"lstm"``.
      config: the architecture's hyperparameters (plain Python values), enough to
        rebuild it with its factory.
      init: ``init(key) -> theta`` draws initial meta-parameters.
      init_state: ``init_state(theta, params) -> state`` builds the per-parameter state.
      update: ``update(theta, grads, state, params) -> (updates, state)`` proposes the
        additive update of ``params`` from ``grads``.

    """

    name: str
    config: dict[str, Any]
    init: Callable[[jax.Array], Theta]
    init_state: Callable[[Theta, Params], PyTree]
    update: Callable[[Theta, PyTree, PyTree, Params | None], tuple[PyTree, PyTree]]


class MetaLearner(NamedTuple):
    """What is meta-learned: θ and the inner training run it parameterizes.

    A learned optimizer's weights, an initialization, per-parameter learning rates, or
    several at once: each is a ``MetaLearner`` built by a small factory (see
    :func:`metaopt.learned_optimizer`), and every estimator works with any of them.

    Attributes:
      name: short identifier, e.g. ``"learned_optimizer"``.
      config: plain values that describe the learner.
      init: ``init(key) -> theta`` draws initial meta-parameters.
      init_params: ``init_params(theta, family, cfg, key) -> params``: where a task's
        inner training starts (``family.init``, or an initialization held in θ).
      tx: ``tx(theta) -> optax.GradientTransformation``: the inner update rule θ
        implies. θ may be traced, so meta-gradients flow through it.
    """

    name: str
    config: dict[str, Any]
    init: Callable[[jax.Array], Theta]
    init_params: Callable[[Theta, TaskFamily, TaskConfig, jax.Array], Params]
    tx: Callable[[Theta], optax.GradientTransformation]


class EpisodicLearner(NamedTuple):
    """A learner that classifies an episode's query set from its support set in one pass.

    Matching networks, prototypical networks and memory-augmented networks learn no
    inner update rule: θ (an embedding network, a controller, memory settings) reads
    the support set and labels the query set. Their "inner learning" is that pass, so
    they are not a :class:`MetaLearner` (which has an inner rule, ``tx``); the
    ``episodic`` estimator turns one into meta-gradients, and everything above the
    estimator serves both kinds alike.

    Attributes:
      name: short identifier, e.g. ``"prototypical"``.
      config: plain values that describe the learner; ``config["ways"]`` is the number
        of classes per episode it labels.
      init: ``init(key) -> theta`` draws initial meta-parameters.
      predict: ``predict(theta, episode, key) -> logits`` of the query set,
        ``(num_query, ways)``, given the support set (an episode as
        :class:`~metaopt.tasks.fewshot.Episode`; ``key`` orders sequences).
      loss: ``loss(theta, episode, key) -> scalar``, the meta-training loss of one
        episode: the query cross-entropy, or for a sequence learner every step's.
    """

    name: str
    config: dict[str, Any]
    init: Callable[[jax.Array], Theta]
    predict: Callable[[Theta, TaskConfig, jax.Array], jax.Array]
    loss: Callable[[Theta, TaskConfig, jax.Array], jax.Array]


class Estimator(NamedTuple):
    """Turns θ and its own state into a meta-gradient.

    Attributes:
      name: e.g. ``"tbptt"``, ``"pes"``.
      config: the estimator's settings (plain values).
      init: ``init(theta, key) -> state``; every leaf of the state has a leading task
        axis, and nothing outside the estimator looks inside it.
      estimate: ``estimate(theta, state, key) -> (meta_grad, state, metrics)``;
        ``metrics`` holds at least ``meta_loss`` and ``loss`` (scalars).
      function_steps: inner steps one ``estimate`` takes, over all its trajectories.
      learner: the meta-learner whose θ is estimated for (a :class:`MetaLearner`, or
        an :class:`EpisodicLearner` for the ``episodic`` estimator).
      data: the task family's arrays (see :class:`TaskFamily`).
      bind: ``bind(data) -> Estimator`` over other arrays of the same shapes. Factories
        set both with :func:`rebindable`.
    """

    name: str
    config: dict[str, Any]
    init: Callable[[Theta, jax.Array], PyTree]
    estimate: Callable[[Theta, PyTree, jax.Array], tuple[Theta, PyTree, dict[str, jax.Array]]]
    function_steps: int
    learner: MetaLearner | EpisodicLearner
    data: PyTree = None
    bind: "Callable[[PyTree], Estimator] | None" = None


def rebindable(build: "Callable[[Any], Estimator]", source: Any) -> Estimator:
    """``build(source)`` with ``data`` and ``bind`` set, so it can read other arrays.

    Every estimator factory ends here: ``build`` makes the estimator over one task
    family, and this sets its ``data`` to the family's and its ``bind(data)`` to
    ``build`` over the family reading ``data`` (:func:`with_data`), so the loop can
    pass a dataset as a traced argument. ``source`` may also be a tuple of estimators
    (a mixture's members), whose data is the tuple of theirs, each rebound to its own.

    Args:
      build: ``build(source) -> Estimator``, ``data`` and ``bind`` left unset.
      source: a :class:`TaskFamily`, or a plain tuple of estimators.

    Example:
      >>> import jax.numpy as jnp
      >>> def family(data):
      ...     return TaskFamily("dot", None, None, lambda c, p, k: data @ p, data, family)
      >>> def build(fam):
      ...     return Estimator("e", {}, None, lambda th, s, k: fam.loss(None, th, k), 0, None)
      >>> est = rebindable(build, family(jnp.ones(3)))
      >>> doubled = with_data(est, 2 * est.data)
      >>> ones = jnp.ones(3)
      >>> float(est.estimate(ones, None, None)), float(doubled.estimate(ones, None, None))
      (3.0, 6.0)
    """
    members = type(source) is tuple

    def read(data: PyTree) -> Any:
        if members:
            return tuple(with_data(e, d) for e, d in zip(source, data, strict=True))
        return with_data(source, data)

    def over(src: Any) -> Estimator:
        data = tuple(e.data for e in src) if members else src.data
        return build(src)._replace(data=data, bind=lambda d: over(read(d)))

    return over(source)
