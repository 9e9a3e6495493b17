"""Conv nets with batch normalization and dropout: a task family on small images.

Each block is a 3×3 convolution ("same" padding, no bias), batch normalization with the
statistics of the current batch (Ioffe & Szegedy 2015; running averages are not kept:
training and held-out measures both normalize by their own batch), ReLU and 2×2
max-pooling. A fully connected ReLU layer with dropout (Srivastava et al. 2014) and the
softmax output follow. Kernels and dense weights start from N(0, 2/fan_in), the output
layer from N(0, 1/fan_in); batch-norm scales at one, offsets and biases at zero.

Each task draws every block's channel count and the dropout rate. All tasks have the
shapes of the widest net; channels past a task's count are zeroed after normalization
and their weights start (and stay) at zero, so the loss and gradient are those of the
narrower net. ``eval_loss`` measures a held-out split without dropout.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.datasets import Dataset

BATCH_NORM_EPS = 1e-5


class ConvConfig(NamedTuple):
    """One task: channels per block (int32, one per block) and the dropout rate."""

    channels: jax.Array
    dropout: jax.Array


def batch_norm(h: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
    """Normalizes NHWC ``h`` per channel by its batch mean and variance, then scales.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> h = jax.random.normal(jax.random.key(0), (4, 3, 3, 2)) * 5 + 2
      >>> out = batch_norm(h, jnp.ones(2), jnp.zeros(2))
      >>> bool(abs(out.mean(axis=(0, 1, 2))).max() < 1e-5)
      True
      >>> out.var(axis=(0, 1, 2)).round(3).tolist()
      [1.0, 1.0]
    """
    mean = h.mean(axis=(0, 1, 2))
    var = h.var(axis=(0, 1, 2))
    return (h - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) * scale + offset


def conv_bn_logits(
    cfg: ConvConfig, params: dict, images: jax.Array, key: jax.Array | None
) -> jax.Array:
    """Logits for NHWC ``images``; dropout from ``key``, none if ``key`` is None."""
    h = images
    for i, block in enumerate(params["conv"]):
        mask = jnp.arange(block["scale"].shape[0]) < cfg.channels[i]
        h = jax.lax.conv_general_dilated(
            h, block["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(batch_norm(h, block["scale"], block["offset"])) * mask
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ params["hidden"]["w"] + params["hidden"]["b"])
    if key is not None:
        keep = 1.0 - cfg.dropout
        h = h * jax.random.bernoulli(key, keep, h.shape) / keep
    return h @ params["out"]["w"] + params["out"]["b"]


def _init(cfg: ConvConfig, key: jax.Array, sizes: dict) -> dict:
    k = sizes["kernel"]
    keys = iter(jax.random.split(key, len(sizes["channels"]) + 2))
    conv, c_in, active_in = [], sizes["in_channels"], jnp.asarray(sizes["in_channels"])
    in_mask = jnp.ones(c_in, bool)
    for i, c in enumerate(sizes["channels"]):
        out_mask = jnp.arange(c) < cfg.channels[i]
        std = jnp.sqrt(2.0 / (k * k * active_in))
        w = std * jax.random.normal(next(keys), (k, k, c_in, c))
        w = w * in_mask[:, None] * out_mask
        conv.append({"w": w, "scale": jnp.ones(c), "offset": jnp.zeros(c)})
        c_in, active_in, in_mask = c, cfg.channels[i], out_mask
    pixels = sizes["pixels"]
    flat_mask = jnp.tile(in_mask, pixels)
    hidden, classes = sizes["hidden"], sizes["classes"]
    w_hidden = jax.random.normal(next(keys), (pixels * c_in, hidden)) * flat_mask[:, None]
    w_out = jax.random.normal(next(keys), (hidden, classes)) / jnp.sqrt(hidden)
    return {
        "conv": conv,
        "hidden": {"w": w_hidden * jnp.sqrt(2.0 / (pixels * active_in)), "b": jnp.zeros(hidden)},
        "out": {"w": w_out, "b": jnp.zeros(classes)},
    }


def _batch(xs, ys, key, size):
    if size is None:
        return xs, ys
    idx = jax.random.randint(key, (size,), 0, xs.shape[0])
    return xs[idx], ys[idx]


def batchnorm_conv_family(
    dataset: Dataset,
    *,
    split: str = "train",
    eval_split: str = "val",
    channels: tuple[int, ...] = (8, 16, 32),
    num_blocks: int = 2,
    dropouts: tuple[float, ...] = (0.0, 0.2, 0.4),
    hidden_size: int = 64,
    batch_size: int = 64,
    eval_batch_size: int | None = None,
) -> TaskFamily:
    """Batch-normalized conv nets with dropout on minibatches of one split of ``dataset``.

    Args:
      dataset: images of shape (height, width, channels), e.g. the 8×8 digits.
      split: the training split.
      eval_split: the held-out split ``eval_loss`` reads.
      channels: channel counts each block draws from.
      num_blocks: conv blocks, each halving height and width.
      dropouts: dropout rates to draw from, each in [0, 1).
      hidden_size: units of the fully connected layer.
      batch_size: examples per training minibatch, drawn with replacement.
      eval_batch_size: examples per held-out measure; the whole split if None.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = batchnorm_conv_family(digits())
      >>> params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
      >>> [b["w"].shape for b in params["conv"]], params["hidden"]["w"].shape
      ([(3, 3, 1, 32), (3, 3, 32, 32)], (128, 64))
    """
    x, y = dataset.split(split)
    x_eval, y_eval = dataset.split(eval_split)
    if x.ndim != 4:
        raise ValueError(f"dataset must hold images (height, width, channels), got {x.shape[1:]}")
    channels = tuple(checks.positive_int("channels", c) for c in channels)
    if not channels:
        raise ValueError("channels must name at least one channel count")
    if not dropouts or not all(0.0 <= r < 1.0 for r in dropouts):
        raise ValueError(f"dropouts must be a non-empty tuple of rates in [0, 1), got {dropouts}")
    num_blocks = checks.positive_int("num_blocks", num_blocks)
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    batch_size = checks.positive_int("batch_size", batch_size)
    if eval_batch_size is not None:
        eval_batch_size = checks.positive_int("eval_batch_size", eval_batch_size)
    height, width, in_channels = x.shape[1:]
    if height >> num_blocks == 0 or width >> num_blocks == 0:
        raise ValueError(f"images of {height}×{width} are too small for {num_blocks} poolings")
    sizes = {
        "kernel": 3, "in_channels": in_channels, "channels": (max(channels),) * num_blocks,
        "pixels": (height >> num_blocks) * (width >> num_blocks), "hidden": hidden_size,
        "classes": dataset.num_classes,
    }  # fmt: skip
    choices = jnp.asarray(channels, jnp.int32)
    rates = jnp.asarray(dropouts, jnp.float32)
    name = f"bn_conv_{num_blocks}x{max(channels)}_{dataset.name}_{split}"

    def bind(data: PyTree) -> TaskFamily:
        (xs, ys), (xe, ye) = data

        def sample(key: jax.Array) -> ConvConfig:
            k_c, k_d = jax.random.split(key)
            return ConvConfig(
                jax.random.choice(k_c, choices, (num_blocks,)), jax.random.choice(k_d, rates)
            )

        def loss(cfg: ConvConfig, params: dict, key: jax.Array) -> jax.Array:
            k_batch, k_drop = jax.random.split(key)
            xb, yb = _batch(xs, ys, k_batch, batch_size)
            logits = conv_bn_logits(cfg, params, xb, k_drop)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        def eval_loss(cfg: ConvConfig, params: dict, key: jax.Array) -> jax.Array:
            xb, yb = _batch(xe, ye, key, eval_batch_size)
            logits = conv_bn_logits(cfg, params, xb, None)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        return TaskFamily(
            name=name,
            sample=sample,
            init=lambda cfg, key: _init(cfg, key, sizes),
            loss=loss,
            data=data,
            bind=bind,
            eval_loss=eval_loss,
        )

    arrays = ((jnp.asarray(x), jnp.asarray(y)), (jnp.asarray(x_eval), jnp.asarray(y_eval)))
    return bind(arrays)
