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


def compare_optimizers(
    learned: dict[str, optax.GradientTransformation],
    family: TaskFamily,
    tune_key: jax.Array,
    eval_key: jax.Array,
    *,
    num_eval_tasks: int = 256,
    num_tune_tasks: int = 1024,
    num_steps: int = 100,
    learning_rates: np.ndarray | None = None,
    tune_family: TaskFamily | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates learned optimizers against SGD, NAG, RMSprop and Adam, each tuned.

    The baselines' learning rates are tuned on tasks drawn with ``tune_key`` from
    ``tune_family`` (``family`` if None; for a dataset, its validation split); every
    optimizer is then evaluated on the same tasks drawn with ``eval_key`` from
    ``family``.

    Returns:
      A mapping ``name -> {"final_loss_mean", "final_loss_std", "curve_mean"}``; the
      baselines' entries also hold ``learning_rate``.

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
    rates = np.asarray(log_grid(1e-4, 10.0, 26) if learning_rates is None else learning_rates)
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

    def summarize(c: np.ndarray) -> dict[str, Any]:
        c = np.asarray(c, np.float64)
        return {
            "final_loss_mean": float(np.mean(c[:, -1])),
            "final_loss_std": float(np.std(c[:, -1])),
            "curve_mean": [float(v) for v in np.mean(c, axis=0)],
            "diverged_tasks": int(np.sum(~np.all(np.isfinite(c), axis=1))),
        }

    results = {name: summarize(curves[name]) for name in learned}
    for name in baselines:
        lr = float(rates[int(chosen[name])])
        results[name] = summarize(curves[name]) | {"learning_rate": lr}
    return results


def format_table(optimizers: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of final losses, best first.

    Example:
      >>> print(format_table({"a": {"final_loss_mean": 0.5, "final_loss_std": 0.1}}))
      optimizer   final loss (mean ± std)   learning rate
      a           0.5 ± 0.1                 -

    """

    def order(kv):
        loss = kv[1]["final_loss_mean"]
        return (not np.isfinite(loss), loss if np.isfinite(loss) else 0.0)

    lines = [f"{'optimizer':<11} {'final loss (mean ± std)':<25} learning rate"]
    for name, r in sorted(optimizers.items(), key=order):
        if np.isfinite(r["final_loss_mean"]):
            loss = f"{r['final_loss_mean']:.4g} ± {r['final_loss_std']:.3g}"
        else:
            loss = f"diverged on {r.get('diverged_tasks', '?')} tasks"
        lr = f"{r['learning_rate']:.3g}" if "learning_rate" in r else "-"
        lines.append(f"{name:<11} {loss:<25} {lr}")
    return "\n".join(lines)


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
