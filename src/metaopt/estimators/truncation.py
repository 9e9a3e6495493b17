"""The shared engine of every estimator: tasks mid-training, advanced one truncation.

Each task of a meta-batch carries its configuration, its inner state (params, optimizer
state, step) and its horizon. :func:`run_truncation` advances one task by ``length``
inner steps as one ``lax.scan``; a task that has reached its horizon is replaced, inside
the scan, by a fresh task drawn at the start of the truncation, so one meta-batch can
mix early and late training (Metz et al.'s desynchronized tasks). A horizon schedule no
shorter than the truncation guarantees at most one replacement per truncation.

After each update the objective measures the new params; the returned
:class:`Trace` says, step by step, what was measured, with which weight, and whether
the task had been replaced by then, which is all an estimator needs.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core.sharding import constrain_tasks
from metaopt.core.types import MetaLearner, PyTree, TaskConfig, TaskFamily, Theta
from metaopt.core.unroll import InnerState, inner_step
from metaopt.estimators.objectives import Objective, coefficients
from metaopt.estimators.schedules import HorizonSchedule

REMAT_POLICIES = ("none", "step", "dots", "nested")


class TaskState(NamedTuple):
    """One task mid-training (a leading task axis when batched).

    Attributes:
      cfg: the task's configuration.
      inner: params, optimizer state and the number of updates applied.
      horizon: how many updates this task gets before it is replaced (int32).
    """

    cfg: TaskConfig
    inner: InnerState
    horizon: jax.Array


class Trace(NamedTuple):
    """Per inner step of a truncation (a leading step axis).

    Attributes:
      loss: the training loss before the update (what the update descended).
      measure: the objective's measurement after the update.
      coef: its weight in the meta-objective.
      replaced: True from the step at which the task was replaced by a fresh one.
    """

    loss: jax.Array
    measure: jax.Array
    coef: jax.Array
    replaced: jax.Array


def new_task(
    learner: MetaLearner,
    family: TaskFamily,
    schedule: HorizonSchedule,
    theta: Theta,
    key: jax.Array,
) -> TaskState:
    """A fresh task: configuration, initial params from the learner, and a horizon."""
    k_cfg, k_init, k_horizon = jax.random.split(key, 3)
    cfg = family.sample(k_cfg)
    params = learner.init_params(theta, family, cfg, k_init)
    inner = InnerState(params, learner.tx(theta).init(params), jnp.zeros((), jnp.int32))
    return TaskState(cfg, inner, schedule.sample(k_horizon))


def init_tasks(
    learner: MetaLearner,
    family: TaskFamily,
    schedule: HorizonSchedule,
    theta: Theta,
    key: jax.Array,
    num_tasks: int,
    *,
    desync: bool = False,
) -> TaskState:
    """``num_tasks`` fresh tasks (a leading task axis).

    With ``desync``, each task's step counter starts at a random offset in
    ``[0, horizon)``, so the tasks reach their horizons, and are replaced, at different
    meta-steps (learned_optimization's ``random_initial_iteration_offset``).

    Under a mesh with a ``"tasks"`` axis (``jax.set_mesh``) the batch is split over its
    devices (:func:`~metaopt.core.sharding.constrain_tasks`), so every estimator built on
    it, including those that draw fresh tasks in each estimate, runs sharded.
    """
    k_tasks, k_offset = jax.random.split(key)
    keys = constrain_tasks(jax.random.split(k_tasks, num_tasks))
    tasks = jax.vmap(lambda k: new_task(learner, family, schedule, theta, k))(keys)
    tasks = constrain_tasks(tasks)
    if desync:
        u = jax.random.uniform(k_offset, (num_tasks,))
        offset = jnp.floor(u * tasks.horizon).astype(jnp.int32)
        tasks = tasks._replace(inner=tasks.inner._replace(step=offset))
    return tasks


def _select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def scan_with_remat(
    body: Callable, carry: PyTree, xs: PyTree, length: int, remat: str, unroll: int = 1
) -> tuple[PyTree, PyTree]:
    """``lax.scan(body, carry, xs)`` with a rematerialization policy for its backward pass.

    Args:
      body: the scan body.
      carry: the initial carry.
      xs: per-step inputs with a leading axis of ``length``.
      length: the number of steps.
      remat: ``"none"`` stores every step's residuals (memory grows with ``length``
        times a step's activations); ``"step"`` stores only the carry of each step and
        recomputes the step (memory ``length`` carries); ``"dots"`` is ``"step"``
        that also stores the step's matrix products without batch dimensions (a
        learned optimizer's layers over all coordinates of all tasks), recomputing
        only the elementwise work between them; ``"nested"`` checkpoints
        segments of about √length steps, so the backward pass holds about
        2√length carries and one segment's residuals.
      unroll: steps per iteration of the compiled loop (``lax.scan``'s ``unroll``);
        ``"nested"`` ignores it.

    Example:
      >>> import jax.numpy as jnp
      >>> body = lambda c, x: (c + x, c)
      >>> scan_with_remat(body, 0.0, jnp.ones(10), 10, "nested")[0]
      Array(10., dtype=float32)
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {list(REMAT_POLICIES)}, got {remat!r}")
    if remat == "none":
        return jax.lax.scan(body, carry, xs, unroll=unroll)
    if remat in ("step", "dots") or length < 4:
        policy = (
            jax.checkpoint_policies.dots_with_no_batch_dims_saveable if remat == "dots" else None
        )
        return jax.lax.scan(jax.checkpoint(body, policy=policy), carry, xs, unroll=unroll)
    seg = max(1, round(math.sqrt(length)))
    num_seg = length // seg
    head = jax.tree.map(lambda x: x[: num_seg * seg].reshape(num_seg, seg, *x.shape[1:]), xs)
    tail = jax.tree.map(lambda x: x[num_seg * seg :], xs)

    def segment(c, seg_xs):
        return jax.lax.scan(body, c, seg_xs)

    carry, ys_head = jax.lax.scan(jax.checkpoint(segment), carry, head)
    ys_head = jax.tree.map(lambda y: y.reshape(num_seg * seg, *y.shape[2:]), ys_head)
    if num_seg * seg == length:
        return carry, ys_head
    carry, ys_tail = jax.lax.scan(jax.checkpoint(body), carry, tail)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys_head, ys_tail)


def run_truncation(
    learner: MetaLearner,
    family: TaskFamily,
    objective: Objective,
    schedule: HorizonSchedule,
    theta: Theta,
    task: TaskState,
    key: jax.Array,
    length: int,
    *,
    second_order: bool = False,
    remat: str = "step",
) -> tuple[TaskState, Trace]:
    """Advances one task by ``length`` inner steps of ``learner.tx(theta)``.

    Args:
      learner: the meta-learner; θ enters through ``tx`` and, for a replaced task,
        through ``init_params``.
      family: the task family.
      objective: what is measured after each update, and with which weight.
      schedule: draws the horizon of a replacement task.
      theta: the meta-parameters (may be traced, or perturbed per task).
      task: where the task stands.
      key: this truncation's randomness (replacement task, minibatches).
      length: inner steps (a Python int).
      second_order: keep the second derivatives of the inner loss; if False the
        gradient fed to the update rule is a constant for differentiation.
      remat: see :func:`scan_with_remat`.

    Returns:
      ``(task, trace)``: the task after the truncation and a :class:`Trace`.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family
      >>> from metaopt.estimators.objectives import trajectory_mean
      >>> from metaopt.estimators.schedules import constant_schedule
      >>> learner, fam = learned_optimizer(lstm_optimizer()), quadratic_family()
      >>> sched = constant_schedule(8)
      >>> theta = learner.init(jax.random.key(0))
      >>> task = new_task(learner, fam, sched, theta, jax.random.key(1))
      >>> task, trace = run_truncation(learner, fam, trajectory_mean(), sched, theta,
      ...     task, jax.random.key(2), 5)
      >>> int(task.inner.step), trace.loss.shape
      (5, (5,))
    """
    k_fresh, k_steps = jax.random.split(key)
    fresh = new_task(learner, family, schedule, theta, k_fresh)
    return advance(
        learner,
        family,
        objective,
        theta,
        task,
        fresh,
        k_steps,
        length,
        second_order=second_order,
        remat=remat,
    )


def reaches_horizon(task: TaskState, length: int) -> jax.Array:
    """Whether any of ``task`` (any leading axes) reaches its horizon within ``length`` steps.

    Only then does :func:`advance` read its replacement task, so a caller may skip
    drawing one otherwise.

    Example:
      >>> import jax.numpy as jnp
      >>> from metaopt.core.unroll import InnerState
      >>> task = TaskState(None, InnerState(None, None, jnp.array([0, 7])), jnp.array([10, 10]))
      >>> bool(reaches_horizon(task, 3)), bool(reaches_horizon(task, 4))
      (False, True)
    """
    return jnp.any(task.inner.step + length > task.horizon)


def advance(
    learner: MetaLearner,
    family: TaskFamily,
    objective: Objective,
    theta: Theta,
    task: TaskState,
    fresh: TaskState | None,
    key: jax.Array,
    length: int,
    *,
    second_order: bool = False,
    remat: str = "step",
    unroll: int = 1,
    fresh_theta: Theta | None = None,
) -> tuple[TaskState, Trace]:
    """:func:`run_truncation` with the replacement task given.

    ``run_truncation(..., task, key, length)`` is ``advance(..., task, fresh, k_steps,
    length)`` with ``k_fresh, k_steps = jax.random.split(key)`` and ``fresh =
    new_task(..., k_fresh)``. ``fresh`` is read only if the task reaches its horizon
    (:func:`reaches_horizon`), so where it does not, any task of the same structure
    will do, or None: the loop then has no replacement in it (``trace.replaced`` is
    all False), which saves a select of the whole task state at every step.

    Args:
      learner: the meta-learner.
      family: the task family.
      objective: what is measured after each update.
      theta: the meta-parameters.
      task: where the task stands.
      fresh: the task that replaces it when it reaches its horizon; None if it does
        not reach it within ``length`` steps.
      key: the randomness of the inner steps (minibatches, measurements).
      length: inner steps (a Python int).
      second_order: see :func:`run_truncation`.
      remat: see :func:`scan_with_remat`.
      unroll: inner steps per iteration of the compiled loop (see
        :func:`scan_with_remat`).
      fresh_theta: the meta-parameters the replacement task trains with, from its
        first step on (NRES gives a new episode its own perturbation); ``theta`` if
        None. ``fresh`` should have been drawn with them.

    Returns:
      ``(task, trace)`` as :func:`run_truncation`.
    """
    tx = learner.tx(theta)

    def step(carry, step_key):
        task, replaced = carry
        if fresh is not None:
            done = task.inner.step >= task.horizon
            task = _select(done, fresh, task)
            replaced = replaced | done
        k_grad, k_measure = jax.random.split(step_key)
        step_tx = tx if fresh_theta is None else learner.tx(_select(replaced, fresh_theta, theta))
        loss_fn = functools.partial(family.loss, task.cfg)
        inner, loss = inner_step(loss_fn, step_tx, task.inner, k_grad, second_order=second_order)
        measure = objective.measure(family, task.cfg, inner.params, k_measure)
        coef = coefficients(objective, task.inner.step, task.horizon, length)
        task = task._replace(inner=inner)
        return (task, replaced), Trace(loss, measure, coef, replaced)

    (task, _), trace = scan_with_remat(
        step,
        (task, jnp.zeros((), bool)),
        jax.random.split(key, length),
        length,
        remat,
        unroll,
    )
    return task, trace


def weighted_sum(trace: Trace, where: jax.Array | None = None) -> jax.Array:
    """Σ_t coef_t · measure_t over a trace's last axis, optionally only where ``where``."""
    terms = trace.coef * trace.measure
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return jnp.sum(terms, axis=-1)
