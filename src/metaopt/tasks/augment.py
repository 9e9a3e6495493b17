"""Task augmentation: the same problems under randomly rescaled parameterizations.

A task with params ``p`` and loss ``L(p)`` becomes, for a scale ``s`` drawn per tensor,
the task over ``q = p / s`` with loss ``L(s · q)``. It has the same minima and the same
training curves under a scale-invariant optimizer, but its gradients are ``s`` times
larger and its good step sizes ``1/s`` times smaller. A learned optimizer meta-trained
on such tasks cannot rely on one parameter scale, which is what makes it usable on
models it never saw (Metz et al. 2022, VeLO, §4; Moudgil et al. 2025, Celo).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.types import Params, PyTree, TaskConfig, TaskFamily


class RescaledConfig(NamedTuple):
    """The wrapped task's configuration and one scale per parameter tensor."""

    inner: TaskConfig
    scales: PyTree


def rescaled(family: TaskFamily, *, max_scale: float = 10.0) -> TaskFamily:
    """Wraps ``family`` so each task rescales every parameter tensor by its own random scale.

    Scales are drawn log-uniformly from ``[1 / max_scale, max_scale]``.

    Args:
      family: the task family to augment.
      max_scale: the largest factor (≥ 1); 1 leaves the family unchanged.

    Returns:
      A :class:`~metaopt.TaskFamily` whose configs are :class:`RescaledConfig`.

    Example:
      >>> import jax
      >>> from metaopt import quadratic_family
      >>> fam = rescaled(quadratic_family(), max_scale=10.0)
      >>> cfg = fam.sample(jax.random.key(0))
      >>> q = fam.init(cfg, jax.random.key(1))
      >>> inner = quadratic_family()
      >>> p = inner.init(cfg.inner, jax.random.key(1))
      >>> bool(jax.numpy.allclose(fam.loss(cfg, q, None), inner.loss(cfg.inner, p, None)))
      True
    """
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily, got {type(family).__name__}")
    max_scale = checks.positive_float("max_scale", max_scale)
    if max_scale < 1.0:
        raise ValueError(f"max_scale must be at least 1, got {max_scale}")
    log_max = float(jnp.log(max_scale))

    def build(fam: TaskFamily) -> TaskFamily:
        shapes = jax.eval_shape(
            lambda k: fam.init(fam.sample(k), k), jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        )
        treedef = jax.tree.structure(shapes)
        n = treedef.num_leaves

        def sample(key: jax.Array) -> RescaledConfig:
            k_inner, k_scale = jax.random.split(key)
            logs = jax.random.uniform(k_scale, (n,), minval=-log_max, maxval=log_max)
            return RescaledConfig(fam.sample(k_inner), treedef.unflatten(list(jnp.exp(logs))))

        def unscale(cfg: RescaledConfig, q: Params) -> Params:
            return jax.tree.map(lambda s, x: (s * x).astype(x.dtype), cfg.scales, q)

        def init(cfg: RescaledConfig, key: jax.Array) -> Params:
            p = fam.init(cfg.inner, key)
            return jax.tree.map(lambda s, x: (x / s).astype(x.dtype), cfg.scales, p)

        def loss(cfg: RescaledConfig, q: Params, key: jax.Array) -> jax.Array:
            return fam.loss(cfg.inner, unscale(cfg, q), key)

        eval_loss = None
        if fam.eval_loss is not None:

            def eval_loss(cfg: RescaledConfig, q: Params, key: jax.Array) -> jax.Array:
                return fam.eval_loss(cfg.inner, unscale(cfg, q), key)

        def bind(data: Any) -> TaskFamily:
            return build(fam.bind(data))

        return TaskFamily(
            name=f"{fam.name}_rescaled{max_scale:g}",
            sample=sample,
            init=init,
            loss=loss,
            data=fam.data,
            bind=None if fam.bind is None else bind,
            eval_loss=eval_loss,
        )

    return build(family)
