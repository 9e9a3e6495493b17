"""Learned optimizers against Adam on the held-out suite of metaopt.evaluation.suite.

Every optimizer trains each problem from seeds 1 and 2. Adam runs at every rate of a
half-decade grid from 1e-4 to 0.3: "adam_default" is its run at 1e-3 and "adam_tuned"
the rate with the lowest mean final full-data loss over those same seeds, an oracle
choice that makes tuned Adam as strong as the grid allows. Each learned optimizer runs
as a plain optax transformation with nothing to tune. Reports the mean final loss, the
ratio to tuned Adam and its geometric mean over problems (final losses below 1e-6 count
as 1e-6: solved), and plots the curves.

Run: python benchmarks/heldout_suite.py [--lopt NAME_OR_PATH ...] [--scale 0.1]
"""

import argparse
import math
import shutil
import time

import jax
import numpy as np
import optax

import metaopt as mo
from common import write
from metaopt.evaluation.suite import ADAM_GRID, heldout_problems, train_curve

SEEDS = (1, 2)
FLOOR = 1e-6  # final losses below this count as solved; every problem starts near 0.1–10


def run_problem(problem, learned: dict, points: int) -> dict:
    adam_run = jax.jit(lambda lr, key: train_curve(problem, optax.adam(lr), key, points=points))
    start = time.perf_counter()
    grid = {lr: [adam_run(lr, jax.random.key(s)) for s in SEEDS] for lr in ADAM_GRID}
    grid_finals = {lr: float(np.mean([float(c[-1]) for c in runs])) for lr, runs in grid.items()}
    tuned_lr = min(
        ADAM_GRID,
        key=lambda lr: grid_finals[lr] if math.isfinite(grid_finals[lr]) else math.inf,
    )
    default_lr = min(ADAM_GRID, key=lambda lr: abs(math.log(lr / 1e-3)))
    curves = {"adam_default": grid[default_lr], "adam_tuned": grid[tuned_lr]}
    for name, tx in learned.items():
        run = jax.jit(lambda key, tx=tx: train_curve(problem, tx, key, points=points))
        curves[name] = [run(jax.random.key(s)) for s in SEEDS]
    rows = {}
    for name, runs in curves.items():
        runs = np.asarray(jax.device_get(runs), np.float64)
        finals = runs[:, -1]
        rows[name] = {
            "final_loss_mean": float(finals.mean()),
            "final_losses": finals.tolist(),
            "finite": bool(np.isfinite(runs).all()),
            "curve_mean": runs.mean(axis=0).tolist(),
        }
    add_ratios(rows)
    return {
        "description": problem.description,
        "steps": problem.steps,
        "adam_grid": {f"{lr:.3g}": final for lr, final in grid_finals.items()},
        "tuned_lr": tuned_lr,
        "seconds": time.perf_counter() - start,
        "optimizers": rows,
    }


def add_ratios(rows: dict) -> None:
    """Each optimizer's final loss over tuned and default Adam's, losses floored at FLOOR.

    Below the floor a problem is solved and ratios of rounding noise mean nothing: a
    classifier's logistic loss can reach 1e-36, which would swamp a geometric mean.
    """
    floored = {name: max(row["final_loss_mean"], FLOOR) for name, row in rows.items()}
    for name, row in rows.items():
        row["over_tuned_adam"] = floored[name] / floored["adam_tuned"]
        row["over_default_adam"] = floored[name] / floored["adam_default"]


def summarize(problems: dict, names: list[str]) -> dict:
    out = {}
    for name in names:
        ratios = [p["optimizers"][name]["over_tuned_adam"] for p in problems.values()]
        better = [p["optimizers"][name]["over_default_adam"] < 1 for p in problems.values()]
        finite = all(p["optimizers"][name]["finite"] for p in problems.values())
        geo = math.exp(np.mean(np.log(ratios))) if finite and all(r > 0 for r in ratios) else None
        out[name] = {
            "geomean_over_tuned_adam": geo,
            "better_than_default_adam": int(sum(better)),
            "problems": len(problems),
            "all_finite": finite,
        }
    return out


def plot(problems: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(problems)
    cols = 3
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.2 * math.ceil(n / cols))
    )
    for ax, (name, p) in zip(np.ravel(axes), problems.items(), strict=False):
        for opt, row in p["optimizers"].items():
            curve = np.asarray(row["curve_mean"])
            steps = np.linspace(p["steps"] / len(curve), p["steps"], len(curve))
            label = f"adam {p['tuned_lr']:.0e}" if opt == "adam_tuned" else opt
            ax.plot(steps, curve, label=label)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in np.ravel(axes)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--lopt",
        nargs="*",
        default=None,
        help="pretrained names, .mopt files or LABEL=FILE (default: every shipped one)",
    )
    parser.add_argument("--json", default=None, help="also write the record to this path")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    parser.add_argument("--points", type=int, default=50, help="points per loss curve")
    parser.add_argument("--only", nargs="*", default=None, help="problem names to run")
    args = parser.parse_args()
    names = mo.pretrained_names() if args.lopt is None else args.lopt
    learned = {}
    for name in names:
        label, _, source = name.rpartition("=")
        learned[label or source] = mo.as_optax(*mo.load(source))
    labels = list(learned)
    problems = {}
    for problem in heldout_problems(args.scale):
        if args.only and problem.name not in args.only:
            continue
        problems[problem.name] = run_problem(problem, learned, args.points)
        row = problems[problem.name]
        print(f"\n{problem.name} ({problem.steps} steps): {problem.description}")
        print(f"  tuned Adam rate {row['tuned_lr']:.1e}  ({row['seconds']:.0f} s)")
        for opt, r in row["optimizers"].items():
            print(
                f"  {opt:<22} final {r['final_loss_mean']:.4g}  × tuned {r['over_tuned_adam']:.3g}"
                f"  × default {r['over_default_adam']:.3g}"
            )
    summary = summarize(problems, ["adam_default", *labels])
    print("\noptimizer              geomean × tuned Adam   better than Adam 1e-3   all finite")
    for name, s in summary.items():
        geo = (
            "n/a" if s["geomean_over_tuned_adam"] is None else f"{s['geomean_over_tuned_adam']:.3f}"
        )
        better = f"{s['better_than_default_adam']} of {s['problems']}"
        print(f"{name:<22} {geo:>20}   {better:>21}   {s['all_finite']}")
    path = write(
        "heldout_suite",
        {"seeds": list(SEEDS), "scale": args.scale, "summary": summary, "problems": problems},
    )
    plot(problems, path.with_suffix(".png"))
    if args.json:
        shutil.copyfile(path, args.json)
    print(f"\nwrote {path} and {path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
