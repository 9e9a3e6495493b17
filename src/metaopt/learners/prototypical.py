"""Prototypical networks: a query takes the label of the nearest class mean.

Snell, Swersky, Zemel 2017 ("Prototypical networks for few-shot learning"): θ is an
embedding network f. An episode's prototype of class k is the mean embedding of its
support examples, c_k = mean_{y_i = k} f(x_i), and a query x is labelled by a softmax
over negative squared Euclidean distances, p(k | x) ∝ exp(−‖f(x) − c_k‖²). Training
minimizes the query cross-entropy over episodes (:func:`~metaopt.episodic`).
"""

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import EpisodicLearner, TaskFamily, Theta
from metaopt.learners.embedding import Embedding, mlp_embedding
from metaopt.learners.episodic import episode_shape, query_loss
from metaopt.tasks.fewshot import Episode


def prototypes(embedded: jax.Array, labels: jax.Array, ways: int) -> jax.Array:
    """``(ways, size)`` class means of ``embedded`` rows grouped by ``labels``.

    Example:
      >>> import jax.numpy as jnp
      >>> prototypes(jnp.array([[0.0], [2.0], [5.0]]), jnp.array([0, 0, 1]), 2).tolist()
      [[1.0], [5.0]]
    """
    one_hot = jax.nn.one_hot(labels, ways, dtype=embedded.dtype)
    return (one_hot.T @ embedded) / one_hot.sum(axis=0)[:, None]


def prototype_logits(queries: jax.Array, protos: jax.Array) -> jax.Array:
    """``(n, ways)`` negative squared Euclidean distances of embedded queries to prototypes.

    Example:
      >>> import jax.numpy as jnp
      >>> prototype_logits(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0], [1.0, 2.0]]))
      Array([[-1., -4.]], dtype=float32)
    """
    return -jnp.sum((queries[:, None, :] - protos[None, :, :]) ** 2, axis=-1)


def prototypical_network(embedding: Embedding, ways: int) -> EpisodicLearner:
    """The prototypical network over ``embedding``; θ is the embedding's params.

    Args:
      embedding: the embedding network f (:func:`~metaopt.learners.embedding.mlp_embedding`,
        :func:`~metaopt.learners.embedding.conv_embedding`).
      ways: classes per episode.

    Example:
      >>> import jax
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> learner = prototypical_network(mlp_embedding(64), ways=5)
      >>> theta = learner.init(jax.random.key(0))
      >>> learner.predict(theta, fam.sample(jax.random.key(1)), None).shape
      (75, 5)
    """
    if not isinstance(embedding, Embedding):
        raise TypeError(f"embedding must be an Embedding, got {type(embedding).__name__}")
    ways = checks.positive_int("ways", ways)

    def predict(theta: Theta, episode: Episode, key: jax.Array) -> jax.Array:
        del key
        protos = prototypes(embedding.apply(theta, episode.x_support), episode.y_support, ways)
        return prototype_logits(embedding.apply(theta, episode.x_query), protos)

    return EpisodicLearner(
        name="prototypical",
        config={"ways": ways, "embedding": {"name": embedding.name, **embedding.config}},
        init=embedding.init,
        predict=predict,
        loss=query_loss(predict),
    )


def _build(lopt, family: TaskFamily, options: None) -> EpisodicLearner:
    del lopt, options
    features, ways = episode_shape(family)
    return prototypical_network(mlp_embedding(features, (64, 64)), ways)


ENTRY = Entry(
    "prototypical",
    _build,
    None,
    "θ embeds examples; a query takes the nearest class mean's label (Snell et al. 2017)",
    frozenset({"episodic"}),
)
