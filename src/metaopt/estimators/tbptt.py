"""Meta-gradients by truncated backpropagation through time (truncated BPTT).

Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient descent"
(arXiv 1606.04474), §3: each estimate advances every task by one truncation of ``K``
inner steps and differentiates the truncation's meta-loss

    L(θ) = mean over tasks of Σ_t c_t m(θ_t)   (c_t = w_t / K for the trajectory mean),

with the state at the start of the truncation held constant. The state carried from one
truncation to the next is what makes the estimate *truncated*: it ignores how θ shaped
that state, which biases it toward short-horizon behaviour (Wu et al. 2018; Vicol et
al. 2021).
"""

import dataclasses

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, rebindable
from metaopt.estimators.common import check_problem, truncated_config
from metaopt.estimators.objectives import Objective
from metaopt.estimators.options import REMAT, RunSpec, TruncatedOptions, truncated_kwargs
from metaopt.estimators.schedules import HorizonSchedule
from metaopt.estimators.truncation import REMAT_POLICIES, init_tasks, run_truncation, weighted_sum


def tbptt(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    truncation: int,
    horizon: "int | HorizonSchedule" = 100,
    objective: Objective | None = None,
    second_order: bool = False,
    desync: bool = False,
    remat: str = "step",
) -> Estimator:
    """The truncated-BPTT estimator.

    Args:
      learner: what is meta-learned (e.g. :func:`~metaopt.learned_optimizer`).
      family: the task family.
      num_tasks: tasks per meta-batch (vmapped).
      truncation: inner steps per estimate, ``K``.
      horizon: steps per task before it is replaced, or a horizon schedule.
      objective: the meta-objective; the trajectory mean if None.
      second_order: keep second derivatives of the inner loss (the paper drops them).
      desync: start tasks at random step offsets (see
        :func:`~metaopt.estimators.truncation.init_tasks`).
      remat: rematerialization policy of the unroll (see
        :func:`~metaopt.estimators.truncation.scan_with_remat`).

    Returns:
      An :class:`~metaopt.Estimator`; ``metrics`` has ``meta_loss`` (the differentiated
      quantity) and ``loss`` (mean training loss over the truncation).

    Example:
      >>> import jax
      >>> from metaopt import learned_optimizer, lstm_optimizer, quadratic_family
      >>> learner = learned_optimizer(lstm_optimizer())
      >>> est = tbptt(learner, quadratic_family(), num_tasks=4, truncation=5, horizon=10)
      >>> theta = learner.init(jax.random.key(0))
      >>> state = est.init(theta, jax.random.key(1))
      >>> grad, state, metrics = est.estimate(theta, state, jax.random.key(2))
      >>> int(state.inner.step[0]), est.function_steps
      (5, 20)
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {list(REMAT_POLICIES)}, got {remat!r}")
    schedule, objective = check_problem(learner, family, horizon, truncation, objective)
    config = truncated_config(
        num_tasks,
        truncation,
        schedule,
        objective,
        desync,
        second_order=bool(second_order),
        remat=remat,
    )

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            return init_tasks(learner, fam, schedule, theta, key, num_tasks, desync=desync)

        def meta_loss(theta, tasks, key):
            def one(task, k):
                return run_truncation(
                    learner,
                    fam,
                    objective,
                    schedule,
                    theta,
                    task,
                    k,
                    truncation,
                    second_order=second_order,
                    remat=remat,
                )

            tasks, trace = jax.vmap(one)(tasks, jax.random.split(key, num_tasks))
            return jnp.mean(weighted_sum(trace)), (tasks, jnp.mean(trace.loss))

        def estimate(theta, tasks, key):
            (value, (tasks, loss)), grad = jax.value_and_grad(meta_loss, has_aux=True)(
                theta, tasks, key
            )
            return grad, tasks, {"meta_loss": value, "loss": loss}

        return Estimator(
            name="tbptt",
            config=config,
            init=init,
            estimate=estimate,
            function_steps=num_tasks * truncation,
            learner=learner,
        )

    return rebindable(build, family)


@dataclasses.dataclass(frozen=True)
class TBPTTOptions(TruncatedOptions):
    """Truncated backprop's options (see :func:`tbptt`)."""

    remat: str = option("step", "rematerialization of the unroll", choices=REMAT)
    second_order: bool = option(False, "keep second derivatives of the inner loss")


def _build(learner: MetaLearner, family: TaskFamily, run: RunSpec, o: TBPTTOptions) -> Estimator:
    return tbptt(
        learner,
        family,
        second_order=o.second_order,
        remat=o.remat,
        **truncated_kwargs(run, o),
    )


ENTRY = Entry(
    "tbptt",
    _build,
    TBPTTOptions,
    "truncated backprop through each truncation (Andrychowicz et al. 2016)",
    frozenset({"truncated", "differentiates", "diagnosable"}),
    # Chosen in benchmarks/estimator_defaults.py: held-out quadratics below tuned Adam.
    {"tasks": 128, "meta_lr": 1e-2, "clip": 1.0, "validation_tasks": 128},
)
