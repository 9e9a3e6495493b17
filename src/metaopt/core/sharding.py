"""The task batch sharded across devices and hosts, with JAX's own sharding machinery.

A :class:`jax.sharding.Mesh` with one axis, ``"tasks"``, spans the devices. Every array
with a leading task axis (an estimator's state, a batch of sampled tasks) is split
along that axis, one slice per device; everything else (θ, the meta-optimizer state, a
task family's data) is replicated. XLA's partitioner then runs each device's slice of
the vmapped tasks and inserts the collectives that reduce the meta-gradient, inside
the one jitted program. Across hosts the mesh spans every process's devices
(:func:`jax.distributed.initialize`), and each process computes only its own slices.

Random numbers do not depend on the device count: JAX's partitionable threefry
(``jax_threefry_partitionable``, the default) draws the same bits however an array is
split, so a run's meta-parameters on 1, 2 or 4 devices agree to float tolerance.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

TASKS = "tasks"


def select_devices(num: int | None = None) -> list[jax.Device]:
    """``num`` devices, the same number from every process (all of them if None).

    Example:
      >>> len(select_devices(1))
      1
    """
    found = jax.devices()
    if num is None:
        return found
    if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
        raise ValueError(f"devices must be a positive integer, got {num!r}")
    processes = jax.process_count()
    if num > len(found):
        raise ValueError(
            f"devices ({num}) exceeds the {len(found)} visible {jax.default_backend()} "
            "device(s); on a CPU, start JAX with more (jax_num_cpu_devices)"
        )
    if num % processes:
        raise ValueError(
            f"devices ({num}) must be a multiple of the number of processes ({processes}), "
            "so that every process holds the same share of the task batch"
        )
    per_process = num // processes
    return [
        d
        for p in range(processes)
        for d in [d for d in found if d.process_index == p][:per_process]
    ]


def task_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh, ``"tasks"``, over ``devices`` (a count, a list, or all if None).

    The axis is of type ``Auto``: XLA propagates the shardings of the inputs and of
    :func:`constrain_tasks` through the program.

    Example:
      >>> task_mesh(1).shape
      OrderedDict([('tasks', 1)])
    """
    if devices is None or isinstance(devices, int):
        devices = select_devices(devices)
    devices = list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return jax.make_mesh((len(devices),), (TASKS,), (AxisType.Auto,), devices=devices)


def check_mesh(mesh: Mesh) -> Mesh:
    """Returns ``mesh`` if it has a ``"tasks"`` axis, or raises naming the argument."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if TASKS not in mesh.axis_names:
        raise ValueError(f"mesh must have a {TASKS!r} axis, got axes {mesh.axis_names}")
    return mesh


def num_shards(mesh: Mesh) -> int:
    """How many slices the task axis is split into.

    Example:
      >>> num_shards(task_mesh(1))
      1
    """
    return mesh.shape[TASKS]


def check_divisible(name: str, size: int, mesh: Mesh) -> None:
    """Raises, naming ``name``, unless ``size`` tasks split evenly over ``mesh``'s devices.

    Example:
      >>> check_divisible("num_tasks", 6, task_mesh(1))
    """
    shards = num_shards(mesh)
    if size % shards:
        raise ValueError(
            f"{name} ({size}) must be divisible by the number of devices ({shards}) the "
            f"task batch is sharded over; use a multiple of {shards}, or fewer devices"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array every device holds whole."""
    return NamedSharding(mesh, P())


def task_shardings(tree: Any, mesh: Mesh) -> Any:
    """Per leaf of ``tree`` (arrays or shapes): split the leading axis, replicate scalars."""

    def leaf(x):
        return NamedSharding(mesh, P(TASKS) if jnp.ndim(x) else P())

    return jax.tree.map(leaf, tree)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put_leaf(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if _is_key(x):
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    # A host value (or one process's copy) that is the same in every process.
    return jax.device_put(np.asarray(x), sharding)


def put(tree: Any, shardings: Any) -> Any:
    """``tree`` placed with ``shardings`` (a matching tree, or one sharding for all).

    Works in one process or many: a value held by each process (a NumPy array, a
    process-local array, a PRNG key) is taken to be the same in every process, and
    each process fills only its own devices. Leaves already placed are returned as
    they are.

    Example:
      >>> import jax.numpy as jnp
      >>> mesh = task_mesh(1)
      >>> put({"a": jnp.ones(4)}, replicated(mesh))["a"].sharding.spec
      P()
    """
    if isinstance(shardings, NamedSharding):
        return jax.tree.map(lambda x: _put_leaf(x, shardings), tree)
    return jax.tree.map(_put_leaf, tree, shardings)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` held whole by every device of ``mesh``."""
    return put(tree, replicated(mesh))


def shard_tasks(tree: Any, mesh: Mesh) -> Any:
    """``tree``'s leaves split along their leading (task) axis; scalars replicated."""
    return put(tree, task_shardings(tree, mesh))


def constrain_tasks(tree: Any) -> Any:
    """Inside a traced function, asks XLA to split ``tree``'s leading axis over ``"tasks"``.

    Active only while a mesh with a ``"tasks"`` axis is set (``jax.set_mesh``), and
    only for leaves whose leading axis splits evenly; otherwise ``tree`` is returned
    unchanged, so code that calls it runs as before on one device.

    Example:
      >>> import jax.numpy as jnp
      >>> constrain_tasks(jnp.arange(3.0))
      Array([0., 1., 2.], dtype=float32)
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or TASKS not in mesh.axis_names:
        return tree
    shards = mesh.shape[TASKS]

    def leaf(x):
        if jnp.ndim(x) == 0 or x.shape[0] % shards:
            return x
        return jax.lax.with_sharding_constraint(x, P(TASKS))

    return jax.tree.map(leaf, tree)


def jit_replicated(fn, mesh: Mesh | None):
    """``jax.jit(fn)``; with a mesh, its arguments and results replicated over it.

    The function is traced with ``mesh`` set, so the task batches it samples are split
    over the devices (:func:`constrain_tasks`) and the results gathered.

    Example:
      >>> import jax.numpy as jnp
      >>> jit_replicated(lambda x: x * 2, task_mesh(1))(jnp.ones(2))
      Array([2., 2.], dtype=float32)
    """
    if mesh is None:
        return jax.jit(fn)
    check_mesh(mesh)
    jitted = jax.jit(fn, out_shardings=replicated(mesh))

    def call(*args):
        args = replicate(args, mesh)
        with jax.set_mesh(mesh):
            return jitted(*args)

    return call


def to_host(x: Any) -> np.ndarray:
    """One array as NumPy, gathered from every process if it is split across them.

    Every process must call it for an array split across processes (it is a
    collective). A PRNG key becomes its raw key data.

    Example:
      >>> import jax.numpy as jnp
      >>> to_host(jnp.arange(2))
      array([0, 1], dtype=int32)
    """
    if _is_key(x):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def is_main_process() -> bool:
    """True in the process that writes files: the only one, or process 0 of many.

    Example:
      >>> is_main_process()
      True
    """
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached ``name``; nothing to wait for in one process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True in every process if ``flag`` is true in any one (a collective across processes).

    Example:
      >>> any_process(False)
      False
    """
    if jax.process_count() == 1:
        return bool(flag)
    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.any(flags))
