"""Regression with small MLPs on a random teacher network: a data-free task family.

Each task draws a teacher (a one-hidden-layer tanh network); inputs are Gaussian and
drawn inside ``loss`` from its key, so every step sees a fresh minibatch and nothing
is loaded from disk. The student is a ReLU MLP trained with mean squared error.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import TaskFamily


class TeacherConfig(NamedTuple):
    """The teacher network of one task."""

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array


def mlp_forward(params: list[dict], x: jax.Array) -> jax.Array:
    """Applies a ReLU MLP given as a list of ``{"w", "b"}`` layers.

    Example:
      >>> import jax.numpy as jnp
      >>> mlp_forward([{"w": jnp.ones((2, 1)), "b": jnp.zeros(1)}], jnp.ones((3, 2))).shape
      (3, 1)
    """
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict]:
    """He-initialized ReLU MLP parameters for layer widths ``sizes``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "b": jnp.zeros((n_out,)),
        }
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_regression_family(
    input_dim: int = 8,
    hidden_sizes: tuple[int, ...] = (32,),
    teacher_width: int = 16,
    batch_size: int = 64,
    noise_std: float = 0.0,
) -> TaskFamily:
    """Returns the family of student-teacher MLP regression tasks.

    Args:
      input_dim: input features.
      hidden_sizes: the student's hidden layer widths.
      teacher_width: hidden units of the random teacher.
      batch_size: examples per minibatch.
      noise_std: standard deviation of Gaussian noise added to the targets, so the
        minibatch gradient stays noisy near the best fit.

    Example:
      >>> import jax
      >>> fam = mlp_regression_family()
      >>> cfg = fam.sample(jax.random.key(0))
      >>> params = fam.init(cfg, jax.random.key(1))
      >>> float(fam.loss(cfg, params, jax.random.key(2))) > 0
      True
    """
    input_dim = checks.positive_int("input_dim", input_dim)
    hidden_sizes = tuple(checks.positive_int("hidden_sizes", h) for h in hidden_sizes)
    teacher_width = checks.positive_int("teacher_width", teacher_width)
    batch_size = checks.positive_int("batch_size", batch_size)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be a non-negative number, got {noise_std!r}")
    noise_std = float(noise_std)
    sizes = (input_dim, *hidden_sizes, 1)

    def sample(key: jax.Array) -> TeacherConfig:
        k1, k2, k3 = jax.random.split(key, 3)
        return TeacherConfig(
            w1=jax.random.normal(k1, (input_dim, teacher_width)) / jnp.sqrt(input_dim),
            b1=0.5 * jax.random.normal(k2, (teacher_width,)),
            w2=jax.random.normal(k3, (teacher_width, 1)) / jnp.sqrt(teacher_width),
        )

    def init(cfg: TeacherConfig, key: jax.Array) -> list[dict]:
        del cfg
        return init_mlp(key, sizes)

    def loss(cfg: TeacherConfig, params: list[dict], key: jax.Array) -> jax.Array:
        x = jax.random.normal(key, (batch_size, input_dim))
        y = jnp.tanh(x @ cfg.w1 + cfg.b1) @ cfg.w2
        if noise_std:
            y = y + noise_std * jax.random.normal(jax.random.fold_in(key, 1), y.shape)
        return jnp.mean((mlp_forward(params, x) - y) ** 2)

    return TaskFamily(name="mlp_regression", sample=sample, init=init, loss=loss)


def _build(split: str) -> TaskFamily:
    del split  # every teacher is fresh
    return mlp_regression_family()


ENTRY = Entry("mlp_regression", _build, None, "student-teacher MLP regressions")
