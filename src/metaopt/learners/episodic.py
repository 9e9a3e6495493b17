"""What the episodic learners share: the query loss, and labelling your own arrays.

An :class:`~metaopt.core.types.EpisodicLearner` (matching networks, prototypical
networks, a memory-augmented network) reads an episode's support set and labels its
query set in one pass. :func:`query_loss` is the meta-training loss of the two metric
learners; :func:`classify` labels a query set from concrete arrays after checking them.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.types import EpisodicLearner, TaskFamily, Theta
from metaopt.tasks.fewshot import Episode, check_episode

Predict = Callable[[Theta, Episode, jax.Array], jax.Array]


def query_loss(predict: Predict) -> Callable[[Theta, Episode, jax.Array], jax.Array]:
    """``loss(theta, episode, key)``: the mean cross-entropy of ``predict``'s query logits.

    Example:
      >>> import jax.numpy as jnp
      >>> from metaopt.tasks.fewshot import Episode
      >>> ep = Episode(jnp.zeros((2, 1)), jnp.array([0, 1]), jnp.zeros((3, 1)),
      ...     jnp.array([0, 1, 1]))
      >>> loss = query_loss(lambda theta, ep, key: jnp.zeros((3, 2)))
      >>> round(float(loss(None, ep, None)), 4)  # uniform over 2 classes: log 2
      0.6931
    """

    def loss(theta: Theta, episode: Episode, key: jax.Array) -> jax.Array:
        logits = predict(theta, episode, key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, episode.y_query).mean()

    return loss


def check_learner(learner: EpisodicLearner) -> int:
    """Raises unless ``learner`` is an :class:`EpisodicLearner`; returns its ``ways``.

    Example:
      >>> check_learner(EpisodicLearner("x", {"ways": 5}, None, None, None))
      5
    """
    if not isinstance(learner, EpisodicLearner):
        raise TypeError(
            f"learner must be an EpisodicLearner (matching, prototypical or memory-augmented "
            f"network), got {type(learner).__name__}"
        )
    return checks.positive_int("learner.config['ways']", learner.config.get("ways"))


def episode_shape(family: TaskFamily) -> tuple[int, int]:
    """``(features, ways)`` of ``family``'s episodes, read from one drawn episode.

    Registered learners are built from a task family alone; this is how they learn the
    size of an example and the number of classes per episode.

    Example:
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> episode_shape(fewshot_family(digits(), classes=range(5), ways=3))
      (64, 3)
    """
    episode = family.sample(jax.random.key(0))
    if not isinstance(episode, Episode):
        raise ValueError(
            f"task family {family.name!r} does not draw N-way K-shot episodes (its "
            f"configurations are {type(episode).__name__}); episodic learners need one, "
            "such as fewshot_family"
        )
    return int(episode.x_support.shape[-1]), int(jnp.max(episode.y_support)) + 1


def classify(
    learner: EpisodicLearner,
    theta: Theta,
    x_support: np.ndarray,
    y_support: np.ndarray,
    x_query: np.ndarray,
    *,
    key: jax.Array | None = None,
) -> jax.Array:
    """Labels ``x_query`` from the labelled support set: ``argmax`` of the learner's logits.

    The arrays are checked first (:func:`~metaopt.tasks.fewshot.check_episode`): every
    class ``0..ways-1`` needs a support example, and features must match.

    Args:
      learner: an episodic learner.
      theta: its meta-parameters.
      x_support: ``(n, features)`` support examples.
      y_support: ``(n,)`` their labels in ``0..ways-1``.
      x_query: ``(m, features)`` examples to label.
      key: orders the support set for sequence learners; ``key(0)`` if None.

    Example:
      >>> import jax, numpy as np
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.learners.prototypical import prototypical_network
      >>> learner = prototypical_network(mlp_embedding(2, (8,)), ways=2)
      >>> theta = learner.init(jax.random.key(0))
      >>> x = np.array([[0.0, 1.0], [5.0, 5.0]])
      >>> classify(learner, theta, x, np.array([0, 1]), x).tolist()
      [0, 1]
    """
    ways = check_learner(learner)
    x_query = np.asarray(x_query)
    dummy = np.zeros(len(x_query), np.int32)  # query labels are unknown; 0 passes the check
    episode = Episode(np.asarray(x_support), np.asarray(y_support), x_query, dummy)
    check_episode(episode, ways)
    key = jax.random.key(0) if key is None else checks.prng_key("key", key)
    episode = Episode(
        jnp.asarray(x_support, jnp.float32),
        jnp.asarray(y_support, jnp.int32),
        jnp.asarray(x_query, jnp.float32),
        jnp.asarray(dummy),
    )
    return jnp.argmax(learner.predict(theta, episode, key), axis=-1)
