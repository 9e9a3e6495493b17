"""Noise-reuse evolution strategies (NRES).

Li, Harrison, Sohl-Dickstein, Smith and Metz 2023, "Variance-reduced gradient
estimation via noise-reuse in online evolution strategies" (NeurIPS 2023, arXiv
2304.12180). Like PES, each particle keeps a θ + ε and a θ − ε trajectory that persist
across truncations; unlike PES, ε is drawn once per episode (a task, from its first
step to its horizon) and reused in every truncation of it. The estimate of one
truncation

    g = mean over pairs of (L(θ + ε) − L(θ − ε)) ε / (2σ²)

summed over an episode's truncations is the antithetic ES estimate of the whole
episode, (L_full(θ + ε) − L_full(θ − ε)) ε / (2σ²): unbiased for the gradient of the
Gaussian-smoothed full-horizon objective, with memory independent of the horizon. Its
variance does not grow with the number of truncations, where PES's accumulated
perturbation does; the paper shows it is the lowest among such online estimators
that share one ε per truncation.

When a task reaches its horizon mid-truncation (a horizon that is not a multiple of
the truncation, log-uniform horizons, desynchronized tasks), the replacement task
is a new episode with its own ε: it is drawn (its initial params and optimizer
state) and trained with θ ± ε' from its first step, ε' a fresh draw, so no
episode's trajectory mixes two perturbations. The truncation's measurements before
the replacement are weighed with the old episode's ε, those after it with ε', and
ε' is kept for the new episode's later truncations. This is PES's rule (ξ before
the replacement, this truncation's ε after it, and ξ restarts at ε) with PES's
accumulated ξ replaced by the episode's one ε. The tasks of the first meta-batch
start from θ's initialization (the learner's ``init_params(θ)``), as in PES, and
train with θ ± ε from their first truncation.
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
from metaopt.estimators.truncation import TaskState, reaches_horizon, weighted_sum


class NRESState(NamedTuple):
    """Both trajectories of every particle and its episode's ε.

    Attributes:
      tasks: the trajectories, interleaved (a leading axis of twice the particles):
        particle ``i``'s θ+ε trajectory at ``2i``, its θ−ε one at ``2i + 1``.
      eps: the episode's ε, with a leading particle axis.
    """

    tasks: TaskState
    eps: Theta

    @property
    def pos(self) -> TaskState:
        """The θ+ε trajectories (a leading particle axis)."""
        return signs(self.tasks)[0]

    @property
    def neg(self) -> TaskState:
        """The θ−ε trajectories (a leading particle axis)."""
        return signs(self.tasks)[1]


def nres(
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
    """The NRES estimator.

    Args:
      learner: what is meta-learned.
      family: the task family.
      num_tasks: tasks per meta-batch.
      truncation: inner steps per estimate.
      horizon: steps per task (one episode) before it is replaced, or a horizon
        schedule.
      objective: the meta-objective (any measurement; it need not be differentiable).
      std: σ, the standard deviation of the perturbations.
      num_perturbations: antithetic pairs per task.
      desync: start tasks at random step offsets.

    Returns:
      An :class:`~metaopt.Estimator` whose state is an :class:`NRESState`;
      ``function_steps`` counts both trajectories of every pair.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metaopt import learned_optimizer, mlp_optimizer, quadratic_family
      >>> learner = learned_optimizer(mlp_optimizer())
      >>> est = nres(learner, quadratic_family(), num_tasks=4, truncation=5, horizon=10)
      >>> theta = learner.init(jax.random.key(0))
      >>> state = est.init(theta, jax.random.key(1))
      >>> grad, new_state, metrics = est.estimate(theta, state, jax.random.key(2))
      >>> jax.tree.all(jax.tree.map(jnp.array_equal, new_state.eps, state.eps))  # same episode
      True
      >>> est.function_steps
      40
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
            # The tasks from ``key`` itself, as PES and ES draw them: for one key, every
            # estimator meets the same tasks.
            tasks = init_particles(
                learner, fam, schedule, theta, key, num_tasks, num_perturbations, desync=desync
            )
            eps = perturbations(theta, jax.random.fold_in(key, 1), n, std)
            return NRESState(interleave(tasks, tasks), eps)

        def estimate(theta, state: NRESState, key):
            # A fresh ε' for every particle, used only by those whose task is replaced
            # in this truncation (a new episode), so drawn only when some task is.
            k_eps, k_run = jax.random.split(key)
            fresh = jax.lax.cond(
                reaches_horizon(state.tasks, truncation),
                lambda: perturbations(theta, k_eps, n, std),
                lambda: jax.tree.map(jnp.zeros_like, state.eps),
            )
            keys = particle_keys(k_run, num_tasks, num_perturbations)
            tasks, tr_pos, tr_neg = run_interleaved(
                learner,
                fam,
                objective,
                schedule,
                theta,
                state.eps,
                state.tasks,
                keys,
                truncation,
                fresh_eps=fresh,
            )
            grad = split_gradient(tr_pos, tr_neg, state.eps, fresh, std)
            eps = where_replaced(tr_pos, fresh, state.eps)
            l_pos, l_neg = weighted_sum(tr_pos), weighted_sum(tr_neg)
            metrics = {
                "meta_loss": jnp.mean(l_pos + l_neg) / 2,
                "loss": (jnp.mean(tr_pos.loss) + jnp.mean(tr_neg.loss)) / 2,
            }
            return grad, NRESState(tasks, eps), metrics

        return Estimator(
            name="nres",
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
    return nres(learner, family, **perturbed_kwargs(run, o))


ENTRY = Entry(
    "nres",
    _build,
    PerturbedOptions,
    "noise-reuse evolution strategies: one perturbation per episode (Li et al. 2023)",
    frozenset({"truncated", "perturbed", "diagnosable"}),
    ONLINE_ES_DEFAULTS,
)
