"""Saving and loading learned optimizers: one versioned, checksummed file.

Layout: the 8-byte magic ``METAOPT`` plus a NUL byte, the format version as a little-endian uint32,
the SHA-256 of the payload (32 bytes), then the payload: msgpack of the architecture's
name, its configuration and its meta-parameters. Files are written atomically.
"""

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from metaopt.core.files import atomic_write, frame, unframe
from metaopt.core.types import LearnedOptimizer, Theta
from metaopt.optimizers.lstm import lstm_optimizer
from metaopt.optimizers.mlp import mlp_optimizer
from metaopt.optimizers.orthogonal import orthogonal_optimizer
from metaopt.optimizers.split import conv_and_rest_optimizer
from metaopt.optimizers.versatile import versatile_optimizer

MAGIC = b"METAOPT\x00"
VERSION = 1


def _conv_and_rest(conv: dict[str, Any], rest: dict[str, Any]) -> LearnedOptimizer:
    return conv_and_rest_optimizer(
        build(conv["name"], dict(conv["config"])), build(rest["name"], dict(rest["config"]))
    )


ARCHITECTURES = {
    "lstm": lstm_optimizer,
    "mlp": mlp_optimizer,
    "versatile": versatile_optimizer,
    "orthogonal": orthogonal_optimizer,
    "conv_and_rest": _conv_and_rest,
}


class OptimizerFileError(ValueError):
    """A saved optimizer file is truncated, corrupted, or of an unknown version."""


def build(name: str, config: dict[str, Any]) -> LearnedOptimizer:
    """Rebuilds a learned optimizer from its architecture name and configuration.

    Example:
      >>> build("lstm", {"hidden_size": 8}).config["hidden_size"]
      8
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"unknown learned optimizer {name!r}; expected one of {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name](**config)


def save(path: str | os.PathLike, lopt: LearnedOptimizer, theta: Theta) -> Path:
    """Writes ``lopt``'s architecture and ``theta`` to one file at ``path``, atomically.

    Example:
      >>> import jax, os, tempfile
      >>> lopt = lstm_optimizer()
      >>> path = os.path.join(tempfile.mkdtemp(), "opt.mopt")
      >>> _ = save(path, lopt, lopt.init(jax.random.key(0)))
      >>> load(path)[0].name
      'lstm'
    """
    leaves = jax.tree.leaves(theta)
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise ValueError("theta contains NaN or inf; refusing to save it")
    expected = jax.tree.structure(jax.eval_shape(lopt.init, jax.random.key(0)))
    if jax.tree.structure(theta) != expected:
        raise ValueError(f"theta does not have the structure of a {lopt.name!r} optimizer's theta")
    payload = serialization.msgpack_serialize(
        {
            "name": lopt.name,
            "config": lopt.config,
            "theta": serialization.to_state_dict(jax.tree.map(np.asarray, theta)),
        }
    )
    data = frame(MAGIC, VERSION, payload)
    return atomic_write(path, lambda f: f.write(data))


def load(path: str | os.PathLike) -> tuple[LearnedOptimizer, Theta]:
    """Reads a file written by :func:`save`; returns ``(lopt, theta)``.

    Raises:
      FileNotFoundError: no file at ``path``.
      OptimizerFileError: the file is truncated, corrupted or of another version.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved optimizer at {str(path)!r}") from None
    payload = unframe(
        data, MAGIC, VERSION, path=path, what="metaopt optimizer file", error=OptimizerFileError
    )
    try:
        record = serialization.msgpack_restore(payload)
        lopt = build(record["name"], dict(record["config"]))
        template = jax.eval_shape(lopt.init, jax.random.key(0))
        theta = serialization.from_state_dict(template, record["theta"])
    except (KeyError, TypeError, ValueError) as e:
        raise OptimizerFileError(f"{str(path)!r} holds an unreadable optimizer: {e}") from e
    for want, got in zip(jax.tree.leaves(template), jax.tree.leaves(theta), strict=True):
        if want.shape != np.shape(got):
            raise OptimizerFileError(f"{str(path)!r}: a meta-parameter has the wrong shape")
    return lopt, jax.tree.map(jax.numpy.asarray, theta)
