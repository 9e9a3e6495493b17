"""Argument validation shared by the public entry points.

Every check runs on static information (Python values, shapes, dtypes, tree
structure), so it costs nothing inside ``jit`` and fails before JAX traces anything.
"""

from typing import Any

import jax
import jax.numpy as jnp


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
