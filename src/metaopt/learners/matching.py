"""Matching networks: a query's label is an attention-weighted read-out of the support labels.

Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra 2016 ("Matching networks for one
shot learning"). For a query x̂ and support set S = {(x_i, y_i)},

    P(y | x̂, S) = Σ_i a(x̂, x_i) y_i,   a(x̂, x_i) = softmax_i(cos(f(x̂, S), g(x_i, S))),

with one-hot labels y_i. Without full context embeddings f and g are one embedding
network. With them (the paper's appendix), g(x_i, S) = h⃗_i + h⃖_i + g'(x_i), a
bidirectional LSTM over the embedded support set, and f(x̂, S) is an LSTM that attends
over g(S) for ``fce_steps`` steps:

    ĥ_k, c_k = LSTM(f'(x̂), [h_{k-1}, r_{k-1}], c_{k-1}),   h_k = ĥ_k + f'(x̂),
    r_k = Σ_i softmax_i(h_k · g(x_i, S)) g(x_i, S),

from h_0 = c_0 = 0 (so r_0 is the mean of g(S)); f(x̂, S) = h_K. The bidirectional
LSTM reads the support set in an order drawn from the key.

The paper's softmax is over the cosines themselves, so it can never be sharp: with 25
support examples in 5 classes a query gives its class at most about half the mass. The
loss then keeps pulling each training class onto a single direction, and with few
training classes (the digits demo's 20) the embedding collapses onto them and stops
telling unseen classes apart. ``scale`` multiplies the cosines first (a temperature,
as cosine classifiers use); 1 is the paper's attention.
"""

import dataclasses

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import EpisodicLearner, TaskFamily, Theta
from metaopt.learners.embedding import Embedding, mlp_embedding
from metaopt.learners.episodic import episode_shape, query_loss
from metaopt.optimizers.lstm import init_lstm_cell, lstm_cell
from metaopt.tasks.fewshot import Episode

COSINE_EPS = 1e-8


def cosine_similarities(queries: jax.Array, support: jax.Array) -> jax.Array:
    """``(n, m)`` cosine similarity of every query row with every support row.

    Exact for rows whose norm is at least ``COSINE_EPS``; zero for a zero row.

    Example:
      >>> import jax.numpy as jnp
      >>> cosine_similarities(jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 0.0], [0.0, 3.0]]))
      Array([[1., 0.]], dtype=float32)
    """
    return _unit(queries) @ _unit(support).T


def _unit(x: jax.Array) -> jax.Array:
    """Rows of ``x`` over their norms, the norm floored at ``COSINE_EPS``.

    A zero row stays zero and its gradient finite (``linalg.norm``'s is NaN at zero).
    """
    squared = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, COSINE_EPS**2))


def attention_readout(
    queries: jax.Array, support: jax.Array, labels: jax.Array, ways: int, scale: float = 1.0
) -> jax.Array:
    """``log Σ_i a(x̂, x_i) y_i``: log-probabilities ``(n, ways)`` of embedded queries.

    ``a`` is the softmax over the support set of ``scale`` times the cosine
    similarities (the paper's ``scale`` is 1); the sum over one class's support
    examples is taken in log space, so no class's probability underflows to log 0.

    Example:
      >>> import jax.numpy as jnp
      >>> logp = attention_readout(jnp.array([[1.0, 0.0]]), jnp.eye(2), jnp.array([0, 1]), 2)
      >>> jnp.exp(logp).sum().round(4)
      Array(1., dtype=float32)
    """
    sims = scale * cosine_similarities(queries, support)
    one_hot = jax.nn.one_hot(labels, ways, dtype=bool)
    per_class = jnp.where(one_hot.T[None], sims[:, None, :], -jnp.inf)
    return jax.nn.logsumexp(per_class, axis=-1) - jax.nn.logsumexp(sims, axis=-1, keepdims=True)


def _scan_lstm(weights: dict, xs: jax.Array, reverse: bool = False) -> jax.Array:
    """Hidden states of an LSTM run over the rows of ``xs`` (backwards if ``reverse``)."""
    zeros = jnp.zeros(weights["wh"].shape[0], xs.dtype)

    def step(carry, x):
        h, c = lstm_cell(weights, x, *carry)
        return (h, c), h

    _, hs = jax.lax.scan(step, (zeros, zeros), xs, reverse=reverse)
    return hs


def context_support(weights: dict, embedded: jax.Array) -> jax.Array:
    """``g(x_i, S) = h⃗_i + h⃖_i + g'(x_i)``: the bidirectional LSTM's support embeddings.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = {"fw": init_lstm_cell(jax.random.key(0), 4, 4),
      ...      "bw": init_lstm_cell(jax.random.key(1), 4, 4)}
      >>> context_support(w, jnp.ones((3, 4))).shape
      (3, 4)
    """
    forward = _scan_lstm(weights["fw"], embedded)
    return embedded + forward + _scan_lstm(weights["bw"], embedded, reverse=True)


def attention_lstm(weights: dict, query: jax.Array, support: jax.Array, steps: int) -> jax.Array:
    """``f(x̂, S)``: ``steps`` steps of the attention LSTM from one embedded query.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = init_lstm_cell(jax.random.key(0), 4, 4, recurrent_size=8)
      >>> attention_lstm(w, jnp.ones(4), jnp.ones((3, 4)), steps=2).shape
      (4,)
    """

    def read(h: jax.Array) -> jax.Array:
        return jax.nn.softmax(support @ h) @ support

    def step(carry, _):
        h, r, c = carry
        h_hat, c = lstm_cell(weights, query, jnp.concatenate([h, r]), c)
        h = h_hat + query
        return (h, read(h), c), None

    zeros = jnp.zeros_like(query)
    (h, _, _), _ = jax.lax.scan(step, (zeros, read(zeros), zeros), None, length=steps)
    return h


def matching_network(
    embedding: Embedding,
    ways: int,
    *,
    full_context: bool = False,
    fce_steps: int = 5,
    scale: float = 1.0,
) -> EpisodicLearner:
    """The matching network over ``embedding``, with full context embeddings if asked.

    Args:
      embedding: the embedding network (g' = f' = it).
      ways: classes per episode.
      full_context: add the bidirectional support LSTM and the query attention LSTM.
      fce_steps: the attention LSTM's steps K.
      scale: the factor on the cosines before the attention's softmax (1: the paper).

    Returns:
      An :class:`~metaopt.core.types.EpisodicLearner`; θ is ``{"embed": ...}``, plus
      ``"support_lstm"`` and ``"query_lstm"`` with full context embeddings. ``predict``
      gives log-probabilities.

    Example:
      >>> import jax
      >>> from metaopt.learners.embedding import mlp_embedding
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> learner = matching_network(mlp_embedding(64), ways=5, full_context=True)
      >>> theta = learner.init(jax.random.key(0))
      >>> sorted(theta)
      ['embed', 'query_lstm', 'support_lstm']
      >>> learner.predict(theta, fam.sample(jax.random.key(1)), jax.random.key(2)).shape
      (75, 5)
    """
    if not isinstance(embedding, Embedding):
        raise TypeError(f"embedding must be an Embedding, got {type(embedding).__name__}")
    ways = checks.positive_int("ways", ways)
    fce_steps = checks.positive_int("fce_steps", fce_steps)
    scale = checks.positive_float("scale", scale)
    size = embedding.size

    def init(key: jax.Array) -> Theta:
        k_embed, k_fw, k_bw, k_att = jax.random.split(key, 4)
        theta = {"embed": embedding.init(k_embed)}
        if full_context:
            theta["support_lstm"] = {
                "fw": init_lstm_cell(k_fw, size, size),
                "bw": init_lstm_cell(k_bw, size, size),
            }
            theta["query_lstm"] = init_lstm_cell(k_att, size, size, recurrent_size=2 * size)
        return theta

    def predict(theta: Theta, episode: Episode, key: jax.Array) -> jax.Array:
        support = embedding.apply(theta["embed"], episode.x_support)
        queries = embedding.apply(theta["embed"], episode.x_query)
        labels = episode.y_support
        if full_context:
            order = jax.random.permutation(key, support.shape[0])
            support, labels = support[order], labels[order]
            support = context_support(theta["support_lstm"], support)
            queries = jax.vmap(
                lambda q: attention_lstm(theta["query_lstm"], q, support, fce_steps)
            )(queries)
        return attention_readout(queries, support, labels, ways, scale)

    config = {
        "ways": ways,
        "scale": scale,
        "full_context": bool(full_context),
        "embedding": {"name": embedding.name, **embedding.config},
    }
    if full_context:
        config["fce_steps"] = fce_steps
    return EpisodicLearner(
        name="matching", config=config, init=init, predict=predict, loss=query_loss(predict)
    )


@dataclasses.dataclass(frozen=True)
class MatchingOptions:
    """Matching networks' options (see :func:`matching_network`)."""

    full_context: bool = option(False, "matching networks: full context embeddings")
    fce_steps: int = option(
        5, "matching networks: the attention LSTM's steps", check=checks.positive_int
    )
    cosine_scale: float = option(
        1.0,
        "matching networks: factor on the cosines before the softmax (1: the paper)",
        check=checks.positive_float,
    )


def _build(lopt, family: TaskFamily, options: MatchingOptions) -> EpisodicLearner:
    del lopt
    features, ways = episode_shape(family)
    return matching_network(
        mlp_embedding(features, (64, 64)),
        ways,
        full_context=options.full_context,
        fce_steps=options.fce_steps,
        scale=options.cosine_scale,
    )


ENTRY = Entry(
    "matching",
    _build,
    MatchingOptions,
    "θ embeds examples; cosine attention over the support labels (Vinyals et al. 2016)",
    frozenset({"episodic"}),
)
