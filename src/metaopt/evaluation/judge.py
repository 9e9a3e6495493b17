"""Judging optimizers on a suite of scored problems: baselines tuned, candidates run, ratios.

:func:`judge_problem` tunes each baseline's rate on the tuning seed
(:data:`~metaopt.evaluation.scoring.TUNING_SEED`), then runs every baseline at its rate and
every candidate from the evaluation seeds. :func:`summarize_suite` reports, per
optimizer, the geometric mean over problems of its final held-out loss over tuned
AdamW's, on how many problems it ends below Adam at 1e-3, and whether every run stayed
finite.
"""

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optax

from metaopt.evaluation.scoring import (
    TUNING_SEED,
    ScoredProblem,
    baselines,
    best_rate,
    runner,
    summarize_runs,
)

EVAL_SEEDS = (1, 2, 3)
REFERENCE = "adamw_tuned"
DEFAULT = "adam_1e-3"


def judge_problem(
    problem: ScoredProblem,
    candidates: Mapping[str, optax.GradientTransformation],
    *,
    seeds: Sequence[int] = EVAL_SEEDS,
    points: int = 20,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Every baseline (tuned) and every candidate on ``problem``, summarized per optimizer.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from metaopt.evaluation.scoring import stateless
      >>> prob = ScoredProblem("q", "", lambda k: (jnp.ones(3), ()),
      ...     stateless(lambda p, k: jnp.sum(p**2)), lambda p, s: jnp.sum(p**2),
      ...     lambda p, s: jnp.sum(p**2), steps=20, muon=False)
      >>> out = judge_problem(prob, {"sgd": optax.sgd(0.1)}, seeds=(1,), points=2)
      >>> sorted(out["optimizers"]), out["rates"]["adam_1e-3"]
      (['adam_1e-3', 'adamw_tuned', 'sgd'], 0.001)
    """
    start = time.perf_counter()
    rates, grids, rows = {}, {}, {}
    for name, base in baselines(problem).items():
        extra = () if base.after is None else (rates[base.after],)
        run = runner(problem, base.make, points)
        if len(base.grid) > 1:
            grids[name] = {r: float(run((r, *extra), TUNING_SEED).heldout[-1]) for r in base.grid}
            rate = best_rate(grids[name])
            edge = " (grid edge)" if rate in (base.grid[0], base.grid[-1]) else ""
            log(f"  {name}: rate {rate:.0e}{edge}")
        else:
            rate = base.grid[0]
        rates[name] = rate
        rows[name] = summarize_runs([run((rate, *extra), s) for s in seeds])
    for name, tx in candidates.items():
        run = runner(problem, lambda tx=tx: tx, points)
        rows[name] = summarize_runs([run((), s) for s in seeds])
    add_ratios(rows)
    return {
        "description": problem.description,
        "steps": problem.steps,
        "pair": list(problem.pair),
        "rates": rates,
        "grids": {n: {f"{r:.0e}": v for r, v in g.items()} for n, g in grids.items()},
        "seconds": time.perf_counter() - start,
        "optimizers": rows,
    }


def add_ratios(rows: dict) -> None:
    """Adds each optimizer's final held-out loss over tuned AdamW's and over Adam 1e-3's."""
    for row in rows.values():
        row["over_tuned_adamw"] = row["heldout_final"] / rows[REFERENCE]["heldout_final"]
        row["over_adam_1e-3"] = row["heldout_final"] / rows[DEFAULT]["heldout_final"]


def summarize_suite(problems: Mapping[str, dict]) -> dict:
    """Per optimizer: geometric-mean ratio to tuned AdamW, wins over Adam 1e-3, all finite.

    An optimizer missing from a problem is left out of the summary.

    Example:
      >>> rows = {"adamw_tuned": {"over_tuned_adamw": 1.0, "over_adam_1e-3": 0.5,
      ...     "finite": True}, "adam_1e-3": {"over_tuned_adamw": 2.0, "over_adam_1e-3": 1.0,
      ...     "finite": True}}
      >>> summarize_suite({"p": {"optimizers": rows}})["adam_1e-3"]["geomean_over_tuned_adamw"]
      2.0
    """
    names = set.intersection(*(set(p["optimizers"]) for p in problems.values()))
    order = [n for n in next(iter(problems.values()))["optimizers"] if n in names]
    out = {}
    for name in order:
        rows = [p["optimizers"][name] for p in problems.values()]
        ratios = np.asarray([r["over_tuned_adamw"] for r in rows])
        finite = all(r["finite"] for r in rows) and bool(np.all(ratios > 0))
        out[name] = {
            "geomean_over_tuned_adamw": float(np.exp(np.log(ratios).mean())) if finite else None,
            "better_than_adam_1e-3": int(sum(r["over_adam_1e-3"] < 1 for r in rows)),
            "problems": len(rows),
            "all_finite": all(r["finite"] for r in rows),
        }
    return out


def format_summary(summary: Mapping[str, dict]) -> str:
    """The summary as a plain-text table."""
    lines = [f"{'optimizer':<22} {'geomean × tuned AdamW':>22} {'< Adam 1e-3':>12} {'finite':>7}"]
    for name, s in summary.items():
        geo = s["geomean_over_tuned_adamw"]
        geo = "n/a" if geo is None or not math.isfinite(geo) else f"{geo:.3f}"
        wins = f"{s['better_than_adam_1e-3']} of {s['problems']}"
        lines.append(f"{name:<22} {geo:>22} {wins:>12} {s['all_finite']!s:>7}")
    return "\n".join(lines)
