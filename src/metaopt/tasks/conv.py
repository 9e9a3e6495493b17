"""The small convolutional classifier of Andrychowicz et al. 2016, §3.3 (CIFAR-10).

Three convolutional layers (16 channels, 5×5 kernels, "same" padding), each followed by
batch normalization, ReLU and 2×2 max-pooling, then a fully connected layer of 32 ReLU
units and the softmax output. Batch normalization uses the statistics of the current
minibatch, as in training. Weights are drawn from N(0, 1/fan_in); the normalization's
scales start at one and its offsets at zero. Minibatches are drawn inside ``jit``.
"""

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.datasets import Dataset, digits

BATCH_NORM_EPS = 1e-5


def init_conv_layers(
    keys: jax.Array, in_channels: int, channels: tuple[int, ...], kernel_size: int
) -> list[dict]:
    """Convolution blocks' params ``[{"w", "scale", "offset"}, ...]`` (HWIO kernels).

    Kernels are N(0, 1/fan_in), one key of ``keys`` per block; the normalization's
    scales start at one, offsets at zero.

    Example:
      >>> import jax
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> [l["w"].shape for l in init_conv_layers(keys, 1, (4, 8), 3)]
      [(3, 3, 1, 4), (3, 3, 4, 8)]
    """
    layers = []
    for k, c_in, c_out in zip(keys, (in_channels, *channels[:-1]), channels, strict=True):
        fan_in = kernel_size * kernel_size * c_in
        shape = (kernel_size, kernel_size, c_in, c_out)
        layers.append(
            {
                "w": jax.random.normal(k, shape) / jnp.sqrt(fan_in),
                "scale": jnp.ones(c_out),
                "offset": jnp.zeros(c_out),
            }
        )
    return layers


def conv_features(layers: list[dict], images: jax.Array) -> jax.Array:
    """Flattened features of NHWC ``images`` after conv, batch norm, ReLU, 2×2 max-pool blocks.

    Batch normalization uses the statistics of ``images`` (the current batch).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layers = init_conv_layers(jax.random.split(jax.random.key(0), 2), 1, (4, 8), 3)
      >>> conv_features(layers, jnp.ones((2, 8, 8, 1))).shape
      (2, 32)
    """
    h = images
    for layer in layers:
        h = jax.lax.conv_general_dilated(
            h, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        mean = h.mean(axis=(0, 1, 2))
        var = h.var(axis=(0, 1, 2))
        h = (h - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) * layer["scale"] + layer["offset"]
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.reshape(h.shape[0], -1)


def conv_forward(params: dict, images: jax.Array) -> jax.Array:
    """Logits of the conv net for NHWC ``images``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metaopt.tasks.datasets import from_arrays
      >>> import numpy as np
      >>> data = from_arrays(np.zeros((20, 8, 8, 1), np.float32), np.arange(20) % 3)
      >>> fam = conv_classifier_family(data)
      >>> params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
      >>> conv_forward(params, jnp.ones((2, 8, 8, 1))).shape
      (2, 3)

    """
    h = conv_features(params["conv"], images)
    hidden = params["hidden"]
    h = jax.nn.relu(h @ hidden["w"] + hidden["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def conv_classifier_family(
    dataset: Dataset,
    *,
    split: str = "train",
    channels: tuple[int, ...] = (16, 16, 16),
    kernel_size: int = 5,
    hidden_size: int = 32,
    batch_size: int = 128,
) -> TaskFamily:
    """Conv-net classifiers trained on minibatches of one split of ``dataset`` (NHWC).

    Params are ``{"conv": [{"w", "scale", "offset"}, ...], "hidden": {"w", "b"},
    "out": {"w", "b"}}``; the convolution kernels are the only 4-D leaves, which is
    how :func:`metaopt.optimizers.split.conv_and_rest_optimizer` tells them apart.

    Args:
      dataset: images of shape (height, width, channels); 32×32×3 for CIFAR-10.
      split: ``"train"``, ``"val"`` or ``"test"``.
      channels: output channels of each convolutional layer.
      kernel_size: height and width of the kernels.
      hidden_size: units of the fully connected layer.
      batch_size: examples per minibatch, drawn with replacement.

    Example:
      >>> import numpy as np, jax
      >>> from metaopt.tasks.datasets import from_arrays
      >>> data = from_arrays(np.zeros((20, 32, 32, 3), np.float32), np.arange(20) % 10)
      >>> fam = conv_classifier_family(data)
      >>> params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
      >>> [layer["w"].shape for layer in params["conv"]]
      [(5, 5, 3, 16), (5, 5, 16, 16), (5, 5, 16, 16)]
      >>> params["hidden"]["w"].shape
      (256, 32)

    """
    x, y = dataset.split(split)
    if x.ndim != 4:
        raise ValueError(
            f"dataset must hold images of shape (height, width, channels), got {x.shape[1:]}"
        )
    channels = tuple(checks.positive_int("channels", c) for c in channels)
    kernel_size = checks.positive_int("kernel_size", kernel_size)
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    batch_size = checks.positive_int("batch_size", batch_size)
    height, width, in_channels = x.shape[1:]
    if height >> len(channels) == 0 or width >> len(channels) == 0:
        raise ValueError(
            f"images of {height}×{width} are too small for {len(channels)} 2×2 poolings"
        )
    flat = (height >> len(channels)) * (width >> len(channels)) * channels[-1]
    name = f"conv_{'-'.join(map(str, channels))}_{dataset.name}_{split}"

    def bind(data: PyTree) -> TaskFamily:
        xs, ys = data

        def sample(key: jax.Array) -> jax.Array:
            del key
            return jnp.zeros((), jnp.float32)

        def init(cfg: jax.Array, key: jax.Array) -> dict:
            del cfg
            all_keys = jax.random.split(key, len(channels) + 2)
            conv = init_conv_layers(all_keys[: len(channels)], in_channels, channels, kernel_size)
            keys = iter(all_keys[len(channels) :])

            def dense(k, n_in, n_out):
                w = jax.random.normal(k, (n_in, n_out)) / jnp.sqrt(n_in)
                return {"w": w, "b": jnp.zeros(n_out)}

            return {
                "conv": conv,
                "hidden": dense(next(keys), flat, hidden_size),
                "out": dense(next(keys), hidden_size, dataset.num_classes),
            }

        def loss(cfg: jax.Array, params: dict, key: jax.Array) -> jax.Array:
            del cfg
            idx = jax.random.randint(key, (batch_size,), 0, xs.shape[0])
            logits = conv_forward(params, xs[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys[idx]).mean()

        return TaskFamily(name=name, sample=sample, init=init, loss=loss, data=data, bind=bind)

    return bind((jnp.asarray(x, jnp.float32), jnp.asarray(y)))


def _build(split: str) -> TaskFamily:
    return conv_classifier_family(digits(), split=split)


ENTRY = Entry("conv_digits", _build, None, "the paper's conv net (batch norm) on the digits")
