"""Bias, variance and cosine of meta-gradient estimators against the exact gradient.

On the default diagnostic problem (per-coordinate SGD learning rates on 10-d random
quadratics, where full-horizon backprop gives the exact meta-gradient), sweeps the
truncation length at horizon 100 and the horizon at truncation 10, for full BPTT (the
exact reference), truncated BPTT, ES and PES, with their memory and time per meta-step.
Writes the rows to benchmarks/results/estimator_diagnostics-<stamp>.json and the plot
next to it (.png).

Run: python benchmarks/estimator_diagnostics.py [--particles R]
"""

import argparse
import time

import jax

from common import write
from metaopt.diagnostics import estimator_report, format_report, plot_report
from metaopt.diagnostics.problems import quadratic_learning_rates

ESTIMATORS = ("full_bptt", "tbptt", "es", "pes")
TRUNCATIONS, HORIZON = (5, 10, 20, 50), 100
HORIZONS, TRUNCATION = (50, 100, 200), 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--num-tasks", type=int, default=4)
    parser.add_argument("--std", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    problem = quadratic_learning_rates(num_tasks=args.num_tasks)
    options = {"es": {"std": args.std}, "pes": {"std": args.std}}
    common = dict(num_particles=args.particles, key=jax.random.key(args.seed), options=options)
    start = time.perf_counter()
    rows = estimator_report(problem, ESTIMATORS, TRUNCATIONS, (HORIZON,), **common)
    other = tuple(h for h in HORIZONS if h != HORIZON)  # (K, H) = (10, 100) is done
    rows += estimator_report(problem, ESTIMATORS, (TRUNCATION,), other, **common)
    seconds = time.perf_counter() - start
    rows.sort(key=lambda r: (r["horizon"], r["truncation"], ESTIMATORS.index(r["estimator"])))

    print(format_report(rows))
    print(f"\n{seconds:.0f} s in all (compilation included)")
    path = write(
        "estimator_diagnostics",
        {
            "problem": {
                "learner": problem.learner.name,
                **problem.learner.config,
                "family": problem.family.name,
                "theta": {k: v.tolist() for k, v in problem.theta.items()},
                "num_tasks": problem.num_tasks,
                "second_order": problem.second_order,
                "objective": "mean",
            },
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
    print(f"wrote {path}\nwrote {png}")


if __name__ == "__main__":
    main()
