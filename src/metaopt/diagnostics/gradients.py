"""Exact full-horizon meta-gradients, and each estimator's estimate of them, per particle.

On a problem small enough to backpropagate through whole inner runs, every estimator's
estimate of the *full-horizon* meta-gradient is compared with the exact gradient on the
same tasks. The full-horizon objective is the one :func:`~metaopt.full_bptt`
differentiates: ``(1/H) Σ_{t=1..H} w_t m(θ_t)`` for the trajectory mean (the measurement
at step ``H`` for a final-loss objective). A truncated estimator's estimate of it is the
sum of its per-truncation estimates over one horizon, from a fresh state with θ fixed,
rescaled by ``K/H`` (a truncation's objective weighs its steps by ``1/K``).

Each *particle* is one such estimate on its own ``num_tasks`` tasks, drawn from the
particle's key exactly as the estimator's ``init`` draws them, and the exact gradient
is computed on the same tasks, so the error ``estimate − exact`` is the estimator's own.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from metaopt.core import checks
from metaopt.core.types import Estimator, MetaLearner, TaskFamily, Theta
from metaopt.diagnostics.problems import Problem
from metaopt.estimators.objectives import Objective, trajectory_mean
from metaopt.estimators.options import RunSpec
from metaopt.estimators.registry import ESTIMATORS as REGISTRY
from metaopt.estimators.schedules import constant_schedule
from metaopt.estimators.truncation import TaskState, init_tasks, run_truncation, weighted_sum

RESERVED_OPTIONS = ("num_tasks", "truncation", "horizon", "objective", "desync")


def diagnosable() -> tuple[str, ...]:
    """The registered estimators these diagnostics compare with the exact gradient.

    They are the ones with the ``diagnosable`` trait: estimates of a task family's
    objective over a horizon (not a query set, not a pseudo-gradient).

    Example:
      >>> diagnosable()[:4]
      ('tbptt', 'full_bptt', 'es', 'pes')
    """
    return REGISTRY.names("diagnosable")


# The estimators metaopt ships that the diagnostics cover (``diagnosable()`` also sees
# ones registered at run time).
ESTIMATORS = diagnosable()


def _scale(objective: Objective, truncation: int, horizon: int) -> float:
    # A truncation's trajectory mean weighs its steps by 1/K; the full horizon's by 1/H.
    return 1.0 if objective.final_only else truncation / horizon


def _objective(problem: Problem) -> Objective:
    return trajectory_mean() if problem.objective is None else problem.objective


def true_gradient(
    learner: MetaLearner,
    family: TaskFamily,
    objective: Objective,
    theta: Theta,
    tasks: TaskState,
    key: jax.Array,
    *,
    horizon: int,
    truncation: int,
) -> Theta:
    """The exact gradient of the full-horizon objective on ``tasks``.

    The horizon runs as ``horizon // truncation`` chained truncations of
    :func:`~metaopt.estimators.truncation.run_truncation` (the engine every estimator
    uses, with second derivatives), differentiated as one function: no gradient is
    stopped between truncations, so this is what truncated estimators approximate.

    Args:
      learner: the meta-learner.
      family: the task family.
      objective: the meta-objective.
      theta: where the gradient is taken.
      tasks: a batch of tasks at step 0 with horizon ``horizon`` (a leading task axis),
        e.g. from :func:`~metaopt.estimators.truncation.init_tasks`.
      key: the truncations' randomness (minibatches).
      horizon: inner steps, a multiple of ``truncation``.
      truncation: inner steps per chained truncation.

    Returns:
      The gradient, shaped like ``theta``: the mean over tasks of the gradient of
      ``(1/H) Σ_t w_t m(θ_t)`` (the final measurement for a final-only objective).

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> from metaopt.estimators.schedules import constant_schedule
      >>> from metaopt.estimators.objectives import trajectory_mean
      >>> p = quadratic_learning_rates(dim=3)
      >>> tasks = init_tasks(p.learner, p.family, constant_schedule(6), p.theta,
      ...     jax.random.key(0), 2)
      >>> g = true_gradient(p.learner, p.family, trajectory_mean(), p.theta, tasks,
      ...     jax.random.key(1), horizon=6, truncation=3)
      >>> g["log_lr"].shape
      (3,)
    """
    losses = window_losses(
        learner, family, objective, tasks, key, horizon=horizon, truncation=truncation
    )
    scale = _scale(objective, truncation, horizon)
    n = horizon // truncation
    return jax.grad(lambda th: jnp.sum(losses(per_window(th, n))) * scale)(theta)


def per_window(theta: Theta, num_windows: int) -> Theta:
    """``theta`` repeated for each window (a leading axis), as :func:`window_losses` takes it.

    Example:
      >>> import jax.numpy as jnp
      >>> per_window({"a": jnp.zeros(3)}, 4)["a"].shape
      (4, 3)
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_windows, *jnp.shape(x))), theta)


def window_losses(
    learner: MetaLearner,
    family: TaskFamily,
    objective: Objective,
    tasks: TaskState,
    key: jax.Array,
    *,
    horizon: int,
    truncation: int,
):
    """``θs -> (H/K,)``: each truncation's meta-loss on ``tasks``, the horizon run in one piece.

    The function takes one θ per truncation (a leading axis of H/K, e.g.
    :func:`per_window` of one θ), truncation ``w`` trained with ``θs[w]``. Its entry
    ``w`` is the mean over tasks of truncation ``w``'s weighted measurements (the
    objective a truncated estimator's estimate of window ``w`` targets), as a function
    of the θs of the whole run before it: nothing is stopped between truncations.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> from metaopt.estimators.objectives import trajectory_mean
      >>> p = quadratic_learning_rates(dim=3)
      >>> tasks = init_tasks(p.learner, p.family, constant_schedule(6), p.theta,
      ...     jax.random.key(0), 2)
      >>> window_losses(p.learner, p.family, trajectory_mean(), tasks, jax.random.key(1),
      ...     horizon=6, truncation=3)(per_window(p.theta, 2)).shape
      (2,)
    """
    truncation = checks.positive_int("truncation", truncation)
    horizon = checks.positive_int("horizon", horizon)
    if horizon % truncation:
        raise ValueError(f"horizon ({horizon}) must be a multiple of truncation ({truncation})")
    schedule = constant_schedule(horizon)
    num_tasks = tasks.horizon.shape[0]

    def losses(thetas):
        def chunk(tasks, xs):
            theta, k = xs

            def one(task, kk):
                return run_truncation(
                    learner, family, objective, schedule, theta, task, kk, truncation,
                    second_order=True,
                )  # fmt: skip

            tasks, trace = jax.vmap(one)(tasks, jax.random.split(k, num_tasks))
            return tasks, jnp.mean(weighted_sum(trace))

        keys = jax.random.split(key, horizon // truncation)
        _, out = jax.lax.scan(chunk, tasks, (thetas, keys))
        return out

    return losses


def horizon_estimate(
    estimator: Estimator, theta: Theta, key: jax.Array, *, horizon: int, final_only: bool = False
) -> Theta:
    """An estimator's estimate of the full-horizon gradient: one horizon of estimates.

    ``key`` splits into ``(k_tasks, k_run)``; the estimator's state starts from
    ``init(theta, k_tasks)`` and takes ``horizon // truncation`` estimates with θ
    fixed, whose sum, times ``truncation / horizon`` unless ``final_only``, is returned.
    :func:`~metaopt.full_bptt` takes one estimate with ``key`` itself, which draws its
    tasks from ``k_tasks`` too, so every estimator meets the same tasks.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> p = quadratic_learning_rates(dim=3)
      >>> from metaopt.estimators.tbptt import tbptt
      >>> est = tbptt(p.learner, p.family, num_tasks=2, truncation=3, horizon=6)
      >>> horizon_estimate(est, p.theta, jax.random.key(0), horizon=6)["log_lr"].shape
      (3,)
    """
    if estimator.name == "full_bptt":
        if estimator.config["horizon"] != horizon:
            raise ValueError(
                f"estimator runs a horizon of {estimator.config['horizon']}, not {horizon}"
            )
        grad, _, _ = estimator.estimate(theta, estimator.init(theta, None), key)
        return grad
    config = estimator.config
    truncation = config["truncation"]
    if config.get("desync") or config["min_horizon"] != horizon or config["max_horizon"] != horizon:
        raise ValueError(
            f"estimator must run a constant horizon of {horizon} without desync, got {config}"
        )
    grads = truncation_estimates(estimator, theta, key, horizon=horizon)
    scale = 1.0 if final_only else truncation / horizon
    return jax.tree.map(lambda g: jnp.sum(g, axis=0) * scale, grads)


def truncation_estimates(
    estimator: Estimator, theta: Theta, key: jax.Array, *, horizon: int
) -> Theta:
    """One horizon of a truncated estimator's estimates, each its own (a leading axis H/K).

    ``key`` splits into ``(k_tasks, k_run)`` as in :func:`horizon_estimate`: estimate
    ``w`` is what a meta-step whose tasks stand at truncation ``w`` of their horizon
    would return.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> from metaopt.estimators.tbptt import tbptt
      >>> p = quadratic_learning_rates(dim=3)
      >>> est = tbptt(p.learner, p.family, num_tasks=2, truncation=3, horizon=6)
      >>> truncation_estimates(est, p.theta, jax.random.key(0), horizon=6)["log_lr"].shape
      (2, 3)
    """
    truncation = estimator.config["truncation"]
    if horizon % truncation:
        raise ValueError(f"horizon ({horizon}) must be a multiple of truncation ({truncation})")
    k_tasks, k_run = jax.random.split(key)

    def body(state, k):
        grad, state, _ = estimator.estimate(theta, state, k)
        return state, grad

    state = estimator.init(theta, k_tasks)
    _, grads = jax.lax.scan(body, state, jax.random.split(k_run, horizon // truncation))
    return grads


def make_estimator(
    problem: Problem,
    name: str,
    *,
    truncation: int,
    horizon: int,
    options: Mapping[str, Any] | None = None,
) -> Estimator:
    """Estimator ``name`` of :data:`ESTIMATORS` on ``problem``; ``options`` go to its factory.

    Example:
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> est = make_estimator(quadratic_learning_rates(), "pes", truncation=5, horizon=20,
      ...     options={"std": 0.05})
      >>> est.name, est.config["std"]
      ('pes', 0.05)
    """
    if name not in diagnosable():
        raise ValueError(f"estimator names must be among {list(diagnosable())}, got {name!r}")
    options = dict(options or {})
    reserved = sorted(set(options) & set(RESERVED_OPTIONS))
    if reserved:
        raise ValueError(f"options for {name!r} may not set {reserved}: the report sets them")
    entry = REGISTRY[name]
    given = {"truncation": truncation, "second_order": problem.second_order} | options
    unknown = sorted(set(options) - {f.name for f in entry.option_fields()})
    if unknown:
        raise ValueError(f"options for {name!r} must be among its options, got {unknown}")
    opts = entry.make_options(given)
    if "objective" in {f.name for f in entry.option_fields()}:
        opts = dataclasses.replace(opts, objective=_objective(problem))
    run = RunSpec(num_tasks=problem.num_tasks, horizon=horizon)
    return entry.build(problem.learner, problem.family, run, opts)


# Particles per vmapped batch: the exact gradients store every step of every particle's
# tasks for the backward pass, so thousands of particles run a batch at a time.
PARTICLE_BATCH = 256


def run_particles(fn, keys: jax.Array):
    """``fn`` on every key, ``PARTICLE_BATCH`` at a time, compiled once (:func:`_run_once`)."""
    return _run_once(lambda ks: jax.lax.map(fn, ks, batch_size=PARTICLE_BATCH), keys)


def _run_once(fn, *args):
    """``jax.jit(fn)(*args)`` compiled without LLVM's optimizations where the backend allows.

    The particle computations run once and are tiny: compiling them is what costs, and
    skipping the backend's optimization passes makes that several times faster.
    """
    lowered = jax.jit(fn).lower(*args)
    try:
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except RuntimeError:  # a backend without the option
        compiled = lowered.compile()
    return compiled(*args)


def _flatten(tree_batch: Theta) -> np.ndarray:
    flat = jax.vmap(lambda t: ravel_pytree(t)[0])(tree_batch)
    return np.asarray(jax.device_get(flat), np.float64)


def particle_truths(
    problem: Problem, keys: jax.Array, *, truncation: int, horizon: int
) -> np.ndarray:
    """The exact gradient on each particle's tasks, flattened: ``(len(keys), size(θ))``.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> particle_truths(quadratic_learning_rates(dim=4), keys, truncation=2,
      ...     horizon=4).shape
      (3, 4)
    """
    objective, schedule = _objective(problem), constant_schedule(horizon)

    def one(key):
        k_tasks, _ = jax.random.split(key)
        tasks = init_tasks(
            problem.learner, problem.family, schedule, problem.theta, k_tasks, problem.num_tasks
        )
        return true_gradient(
            problem.learner, problem.family, objective, problem.theta, tasks,
            jax.random.fold_in(key, 1), horizon=horizon, truncation=truncation,
        )  # fmt: skip

    return _flatten(run_particles(one, keys))


def particle_estimates(
    problem: Problem,
    name: str,
    keys: jax.Array,
    *,
    truncation: int,
    horizon: int,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Estimator ``name``'s full-horizon estimate per particle: ``(len(keys), size(θ))``.

    Particle ``i`` meets the tasks :func:`particle_truths` differentiates for ``keys[i]``.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> particle_estimates(quadratic_learning_rates(dim=4), "es", keys, truncation=2,
      ...     horizon=4).shape
      (3, 4)
    """
    est = make_estimator(problem, name, truncation=truncation, horizon=horizon, options=options)
    final_only = _objective(problem).final_only

    def one(key):
        return horizon_estimate(est, problem.theta, key, horizon=horizon, final_only=final_only)

    return _flatten(run_particles(one, keys))
