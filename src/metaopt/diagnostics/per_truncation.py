"""One meta-step's estimate, window by window: the meta-gradient variance SGD on θ sees.

A truncated estimator's meta-step returns its estimate for one truncation (a *window*)
of its tasks' horizons. Window ``w``'s target is the gradient of that window's
meta-loss through the whole run before it (:func:`~metaopt.diagnostics.gradients.window_losses`),
and its variance is the noise of one meta-step's gradient, at a cost that is the same
for every estimator with the same truncation, tasks and antithetic pairs. PES's grows
with the window's position in the horizon, as its accumulated perturbation does; NRES's
does not (Li et al. 2023, "Variance-reduced gradient estimation via noise-reuse in
online evolution strategies"). With desynchronized tasks a meta-batch mixes windows,
so the mean over windows is the variance per task of one meta-step.

A horizon's sum of these estimates is what :func:`~metaopt.diagnostics.estimator_report`
compares with the full-horizon gradient; its variance also counts how the windows'
estimates covary, which one meta-step never sees.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from metaopt.core import checks
from metaopt.diagnostics.estimator_quality import summarize
from metaopt.diagnostics.gradients import (
    _objective,
    diagnosable,
    make_estimator,
    per_window,
    run_particles,
    truncation_estimates,
    window_losses,
)
from metaopt.diagnostics.problems import Problem, quadratic_learning_rates
from metaopt.estimators.registry import ESTIMATORS as REGISTRY
from metaopt.estimators.schedules import constant_schedule
from metaopt.estimators.truncation import init_tasks


def _flatten_windows(tree) -> np.ndarray:
    flat = jax.vmap(jax.vmap(lambda t: ravel_pytree(t)[0]))(tree)
    return np.asarray(jax.device_get(flat), np.float64)


def window_truths(
    problem: Problem, keys: jax.Array, *, truncation: int, horizon: int
) -> np.ndarray:
    """Each window's exact gradient on each particle's tasks: ``(len(keys), H/K, size(θ))``.

    Particle ``i`` meets the tasks of :func:`~metaopt.diagnostics.particle_truths`.

    Example:
      >>> import jax
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> window_truths(quadratic_learning_rates(dim=4), keys, truncation=2,
      ...     horizon=6).shape
      (3, 3, 4)
    """
    objective, schedule = _objective(problem), constant_schedule(horizon)

    def one(key):
        k_tasks, _ = jax.random.split(key)
        tasks = init_tasks(
            problem.learner, problem.family, schedule, problem.theta, k_tasks, problem.num_tasks
        )
        losses = window_losses(
            problem.learner, problem.family, objective, tasks, jax.random.fold_in(key, 1),
            horizon=horizon, truncation=truncation,
        )  # fmt: skip
        return jax.jacfwd(lambda th: losses(per_window(th, horizon // truncation)))(problem.theta)

    return _flatten_windows(run_particles(one, keys))


def predicted_error_variance(
    problem: Problem,
    keys: jax.Array,
    *,
    truncation: int,
    horizon: int,
    num_perturbations: int = 1,
) -> dict[str, np.ndarray]:
    """PES's and NRES's per-window error variance, predicted from exact derivatives.

    Let g_wj = ∂L_w/∂θ_j be the derivative of window ``w``'s meta-loss on one task with
    respect to the θ that trained window ``j`` (forward-mode, per task), d = size(θ),
    G_w = Σ_{j≤w} g_wj (the window's exact gradient) and S_w = Σ_{j≤w} ‖g_wj‖². To
    first order in σ (antithetic pairs cancel the second), one pair's estimate of
    window ``w`` is ξ (Σ_j ε_jᵀ g_wj) / σ² with PES's ξ = Σ_{j≤w} ε_j, or ε εᵀ G_w / σ²
    with NRES's one ε; for Gaussian ε the trace of its covariance is

        PES:  d · w · S_w + ‖G_w‖²        NRES: (d + 1) ‖G_w‖²,

    and NRES's is never larger (Cauchy–Schwarz: ‖G_w‖² ≤ w · S_w; equal when every
    window's θ moves window ``w``'s loss alike). A particle's estimate is the mean of
    ``num_tasks · num_perturbations`` independent pairs, so its error variance is the
    sum of its pairs' over ``(num_tasks · num_perturbations)²``.

    Returns:
      ``{"pes": (len(keys), H/K), "nres": (len(keys), H/K)}``: each particle's
      predicted error variance per window, on the tasks of :func:`window_truths`.

    Example:
      >>> import jax
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> v = predicted_error_variance(quadratic_learning_rates(dim=3), keys, truncation=2,
      ...     horizon=6)
      >>> v["pes"].shape, bool((v["nres"] <= v["pes"] * (1 + 1e-9)).all())
      ((2, 3), True)
    """
    objective, schedule = _objective(problem), constant_schedule(horizon)
    windows = horizon // truncation

    def one(key):
        k_tasks, _ = jax.random.split(key)
        tasks = init_tasks(
            problem.learner, problem.family, schedule, problem.theta, k_tasks, problem.num_tasks
        )

        def per_task(task):
            single = jax.tree.map(lambda x: x[None], task)
            losses = window_losses(
                problem.learner, problem.family, objective, single, jax.random.fold_in(key, 1),
                horizon=horizon, truncation=truncation,
            )  # fmt: skip
            jac = jax.jacfwd(losses)(per_window(problem.theta, windows))
            leaves = [x.reshape(windows, windows, -1) for x in jax.tree.leaves(jac)]
            return jnp.concatenate(leaves, axis=-1)  # (window w, window j, d)

        return jax.vmap(per_task)(tasks)

    g = np.asarray(jax.device_get(run_particles(one, keys)), np.float64)  # (R, T, W, W, d)
    d = g.shape[-1]
    w = np.arange(1, windows + 1)
    past = np.tril(np.ones((windows, windows)))[None, None, :, :, None]  # j ≤ w
    big_g = np.sum(g * past, axis=3)  # (R, T, W, d)
    g2 = np.sum(big_g**2, axis=-1)
    s = np.sum((g * past) ** 2, axis=(3, 4))
    pairs = problem.num_tasks * num_perturbations
    scale = num_perturbations / pairs**2  # Σ over a task's pairs, over pairs²
    return {
        "pes": np.sum(d * w * s + g2, axis=1) * scale,
        "nres": np.sum((d + 1) * g2, axis=1) * scale,
    }


def window_estimates(
    problem: Problem,
    name: str,
    keys: jax.Array,
    *,
    truncation: int,
    horizon: int,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Estimator ``name``'s estimate of each window: ``(len(keys), H/K, size(θ))``.

    Example:
      >>> import jax
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> window_estimates(quadratic_learning_rates(dim=4), "nres", keys, truncation=2,
      ...     horizon=6).shape
      (3, 3, 4)
    """
    if name == "full_bptt":
        raise ValueError("full_bptt has no windows: it estimates a whole horizon at once")
    est = make_estimator(problem, name, truncation=truncation, horizon=horizon, options=options)

    def one(key):
        return truncation_estimates(est, problem.theta, key, horizon=horizon)

    return _flatten_windows(run_particles(one, keys))


def window_report(
    problem: Problem | None = None,
    estimators: Sequence[str] = ("pes", "nres"),
    truncation: int = 10,
    horizon: int = 100,
    *,
    num_particles: int = 256,
    key: jax.Array | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    predict_particles: int | None = None,
) -> list[dict[str, Any]]:
    """Bias, variance and cosine of each window's estimate, per estimator.

    Args:
      problem: where to measure; :func:`~metaopt.diagnostics.quadratic_learning_rates`
        if None.
      estimators: registered truncated estimators the diagnostics cover (``"tbptt"``,
        ``"es"``, ``"pes"``, ``"nres"``).
      truncation: the truncation length ``K``; it must divide ``horizon``.
      horizon: the horizon ``H``: ``H/K`` windows.
      num_particles: ``R >= 2`` independent particles, each on its own tasks (the same
        for every estimator).
      key: the particles' keys derive from it; ``jax.random.key(0)`` if None.
      options: extra factory arguments per estimator (``std`` defaults to 0.01).
      predict_particles: predict PES's and NRES's variance on the tasks of only the
        first this many particles (it costs H/K · size(θ) forward passes per task, the
        measurement a few); all of them if None.

    Returns:
      One dict per estimator and window: ``estimator``, ``truncation``, ``horizon``,
      ``window`` (1 to H/K), ``function_steps`` (inner steps of one meta-step: equal
      compute where equal), ``num_particles`` and the statistics of
      :func:`~metaopt.diagnostics.summarize` of that window's estimates against its
      exact gradients (``error_variance`` is the estimator's own noise), with
      ``error_variance_stderr`` and, for PES and NRES, ``predicted_error_variance``
      (:func:`predicted_error_variance`, averaged over the particles it ran on).

    Example:
      >>> rows = window_report(quadratic_learning_rates(dim=3, num_tasks=2), ("tbptt",),
      ...     2, 4, num_particles=2)
      >>> [r["window"] for r in rows], rows[0]["relative_bias"] < 1e-4  # exact in window 1
      ([1, 2], True)
    """
    problem = quadratic_learning_rates() if problem is None else problem
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a diagnostics Problem, got {type(problem).__name__}")
    if isinstance(estimators, str) or not isinstance(estimators, Sequence) or not estimators:
        raise TypeError(f"estimators must be a non-empty sequence of names, got {estimators!r}")
    truncated = [e for e in diagnosable() if "truncated" in REGISTRY[e].traits]
    unknown = [e for e in estimators if e not in truncated]
    if unknown:
        raise ValueError(f"estimators must be among {truncated}, got unknown {unknown}")
    truncation = checks.positive_int("truncation", truncation)
    horizon = checks.positive_int("horizon", horizon)
    if horizon % truncation:
        raise ValueError(f"truncation ({truncation}) must divide horizon ({horizon})")
    num_particles = checks.positive_int("num_particles", num_particles)
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 for a variance, got {num_particles}")
    key = jax.random.key(0) if key is None else checks.prng_key("key", key)
    keys = jax.random.split(key, num_particles)
    if predict_particles is not None:
        predict_particles = checks.positive_int("predict_particles", predict_particles)
    options = dict(options or {})
    sizes = dict(truncation=truncation, horizon=horizon)
    truths = window_truths(problem, keys, **sizes)
    rows = []
    for name in dict.fromkeys(estimators):
        opts = dict(options.get(name) or {})
        estimates = window_estimates(problem, name, keys, options=opts, **sizes)
        est = make_estimator(problem, name, options=opts, **sizes)
        predicted = None
        if name in ("pes", "nres"):
            pairs = est.config["num_perturbations"]
            predicted = predicted_error_variance(
                problem, keys[:predict_particles], num_perturbations=pairs, **sizes
            )[name].mean(axis=0)
        for w in range(horizon // truncation):
            err = estimates[:, w] - truths[:, w]
            row = {"estimator": name, **sizes, "window": w + 1}
            row |= {"function_steps": est.function_steps, "num_particles": num_particles}
            row |= summarize(estimates[:, w], truths[:, w])
            row["error_variance_stderr"] = _variance_stderr(err)
            row["predicted_error_variance"] = None if predicted is None else float(predicted[w])
            rows.append(row)
    return rows


def _variance_stderr(x: np.ndarray) -> float:
    """The standard error of tr Cov(x) over its rows: √(Var ‖x − x̄‖² / R)."""
    sq = np.sum((x - x.mean(axis=0)) ** 2, axis=1)
    return float(np.std(sq, ddof=1) / np.sqrt(len(sq)))
