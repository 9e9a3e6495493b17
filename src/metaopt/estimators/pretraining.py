"""Joint training on all tasks: the baseline every learned initialization is judged against.

The "pretrained" model of Finn et al. 2017, §5.1: one set of params trained to do well
on every task at once, with no inner step, then fine-tuned on a new task's support set
like a learned initialization. As an estimator its meta-gradient is the gradient of the
mean training loss at the initialization, so :func:`~metaopt.meta_train` trains it.
"""

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.sharding import constrain_tasks
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, rebindable
from metaopt.estimators.options import RunSpec


def pretraining(learner: MetaLearner, family: TaskFamily, *, num_tasks: int) -> Estimator:
    """Multi-task training of θ's initialization: ∇θ of the mean loss at the start.

    Args:
      learner: a learner with a learned initialization
        (:func:`~metaopt.learned_initialization`).
      family: the task family; its ``loss`` (the support set) is what is minimized.
      num_tasks: tasks per meta-batch.

    Example:
      >>> import jax
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> fam = sinusoid_family()
      >>> learner = learned_initialization(fam)
      >>> est = pretraining(learner, fam, num_tasks=8)
      >>> theta = learner.init(jax.random.key(0))
      >>> grad, _, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(1))
      >>> bool(metrics["meta_loss"] > 0)
      True
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    if not isinstance(learner, MetaLearner) or learner.config.get("initialization") != "learned":
        raise ValueError(
            "learner must hold a learned initialization for pretraining, got "
            f"{getattr(learner, 'name', type(learner).__name__)!r}"
        )
    if not isinstance(family, TaskFamily):
        raise TypeError(f"family must be a TaskFamily, got {type(family).__name__}")

    def build(fam: TaskFamily) -> Estimator:
        def init(theta, key):
            del theta, key
            return jnp.zeros((), jnp.int32)

        def mean_loss(theta, key):
            def one(k):
                k_cfg, k_init, k_loss = jax.random.split(k, 3)
                cfg = fam.sample(k_cfg)
                return fam.loss(cfg, learner.init_params(theta, fam, cfg, k_init), k_loss)

            # Split over the devices of a task mesh, if one is set, where the tasks are drawn.
            keys = constrain_tasks(jax.random.split(key, num_tasks))
            return jnp.mean(jax.vmap(one)(keys))

        def estimate(theta, count, key):
            value, grad = jax.value_and_grad(mean_loss)(theta, key)
            return grad, count + 1, {"meta_loss": value, "loss": value}

        return Estimator(
            name="pretraining",
            config={"num_tasks": num_tasks},
            init=init,
            estimate=estimate,
            function_steps=num_tasks,
            learner=learner,
        )

    return rebindable(build, family)


def _build(learner: MetaLearner, family: TaskFamily, run: RunSpec, options: None) -> Estimator:
    del options
    return pretraining(learner, family, num_tasks=run.num_tasks)


ENTRY = Entry(
    "pretraining",
    _build,
    None,
    "joint multi-task training of the initialization: the baseline for learned initializations",
    frozenset({"whole_horizon", "initialization"}),
)
