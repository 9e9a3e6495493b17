"""Checkpoints of a meta-training run: written atomically, checksummed, pruned.

A checkpoint holds a whole run state (:class:`~metaopt.MetaTrainState`): the run's key
and meta-step, the meta-parameters, the meta-optimizer state, the estimator's state
(whatever pytree it is: tasks mid-training, PES accumulators), the best meta-parameters
so far and the counters. It is read into a template state of the same run, so this
module never needs to know what an estimator keeps. A run continued from one ends
exactly where the uninterrupted run ends.

File layout: the magic ``MOCKPT`` plus two NUL bytes, the format version as a
little-endian uint32, the SHA-256 of the payload, then the payload (msgpack). Files are
named ``ckpt-<step>.ckpt``, or ``ckpt-<step>-best.ckpt`` when written because the
validation loss improved. Pruning keeps the newest ``keep`` checkpoints plus the
newest best one.

A run sharded over devices or hosts (:mod:`metaopt.core.sharding`) writes the same file:
every process takes part in gathering the arrays, process 0 alone writes, and a restored
array is placed as the template's array is, each process filling its own devices. The
file does not depend on the device count, so a run may resume on another topology (to
float tolerance; bit-identical on the same one). The directory must be one that every
process can read, e.g. a shared filesystem.
"""

import os
import re
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from jax.sharding import NamedSharding

from metaopt.core import files, sharding

MAGIC = b"MOCKPT\x00\x00"
# Version 2: the estimator state replaced the truncated-BPTT task batch.
VERSION = 2
_NAME = re.compile(r"^ckpt-(\d{8,})(-best)?\.ckpt$")
_TREES = ("theta", "meta_opt_state", "estimator_state", "best_theta")
_COUNTERS = {
    "step": int,
    "skipped": int,
    "consecutive_skipped": int,
    "best_validation_loss": float,
    "seconds": float,
    "wall_seconds": float,
}


class CheckpointError(ValueError):
    """A checkpoint is unreadable, or a run directory has no readable checkpoint."""


def checkpoint_steps(directory: str | os.PathLike) -> list[tuple[int, bool, Path]]:
    """Lists ``(step, is_best, path)`` of the checkpoints in ``directory``, oldest first.

    Example:
      >>> import tempfile
      >>> checkpoint_steps(tempfile.mkdtemp())
      []

    """
    found = []
    for path in Path(directory).iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2) is not None, path))
    return sorted(found, key=lambda x: (x[0], x[1]))


def _to_host(tree: Any) -> Any:
    """Arrays to numpy, gathered across processes; typed PRNG keys to their key data."""
    return serialization.to_state_dict(jax.tree.map(sharding.to_host, tree))


def _like(got: np.ndarray, want: Any) -> jax.Array:
    """``got`` on the devices ``want`` is on: the same mesh and split, if it has one."""
    if isinstance(want, jax.Array) and isinstance(want.sharding, NamedSharding):
        return sharding.put(got, want.sharding)
    return jnp.asarray(got)


# Trees that a checkpoint written before 0.3 holds under another name.
_OLD_NAMES = {"meta_opt_state": "meta_state"}


def _tree(record: dict, name: str) -> Any:
    """The tree ``name`` of a checkpoint record, under its name of before 0.3 if need be."""
    return record[name] if name in record else record[_OLD_NAMES.get(name, name)]


def _from_host(template: Any, raw: Any, what: str) -> Any:
    """Rebuilds ``template``'s structure from ``raw``, checking every shape and dtype."""
    tree = serialization.from_state_dict(template, raw)
    want_leaves, treedef = jax.tree.flatten(template)
    got_leaves = treedef.flatten_up_to(tree)
    out = []
    for want, got in zip(want_leaves, got_leaves, strict=True):
        is_key = jnp.issubdtype(want.dtype, jax.dtypes.prng_key)
        expected = jax.random.key_data(want) if is_key else want
        got = np.asarray(got)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            raise CheckpointError(
                f"{what}: an array has shape {got.shape} and dtype {got.dtype}, but this run "
                f"expects {expected.shape} and {expected.dtype}"
            )
        got = _like(got, want)
        out.append(jax.random.wrap_key_data(got, impl=jax.random.key_impl(want)) if is_key else got)
    return jax.tree.unflatten(treedef, out)


def save_checkpoint(
    directory: str | os.PathLike,
    state: Any,
    *,
    metadata: dict[str, Any] | None = None,
    best: bool = False,
    keep: int = 3,
) -> Path:
    """Writes ``state`` to ``directory`` atomically, then prunes old checkpoints.

    Every process of a multi-process run must call it (the arrays are gathered from
    all of them); only process 0 writes and prunes.

    Args:
      directory: where checkpoints go (it must exist).
      state: the run state; copied to the host before anything is written.
      metadata: plain values stored beside the state (for instance the run's
        configuration).
      best: the checkpoint holds a new best validation loss; the newest such one is
        kept by pruning whatever its age.
      keep: how many of the newest checkpoints to keep (at least 1).

    Returns:
      The checkpoint's path.

    Example:
      >>> import jax, tempfile
      >>> import metaopt as mo
      >>> est = mo.tbptt(mo.learned_optimizer(mo.lstm_optimizer()), mo.quadratic_family(),
      ...     num_tasks=2, truncation=5, horizon=10)
      >>> state = mo.train.init_meta_train_state(est, jax.random.key(0))
      >>> d = tempfile.mkdtemp()
      >>> save_checkpoint(d, state._replace(step=7)).name
      'ckpt-00000007.ckpt'
      >>> restore_latest(d, state)[0].step
      7

    """
    if keep < 1:
        raise ValueError(f"keep must be a positive integer, got {keep}")
    directory = Path(directory)
    payload = serialization.msgpack_serialize(
        {
            "key": np.asarray(jax.random.key_data(state.key)),
            "key_impl": str(jax.random.key_impl(state.key)),
            **{name: _to_host(getattr(state, name)) for name in _TREES},
            **{name: kind(getattr(state, name)) for name, kind in _COUNTERS.items()},
            "metadata": metadata or {},
        }
    )
    name = f"ckpt-{state.step:08d}{'-best' if best else ''}.ckpt"
    path = directory / name
    if sharding.is_main_process():
        data = files.frame(MAGIC, VERSION, payload)
        files.atomic_write(path, lambda f: f.write(data))
        _prune(directory, keep)
    return path


def _prune(directory: Path, keep: int) -> None:
    found = checkpoint_steps(directory)
    keep_paths = {path for _, _, path in found[-keep:]}
    best = [path for _, is_best, path in found if is_best]
    if best:
        keep_paths.add(best[-1])
    for _, _, path in found:
        if path not in keep_paths:
            path.unlink(missing_ok=True)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint, read without knowing the run's shapes.

    Raises:
      CheckpointError: the file is truncated, corrupted or of another version.

    """
    path = Path(path)
    data = path.read_bytes()
    payload = files.unframe(
        data, MAGIC, VERSION, path=path, what="metaopt checkpoint", error=CheckpointError
    )
    try:
        return dict(serialization.msgpack_restore(payload)["metadata"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} holds an unreadable checkpoint: {e}") from e


def read_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
    """Reads one checkpoint; ``template`` is a state of the same run (shapes and dtypes).

    Returns:
      ``(state, metadata)``.

    Raises:
      CheckpointError: the file is truncated, corrupted, of another version, or holds
        arrays of other shapes than ``template``'s.

    """
    path = Path(path)
    data = path.read_bytes()
    payload = files.unframe(
        data, MAGIC, VERSION, path=path, what="metaopt checkpoint", error=CheckpointError
    )
    try:
        record = serialization.msgpack_restore(payload)
        key = jax.random.wrap_key_data(jnp.asarray(record["key"]), impl=record["key_impl"])
        trees = {
            name: _from_host(getattr(template, name), _tree(record, name), f"{str(path)!r}: {name}")
            for name in _TREES
        }
        counters = {name: kind(record[name]) for name, kind in _COUNTERS.items()}
        metadata = dict(record["metadata"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} holds an unreadable checkpoint: {e}") from e
    return template._replace(key=key, **trees, **counters), metadata


def read_theta(path: str | os.PathLike, template: Any) -> Any:
    """The meta-parameters θ of one checkpoint, read without the run's other arrays.

    ``template`` is a θ of the same learner (its structure, shapes and dtypes), so a
    checkpoint's θ can be judged without rebuilding the estimator that made it.

    Raises:
      CheckpointError: the file is unreadable or its θ has other shapes than ``template``'s.
    """
    path = Path(path)
    payload = files.unframe(
        path.read_bytes(),
        MAGIC,
        VERSION,
        path=path,
        what="metaopt checkpoint",
        error=CheckpointError,
    )
    try:
        raw = serialization.msgpack_restore(payload)["theta"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} holds an unreadable checkpoint: {e}") from e
    return _from_host(template, raw, f"{str(path)!r}: theta")


def restore_latest(directory: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any], Path]:
    """Reads the newest readable checkpoint in ``directory``.

    A newer checkpoint that cannot be read is skipped with a warning naming it, and
    the next older one is tried.

    Returns:
      ``(state, metadata, path)``.

    Raises:
      CheckpointError: ``directory`` holds no checkpoint, or none that can be read.

    Example:
      >>> import jax, tempfile
      >>> import metaopt as mo
      >>> est = mo.tbptt(mo.learned_optimizer(mo.lstm_optimizer()), mo.quadratic_family(),
      ...     num_tasks=2, truncation=5, horizon=10)
      >>> state = mo.train.init_meta_train_state(est, jax.random.key(0))
      >>> d = tempfile.mkdtemp()
      >>> for step in (3, 6):
      ...     _ = save_checkpoint(d, state._replace(step=step), metadata={"at": step})
      >>> newest, metadata, path = restore_latest(d, state)
      >>> newest.step, metadata["at"], path.name
      (6, 6, 'ckpt-00000006.ckpt')
    """
    directory = Path(directory)
    found = checkpoint_steps(directory) if directory.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {str(directory)!r}")
    problems = []
    for _, _, path in reversed(found):
        try:
            state, metadata = read_checkpoint(path, template)
        except (CheckpointError, OSError) as e:
            problems.append(str(e))
            warnings.warn(f"skipping unreadable checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        return state, metadata, path
    raise CheckpointError(
        f"none of the {len(found)} checkpoints in {str(directory)!r} can be read: "
        + "; ".join(problems)
    )
