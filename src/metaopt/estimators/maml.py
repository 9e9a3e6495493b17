"""MAML and first-order MAML: full backprop through a few inner steps to the query loss.

Finn, Abbeel, Levine 2017 ("Model-agnostic meta-learning for fast adaptation of deep
networks"): θ is trained so that a few inner updates on a task's support set give a low
loss on its query set. The meta-gradient differentiates that query loss through the
inner updates, second derivatives included (MAML) or with the inner gradients taken as
constants (first-order MAML, §5.2 of the paper). Both are
:func:`~metaopt.estimators.full_bptt.full_bptt` over ``inner_steps`` with the held-out
final objective; its remat policies bound second-order memory as the inner steps grow.
With a :func:`~metaopt.meta_sgd` learner this is Meta-SGD's estimator (Li et al. 2017).
"""

import dataclasses

from metaopt.core.registry import Entry, option
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, rebindable
from metaopt.estimators.full_bptt import full_bptt
from metaopt.estimators.objectives import Objective, held_out
from metaopt.estimators.options import REMAT, RunSpec


def maml(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    inner_steps: int = 1,
    first_order: bool = False,
    objective: Objective | None = None,
    remat: str = "nested",
) -> Estimator:
    """The MAML estimator: the gradient of the query loss after ``inner_steps`` updates.

    Args:
      learner: what is meta-learned; usually a
        :func:`~metaopt.learned_initialization` or :func:`~metaopt.meta_sgd`, but any
        learner works (a learned optimizer with a learned initialization too).
      family: a task family with an ``eval_loss`` (the query set).
      num_tasks: tasks per meta-batch (the paper's meta-batch size).
      inner_steps: inner updates on the support set before the query loss.
      first_order: drop the second derivatives of the inner updates (FOMAML).
      objective: the meta-objective; the query loss after the last step
        (``held_out(final_only=True)``) if None.
      remat: the rematerialization policy (see :func:`~metaopt.full_bptt`).

    Example:
      >>> import jax
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> fam = sinusoid_family()
      >>> learner = learned_initialization(fam)
      >>> est = maml(learner, fam, num_tasks=4)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, _, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(1))
      >>> est.name, jax.tree.structure(grad) == jax.tree.structure(theta)
      ('maml', True)
    """
    objective = held_out(final_only=True) if objective is None else objective

    def build(fam: TaskFamily) -> Estimator:
        estimator = full_bptt(
            learner,
            fam,
            num_tasks=num_tasks,
            horizon=inner_steps,
            objective=objective,
            second_order=not first_order,
            remat=remat,
        )
        config = {**estimator.config, "inner_steps": inner_steps}
        return estimator._replace(name="fomaml" if first_order else "maml", config=config)

    return rebindable(build, family)


def fomaml(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    inner_steps: int = 1,
    objective: Objective | None = None,
    remat: str = "nested",
) -> Estimator:
    """First-order MAML: :func:`maml` with ``first_order=True``.

    Example:
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> fam = sinusoid_family()
      >>> fomaml(learned_initialization(fam), fam, num_tasks=2).config["second_order"]
      False
    """
    return maml(
        learner,
        family,
        num_tasks=num_tasks,
        inner_steps=inner_steps,
        first_order=True,
        objective=objective,
        remat=remat,
    )


@dataclasses.dataclass(frozen=True)
class MAMLOptions:
    """MAML's options (see :func:`maml`); the inner steps are the run's horizon."""

    remat: str = option("nested", "rematerialization of the inner steps", choices=REMAT)


def _build(learner: MetaLearner, family: TaskFamily, run: RunSpec, o: MAMLOptions) -> Estimator:
    return maml(learner, family, num_tasks=run.num_tasks, inner_steps=run.horizon, remat=o.remat)


def _build_first_order(
    learner: MetaLearner, family: TaskFamily, run: RunSpec, o: MAMLOptions
) -> Estimator:
    return fomaml(learner, family, num_tasks=run.num_tasks, inner_steps=run.horizon, remat=o.remat)


ENTRY = Entry(
    "maml",
    _build,
    MAMLOptions,
    "backprop through the inner steps to the query loss (Finn et al. 2017)",
    frozenset({"whole_horizon", "query", "differentiates"}),
)
FIRST_ORDER_ENTRY = Entry(
    "fomaml",
    _build_first_order,
    MAMLOptions,
    "MAML without the inner steps' second derivatives",
    frozenset({"whole_horizon", "query", "differentiates"}),
)
