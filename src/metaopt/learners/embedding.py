"""Embedding networks: the part of θ that maps an example to a vector.

Matching networks (Vinyals et al. 2016) and prototypical networks (Snell et al. 2017)
compare examples in a learned embedding space; a memory-augmented network (Santoro et
al. 2016) could read one too. Two architectures:

- :func:`mlp_embedding`: a ReLU MLP over flattened examples (the MAML family's
  classifier without its output layer, so the two branches share a backbone);
- :func:`identity_embedding`: the examples themselves (no θ), a reference point: a
  prototypical network over it is the nearest class mean in input space;
- :func:`conv_embedding`: Vinyals et al.'s four blocks of 3×3 convolutions with 64
  filters, batch normalization, ReLU and 2×2 max-pooling (28×28 Omniglot → 64 features).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from metaopt.core import checks
from metaopt.core.types import Params
from metaopt.tasks.conv import conv_features, init_conv_layers
from metaopt.tasks.regression import init_mlp, mlp_forward


class Embedding(NamedTuple):
    """An embedding network as pure functions.

    Attributes:
      name: ``"mlp"`` or ``"conv"``.
      config: the architecture's settings (plain values).
      init: ``init(key) -> params``.
      apply: ``apply(params, x) -> (n, size)`` for ``x`` of shape ``(n, input_size)``
        (flattened examples, as episodes hold them).
      input_size: features per example.
      size: width of the embedding.
    """

    name: str
    config: dict[str, Any]
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    input_size: int
    size: int


def mlp_embedding(input_size: int, sizes: tuple[int, ...] = (64, 64)) -> Embedding:
    """A ReLU MLP ``input_size → sizes[0] → ... → sizes[-1]``, its last layer linear.

    Args:
      input_size: features per (flattened) example, e.g. 64 for the 8×8 digits.
      sizes: the layers' widths; the embedding is ``sizes[-1]`` wide.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> emb = mlp_embedding(64, (32, 16))
      >>> emb.apply(emb.init(jax.random.key(0)), jnp.ones((3, 64))).shape
      (3, 16)
    """
    input_size = checks.positive_int("input_size", input_size)
    sizes = tuple(checks.positive_int("sizes", s) for s in sizes)
    if not sizes:
        raise ValueError("sizes must name at least one layer width")
    widths = (input_size, *sizes)

    def apply(params: Params, x: jax.Array) -> jax.Array:
        _check_features(x, input_size)
        return mlp_forward(params, x)

    return Embedding(
        name="mlp",
        config={"input_size": input_size, "sizes": list(sizes)},
        init=lambda key: init_mlp(key, widths),
        apply=apply,
        input_size=input_size,
        size=sizes[-1],
    )


def identity_embedding(input_size: int) -> Embedding:
    """The examples themselves as their embedding; its params are an empty tuple.

    Example:
      >>> import jax.numpy as jnp
      >>> identity_embedding(2).apply((), jnp.ones((3, 2))).shape
      (3, 2)
    """
    input_size = checks.positive_int("input_size", input_size)

    def apply(params: Params, x: jax.Array) -> jax.Array:
        del params
        _check_features(x, input_size)
        return x

    return Embedding(
        name="identity",
        config={"input_size": input_size},
        init=lambda key: (),
        apply=apply,
        input_size=input_size,
        size=input_size,
    )


def conv_embedding(
    image_shape: tuple[int, int, int] = (28, 28, 1),
    channels: tuple[int, ...] = (64, 64, 64, 64),
    kernel_size: int = 3,
) -> Embedding:
    """Vinyals et al.'s convolutional embedding over flattened ``image_shape`` images.

    Each block is a ``kernel_size`` convolution, batch normalization over the examples
    embedded together (the support set, or the query set), ReLU and 2×2 max-pooling.

    Args:
      image_shape: ``(height, width, channels)`` of one example.
      channels: filters of each block.
      kernel_size: height and width of the kernels.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> emb = conv_embedding((28, 28, 1))
      >>> emb.size, emb.apply(emb.init(jax.random.key(0)), jnp.ones((2, 784))).shape
      (64, (2, 64))
    """
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (height, width, channels), got {image_shape}")
    height, width, in_channels = (checks.positive_int("image_shape", s) for s in image_shape)
    channels = tuple(checks.positive_int("channels", c) for c in channels)
    kernel_size = checks.positive_int("kernel_size", kernel_size)
    blocks = len(channels)
    if height >> blocks == 0 or width >> blocks == 0:
        raise ValueError(f"images of {height}×{width} are too small for {blocks} 2×2 poolings")
    input_size = height * width * in_channels

    def init(key: jax.Array) -> Params:
        return init_conv_layers(jax.random.split(key, blocks), in_channels, channels, kernel_size)

    def apply(params: Params, x: jax.Array) -> jax.Array:
        _check_features(x, input_size)
        return conv_features(params, x.reshape(x.shape[0], height, width, in_channels))

    return Embedding(
        name="conv",
        config={"image_shape": [height, width, in_channels], "channels": list(channels)},
        init=init,
        apply=apply,
        input_size=input_size,
        size=(height >> blocks) * (width >> blocks) * channels[-1],
    )


def _check_features(x: jax.Array, input_size: int) -> None:
    if x.ndim != 2 or x.shape[-1] != input_size:
        raise ValueError(
            f"examples must be (n, {input_size}) flattened arrays for this embedding, "
            f"got shape {x.shape}"
        )
