"""Comparing optimizers on held-out tasks: tuned baselines, tables, plots, results.json."""

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.files import atomic_write
from metaopt.core.types import TaskFamily, with_data
from metaopt.evaluation.evaluate import (
    baseline_optimizers,
    final_loss_by_rate,
    log_grid,
    run_tasks,
    sample_tasks,
)

# The one place for the comparison's defaults: ``metaopt demo`` (quadratics) and
# ``metaopt eval`` both read them, so one optimizer file scores the same in either.
EVAL_TASKS = 256
"""Held-out tasks every optimizer is scored on."""
TUNE_TASKS = 256
"""Other tasks each baseline's learning rate is tuned on."""
RATE_GRID = (1e-4, 10.0, 26)
"""The baselines' learning rates: ``log_grid(*RATE_GRID)``."""


def comparison_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """The ``(tune, eval)`` keys ``metaopt eval`` and ``metaopt demo`` draw their tasks from.

    ``metaopt demo --seed S`` tunes and scores on the quadratics that ``metaopt eval
    --seed S`` does, so the optimizer file a demo writes scores the same in both.

    Example:
      >>> len(comparison_keys(0))
      2
    """
    k_tune, k_eval = jax.random.split(jax.random.key(int(seed)))
    return k_tune, k_eval


def compare_optimizers(
    learned: dict[str, optax.GradientTransformation],
    family: TaskFamily,
    tune_key: jax.Array,
    eval_key: jax.Array,
    *,
    num_eval_tasks: int = EVAL_TASKS,
    num_tune_tasks: int = TUNE_TASKS,
    num_steps: int = 100,
    learning_rates: np.ndarray | None = None,
    tune_family: TaskFamily | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates learned optimizers against SGD, NAG, RMSprop and Adam, each tuned.

    The baselines' learning rates are tuned on tasks drawn with ``tune_key`` from
    ``tune_family`` (``family`` if None; for a dataset, its validation split); every
    optimizer is then evaluated on the same tasks drawn with ``eval_key`` from
    ``family``: held-out task ``i`` is task ``i`` of ``sample_tasks(family, eval_key,
    num_eval_tasks)``. ``learning_rates`` defaults to ``log_grid(*RATE_GRID)``.

    Returns:
      A mapping ``name -> {"final_loss_mean", "final_loss_std", "curve_mean",
      "diverged_tasks", "diverged_task_indices", "num_eval_tasks"}``, the indices those
      of the held-out tasks whose loss curve is not finite; the baselines' entries also
      hold ``learning_rate`` (the tuned one), ``num_tune_tasks`` and ``learning_rates``
      (the grid).

    Example:
      >>> import jax, optax
      >>> from metaopt.tasks.quadratic import quadratic_family
      >>> res = compare_optimizers({"sgd_0.01": optax.sgd(0.01)}, quadratic_family(),
      ...     jax.random.key(0), jax.random.key(1), num_eval_tasks=4, num_tune_tasks=4,
      ...     num_steps=5, learning_rates=[1e-3, 1e-2])
      >>> sorted(res)
      ['adam', 'nag', 'rmsprop', 'sgd', 'sgd_0.01']

    """
    num_eval_tasks = checks.positive_int("num_eval_tasks", num_eval_tasks)
    num_tune_tasks = checks.positive_int("num_tune_tasks", num_tune_tasks)
    num_steps = checks.positive_int("num_steps", num_steps)
    rates = np.asarray(log_grid(*RATE_GRID) if learning_rates is None else learning_rates)
    if rates.ndim != 1 or rates.size == 0 or not np.all(np.isfinite(rates) & (rates > 0)):
        raise ValueError(f"learning_rates must be finite, positive and non-empty, got {rates}")
    baselines = baseline_optimizers()

    tune_family = family if tune_family is None else tune_family

    def run_all(tune_data, eval_data, tune_key, eval_key, rates):
        # One program for everything: compiling is the slow part on a CPU, and the
        # shared task sampling is traced once.
        tuning = with_data(tune_family, tune_data)
        evaluation = with_data(family, eval_data)
        tune_tasks = sample_tasks(tuning, tune_key, num_tune_tasks)
        eval_tasks = sample_tasks(evaluation, eval_key, num_eval_tasks)
        curves, chosen = {}, {}
        for name, tx in learned.items():
            curves[name] = run_tasks(evaluation, tx, eval_tasks, num_steps)
        for name, make_tx in baselines.items():
            finals = final_loss_by_rate(make_tx, tuning, tune_tasks, rates, num_steps)
            best = jnp.argmin(finals)
            curves[name] = run_tasks(evaluation, make_tx(rates[best]), eval_tasks, num_steps)
            chosen[name] = best
        return curves, chosen

    curves, chosen = jax.jit(run_all)(
        tune_family.data, family.data, tune_key, eval_key, jnp.asarray(rates, jnp.float32)
    )
    curves, chosen = jax.device_get((curves, chosen))

    results = {name: _summarize(curves[name]) for name in learned}
    for name in baselines:
        results[name] = _summarize(curves[name]) | {
            "learning_rate": float(rates[int(chosen[name])]),
            "num_tune_tasks": num_tune_tasks,
            "learning_rates": [float(r) for r in rates],
        }
    return results


def _summarize(curves: np.ndarray) -> dict[str, Any]:
    """One optimizer's entry of :func:`compare_optimizers` from its ``(tasks, steps)`` curves."""
    c = np.asarray(curves, np.float64)
    diverged = np.flatnonzero(~np.all(np.isfinite(c), axis=1))
    return {
        "final_loss_mean": float(np.mean(c[:, -1])),
        "final_loss_std": float(np.std(c[:, -1])),
        "curve_mean": [float(v) for v in np.mean(c, axis=0)],
        "diverged_tasks": int(diverged.size),
        "diverged_task_indices": [int(i) for i in diverged],
        "num_eval_tasks": int(c.shape[0]),
    }


def format_table(optimizers: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of final losses, best first, then what was tuned and what diverged.

    Entries from :func:`compare_optimizers` add a line saying how many tasks scored the
    optimizers and tuned the baselines, over which rates, and one line per optimizer
    that diverged: at which learning rate, on which held-out tasks (their indices).

    Example:
      >>> print(format_table({"a": {"final_loss_mean": 0.5, "final_loss_std": 0.1}}))
      optimizer   final loss (mean ± std)   learning rate
      a           0.5 ± 0.1                 -
      >>> print(format_table({"sgd": {"final_loss_mean": float("nan"), "final_loss_std": 0.0,
      ...     "learning_rate": 2.0, "diverged_tasks": 2, "diverged_task_indices": [3, 7],
      ...     "num_eval_tasks": 8}}))
      optimizer   final loss (mean ± std)   learning rate
      sgd         diverged on 2 of 8 tasks  2
      sgd diverged at learning rate 2 on held-out tasks 3, 7 (of 8)

    """

    def order(kv):
        loss = kv[1]["final_loss_mean"]
        return (not np.isfinite(loss), loss if np.isfinite(loss) else 0.0)

    lines = [f"{'optimizer':<11} {'final loss (mean ± std)':<25} learning rate"]
    for name, r in sorted(optimizers.items(), key=order):
        if np.isfinite(r["final_loss_mean"]):
            loss = f"{r['final_loss_mean']:.4g} ± {r['final_loss_std']:.3g}"
        else:
            count, of = r.get("diverged_tasks", "?"), r.get("num_eval_tasks", "?")
            loss = f"diverged on {count} of {of} tasks"
        lr = f"{r['learning_rate']:.3g}" if "learning_rate" in r else "-"
        lines.append(f"{name:<11} {loss:<25} {lr}")
    return "\n".join(lines + _protocol(optimizers) + _divergences(optimizers))


def _protocol(optimizers: dict[str, dict[str, Any]]) -> list[str]:
    """The line saying what scored and what tuned, where the entries record it."""
    tuned = [r for r in optimizers.values() if "num_tune_tasks" in r]
    scored = {r["num_eval_tasks"] for r in optimizers.values() if "num_eval_tasks" in r}
    if not tuned or len(scored) != 1:
        return []
    rates = tuned[0]["learning_rates"]
    return [
        f"scored on {scored.pop()} held-out tasks; baselines' learning rates tuned on "
        f"{tuned[0]['num_tune_tasks']} other tasks over {len(rates)} rates from "
        f"{min(rates):.3g} to {max(rates):.3g}"
    ]


def _divergences(optimizers: dict[str, dict[str, Any]], shown: int = 20) -> list[str]:
    """One line per optimizer with held-out tasks whose loss was not finite."""
    lines = []
    for name, r in optimizers.items():
        indices = r.get("diverged_task_indices") or []
        if not indices:
            continue
        listed = ", ".join(str(i) for i in indices[:shown])
        more = f", ... ({len(indices)} in all)" if len(indices) > shown else ""
        rate = f" at learning rate {r['learning_rate']:.3g}" if "learning_rate" in r else ""
        total = f" (of {r['num_eval_tasks']})" if "num_eval_tasks" in r else ""
        lines.append(f"{name} diverged{rate} on held-out tasks {listed}{more}{total}")
    return lines


def plot_curves(
    path: str | os.PathLike, optimizers: dict[str, dict[str, Any]], title: str = ""
) -> None:
    """Writes the mean loss curves on a log scale to ``path`` (PNG), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for name, r in optimizers.items():
        curve = np.asarray(r["curve_mean"])
        tuned = "learning_rate" in r
        label = f"{name} (lr {r['learning_rate']:.2g})" if tuned else name
        ax.plot(np.arange(len(curve)), curve, label=label, lw=1.4 if tuned else 2.4)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
