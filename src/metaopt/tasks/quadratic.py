"""Random quadratics f(θ) = ‖Wθ − y‖², the first experiment of Andrychowicz et al. 2016.

"Learning to learn by gradient descent by gradient descent" (arXiv 1606.04474), §3.1:
W and y are drawn Gaussian for every task; the optimizer meets a fresh one each time.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core.checks import positive_float, positive_int
from metaopt.core.registry import Entry
from metaopt.core.types import TaskFamily


class QuadraticConfig(NamedTuple):
    """One quadratic task: ``W`` is ``(dim, dim)``, ``y`` is ``(dim,)``."""

    w: jax.Array
    y: jax.Array


def quadratic_family(dim: int = 10, init_scale: float = 0.01) -> TaskFamily:
    """Returns the family of quadratics ‖Wθ − y‖² with Gaussian ``W`` and ``y``.

    Args:
      dim: dimension of θ (10 in the paper).
      init_scale: standard deviation of the Gaussian initial θ.

    Example:
      >>> import jax
      >>> fam = quadratic_family(dim=3)
      >>> cfg = fam.sample(jax.random.key(0))
      >>> params = fam.init(cfg, jax.random.key(1))
      >>> float(fam.loss(cfg, params, jax.random.key(2))) > 0
      True

    """
    dim = positive_int("dim", dim)
    init_scale = positive_float("init_scale", init_scale)

    def sample(key: jax.Array) -> QuadraticConfig:
        kw, ky = jax.random.split(key)
        return QuadraticConfig(w=jax.random.normal(kw, (dim, dim)), y=jax.random.normal(ky, (dim,)))

    def init(cfg: QuadraticConfig, key: jax.Array) -> jax.Array:
        del cfg
        return init_scale * jax.random.normal(key, (dim,))

    def loss(cfg: QuadraticConfig, params: jax.Array, key: jax.Array) -> jax.Array:
        del key
        residual = cfg.w @ params - cfg.y
        return jnp.sum(residual**2)

    return TaskFamily(name="quadratic", sample=sample, init=init, loss=loss)


def _build(split: str) -> TaskFamily:
    del split  # every quadratic is fresh
    return quadratic_family()


ENTRY = Entry(
    "quadratic", _build, None, "random 10-d quadratics ‖Wθ − y‖² (Andrychowicz et al. 2016)"
)
