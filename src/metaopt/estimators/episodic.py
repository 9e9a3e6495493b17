"""The episodic estimator: the gradient of the query loss of learners that read a support set.

Vinyals et al. 2016 train matching networks "episodically": each meta-step draws a
batch of N-way K-shot episodes and descends the loss of the query set predicted from
the support set. The same objective trains prototypical networks (Snell et al. 2017)
and, with every step of the sequence counted, the memory-augmented network (Santoro et
al. 2016). Each is an :class:`~metaopt.core.types.EpisodicLearner`: its pass over the
support set replaces MAML's inner gradient steps, so there is nothing to unroll and the
meta-gradient is plain backpropagation through ``learner.loss``. The episodes come from
the task family's ``sample`` (:func:`~metaopt.fewshot_family`), the ones MAML meets.
"""

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.sharding import constrain_tasks
from metaopt.core.types import EpisodicLearner, Estimator, TaskFamily, rebindable
from metaopt.estimators.options import RunSpec
from metaopt.learners.episodic import check_learner
from metaopt.tasks.fewshot import check_episode


def episodic(learner: EpisodicLearner, family: TaskFamily, *, num_tasks: int) -> Estimator:
    """The episodic estimator: ∇θ of the mean ``learner.loss`` over ``num_tasks`` fresh episodes.

    Args:
      learner: an episodic learner (matching, prototypical or memory-augmented network).
      family: a family whose configurations are episodes
        (:class:`~metaopt.tasks.fewshot.Episode`) of ``learner.config["ways"]`` classes;
        its ``init``, ``loss`` and ``eval_loss`` are not used.
      num_tasks: episodes per meta-batch.

    Returns:
      An :class:`~metaopt.Estimator` whose state counts the estimates taken; its
      metrics are ``meta_loss`` and ``loss``, both the mean episode loss (there are no
      inner steps). ``function_steps`` counts one support pass per episode.

    Example:
      >>> import jax
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.learners.prototypical import prototypical_network
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> learner = prototypical_network(mlp_embedding(64), ways=5)
      >>> est = episodic(learner, fam, num_tasks=4)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, state, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(1))
      >>> jax.tree.structure(grad) == jax.tree.structure(theta), int(state)
      (True, 1)
    """
    ways = check_learner(learner)
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily, got {type(family).__name__}")
    key = jax.random.key(0)
    try:
        check_episode(family.sample(key), ways)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"family {family.name!r} does not give {ways}-way episodes for learner "
            f"{learner.name!r} (ways={ways}): {e}"
        ) from e
    # Traced once on shapes alone, so a learner built for other examples fails here,
    # with its own message, rather than inside the first compiled meta-step.
    jax.eval_shape(lambda k: learner.loss(learner.init(k), family.sample(k), k), key)
    config = dict(num_tasks=num_tasks, ways=ways)

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            del theta, key
            return jnp.zeros((), jnp.int32)

        def meta_loss(theta, key):
            k_episodes, k_run = jax.random.split(key)
            keys = constrain_tasks(jax.random.split(k_episodes, num_tasks))
            episodes = constrain_tasks(jax.vmap(fam.sample)(keys))
            run_keys = constrain_tasks(jax.random.split(k_run, num_tasks))
            losses = jax.vmap(lambda ep, k: learner.loss(theta, ep, k))(episodes, run_keys)
            return jnp.mean(losses)

        def estimate(theta, count, key):
            value, grad = jax.value_and_grad(meta_loss)(theta, key)
            return grad, count + 1, {"meta_loss": value, "loss": value}

        return Estimator(
            name="episodic",
            config=config,
            init=init,
            estimate=estimate,
            function_steps=num_tasks,
            learner=learner,
        )

    return rebindable(build, family)


def _build(learner: EpisodicLearner, family: TaskFamily, run: RunSpec, options: None) -> Estimator:
    del options
    return episodic(learner, family, num_tasks=run.num_tasks)


ENTRY = Entry(
    "episodic",
    _build,
    None,
    "the query loss of a learner that reads the support set in one pass (Vinyals et al. 2016)",
    frozenset({"episodic", "query"}),
)
