"""Antithetic truncated evolution strategies (ES).

Salimans et al. 2017, "Evolution strategies as a scalable alternative to reinforcement
learning" (arXiv 1703.03864), applied to truncated unrolls as in Metz et al. 2019 and
Vicol et al. 2021 ("Unbiased gradient estimation in unrolled computation graphs with
persistent evolution strategies", ICML 2021): from each task's current state, a pair of
trajectories runs one truncation with θ + ε and θ − ε, and

    g = mean over pairs of (L(θ + ε) − L(θ − ε)) ε / (2σ²)

is an unbiased gradient of the Gaussian-smoothed *truncation* objective. The task then
continues from the θ + ε trajectory's state. Like truncated BPTT it ignores how θ shaped
the starting state, so it is biased for the full horizon; it needs no derivatives of
the objective, which may be non-differentiable.
"""

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, rebindable
from metaopt.estimators.antithetic import init_particles, particle_keys, run_pairs
from metaopt.estimators.common import (
    check_problem,
    check_std,
    perturbations,
    truncated_config,
    weighted_mean,
)
from metaopt.estimators.objectives import Objective
from metaopt.estimators.options import PerturbedOptions, RunSpec, perturbed_kwargs
from metaopt.estimators.schedules import HorizonSchedule
from metaopt.estimators.truncation import weighted_sum


def es(
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
    """The antithetic truncated-ES estimator.

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
      An :class:`~metaopt.Estimator`; ``function_steps`` counts both trajectories of
      every pair.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, mlp_optimizer, quadratic_family
      >>> learner = learned_optimizer(mlp_optimizer())
      >>> est = es(learner, quadratic_family(), num_tasks=4, truncation=5, horizon=10)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, state, metrics = est.estimate(
      ...     theta, est.init(theta, jax.random.key(1)), jax.random.key(2))
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
            return init_particles(
                learner, fam, schedule, theta, key, num_tasks, num_perturbations, desync=desync
            )

        def estimate(theta, tasks, key):
            k_eps, k_run = jax.random.split(key)
            eps = perturbations(theta, k_eps, n, std)
            keys = particle_keys(k_run, num_tasks, num_perturbations)
            pos, _, tr_pos, tr_neg = run_pairs(
                learner, fam, objective, schedule, theta, eps, tasks, tasks, keys, truncation
            )
            l_pos, l_neg = weighted_sum(tr_pos), weighted_sum(tr_neg)
            grad = weighted_mean((l_pos - l_neg) / (2 * std**2), eps)
            metrics = {
                "meta_loss": jnp.mean(l_pos + l_neg) / 2,
                "loss": (jnp.mean(tr_pos.loss) + jnp.mean(tr_neg.loss)) / 2,
            }
            return grad, pos, metrics

        return Estimator(
            name="es",
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
    return es(learner, family, **perturbed_kwargs(run, o))


ENTRY = Entry(
    "es",
    _build,
    PerturbedOptions,
    "antithetic truncated evolution strategies from a shared start",
    frozenset({"truncated", "perturbed", "diagnosable"}),
    # Truncated ES sees only one truncation's effect of θ; by default one truncation
    # spans the horizon, ES without truncation bias (benchmarks/estimator_defaults.py).
    {
        "std": 0.1,
        "perturbations": 4,
        "truncation": 100,
        "objective": "final",
        "clip": 1.0,
        "meta_lr": 3e-2,
        "meta_steps": 600,
        "validation_tasks": 128,
    },
)
