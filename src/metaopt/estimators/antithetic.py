"""Antithetic pairs of perturbed trajectories, shared by ES and PES.

Every task of a meta-batch gets ``perturbations`` antithetic pairs: one trajectory
trained with θ + ε and one with θ − ε, ε ~ N(0, σ² I). The two trajectories of a pair,
and all pairs of one task, see the same task configuration, the same minibatches and
the same replacement tasks (common random numbers), so their difference in the
objective is due to ε alone. Only forward passes are run.
"""

import jax
import jax.numpy as jnp

from metaopt.core.types import MetaLearner, TaskFamily, Theta
from metaopt.estimators.objectives import Objective
from metaopt.estimators.schedules import HorizonSchedule
from metaopt.estimators.truncation import (
    TaskState,
    Trace,
    advance,
    init_tasks,
    new_task,
    reaches_horizon,
)


def init_particles(
    learner: MetaLearner,
    family: TaskFamily,
    schedule: HorizonSchedule,
    theta: Theta,
    key: jax.Array,
    num_tasks: int,
    perturbations: int,
    *,
    desync: bool,
) -> TaskState:
    """``num_tasks`` tasks, each repeated for its ``perturbations`` pairs (task-major)."""
    tasks = init_tasks(learner, family, schedule, theta, key, num_tasks, desync=desync)
    return jax.tree.map(lambda x: jnp.repeat(x, perturbations, axis=0), tasks)


def particle_keys(key: jax.Array, num_tasks: int, perturbations: int) -> jax.Array:
    """One key per particle, shared by the pairs of one task."""
    return jnp.repeat(jax.random.split(key, num_tasks), perturbations, axis=0)


def run_pairs(
    learner: MetaLearner,
    family: TaskFamily,
    objective: Objective,
    schedule: HorizonSchedule,
    theta: Theta,
    eps: Theta,
    pos: TaskState,
    neg: TaskState,
    keys: jax.Array,
    length: int,
) -> tuple[TaskState, TaskState, Trace, Trace]:
    """Advances each particle's θ+ε trajectory from ``pos`` and θ−ε one from ``neg``.

    Each trajectory is :func:`~metaopt.estimators.truncation.run_truncation` with its
    particle's key. Both trajectories of a pair run in one batch, one loop over the
    inner steps for all of them, and what a pair shares (its step keys, its
    replacement task when the learner's initialization ignores θ) is computed once.
    Replacement tasks are drawn only in truncations where some task reaches its
    horizon. The loop runs two inner steps per iteration: the steps of many small
    trajectories are many small kernels, and on a multi-core CPU each loop iteration
    ends in a join of the threads that ran them; halving the iterations made PES with
    the MLP optimizer on 32 quadratics 15-25% faster on 2 cores (no change on 1).
    """
    k_fresh, k_steps = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    # A pair axis inside the particle axis: (particle, sign, ...).
    thetas = jax.tree.map(lambda t, e: jnp.stack([t + e, t - e], axis=1), theta, eps)
    tasks = jax.tree.map(lambda p, n: jnp.stack([p, n], axis=1), pos, neg)

    def draw_fresh():
        def pair(th, k):
            return jax.vmap(lambda t: new_task(learner, family, schedule, t, k))(th)

        return jax.vmap(pair)(thetas, k_fresh)

    def no_fresh():
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(draw_fresh))

    fresh = jax.lax.cond(reaches_horizon(tasks, length), draw_fresh, no_fresh)

    def pair(th, task, new, k):
        def one(t, tk, nw):
            return advance(learner, family, objective, t, tk, nw, k, length, unroll=2)

        return jax.vmap(one)(th, task, new)

    tasks, trace = jax.vmap(pair)(thetas, tasks, fresh, k_steps)
    (pos, trace_pos), (neg, trace_neg) = (
        jax.tree.map(lambda x, i=i: x[:, i], (tasks, trace)) for i in (0, 1)
    )
    return pos, neg, trace_pos, trace_neg
