"""Persistent evolution strategies (PES).

Vicol, Metz and Sohl-Dickstein 2021, "Unbiased gradient estimation in unrolled
computation graphs with persistent evolution strategies" (ICML 2021, arXiv 2112.13835).
Each particle keeps a θ + ε trajectory and a θ − ε trajectory that persist across
truncations, each truncation drawing a fresh ε, and accumulates ξ = Σ ε over the
truncations of its current task. The estimate of one truncation

    g = mean over pairs of (L(θ + ε) − L(θ − ε)) ξ / (2σ²)

uses the accumulated ξ rather than the current ε alone, which credits θ for its effect on
the state carried in from earlier truncations: summed over a task's truncations, g is an
unbiased gradient of the Gaussian-smoothed full-horizon objective, with memory
independent of the horizon. When a task reaches its horizon mid-truncation and is
replaced, the measurements before the replacement are weighed with ξ and those after it
with ε alone, and ξ restarts at ε.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, Theta, rebindable
from metaopt.estimators.antithetic import (
    init_particles,
    interleave,
    particle_keys,
    run_interleaved,
    signs,
    split_gradient,
    where_replaced,
)
from metaopt.estimators.common import check_problem, check_std, perturbations, truncated_config
from metaopt.estimators.objectives import Objective
from metaopt.estimators.options import (
    ONLINE_ES_DEFAULTS,
    PerturbedOptions,
    RunSpec,
    perturbed_kwargs,
)
from metaopt.estimators.schedules import HorizonSchedule
from metaopt.estimators.truncation import TaskState, Trace, weighted_sum


class PESState(NamedTuple):
    """Both trajectories of every particle and its accumulated ξ.

    Attributes:
      tasks: the trajectories, interleaved (a leading axis of twice the particles):
        particle ``i``'s θ+ε trajectory at ``2i``, its θ−ε one at ``2i + 1``.
      accumulated: ξ, with a leading particle axis.
    """

    tasks: TaskState
    accumulated: Theta

    @property
    def pos(self) -> TaskState:
        """The θ+ε trajectories (a leading particle axis)."""
        return signs(self.tasks)[0]

    @property
    def neg(self) -> TaskState:
        """The θ−ε trajectories (a leading particle axis)."""
        return signs(self.tasks)[1]


def _pes_gradient(tr_pos: Trace, tr_neg: Trace, eps, accumulated, std: float):
    """The PES gradient of one truncation, and the accumulated perturbations after it.

    Steps before a task's replacement weigh the perturbations accumulated since that
    task started (this truncation's included); steps after it weigh only this
    truncation's, which is also where a replaced task's accumulation restarts.
    """
    accumulated = jax.tree.map(jnp.add, accumulated, eps)
    grad = split_gradient(tr_pos, tr_neg, accumulated, eps, std)
    return grad, where_replaced(tr_pos, eps, accumulated)


def pes(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    truncation: int,
    horizon: "int | HorizonSchedule" = 100,
    objective: Objective | None = None,
    std: float = 0.01,
    num_perturbations: int = 1,
    desync: bool = False,
) -> Estimator:
    """The PES estimator.

    Args:
      learner: what is meta-learned.
      family: the task family.
      num_tasks: tasks per meta-batch.
      truncation: inner steps per estimate.
      horizon: steps per task before it is replaced, or a horizon schedule.
      objective: the meta-objective (any measurement; it need not be differentiable).
      std: σ, the standard deviation of the perturbations.
      num_perturbations: antithetic pairs per task.
      desync: start tasks at random step offsets.

    Returns:
      An :class:`~metaopt.Estimator` whose state is a :class:`PESState`;
      ``function_steps`` counts both trajectories of every pair.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, mlp_optimizer, quadratic_family
      >>> learner = learned_optimizer(mlp_optimizer())
      >>> est = pes(learner, quadratic_family(), num_tasks=4, truncation=5, horizon=10)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, state, metrics = est.estimate(
      ...     theta, est.init(theta, jax.random.key(1)), jax.random.key(2))
      >>> state.pos.inner.step.shape, est.function_steps
      ((4,), 40)
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    num_perturbations = checks.positive_int("num_perturbations", num_perturbations)
    std = check_std(std)
    schedule, objective = check_problem(learner, family, horizon, truncation, objective)
    n = num_tasks * num_perturbations
    config = truncated_config(
        num_tasks,
        truncation,
        schedule,
        objective,
        desync,
        std=std,
        num_perturbations=num_perturbations,
    )

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            tasks = init_particles(
                learner, fam, schedule, theta, key, num_tasks, num_perturbations, desync=desync
            )
            zeros = jax.tree.map(lambda x: jnp.zeros((n, *jnp.shape(x)), jnp.result_type(x)), theta)
            return PESState(interleave(tasks, tasks), zeros)

        def estimate(theta, state: PESState, key):
            k_eps, k_run = jax.random.split(key)
            eps = perturbations(theta, k_eps, n, std)
            keys = particle_keys(k_run, num_tasks, num_perturbations)
            tasks, tr_pos, tr_neg = run_interleaved(
                learner, fam, objective, schedule, theta, eps, state.tasks, keys, truncation
            )
            grad, accumulated = _pes_gradient(tr_pos, tr_neg, eps, state.accumulated, std)
            l_pos, l_neg = weighted_sum(tr_pos), weighted_sum(tr_neg)
            metrics = {
                "meta_loss": jnp.mean(l_pos + l_neg) / 2,
                "loss": (jnp.mean(tr_pos.loss) + jnp.mean(tr_neg.loss)) / 2,
            }
            return grad, PESState(tasks, accumulated), metrics

        return Estimator(
            name="pes",
            config=config,
            init=init,
            estimate=estimate,
            function_steps=2 * n * truncation,
            learner=learner,
        )

    return rebindable(build, family)


def _build(
    learner: MetaLearner, family: TaskFamily, run: RunSpec, o: PerturbedOptions
) -> Estimator:
    return pes(learner, family, **perturbed_kwargs(run, o))


ENTRY = Entry(
    "pes",
    _build,
    PerturbedOptions,
    "persistent evolution strategies, unbiased across truncations (Vicol et al. 2021)",
    frozenset({"truncated", "perturbed", "diagnosable"}),
    ONLINE_ES_DEFAULTS,
)
