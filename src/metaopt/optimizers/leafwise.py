"""The per-tensor plumbing shared by learned optimizers with momenta and a second moment.

Such an optimizer updates each parameter tensor on its own (a tensor's features, like
its RMS, are computed over that tensor alone), so its ``update`` checks that grads,
params and state match, then maps one function over the leaves and reassembles the
trees. This module is that plumbing, so each architecture's file holds only its rule.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.types import PyTree

LeafFn = Callable[..., tuple]  # (update, momenta, second moment, *extras) for one tensor


def map_leaves(
    leaf_fn: LeafFn,
    grads: PyTree,
    params: PyTree | None,
    momenta: tuple[PyTree, ...],
    second_moment: PyTree,
    *extras: PyTree,
    who: str,
) -> tuple[PyTree, ...]:
    """Checks the arguments, then applies ``leaf_fn(g, p, momenta, v, *extras)`` to every tensor.

    Args:
      leaf_fn: ``(g, p, (m_1, ...), v, *e) -> (update, (m_1', ...), v', *e')`` for one
        tensor.
      grads: the gradients.
      params: the parameters (required).
      momenta: the state's momentum trees, each shaped like ``grads``.
      second_moment: the state's second-moment tree.
      *extras: further per-tensor state trees with the structure of ``grads`` (their
        leaves may be of any shape, e.g. one scalar per tensor).
      who: the optimizer's name, for error messages.

    Returns:
      ``(updates, momenta, second_moment, *extras)``, each with the structure of ``grads``.

    Example:
      >>> import jax.numpy as jnp
      >>> fn = lambda g, p, ms, v: (-g, tuple(m + g for m in ms), v + g * g)
      >>> z = {"w": jnp.zeros(2)}
      >>> u, ms, v = map_leaves(fn, {"w": jnp.ones(2)}, z, (z,), z, who="demo")
      >>> u["w"].tolist(), ms[0]["w"].tolist(), v["w"].tolist()
      ([-1.0, -1.0], [1.0, 1.0], [1.0, 1.0])
    """
    if params is None:
        raise ValueError(f"params must be given: the {who} learned optimizer reads them")
    checks.float_tree("grads", grads)
    treedef = jax.tree.structure(grads)
    checks.same_structure(
        "grads", treedef, jax.tree.structure(second_moment), "the optimizer state"
    )
    checks.same_structure("params", jax.tree.structure(params), treedef, "grads")
    g_leaves = treedef.flatten_up_to(grads)
    p_leaves = treedef.flatten_up_to(params)
    v_leaves = treedef.flatten_up_to(second_moment)
    m_leaves = [treedef.flatten_up_to(m) for m in momenta]
    for e in extras:
        checks.same_structure("grads", treedef, jax.tree.structure(e), "the optimizer state")
    e_leaves = [treedef.flatten_up_to(e) for e in extras]
    for g, v in zip(g_leaves, v_leaves, strict=True):
        if jnp.shape(g) != jnp.shape(v):
            raise ValueError(
                f"grads leaf of shape {jnp.shape(g)} does not match the optimizer state "
                f"leaf of shape {jnp.shape(v)}"
            )
    results = [
        leaf_fn(g, p, tuple(m[i] for m in m_leaves), v, *(e[i] for e in e_leaves))
        for i, (g, p, v) in enumerate(zip(g_leaves, p_leaves, v_leaves, strict=True))
    ]
    updates = treedef.unflatten([r[0] for r in results])
    new_momenta = tuple(treedef.unflatten([r[1][k] for r in results]) for k in range(len(momenta)))
    rest = tuple(treedef.unflatten([r[k] for r in results]) for k in range(2, 3 + len(extras)))
    return (updates, new_momenta, *rest)


def zero_moments(params: PyTree, num_momenta: int) -> tuple[tuple[PyTree, ...], PyTree]:
    """Float32 zeros shaped like ``params``: ``num_momenta`` momentum trees and a second moment.

    Example:
      >>> import jax.numpy as jnp
      >>> momenta, v = zero_moments({"w": jnp.ones(2, jnp.bfloat16)}, 2)
      >>> len(momenta), v["w"].dtype
      (2, dtype('float32'))
    """
    checks.float_tree("params", params)

    def zeros() -> PyTree:
        return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)

    return tuple(zeros() for _ in range(num_momenta)), zeros()


def accumulate(
    g: jax.Array,
    momenta: tuple[jax.Array, ...],
    v: jax.Array,
    decays: tuple[float, ...],
    second_decay: float,
) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """One step of exponential moving averages: each momentum of ``g``, and of ``g²``.

    Example:
      >>> import jax.numpy as jnp
      >>> (m,), v = accumulate(jnp.array(2.0), (jnp.array(0.0),), jnp.array(0.0), (0.5,), 0.75)
      >>> float(m), float(v)
      (1.0, 1.0)
    """
    stacked, v = accumulate_stacked(g, jnp.stack(momenta), v, decays, second_decay)
    return tuple(stacked), v


def accumulate_stacked(
    g: jax.Array,
    momenta: jax.Array,
    v: jax.Array,
    decays: tuple[float, ...],
    second_decay: float,
) -> tuple[jax.Array, jax.Array]:
    """:func:`accumulate` with the momenta stacked on a leading axis, one per decay.

    One kernel updates every momentum, and a reader of all of them (a learned
    optimizer's features) reads one array, where separate arrays cost a kernel each.

    Example:
      >>> import jax.numpy as jnp
      >>> m, v = accumulate_stacked(jnp.array(2.0), jnp.zeros(2), jnp.array(0.0), (0.5, 0.75), 0.75)
      >>> m.tolist(), float(v)
      ([1.0, 0.5], 1.0)
    """
    b = jnp.asarray(decays, momenta.dtype).reshape(-1, *[1] * jnp.ndim(g))
    return b * momenta + (1 - b) * g, second_decay * v + (1 - second_decay) * g * g
