"""How well a meta-learned start adapts: held-out measurements after each inner step.

The few-shot evaluation of Finn et al. 2017: draw held-out tasks, take ``num_steps``
updates of θ's inner rule on each task's support set (``family.loss``), and measure the
query set (``family.eval_loss``, or any measure such as accuracy) before the first
update and after each one.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.types import MetaLearner, Params, TaskConfig, TaskFamily, Theta
from metaopt.core.unroll import InnerState, inner_step

AdaptMeasure = Callable[[TaskFamily, TaskConfig, Params], jax.Array]


def query_loss(family: TaskFamily, cfg: TaskConfig, params: Params) -> jax.Array:
    """The family's ``eval_loss``: the query loss (keys are not used by few-shot families)."""
    return family.eval_loss(cfg, params, jax.random.key(0))


def held_out_task(family: TaskFamily, key: jax.Array) -> tuple[TaskConfig, jax.Array, jax.Array]:
    """One held-out task drawn from ``key``: its configuration, an init key and a run key.

    Every evaluation of held-out tasks draws them this way, so methods evaluated with
    the same key meet the same tasks (few-shot episodes).

    Example:
      >>> import jax
      >>> from metaopt import sinusoid_family
      >>> cfg, k_init, k_run = held_out_task(sinusoid_family(), jax.random.key(0))
      >>> cfg.x_support.shape
      (10, 1)
    """
    k_cfg, k_init, k_run = jax.random.split(key, 3)
    return family.sample(k_cfg), k_init, k_run


def adaptation_curves(
    learner: MetaLearner,
    theta: Theta,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
    num_steps: int,
    measure: AdaptMeasure = query_loss,
) -> jax.Array:
    """``(num_tasks, num_steps + 1)`` measurements of held-out tasks adapted by θ.

    Column ``k`` is the measure after ``k`` inner updates of ``learner.tx(theta)``
    from ``learner.init_params(theta, ...)``. Traceable; one ``vmap`` over tasks of one
    ``lax.scan`` over steps.

    Args:
      learner: the meta-learner.
      theta: its meta-parameters.
      family: held-out tasks (e.g. more query points, or unseen classes).
      key: draws the tasks.
      num_tasks: how many tasks.
      num_steps: inner updates.
      measure: ``measure(family, cfg, params) -> scalar``; the query loss by default.

    Example:
      >>> import jax
      >>> from metaopt import learned_initialization, sinusoid_family
      >>> fam = sinusoid_family()
      >>> learner = learned_initialization(fam)
      >>> theta = learner.init(jax.random.key(0))
      >>> adaptation_curves(learner, theta, fam, jax.random.key(1), num_tasks=4,
      ...     num_steps=3).shape
      (4, 4)
    """
    num_tasks = checks.positive_int("num_tasks", num_tasks)
    num_steps = checks.non_negative_int("num_steps", num_steps)
    tx = learner.tx(theta)

    def one(k: jax.Array) -> jax.Array:
        cfg, k_init, k_steps = held_out_task(family, k)
        params = learner.init_params(theta, family, cfg, k_init)

        loss_fn = functools.partial(family.loss, cfg)

        def step(state, step_key):
            state, _ = inner_step(loss_fn, tx, state, step_key, second_order=True)
            return state, measure(family, cfg, state.params)

        start = InnerState(params, tx.init(params), jnp.zeros((), jnp.int32))
        _, after = jax.lax.scan(step, start, jax.random.split(k_steps, num_steps))
        return jnp.concatenate([measure(family, cfg, params)[None], after])

    return jax.vmap(one)(jax.random.split(key, num_tasks))
