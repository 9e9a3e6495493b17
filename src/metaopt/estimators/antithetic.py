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
from metaopt.estimators.truncation import TaskState, Trace, init_tasks, run_truncation


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
    """Advances each particle's θ+ε trajectory from ``pos`` and θ−ε one from ``neg``."""

    def one(e, p, n, k):
        th_pos = jax.tree.map(jnp.add, theta, e)
        th_neg = jax.tree.map(jnp.subtract, theta, e)
        p, trace_pos = run_truncation(learner, family, objective, schedule, th_pos, p, k, length)
        n, trace_neg = run_truncation(learner, family, objective, schedule, th_neg, n, k, length)
        return p, n, trace_pos, trace_neg

    return jax.vmap(one)(eps, pos, neg, keys)
