"""Full-horizon backpropagation through time, with memory bounded by rematerialization.

Each estimate draws fresh tasks and differentiates the objective over their whole
horizon: the exact gradient of the (mini-batch) full-horizon meta-objective, the
quantity truncated estimators approximate. Its cost is that the backward pass needs
the forward trajectory; ``jax.checkpoint`` policies trade recomputation for memory
(Griewank and Walther 2000, "Algorithm 799: revolve"; Chen et al. 2016, "Training deep
nets with sublinear memory cost", arXiv 1604.06174). This is also MAML's estimator
when θ is an initialization (Finn et al. 2017).
"""

import dataclasses

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, rebindable
from metaopt.estimators.common import check_problem
from metaopt.estimators.objectives import Objective
from metaopt.estimators.options import REMAT, RunSpec, objective_of, objective_option
from metaopt.estimators.truncation import (
    REMAT_POLICIES,
    advance,
    init_tasks,
    weighted_sum,
)


def full_bptt(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    horizon: int = 100,
    objective: Objective | None = None,
    second_order: bool = False,
    remat: str = "nested",
) -> Estimator:
    """The full-horizon BPTT estimator.

    Args:
      learner: what is meta-learned.
      family: the task family.
      num_tasks: fresh tasks per estimate.
      horizon: inner steps per task (an int).
      objective: the meta-objective; the trajectory mean if None.
      second_order: keep second derivatives of the inner loss (MAML's meta-gradient).
      remat: ``"none"`` stores every step (memory grows with ``horizon``), ``"step"``
        stores one carry per step, ``"dots"`` one carry and the matrix products per
        step, ``"nested"`` about 2√horizon carries (see
        :func:`~metaopt.estimators.truncation.scan_with_remat`).

    Returns:
      An :class:`~metaopt.Estimator`. Its state counts the estimates taken: tasks are drawn
      afresh each time, so there is nothing else to carry.

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> est = full_bptt(learner, quadratic_family(), num_tasks=2, horizon=9)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, state, metrics = est.estimate(
      ...     theta, est.init(theta, jax.random.key(1)), jax.random.key(2))
      >>> est.function_steps, int(state)
      (18, 1)
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    if not isinstance(horizon, int):
        raise TypeError(f"horizon must be a positive integer for full_bptt, got {horizon!r}")
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {list(REMAT_POLICIES)}, got {remat!r}")
    schedule, objective = check_problem(learner, family, horizon, horizon, objective)
    config = dict(
        num_tasks=num_tasks,
        horizon=schedule.max_horizon,
        objective=objective.name,
        second_order=bool(second_order),
        remat=remat,
    )

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            del theta, key
            return jnp.zeros((), jnp.int32)

        def meta_loss(theta, key):
            k_tasks, k_run = jax.random.split(key)
            tasks = init_tasks(learner, fam, schedule, theta, k_tasks, num_tasks)

            def one(task, k):
                # Every task runs exactly its horizon, so none is replaced: the task
                # itself stands in for the replacement that is never read.
                return advance(
                    learner,
                    fam,
                    objective,
                    theta,
                    task,
                    task,
                    k,
                    schedule.max_horizon,
                    second_order=second_order,
                    remat=remat,
                )

            _, trace = jax.vmap(one)(tasks, jax.random.split(k_run, num_tasks))
            return jnp.mean(weighted_sum(trace)), jnp.mean(trace.loss)

        def estimate(theta, count, key):
            (value, loss), grad = jax.value_and_grad(meta_loss, has_aux=True)(theta, key)
            return grad, count + 1, {"meta_loss": value, "loss": loss}

        return Estimator(
            name="full_bptt",
            config=config,
            init=init,
            estimate=estimate,
            function_steps=num_tasks * schedule.max_horizon,
            learner=learner,
        )

    return rebindable(build, family)


@dataclasses.dataclass(frozen=True)
class FullBPTTOptions:
    """Full-horizon backprop's options (see :func:`full_bptt`)."""

    objective: str = objective_option()
    remat: str = option("nested", "rematerialization of the unroll", choices=REMAT)
    second_order: bool = option(False, "keep second derivatives of the inner loss")


def _build(learner: MetaLearner, family: TaskFamily, run: RunSpec, o: FullBPTTOptions) -> Estimator:
    return full_bptt(
        learner,
        family,
        num_tasks=run.num_tasks,
        horizon=run.horizon,
        objective=objective_of(o),
        second_order=o.second_order,
        remat=o.remat,
    )


ENTRY = Entry(
    "full_bptt",
    _build,
    FullBPTTOptions,
    "backprop through every task's whole horizon, one meta-step per horizon",
    frozenset({"whole_horizon", "differentiates", "diagnosable"}),
    # Chosen in benchmarks/estimator_defaults.py: held-out quadratics below tuned Adam.
    {"meta_lr": 1e-2, "clip": 1.0, "meta_steps": 2000, "validation_tasks": 128},
)
