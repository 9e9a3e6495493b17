"""Argument validation shared by the public entry points.

Every check runs on static information (Python values, shapes, dtypes, tree
structure), so it costs nothing inside ``jit`` and fails before JAX traces anything.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value: Any) -> int:
    """Returns ``value`` as an int, or raises if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float | jnp.number):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def float_tree(name: str, tree: Any) -> None:
    """Raises unless every leaf of ``tree`` is a real floating-point array."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path) or "<root>"
            raise TypeError(
                f"{name} must hold real floating-point arrays; leaf {where} has dtype {dtype}"
            )


def same_structure(
    name: str,
    got: jax.tree_util.PyTreeDef,
    expected: jax.tree_util.PyTreeDef,
    what: str,
) -> None:
    """Raises if the tree structure ``got`` of argument ``name`` is not ``expected``."""
    if got != expected:
        raise ValueError(f"{name} has tree structure {got}, but {what} has structure {expected}")


def non_negative_int(name: str, value: Any) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def prng_key(name: str, value: Any) -> jax.Array:
    """Returns ``value`` as a typed PRNG key, or raises if it is not a single key.

    Accepts ``jax.random.key(seed)`` and the raw ``uint32[2]`` of
    ``jax.random.PRNGKey(seed)`` (wrapped as a typed key).
    """
    if isinstance(value, jax.Array | np.ndarray):
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key) and value.shape == ():
            return value
        if value.dtype == np.uint32 and value.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(value))
        raise TypeError(
            f"{name} must be a single PRNG key such as jax.random.key(0), got an array of "
            f"shape {value.shape} and dtype {value.dtype}"
        )
    raise TypeError(f"{name} must be a PRNG key such as jax.random.key(0), got {value!r}")
