"""N-way K-shot classification episodes from any labelled dataset (Vinyals et al. 2016).

An episode draws ``ways`` classes, labels them ``0..ways-1`` in random order, and draws
``shots`` support and ``query_shots`` query examples of each: the inner loop trains on
the support set (``loss``), the meta-objective measures the query set (``eval_loss``).
Episodes are drawn inside ``jit`` from a key, over an array of examples grouped by class
that lives on device. Meta-training and evaluation use disjoint classes, so a model is
judged on classes it never saw. Rotating images by multiples of 90° makes new classes
(Santoro et al. 2016), an augmentation for datasets with few classes.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.datasets import SPLITS, Dataset, digits
from metaopt.tasks.regression import init_mlp, mlp_forward


class Episode(NamedTuple):
    """One N-way K-shot episode.

    Attributes:
      x_support: ``(ways * shots, features)`` flattened images.
      y_support: ``(ways * shots,)`` labels in ``0..ways-1``.
      x_query: ``(ways * query_shots, features)``.
      y_query: ``(ways * query_shots,)``.
    """

    x_support: jax.Array
    y_support: jax.Array
    x_query: jax.Array
    y_query: jax.Array


def check_episode(episode: Episode, ways: int) -> None:
    """Raises, naming the field, unless ``episode``'s concrete arrays form a ``ways``-way episode.

    Support and query examples are ``(n, features)`` with matching labels ``(n,)``;
    every class ``0..ways-1`` has a support example, and every query label is one of
    them (a learner labels the query set only with classes it was shown).

    Example:
      >>> import numpy as np
      >>> ep = Episode(np.zeros((2, 3)), np.array([0, 1]), np.zeros((1, 3)), np.array([2]))
      >>> check_episode(ep, 2)
      Traceback (most recent call last):
      ...
      ValueError: y_query has classes [2] that are not in the support set (y_support has [0, 1])
    """
    ways = checks.positive_int("ways", ways)
    x_s, y_s, x_q, y_q = (np.asarray(a) for a in episode)
    if x_s.ndim != 2 or x_q.ndim != 2 or x_s.shape[1] != x_q.shape[1]:
        raise ValueError(
            f"x_support and x_query must be (n, features) with the same features, got "
            f"{x_s.shape} and {x_q.shape}"
        )
    for name, x, y in (("y_support", x_s, y_s), ("y_query", x_q, y_q)):
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{name} must hold one label per example ({len(x)}), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if len(y_s) == 0:
        raise ValueError("y_support is empty: an episode needs at least one shot per class")
    shown = sorted(set(y_s.tolist()))
    if shown != list(range(ways)):
        raise ValueError(
            f"y_support must hold every class 0..{ways - 1} (ways={ways}), got classes {shown}"
        )
    unseen = sorted(set(y_q.tolist()) - set(shown))
    if unseen:
        raise ValueError(
            f"y_query has classes {unseen} that are not in the support set (y_support has {shown})"
        )


def grouped_by_class(dataset: Dataset, classes: Sequence[int], *, rotations: int = 1) -> np.ndarray:
    """All examples of ``classes`` (every split), ``(num_classes, per_class, features)``.

    Each class keeps as many examples as the rarest selected class has, in a fixed
    order. With ``rotations`` of 2 or 4, each class also appears rotated by 180° (or by
    every multiple of 90°) as a class of its own.

    Example:
      >>> from metaopt.tasks.datasets import digits
      >>> grouped_by_class(digits(), [0, 1], rotations=4).shape
      (8, 178, 64)
    """
    if rotations not in (1, 2, 4):
        raise ValueError(f"rotations must be 1, 2 or 4, got {rotations!r}")
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must not repeat, got {classes}")
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad:
        raise ValueError(
            f"classes must lie in [0, {dataset.num_classes}) for {dataset.name!r}, got {bad}"
        )
    x = np.concatenate([dataset.split(s)[0] for s in SPLITS])
    y = np.concatenate([dataset.split(s)[1] for s in SPLITS])
    per_class = min(int(np.sum(y == c)) for c in classes)
    if per_class < 2:
        raise ValueError(f"every class needs at least 2 examples, some of {classes} have fewer")
    groups = []
    for c in classes:
        images = x[y == c][:per_class]
        step = 4 // rotations
        for r in range(0, 4, step):
            groups.append(np.rot90(images, k=r, axes=(1, 2)).reshape(per_class, -1))
    return np.stack(groups).astype(np.float32)


def fewshot_family(
    dataset: Dataset,
    *,
    classes: Sequence[int],
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    rotations: int = 1,
    hidden_sizes: tuple[int, ...] = (64, 64),
) -> TaskFamily:
    """``ways``-way ``shots``-shot episodes over ``classes`` of ``dataset``.

    Args:
      dataset: a labelled dataset (:func:`~metaopt.tasks.datasets.digits`, MNIST, ...).
      classes: the labels episodes draw from; give meta-training and evaluation
        disjoint ones.
      ways: classes per episode.
      shots: support examples per class.
      query_shots: query examples per class.
      rotations: 1, 2 or 4: each class also rotated by 180° (2) or by every multiple of
        90° (4), as new classes.
      hidden_sizes: hidden widths of the ReLU MLP classifier.

    Returns:
      A :class:`~metaopt.TaskFamily` whose configurations are :class:`Episode`;
      ``loss`` is the support cross-entropy, ``eval_loss`` the query cross-entropy, and
      :func:`query_accuracy` the query accuracy.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> ep = fam.sample(jax.random.key(0))
      >>> ep.x_support.shape, ep.x_query.shape
      ((5, 64), (75, 64))
    """
    ways = checks.positive_int("ways", ways)
    shots = checks.positive_int("shots", shots)
    query_shots = checks.positive_int("query_shots", query_shots)
    hidden_sizes = tuple(checks.positive_int("hidden_sizes", h) for h in hidden_sizes)
    grouped = grouped_by_class(dataset, classes, rotations=rotations)
    num_classes, per_class, features = grouped.shape
    if ways > num_classes:
        raise ValueError(
            f"ways={ways} needs at least {ways} classes, but classes give {num_classes}"
        )
    if shots + query_shots > per_class:
        raise ValueError(
            f"shots + query_shots = {shots + query_shots} exceeds the {per_class} examples "
            f"the rarest class has"
        )
    sizes = (features, *hidden_sizes, ways)
    name = f"{dataset.name}_{ways}way_{shots}shot"

    def bind(data: PyTree) -> TaskFamily:
        def sample(key: jax.Array) -> Episode:
            k_cls, k_ex = jax.random.split(key)
            chosen = jax.random.permutation(k_cls, num_classes)[:ways]
            pick = lambda k: jax.random.permutation(k, per_class)[: shots + query_shots]  # noqa: E731
            idx = jax.vmap(pick)(jax.random.split(k_ex, ways))
            x = data[chosen[:, None], idx]
            labels = jnp.broadcast_to(jnp.arange(ways)[:, None], idx.shape)
            return Episode(
                x[:, :shots].reshape(-1, features),
                labels[:, :shots].reshape(-1),
                x[:, shots:].reshape(-1, features),
                labels[:, shots:].reshape(-1),
            )

        def init(episode: Episode, key: jax.Array) -> list[dict]:
            del episode
            return init_mlp(key, sizes)

        def loss(episode: Episode, params: list[dict], key: jax.Array) -> jax.Array:
            del key
            return _cross_entropy(params, episode.x_support, episode.y_support)

        def eval_loss(episode: Episode, params: list[dict], key: jax.Array) -> jax.Array:
            del key
            return _cross_entropy(params, episode.x_query, episode.y_query)

        return TaskFamily(
            name=name,
            sample=sample,
            init=init,
            loss=loss,
            data=data,
            bind=bind,
            eval_loss=eval_loss,
        )

    return bind(jnp.asarray(grouped))


def _cross_entropy(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    logits = mlp_forward(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def query_accuracy(episode: Episode, params: list[dict]) -> jax.Array:
    """The fraction of an episode's query examples the classifier labels correctly.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = fewshot_family(digits(), classes=range(5))
      >>> ep = fam.sample(jax.random.key(0))
      >>> 0.0 <= float(query_accuracy(ep, fam.init(ep, jax.random.key(1)))) <= 1.0
      True
    """
    logits = mlp_forward(params, episode.x_query)
    return jnp.mean(jnp.argmax(logits, axis=-1) == episode.y_query)


def _build(split: str) -> TaskFamily:
    # 5-way 1-shot; meta-training sees digits 0-4 (and their rotations), validation and
    # evaluation the unseen digits 5-9.
    if split == "train":
        return fewshot_family(digits(), classes=range(5), rotations=4)
    return fewshot_family(digits(), classes=range(5, 10))


ENTRY = Entry(
    "fewshot_digits",
    _build,
    None,
    "5-way 1-shot episodes of the digits: train on 0-4, evaluate on 5-9",
    frozenset({"query", "episodes"}),
)
