"""Bias, variance and cosine of meta-gradient estimators against the exact gradient.

On the default diagnostic problem (per-coordinate SGD learning rates on 10-d random
quadratics, where full-horizon backprop gives the exact meta-gradient), sweeps the
truncation length at horizon 100 and the horizon at truncation 10, for full BPTT (the
exact reference), truncated BPTT, ES, PES and NRES, with their memory and time per
meta-step. 4096 particles (each 4 tasks, one antithetic pair per task) make the
standard error of PES's and NRES's relative bias about 0.05, so their bias is told
apart from truncated BPTT's (0.25 to 0.8).

Then (``--part windows``) one meta-step's estimate, window by window
(``window_report``), for PES and NRES at the same truncation, tasks and pairs, so at
equal compute: each window's error variance, measured over 2048 particles and predicted
from exact per-window derivatives on the first 256 particles' tasks
(``predicted_error_variance``). The sweep writes
benchmarks/results/estimator_diagnostics-<stamp>.json and its plot (.png); the windows
part estimator_diagnostics_windows-<stamp>.json and the PES/NRES variance plot (.png).

Run: python benchmarks/estimator_diagnostics.py [--part sweep|windows|all] [--particles R]
"""

import argparse
import time

import jax
import numpy as np

from common import write
from metaopt.diagnostics import estimator_report, format_report, plot_report, window_report
from metaopt.diagnostics.problems import quadratic_learning_rates

ESTIMATORS = ("full_bptt", "tbptt", "es", "pes", "nres")
TRUNCATIONS, HORIZON = (5, 10, 20, 50), 100
HORIZONS, TRUNCATION = (50, 100, 200), 10
ANTITHETIC = ("es", "pes", "nres")


def window_summary(rows: list[dict]) -> list[dict]:
    """Per estimator and truncation: the mean over windows of the error variance."""
    out = []
    for name in dict.fromkeys(r["estimator"] for r in rows):
        for k in sorted({r["truncation"] for r in rows}):
            own = [r for r in rows if r["estimator"] == name and r["truncation"] == k]
            measured = np.array([r["error_variance"] for r in own])
            stderr = np.array([r["error_variance_stderr"] for r in own])
            out.append(
                {
                    "estimator": name,
                    "truncation": k,
                    "horizon": own[0]["horizon"],
                    "function_steps": own[0]["function_steps"],
                    "mean_error_variance": float(measured.mean()),
                    # Windows share particles, so their errors are not independent: the
                    # mean's standard error is at most the mean of theirs.
                    "mean_error_variance_stderr_bound": float(stderr.mean()),
                    "mean_predicted_error_variance": float(
                        np.mean([r["predicted_error_variance"] for r in own])
                    ),
                }
            )
    return out


def plot_variance(windows: list[dict], summary: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    colors = {"pes": "C2", "nres": "C3"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    ax = axes[0]
    for name, color in colors.items():
        own = [r for r in windows if r["estimator"] == name and r["truncation"] == TRUNCATION]
        w = np.array([r["window"] for r in own])
        ax.errorbar(
            w,
            [r["error_variance"] for r in own],
            yerr=[r["error_variance_stderr"] for r in own],
            fmt="o",
            ms=4,
            capsize=3,
            color=color,
            label=f"{name.upper()} measured ± s.e.",
        )
        ax.plot(w, [r["predicted_error_variance"] for r in own], "-", color=color, alpha=0.6,
                label=f"{name.upper()} predicted")  # fmt: skip
    ax.set(
        yscale="log",
        xlabel=f"window (truncation of K = {TRUNCATION} in H = {HORIZON})",
        ylabel="error variance of one meta-step's estimate",
        title="per window, equal compute",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    for name, color in colors.items():
        own = [r for r in summary if r["estimator"] == name]
        k = [r["truncation"] for r in own]
        ax.errorbar(
            k,
            [r["mean_error_variance"] for r in own],
            yerr=[r["mean_error_variance_stderr_bound"] for r in own],
            fmt="o",
            capsize=3,
            color=color,
            label=f"{name.upper()} measured",
        )
        ax.plot(k, [r["mean_predicted_error_variance"] for r in own], "-", color=color,
                alpha=0.6, label=f"{name.upper()} predicted")  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=f"truncation K (H = {HORIZON}; PES and NRES: the same function steps)",
        ylabel="mean over windows of the error variance",
        title="one meta-step, averaged over the horizon's windows",
    )
    ax.set_xticks(TRUNCATIONS, [str(k) for k in TRUNCATIONS])
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=8)
    for ax in axes:
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def problem_record(problem) -> dict:
    return {
        "learner": problem.learner.name,
        **problem.learner.config,
        "family": problem.family.name,
        "theta": {k: v.tolist() for k, v in problem.theta.items()},
        "num_tasks": problem.num_tasks,
        "second_order": problem.second_order,
        "objective": "mean",
    }


def run_sweep(problem, options, args) -> None:
    common = dict(num_particles=args.particles, key=jax.random.key(args.seed), options=options)
    start = time.perf_counter()
    rows = estimator_report(problem, ESTIMATORS, TRUNCATIONS, (HORIZON,), **common)
    other = tuple(h for h in HORIZONS if h != HORIZON)  # (K, H) = (10, 100) is done
    rows += estimator_report(problem, ESTIMATORS, (TRUNCATION,), other, **common)
    rows.sort(key=lambda r: (r["horizon"], r["truncation"], ESTIMATORS.index(r["estimator"])))
    seconds = time.perf_counter() - start
    print(format_report(rows))
    print(f"\n{seconds:.0f} s (compilation included)\n", flush=True)
    path = write(
        "estimator_diagnostics",
        {
            "problem": problem_record(problem),
            "estimators": list(ESTIMATORS),
            "truncations_at_horizon": {"horizon": HORIZON, "truncations": list(TRUNCATIONS)},
            "horizons_at_truncation": {"truncation": TRUNCATION, "horizons": list(HORIZONS)},
            "num_particles": args.particles,
            "options": options,
            "seed": args.seed,
            "seconds": seconds,
            "rows": rows,
        },
    )
    png = path.with_suffix(".png")
    title = (
        f"Meta-gradient estimators vs the exact full-horizon gradient: per-coordinate SGD "
        f"learning rates on 10-d quadratics ({args.particles} particles × "
        f"{args.num_tasks} tasks, σ = {args.std})"
    )
    plot_report(rows, png, title=title)
    print(f"wrote {path}\nwrote {png}", flush=True)


def run_windows(problem, options, args) -> None:
    start = time.perf_counter()
    windows = []
    for k in TRUNCATIONS:
        windows += window_report(
            problem, ("pes", "nres"), k, HORIZON, num_particles=args.window_particles,
            key=jax.random.key(args.seed), options=options,
            predict_particles=args.predict_particles,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    summary = window_summary(windows)
    print(f"one meta-step's estimate, mean over the horizon's windows (H = {HORIZON}):")
    print("| K | function steps | PES error variance | NRES error variance | NRES / PES |")
    print("| --- | --- | --- | --- | --- |")
    for k in TRUNCATIONS:
        p, n = (next(r for r in summary if r["estimator"] == e and r["truncation"] == k)
                for e in ("pes", "nres"))  # fmt: skip
        print(
            f"| {k} | {p['function_steps']} | {p['mean_error_variance']:.4g} "
            f"(pred. {p['mean_predicted_error_variance']:.4g}) | {n['mean_error_variance']:.4g} "
            f"(pred. {n['mean_predicted_error_variance']:.4g}) | "
            f"{n['mean_error_variance'] / p['mean_error_variance']:.3f} |"
        )
    print(f"\n{seconds:.0f} s (compilation included)")
    path = write(
        "estimator_diagnostics_windows",
        {
            "problem": problem_record(problem),
            "estimators": ["pes", "nres"],
            "horizon": HORIZON,
            "truncations": list(TRUNCATIONS),
            "num_particles": args.window_particles,
            "predict_particles": args.predict_particles,
            "options": options,
            "seed": args.seed,
            "seconds": seconds,
            "rows": windows,
            "summary": summary,
        },
    )
    png = path.with_suffix(".png")
    plot_variance(windows, summary, png)
    print(f"wrote {path}\nwrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("sweep", "windows", "all"), default="all")
    parser.add_argument("--particles", type=int, default=4096, help="sweep particles")
    parser.add_argument("--window-particles", type=int, default=2048)
    parser.add_argument("--predict-particles", type=int, default=256)
    parser.add_argument("--num-tasks", type=int, default=4)
    parser.add_argument("--std", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    problem = quadratic_learning_rates(num_tasks=args.num_tasks)
    options = {name: {"std": args.std} for name in ANTITHETIC}
    if args.part in ("sweep", "all"):
        run_sweep(problem, options, args)
    if args.part in ("windows", "all"):
        run_windows(problem, options, args)


if __name__ == "__main__":
    main()
