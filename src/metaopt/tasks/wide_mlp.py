"""Wide MLP classifiers: hidden layers of hundreds to a thousand units, a task family.

The widths users reach for in a first model (256, 512, 1024 units), unlike the narrow
networks of :mod:`metaopt.tasks.classification`. Hidden weights start from
N(0, 2/fan_in) (He et al. 2015), the output layer from N(0, 1/fan_in), biases at zero.
Each task draws every hidden layer's width and one activation (ReLU or GELU). All tasks
have the shapes of the widest net; a task of width ``w`` masks the units past ``w``,
whose weights start (and stay) at zero, so the loss and gradient are those of the
``w``-wide net. ``eval_loss`` is the cross-entropy on a held-out split.
"""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.datasets import Dataset

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu}


class WideConfig(NamedTuple):
    """One task: the width of every hidden layer (int32) and an activation index."""

    widths: jax.Array
    activation: jax.Array


def wide_mlp_logits(cfg: WideConfig, params: list[dict], x: jax.Array, acts: list) -> jax.Array:
    """Logits of the masked MLP for flat inputs ``x``; ``acts`` lists the activations."""
    h = x
    for i, layer in enumerate(params[:-1]):
        mask = jnp.arange(layer["b"].shape[0]) < cfg.widths[i]
        h = jax.lax.switch(cfg.activation, acts, h @ layer["w"] + layer["b"]) * mask
    return h @ params[-1]["w"] + params[-1]["b"]


def _init(cfg: WideConfig, key: jax.Array, sizes: tuple[int, ...]) -> list[dict]:
    layers = len(sizes) - 1
    masks = [jnp.ones(sizes[0], bool)]
    masks += [jnp.arange(n) < cfg.widths[i] for i, n in enumerate(sizes[1:-1])]
    masks += [jnp.ones(sizes[-1], bool)]
    fan_ins = [jnp.asarray(sizes[0]), *cfg.widths]
    keys = jax.random.split(key, layers)
    params = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        gain = 1.0 if i == layers - 1 else 2.0
        w = jax.random.normal(keys[i], (n_in, n_out)) * jnp.sqrt(gain / fan_ins[i])
        params.append({"w": w * masks[i][:, None] * masks[i + 1], "b": jnp.zeros(n_out)})
    return params


def wide_mlp_family(
    dataset: Dataset,
    *,
    split: str = "train",
    eval_split: str = "val",
    widths: tuple[int, ...] = (256, 512, 1024),
    num_layers: int = 1,
    activations: tuple[str, ...] = ("relu", "gelu"),
    batch_size: int = 128,
    eval_batch_size: int | None = None,
) -> TaskFamily:
    """Wide MLP classifiers on minibatches of one split of ``dataset`` (images flattened).

    Args:
      dataset: the data, e.g. the digits.
      split: the training split.
      eval_split: the held-out split ``eval_loss`` reads.
      widths: hidden widths each layer draws from.
      num_layers: hidden layers.
      activations: activations to draw from (``"relu"``, ``"gelu"``).
      batch_size: examples per training minibatch, drawn with replacement.
      eval_batch_size: examples per held-out measure; the whole split if None.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> fam = wide_mlp_family(digits(), num_layers=2)
      >>> params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
      >>> [p["w"].shape for p in params]
      [(64, 1024), (1024, 1024), (1024, 10)]
    """
    x, y = dataset.split(split)
    x_eval, y_eval = dataset.split(eval_split)
    widths = tuple(checks.positive_int("widths", w) for w in widths)
    if not widths:
        raise ValueError("widths must name at least one width")
    if not activations or any(a not in ACTIVATIONS for a in activations):
        raise ValueError(f"activations must be a non-empty tuple from {sorted(ACTIVATIONS)}")
    num_layers = checks.positive_int("num_layers", num_layers)
    batch_size = checks.positive_int("batch_size", batch_size)
    if eval_batch_size is not None:
        eval_batch_size = checks.positive_int("eval_batch_size", eval_batch_size)
    sizes = (int(x[0].size), *([max(widths)] * num_layers), dataset.num_classes)
    choices = jnp.asarray(widths, jnp.int32)
    acts = [ACTIVATIONS[a] for a in activations]
    name = f"wide_mlp_{num_layers}x{max(widths)}_{dataset.name}_{split}"

    def ce(cfg, params, xs, ys, key, size):
        if size is not None:
            idx = jax.random.randint(key, (size,), 0, xs.shape[0])
            xs, ys = xs[idx], ys[idx]
        logits = wide_mlp_logits(cfg, params, xs, acts)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    def bind(data: PyTree) -> TaskFamily:
        (xs, ys), (xe, ye) = data

        def sample(key: jax.Array) -> WideConfig:
            k_w, k_a = jax.random.split(key)
            return WideConfig(
                jax.random.choice(k_w, choices, (num_layers,)),
                jax.random.randint(k_a, (), 0, len(acts)),
            )

        return TaskFamily(
            name=name,
            sample=sample,
            init=lambda cfg, key: _init(cfg, key, sizes),
            loss=lambda cfg, p, key: ce(cfg, p, xs, ys, key, batch_size),
            data=data,
            bind=bind,
            eval_loss=lambda cfg, p, key: ce(cfg, p, xe, ye, key, eval_batch_size),
        )

    flat = (jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y))
    flat_eval = (jnp.asarray(x_eval.reshape(len(x_eval), -1)), jnp.asarray(y_eval))
    return bind((flat, flat_eval))
