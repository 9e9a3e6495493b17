"""Reptile: move the initialization toward the params a few inner steps reach.

Nichol, Achiam, Schulman 2018 ("On first-order meta-learning algorithms"): for each task
of a meta-batch, take ``inner_steps`` updates from θ to φ, then move θ ← θ + ε (φ̄ − θ),
with φ̄ the tasks' mean. The estimator returns the pseudo-gradient ``θ − φ̄``, so the
meta-optimizer applies it: ``optax.sgd(ε)`` is the paper's update, and Adam or a decaying
ε work as well. No derivative of the inner run is taken.
"""

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import Estimator, MetaLearner, Params, TaskFamily, Theta, rebindable
from metaopt.estimators.common import check_problem
from metaopt.estimators.objectives import Objective, final_loss, held_out
from metaopt.estimators.options import RunSpec
from metaopt.estimators.truncation import advance, init_tasks, weighted_sum


def pseudo_gradient(theta: Theta, adapted: Params) -> Theta:
    """``θ − φ`` on θ's initialization; zero on any other part of θ (a learned rule's).

    Example:
      >>> import jax.numpy as jnp
      >>> pseudo_gradient({"init": jnp.ones(2), "rule": jnp.ones(3)}, jnp.zeros(2))["rule"]
      Array([0., 0., 0.], dtype=float32)
    """
    if jax.tree.structure(theta) == jax.tree.structure(adapted):
        return jax.tree.map(jnp.subtract, theta, adapted)
    rest = {k: jax.tree.map(jnp.zeros_like, v) for k, v in theta.items() if k != "init"}
    return {"init": jax.tree.map(jnp.subtract, theta["init"], adapted), **rest}


def reptile(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    num_tasks: int,
    inner_steps: int = 5,
    objective: Objective | None = None,
) -> Estimator:
    """The Reptile estimator (a pseudo-gradient, not a derivative).

    Args:
      learner: a learner with a learned initialization
        (:func:`~metaopt.learned_initialization`, or a :func:`~metaopt.combine` of one,
        whose rule part then gets a zero pseudo-gradient).
      family: the task family; the inner steps train on its ``loss``.
      num_tasks: tasks per meta-batch.
      inner_steps: updates from θ to φ.
      objective: what the ``meta_loss`` metric reports (it is not differentiated): the
        query loss after the last step if the family has ``eval_loss``, else the
        training loss.

    Example:
      >>> import jax
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> fam = sinusoid_family()
      >>> learner = learned_initialization(fam)
      >>> est = reptile(learner, fam, num_tasks=4, inner_steps=3)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, count, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(1))
      >>> est.function_steps, int(count)
      (12, 1)
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    inner_steps = checks.positive_int("inner_steps", inner_steps)
    if not isinstance(learner, MetaLearner) or learner.config.get("initialization") != "learned":
        raise ValueError(
            "learner must hold a learned initialization for reptile "
            "(learned_initialization, meta_sgd, or a combine() of one), got "
            f"{getattr(learner, 'name', type(learner).__name__)!r}"
        )
    if objective is None:
        objective = final_loss() if family.eval_loss is None else held_out(final_only=True)
    schedule, objective = check_problem(learner, family, inner_steps, inner_steps, objective)
    config = dict(num_tasks=num_tasks, inner_steps=inner_steps, objective=objective.name)

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            del theta, key
            return jnp.zeros((), jnp.int32)

        def estimate(theta, count, key):
            theta = jax.lax.stop_gradient(theta)
            k_tasks, k_run = jax.random.split(key)
            tasks = init_tasks(learner, fam, schedule, theta, k_tasks, num_tasks)

            def one(task, k):
                # Each task runs exactly its horizon: no replacement is ever read.
                return advance(learner, fam, objective, theta, task, task, k, inner_steps)

            tasks, trace = jax.vmap(one)(tasks, jax.random.split(k_run, num_tasks))
            adapted = jax.tree.map(lambda p: jnp.mean(p, axis=0), tasks.inner.params)
            metrics = {"meta_loss": jnp.mean(weighted_sum(trace)), "loss": jnp.mean(trace.loss)}
            return pseudo_gradient(theta, adapted), count + 1, metrics

        return Estimator(
            name="reptile",
            config=config,
            init=init,
            estimate=estimate,
            function_steps=num_tasks * inner_steps,
            learner=learner,
        )

    return rebindable(build, family)


def _build(learner: MetaLearner, family: TaskFamily, run: RunSpec, options: None) -> Estimator:
    del options
    return reptile(learner, family, num_tasks=run.num_tasks, inner_steps=run.horizon)


ENTRY = Entry(
    "reptile",
    _build,
    None,
    "no derivative: moves the initialization toward the adapted params (Nichol et al. 2018)",
    frozenset({"whole_horizon", "initialization"}),
)
