"""Learned optimizers that ship inside the package, by name, with no download."""

import os
from importlib import resources
from pathlib import Path

import optax

from metaopt.core.optax_adapter import as_optax
from metaopt.core.types import LearnedOptimizer, Theta
from metaopt.io.serialization import load_file

SUFFIX = ".mopt"


def _directory() -> Path:
    return Path(str(resources.files("metaopt") / "pretrained"))


def pretrained_names() -> list[str]:
    """Names accepted by :func:`pretrained` and :func:`load`.

    Example:
      >>> "lstm_quadratic" in pretrained_names()
      True
    """
    directory = _directory()
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}"))


def load(name_or_path: str | os.PathLike) -> tuple[LearnedOptimizer, Theta]:
    """Loads a learned optimizer by pretrained name or from a file written by ``save``.

    Example:
      >>> lopt, theta = load("lstm_quadratic")
      >>> lopt.name
      'lstm'
    """
    if isinstance(name_or_path, str) and name_or_path in pretrained_names():
        return load_file(_directory() / f"{name_or_path}{SUFFIX}")
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"name_or_path {str(name_or_path)!r} is neither a pretrained name "
            f"({', '.join(pretrained_names())}) nor an existing file"
        )
    return load_file(path)


def pretrained(name: str) -> optax.GradientTransformationExtraArgs:
    """A shipped learned optimizer as an optax transformation, ready to use.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), pretrained("mlp_regression"))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    return as_optax(*load(name))
