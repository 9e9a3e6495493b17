"""Learned optimizers that ship inside the package, by name, with no download."""

import os
from importlib import resources
from pathlib import Path

import optax

from metaopt.core import checks
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


def pretrained(
    name: str, *, scale: float = 1.0, weight_decay: float = 0.0
) -> optax.GradientTransformationExtraArgs:
    """A shipped learned optimizer as an optax transformation, ready to use.

    Args:
      name: a name of :func:`pretrained_names` (or a file written by ``save``).
      scale: multiplies every step, as a learning-rate multiplier would; below 1 for
        a more cautious run (fine-tuning), above 1 for a bolder one.
      weight_decay: decoupled weight decay (Loshchilov & Hutter 2019): each step also
        moves every parameter by ``-scale · weight_decay · param``, as AdamW's
        ``learning_rate · weight_decay`` (e.g. 1e-4 for AdamW at 1e-3 with decay 0.1).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), pretrained("mlp_regression"))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> def first_step(tx):
      ...     return tx.update({"w": jnp.ones(3)}, tx.init(params), params)[0]["w"]
      >>> step = first_step(pretrained("mlp_regression"))
      >>> bool(jnp.allclose(first_step(pretrained("mlp_regression", scale=0.5)), 0.5 * step))
      True
      >>> decayed = first_step(pretrained("mlp_regression", weight_decay=0.01))
      >>> bool(jnp.allclose(decayed, step - 0.01))
      True
    """
    scale = checks.positive_float("scale", scale)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float):
        raise TypeError(f"weight_decay must be a number, got {weight_decay!r}")
    if not 0.0 <= weight_decay < float("inf"):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    tx = as_optax(*load(name))
    if scale == 1.0 and weight_decay == 0.0:
        return tx
    return optax.with_extra_args_support(
        optax.chain(tx, optax.add_decayed_weights(-float(weight_decay)), optax.scale(scale))
    )
