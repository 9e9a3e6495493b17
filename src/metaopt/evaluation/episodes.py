"""Held-out episodes for episodic learners: query accuracy per episode, 95% intervals.

The episodes are drawn as :func:`~metaopt.evaluation.adaptation.adaptation_curves` draws
its tasks (:func:`~metaopt.evaluation.adaptation.held_out_task`), so with the same key
an episodic learner and a MAML-trained initialization are scored on the same episodes.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from metaopt.core import checks
from metaopt.core.sharding import check_divisible, check_mesh, constrain_tasks, jit_replicated
from metaopt.core.types import EpisodicLearner, TaskFamily, Theta, with_data
from metaopt.evaluation.adaptation import held_out_task

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def held_out_episodes(family: TaskFamily, key: jax.Array, num_tasks: int):
    """``num_tasks`` held-out episodes and a key for each, as every evaluation draws them.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> episodes, keys = held_out_episodes(fam, jax.random.key(0), 3)
      >>> episodes.x_support.shape, keys.shape
      ((3, 5, 64), (3,))
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    keys = constrain_tasks(jax.random.split(key, num_tasks))
    episodes, keys, _ = jax.vmap(lambda k: held_out_task(family, k))(keys)
    return constrain_tasks(episodes), keys


def episode_accuracies(
    learner: EpisodicLearner,
    theta: Theta,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
) -> jax.Array:
    """``(num_tasks,)`` query accuracy of ``learner`` on held-out episodes; traceable.

    Each episode's init key orders the support set for sequence learners.

    Example:
      >>> import jax
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.learners.prototypical import prototypical_network
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5, 10), ways=5, shots=1)
      >>> learner = prototypical_network(mlp_embedding(64), ways=5)
      >>> acc = episode_accuracies(learner, learner.init(jax.random.key(0)), fam,
      ...     jax.random.key(1), num_tasks=8)
      >>> acc.shape, bool(((acc >= 0) & (acc <= 1)).all())
      ((8,), True)
    """
    episodes, keys = held_out_episodes(family, key, num_tasks)

    def one(episode, k: jax.Array) -> jax.Array:
        logits = learner.predict(theta, episode, k)
        return jnp.mean(jnp.argmax(logits, axis=-1) == episode.y_query)

    return jax.vmap(one)(episodes, keys)


def episode_validation_loss(
    learner: EpisodicLearner,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
    mesh: Mesh | None = None,
) -> Callable[[Theta], float]:
    """``validate(theta)``: the mean ``learner.loss`` of ``num_tasks`` fixed held-out episodes.

    Compiled once, the family's arrays an argument; with a ``mesh`` the episodes are
    split over its devices. :func:`~metaopt.evaluation.validation_loss` returns this for an
    episodic learner.

    Example:
      >>> import jax
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.learners.prototypical import prototypical_network
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5, 10), ways=5, shots=1)
      >>> learner = prototypical_network(mlp_embedding(64), ways=5)
      >>> validate = episode_validation_loss(learner, fam, jax.random.key(1), num_tasks=4)
      >>> validate(learner.init(jax.random.key(0))) > 0
      True
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    if mesh is not None:
        check_divisible("num_tasks", num_tasks, check_mesh(mesh))

    def mean_loss(data, theta, k):
        episodes, keys = held_out_episodes(with_data(family, data), k, num_tasks)
        return jnp.mean(jax.vmap(lambda ep, kk: learner.loss(theta, ep, kk))(episodes, keys))

    run = jit_replicated(mean_loss, mesh)
    return lambda theta: float(run(family.data, theta, key))


def mean_and_interval(values: np.ndarray) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its normal 95% confidence interval.

    Example:
      >>> [round(v, 3) for v in mean_and_interval(np.array([0.0, 1.0, 0.0, 1.0]))]
      [0.5, 0.566]
    """
    values = np.asarray(values, np.float64).ravel()
    if values.size < 2:
        raise ValueError(f"values needs at least 2 entries for an interval, got {values.size}")
    return float(values.mean()), float(Z_95 * values.std(ddof=1) / np.sqrt(values.size))
