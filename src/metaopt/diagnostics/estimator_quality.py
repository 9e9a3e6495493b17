"""Estimator quality: bias, variance and cosine to the exact gradient, memory and time.

:func:`estimator_report` sweeps truncation lengths and horizons on a problem whose
full-horizon meta-gradient is exact by backprop (see :mod:`metaopt.diagnostics.gradients`)
and reports, per estimator and setting, how far its estimates are from the exact
gradient on the same tasks and what one of its meta-steps costs.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from metaopt.core import checks
from metaopt.core.types import Estimator, Theta
from metaopt.diagnostics.gradients import (
    RESERVED_OPTIONS,
    diagnosable,
    make_estimator,
    particle_estimates,
    particle_truths,
)
from metaopt.diagnostics.problems import Problem, quadratic_learning_rates


def summarize(estimates: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Bias, variance and cosine of per-particle estimates against per-particle truths.

    Args:
      estimates: ``(R, d)``, one flattened estimate per particle (``R >= 2``).
      truths: ``(R, d)``, the exact gradient on each particle's tasks.

    Returns:
      ``true_norm`` (norm of the mean exact gradient, the scale of everything relative),
      ``bias_norm`` and ``relative_bias`` (norm of the mean error ``estimate − truth``),
      ``relative_bias_stderr`` (what ``relative_bias`` would be for an unbiased estimator
      of this noise: √(tr Cov(error) / R), relative), ``variance`` (tr Cov of one
      estimate, task sampling included) and ``relative_variance``, ``variance_of_mean``
      (of the R-particle mean), ``error_variance`` (tr Cov of the error: the estimator's
      own noise), ``task_variance`` (tr Cov of the exact gradients), ``cosine_mean``,
      ``cosine_std`` and ``cosine_min`` of each estimate against its truth, and
      ``cosine_of_means`` (mean estimate against mean truth).

    Example:
      >>> import numpy as np
      >>> truths = np.array([[1.0, 0.0], [1.0, 0.0]])
      >>> s = summarize(np.array([[1.0, 1.0], [1.0, -1.0]]), truths)
      >>> s["relative_bias"], s["variance"], round(s["cosine_mean"], 4)
      (0.0, 2.0, 0.7071)
    """
    est, truth = np.asarray(estimates, np.float64), np.asarray(truths, np.float64)
    if est.ndim != 2 or est.shape != truth.shape or est.shape[0] < 2:
        raise ValueError(
            f"estimates and truths must both be (R, d) with R >= 2, got {est.shape} and "
            f"{truth.shape}"
        )
    r = est.shape[0]
    err = est - truth
    true_norm = float(np.linalg.norm(truth.mean(0)))
    bias_norm = float(np.linalg.norm(err.mean(0)))
    variance = float(np.var(est, axis=0, ddof=1).sum())
    error_variance = float(np.var(err, axis=0, ddof=1).sum())
    norms = np.linalg.norm(est, axis=1) * np.linalg.norm(truth, axis=1)
    cos = np.sum(est * truth, axis=1) / np.where(norms > 0, norms, np.nan)
    mean_norms = np.linalg.norm(est.mean(0)) * true_norm
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "true_norm": true_norm,
            "bias_norm": bias_norm,
            "relative_bias": float(np.divide(bias_norm, true_norm)),
            "relative_bias_stderr": float(np.divide(np.sqrt(error_variance / r), true_norm)),
            "variance": variance,
            "relative_variance": float(np.divide(variance, true_norm**2)),
            "variance_of_mean": variance / r,
            "error_variance": error_variance,
            "task_variance": float(np.var(truth, axis=0, ddof=1).sum()),
            "cosine_mean": float(np.mean(cos)),
            "cosine_std": float(np.std(cos)),
            "cosine_min": float(np.min(cos)),
            "cosine_of_means": float(np.divide(est.mean(0) @ truth.mean(0), mean_norms)),
        }


def step_cost(estimator: Estimator, theta: Theta, key: jax.Array, *, repeats: int = 20) -> dict:
    """Memory and time of one meta-step (``estimate``) of ``estimator``, compiled.

    Returns:
      ``compile_seconds``; ``seconds_per_estimate`` (the median of ``repeats`` calls
      after a warm-up, each finished with ``block_until_ready``, so that a busy machine
      skews it less than a mean); and from the compiled
      program's memory analysis ``temp_bytes``, ``argument_bytes``, ``output_bytes``
      and ``total_bytes`` (arguments + outputs + temporaries − aliased), each None
      where the backend reports no analysis.

    Example:
      >>> import jax
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> p = quadratic_learning_rates(dim=3)
      >>> est = make_estimator(p, "tbptt", truncation=2, horizon=4)
      >>> cost = step_cost(est, p.theta, jax.random.key(0), repeats=1)
      >>> cost["seconds_per_estimate"] > 0
      True
    """
    repeats = checks.positive_int("repeats", repeats)
    state = estimator.init(theta, key)
    start = time.perf_counter()
    compiled = jax.jit(estimator.estimate).lower(theta, state, key).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(theta, state, key))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(theta, state, key))
        times.append(time.perf_counter() - start)
    try:
        memory = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):  # backends without an analysis
        memory = None

    def field(name: str) -> int | None:
        value = getattr(memory, name, None)
        return None if value is None else int(value)

    sizes = {
        "temp_bytes": field("temp_size_in_bytes"),
        "argument_bytes": field("argument_size_in_bytes"),
        "output_bytes": field("output_size_in_bytes"),
    }
    alias = field("alias_size_in_bytes") or 0
    known = [v for v in sizes.values() if v is not None]
    total = sum(known) - alias if len(known) == len(sizes) else None
    return {
        "compile_seconds": compile_seconds,
        "seconds_per_estimate": float(np.median(times)),
        **sizes,
        "total_bytes": total,
    }


def _int_list(name: str, values: Any) -> list[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive integers, got {values!r}")
    if not values:
        raise ValueError(f"{name} must not be empty")
    return sorted({checks.positive_int(f"{name}[{i}]", v) for i, v in enumerate(values)})


def _check_report_args(problem, estimators, truncations, horizons, options):
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a diagnostics Problem, got {type(problem).__name__}")
    checks.float_tree("problem.theta", problem.theta)
    estimators = diagnosable() if estimators is None else estimators
    if isinstance(estimators, str) or not isinstance(estimators, Sequence):
        raise TypeError(f"estimators must be a sequence of names, got {estimators!r}")
    if not estimators:
        raise ValueError("estimators must not be empty")
    unknown = [e for e in estimators if e not in diagnosable()]
    if unknown:
        raise ValueError(f"estimators must be among {list(diagnosable())}, got unknown {unknown}")
    truncations, horizons = _int_list("truncations", truncations), _int_list("horizons", horizons)
    for h in horizons:
        bad = [k for k in truncations if k > h or h % k]
        if bad:
            raise ValueError(
                f"every truncation must divide every horizon; truncations {bad} do not "
                f"divide horizons entry {h}"
            )
    options = dict(options or {})
    extra = sorted(set(options) - set(estimators))
    if extra:
        raise ValueError(f"options names estimators not in estimators: {extra}")
    for name, opts in options.items():
        if not isinstance(opts, Mapping):
            raise TypeError(f"options[{name!r}] must be a mapping of factory arguments")
        reserved = sorted(set(opts) & set(RESERVED_OPTIONS))
        if reserved:
            raise ValueError(f"options[{name!r}] may not set {reserved}: the report sets them")
    return list(dict.fromkeys(estimators)), truncations, horizons, options


def estimator_report(
    problem: Problem | None = None,
    estimators: Sequence[str] | None = None,
    truncations: Sequence[int] = (5, 10, 20),
    horizons: Sequence[int] = (100,),
    *,
    num_particles: int = 32,
    key: jax.Array | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    measure_cost: bool = True,
) -> list[dict[str, Any]]:
    """Bias, variance, cosine, memory and time of each estimator over a sweep.

    Args:
      problem: where to measure; :func:`~metaopt.diagnostics.quadratic_learning_rates`
        if None.
      estimators: names among :func:`~metaopt.diagnostics.gradients.diagnosable`
        (``"full_bptt"`` is the exact reference); all of them if None.
      truncations: truncation lengths ``K``; each must divide every horizon.
      horizons: horizons ``H``; every pair ``(K, H)`` is measured.
      num_particles: ``R >= 2`` independent estimates per setting, each on its own
        tasks (the same tasks for every estimator and setting).
      key: the particles' keys derive from it; ``jax.random.key(0)`` if None.
      options: extra factory arguments per estimator, e.g. ``{"pes": {"std": 0.05}}``
        (ES, PES and NRES default to ``std=0.01``).
      measure_cost: also compile and time one meta-step of each (:func:`step_cost`).

    Returns:
      One dict per (estimator, truncation, horizon): the setting, ``num_particles``,
      ``num_tasks``, ``estimates_per_horizon``, the statistics of :func:`summarize` and,
      with ``measure_cost``, those of :func:`step_cost` plus ``seconds_per_horizon``
      (measured once per estimator and ``K``: a truncated meta-step's program does
      not depend on ``H``; full BPTT's once per ``H``).
      ``full_bptt`` does not depend on ``K``: its rows repeat per ``K`` as a reference.

    Example:
      >>> from metaopt.diagnostics.problems import quadratic_learning_rates
      >>> rows = estimator_report(quadratic_learning_rates(dim=3, num_tasks=2),
      ...     ("tbptt",), (4,), (4,), num_particles=2, measure_cost=False)
      >>> row = rows[0]  # truncated BPTT over the whole horizon is exact
      >>> row["estimator"], row["relative_bias"] < 1e-4, round(row["cosine_mean"], 4)
      ('tbptt', True, 1.0)
    """
    problem = quadratic_learning_rates() if problem is None else problem
    estimators, truncations, horizons, options = _check_report_args(
        problem, estimators, truncations, horizons, options
    )
    num_particles = checks.positive_int("num_particles", num_particles)
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 for a variance, got {num_particles}")
    key = jax.random.key(0) if key is None else checks.prng_key("key", key)
    keys = jax.random.split(key, num_particles)
    rows, cache = [], {}
    for h in horizons:
        for k in truncations:
            truths = particle_truths(problem, keys, truncation=k, horizon=h)
            for name in estimators:
                kw = dict(truncation=k, horizon=h, options=options.get(name))
                estimates, cost = _measure(problem, name, keys, key, kw, measure_cost, cache)
                per_horizon = 1 if name == "full_bptt" else h // k
                row = {"estimator": name, "truncation": k, "horizon": h}
                row |= {"num_particles": num_particles, "num_tasks": problem.num_tasks}
                row |= {"estimates_per_horizon": per_horizon, **summarize(estimates, truths)}
                if cost is not None:
                    row |= cost | {
                        "seconds_per_horizon": cost["seconds_per_estimate"] * per_horizon
                    }
                rows.append(row)
    return rows


def _measure(problem, name, keys, key, kw, measure_cost, cache):
    """The particles' estimates and the meta-step's cost, each computed once per program."""
    k, h = kw["truncation"], kw["horizon"]
    setting = (name, h) if name == "full_bptt" else (name, k, h)
    if setting not in cache:
        cache[setting] = particle_estimates(problem, name, keys, **kw)
    # A truncated meta-step's program does not depend on the horizon.
    cost_setting = ("cost", *setting[:2])
    if measure_cost and cost_setting not in cache:
        est = make_estimator(problem, name, **kw)
        cache[cost_setting] = step_cost(est, problem.theta, jax.random.fold_in(key, 2))
    return cache[setting], cache.get(cost_setting)


def format_report(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`estimator_report` rows.

    Example:
      >>> table = format_report([{"estimator": "tbptt", "truncation": 5, "horizon": 10,
      ...     "relative_bias": 0.25, "relative_bias_stderr": 0.0, "relative_variance": 0.5,
      ...     "cosine_mean": 0.9, "cosine_std": 0.05}])
      >>> table.splitlines()[1].split()[:6]
      ['tbptt', '5', '10', '0.25', '(±', '0)']
    """

    def num(row, name, fmt, scale=1.0):
        value = row.get(name)
        return "-" if value is None else format(value * scale, fmt)

    head = (
        f"{'estimator':<10} {'K':>4} {'H':>5}  {'rel. bias (± s.e.)':<18}  {'rel. var':>8}  "
        f"{'cosine (± std)':<14}  {'temp MB':>7}  {'ms/step':>7}  {'ms/horizon':>10}  compile s"
    )
    lines = [head]
    for r in rows:
        bias = f"{r['relative_bias']:.3g} (± {r['relative_bias_stderr']:.2g})"
        cosine = f"{r['cosine_mean']:.3f} ± {r['cosine_std']:.3f}"
        lines.append(
            f"{r['estimator']:<10} {r['truncation']:>4} {r['horizon']:>5}  {bias:<18}  "
            f"{r['relative_variance']:>8.3g}  {cosine:<14}  "
            f"{num(r, 'temp_bytes', '.3f', 1e-6):>7}  "
            f"{num(r, 'seconds_per_estimate', '.2f', 1e3):>7}  "
            f"{num(r, 'seconds_per_horizon', '.2f', 1e3):>10}  "
            f"{num(r, 'compile_seconds', '.2f'):>9}"
        )
    return "\n".join(lines)
