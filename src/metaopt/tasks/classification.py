"""Classifier task families over a :class:`~metaopt.tasks.datasets.Dataset`.

The MLP family is the optimizee of Andrychowicz et al. 2016, §3.2: one hidden layer of
20 sigmoid units, softmax cross-entropy, minibatches of 128, every weight and bias
drawn from N(0, 0.01²) as in the paper's code. Tasks differ by their initialization
and minibatches; minibatches are drawn inside ``jit`` from arrays already on device.
"""

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.datasets import Dataset, digits

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def mlp_classifier_family(
    dataset: Dataset,
    *,
    split: str = "train",
    hidden_sizes: tuple[int, ...] = (20,),
    activation: str = "sigmoid",
    batch_size: int = 128,
    init_std: float = 0.01,
) -> TaskFamily:
    """MLP classifiers trained on minibatches of one split of ``dataset``.

    Args:
      dataset: the data; images are flattened.
      split: ``"train"`` for meta-training, ``"val"`` for tuning and validation,
        ``"test"`` for evaluation.
      hidden_sizes: hidden layer widths; ``()`` is logistic regression.
      activation: ``"sigmoid"``, ``"relu"`` or ``"tanh"``.
      batch_size: examples per minibatch, drawn with replacement.
      init_std: standard deviation of the Gaussian initial weights and biases.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = mlp_classifier_family(digits())
      >>> params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
      >>> [p["w"].shape for p in params]
      [(64, 20), (20, 10)]
    """
    x, y = dataset.split(split)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    hidden_sizes = tuple(checks.positive_int("hidden_sizes", h) for h in hidden_sizes)
    batch_size = checks.positive_int("batch_size", batch_size)
    init_std = checks.positive_float("init_std", init_std)
    act = ACTIVATIONS[activation]
    sizes = (int(x[0].size), *hidden_sizes, dataset.num_classes)
    arch = "-".join(map(str, sizes))
    name = f"mlp_{arch}_{activation}_{dataset.name}_{split}"

    def bind(data: PyTree) -> TaskFamily:
        xs, ys = data

        def sample(key: jax.Array) -> jax.Array:
            del key
            return jnp.zeros((), jnp.float32)

        def init(cfg: jax.Array, key: jax.Array) -> list[dict]:
            del cfg
            keys = jax.random.split(key, 2 * (len(sizes) - 1))
            return [
                {
                    "w": init_std * jax.random.normal(keys[2 * i], (n_in, n_out)),
                    "b": init_std * jax.random.normal(keys[2 * i + 1], (n_out,)),
                }
                for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
            ]

        def loss(cfg: jax.Array, params: list[dict], key: jax.Array) -> jax.Array:
            del cfg
            idx = jax.random.randint(key, (batch_size,), 0, xs.shape[0])
            h = xs[idx]
            for layer in params[:-1]:
                h = act(h @ layer["w"] + layer["b"])
            logits = h @ params[-1]["w"] + params[-1]["b"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys[idx]).mean()

        return TaskFamily(name=name, sample=sample, init=init, loss=loss, data=data, bind=bind)

    return bind((jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y)))


def logistic_regression_family(
    dataset: Dataset, *, split: str = "train", batch_size: int = 128, init_std: float = 0.01
) -> TaskFamily:
    """Multinomial logistic regression on one split of ``dataset``.

    Example:
      >>> from metaopt.tasks.datasets import digits
      >>> logistic_regression_family(digits()).name
      'mlp_64-10_sigmoid_digits_train'
    """
    return mlp_classifier_family(
        dataset, split=split, hidden_sizes=(), batch_size=batch_size, init_std=init_std
    )


def mixed_mlp_classifier_family(
    dataset: Dataset,
    *,
    split: str = "train",
    widths: tuple[int, ...] = (10, 20, 40),
    activations: tuple[str, ...] = ("sigmoid", "relu", "tanh"),
    num_layers: int = 1,
    batch_size: int = 128,
    init_std: float = 0.01,
) -> TaskFamily:
    """MLP classifiers whose hidden widths and activation are drawn per task.

    Each task draws a width for every hidden layer from ``widths`` and one activation
    from ``activations``, uniformly. All tasks have the parameter shapes of the widest
    network, and a task of width ``w`` masks the units past ``w``: those units output
    zero, so the loss and its gradient are those of the ``w``-wide network, and the
    masked weights get zero gradient. Tasks of different architectures therefore share
    one vmapped meta-batch.

    Args:
      dataset: the data; images are flattened.
      split: ``"train"``, ``"val"`` or ``"test"``.
      widths: hidden widths to draw from.
      activations: activations to draw from (``"sigmoid"``, ``"relu"``, ``"tanh"``).
      num_layers: hidden layers.
      batch_size: examples per minibatch, drawn with replacement.
      init_std: standard deviation of the Gaussian initial weights and biases.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = mixed_mlp_classifier_family(digits(), widths=(5, 10))
      >>> cfg = fam.sample(jax.random.key(0))
      >>> sorted(cfg)
      ['activation', 'widths']
      >>> [p["w"].shape for p in fam.init(cfg, jax.random.key(1))]
      [(64, 10), (10, 10)]

    """
    x, y = dataset.split(split)
    widths = tuple(checks.positive_int("widths", w) for w in widths)
    if not widths:
        raise ValueError("widths must name at least one width")
    if not activations or any(a not in ACTIVATIONS for a in activations):
        raise ValueError(
            f"activations must be a non-empty tuple from {sorted(ACTIVATIONS)}, got {activations!r}"
        )
    num_layers = checks.positive_int("num_layers", num_layers)
    batch_size = checks.positive_int("batch_size", batch_size)
    init_std = checks.positive_float("init_std", init_std)
    widest = max(widths)
    sizes = (int(x[0].size), *([widest] * num_layers), dataset.num_classes)
    choices = jnp.asarray(widths, jnp.int32)
    acts = [ACTIVATIONS[a] for a in activations]
    name = f"mlp_mixed_{num_layers}x{'|'.join(map(str, widths))}_{dataset.name}_{split}"

    def masks(cfg: dict) -> list[jax.Array]:
        return [jnp.arange(widest) < cfg["widths"][i] for i in range(num_layers)]

    def bind(data: PyTree) -> TaskFamily:
        xs, ys = data

        def sample(key: jax.Array) -> dict:
            k_width, k_act = jax.random.split(key)
            return {
                "widths": jax.random.choice(k_width, choices, (num_layers,)),
                "activation": jax.random.randint(k_act, (), 0, len(acts)),
            }

        def init(cfg: dict, key: jax.Array) -> list[dict]:
            keys = jax.random.split(key, 2 * (len(sizes) - 1))
            out_masks = [*masks(cfg), jnp.ones(dataset.num_classes, bool)]
            in_masks = [jnp.ones(sizes[0], bool), *masks(cfg)]
            return [
                {
                    "w": init_std
                    * jax.random.normal(keys[2 * i], (n_in, n_out))
                    * (in_masks[i][:, None] & out_masks[i][None, :]),
                    "b": init_std * jax.random.normal(keys[2 * i + 1], (n_out,)) * out_masks[i],
                }
                for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
            ]

        def loss(cfg: dict, params: list[dict], key: jax.Array) -> jax.Array:
            idx = jax.random.randint(key, (batch_size,), 0, xs.shape[0])
            h = xs[idx]
            for layer, mask in zip(params[:-1], masks(cfg), strict=True):
                pre = h @ layer["w"] + layer["b"]
                h = jax.lax.switch(cfg["activation"], acts, pre) * mask
            logits = h @ params[-1]["w"] + params[-1]["b"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys[idx]).mean()

        return TaskFamily(name=name, sample=sample, init=init, loss=loss, data=data, bind=bind)

    return bind((jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y)))


def _build(split: str) -> TaskFamily:
    return mlp_classifier_family(digits(), split=split)


ENTRY = Entry(
    "mlp_digits",
    _build,
    None,
    "MLP(20, sigmoid) classifiers on the 8×8 digits; validation on their validation split",
)
