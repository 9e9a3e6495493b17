"""Memory of second-order MAML against the number of inner steps, per remat policy.

Second-order MAML (:func:`metaopt.maml`, Finn et al. 2017) differentiates the query
loss through every inner update, so without rematerialization the backward pass holds
every inner step's residuals and memory grows linearly with the inner steps K.
``remat="step"`` stores one carry (the inner params) per step and recomputes the step;
``remat="nested"`` checkpoints segments of about √K steps (Griewank and Walther 2000;
Chen et al. 2016). First-order MAML (``first_order=True``, no remat) is the reference.

The script compiles ``jax.jit(est.estimate)`` for a meta-batch of sinusoid tasks
(:func:`metaopt.sinusoid_family`) with a learned initialization trained by plain SGD,
and records the compiled program's ``memory_analysis()``: temporary bytes (what the
program allocates while running), argument and output bytes, and the compile time.
Compiling allocates nothing, so configurations too large to run are reported too. Two
networks: the paper's MLP 1-40-40-1, and a wide 1-400-400-1 whose inner params are
about 100 times larger, where the no-remat curve reaches gigabytes.

Then each policy's program at a moderate K is run (after ``block_until_ready``, a few
repeats; median and spread) to measure the time remat costs in steady state, apart from
compile time, and the meta-gradients of the policies are compared. The policies take
turns call by call, and CPU seconds are recorded beside wall seconds, so that other
processes' load on the machine skews the comparison less.

The inner learning rate is 0.001, not the library's default 0.01 (the paper's): from a
randomly (He-) initialized θ, SGD(0.01) diverges within a few inner steps on these
networks (query loss ~1e14 by K=10 on 1-40-40-1, NaN by K=5 on 1-400-400-1), so the
timed runs would compute NaNs and the gradient comparison would say nothing. The
learning rate is a constant of the program and does not change its memory.

Run: python benchmarks/maml_memory.py [--steps 1 5 10 25 50 100 200]
    [--wide-steps 10 50 200] [--time-steps 50] [--repeats 5] [--inner-lr 0.001]
"""

import argparse
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import metaopt as mo
from common import write

POLICIES = ("none", "step", "nested")
ROWS = (*POLICIES, "fomaml")  # fomaml: first order, remat="none"
MIB = 2**20


def build(case: dict, steps: int, row: str):
    """The MAML estimator of ``row`` and its inputs ``(theta, state, key)``."""
    family = mo.sinusoid_family(
        shots=case["shots"], query_shots=case["shots"], hidden_sizes=case["hidden"]
    )
    learner = mo.learned_initialization(family, optax.sgd(case["inner_lr"]))
    first_order = row == "fomaml"
    est = mo.maml(
        learner,
        family,
        num_tasks=case["tasks"],
        inner_steps=steps,
        first_order=first_order,
        remat="none" if first_order else row,
    )
    theta = learner.init(jax.random.key(0))
    return est, (theta, est.init(theta, jax.random.key(1)), jax.random.key(2))


def compile_estimate(case: dict, steps: int, row: str):
    """The compiled estimate, its inputs, and a row of its memory analysis."""
    est, args = build(case, steps, row)
    start = time.perf_counter()
    lowered = jax.jit(est.estimate).lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    m = compiled.memory_analysis()
    record = {
        "case": case["name"],
        "inner_steps": steps,
        "remat": "none" if row == "fomaml" else row,
        "second_order": row != "fomaml",
        "row": row,
        "temp_bytes": m.temp_size_in_bytes,
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "lower_seconds": lowered_at - start,
        "compile_seconds": done - lowered_at,
    }
    return compiled, args, record


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_runs(programs: dict, repeats: int) -> dict[str, dict]:
    """Wall and CPU seconds of each program's first call and of its steady-state calls.

    The programs take turns, one call each per round, so that load from other
    processes on the machine falls on all of them alike. CPU seconds (user and system,
    summed over XLA's threads) are less affected by such load than wall seconds.
    """
    out = {}
    for name, (compiled, args) in programs.items():
        start = time.perf_counter()
        grad, _, metrics = compiled(*args)
        jax.block_until_ready(grad)
        out[name] = {
            "first_call_seconds": time.perf_counter() - start,
            "seconds": [],
            "cpu_seconds": [],
            "meta_loss": float(metrics["meta_loss"]),
            "grad": jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad)]),
        }
    for _ in range(repeats):
        for name, (compiled, args) in programs.items():
            cpu, start = cpu_seconds(), time.perf_counter()
            jax.block_until_ready(compiled(*args))
            out[name]["seconds"].append(time.perf_counter() - start)
            out[name]["cpu_seconds"].append(cpu_seconds() - cpu)
    for timing in out.values():
        timing.update(
            median_seconds=statistics.median(timing["seconds"]),
            min_seconds=min(timing["seconds"]),
            max_seconds=max(timing["seconds"]),
            median_cpu_seconds=statistics.median(timing["cpu_seconds"]),
        )
    return out


def plot(cases: list[dict], curve: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4.5), squeeze=False)
    styles = {
        "none": ("tab:red", "-", "o"),
        "step": ("tab:blue", "-", "s"),
        "nested": ("tab:green", "-", "^"),
        "fomaml": ("tab:gray", "--", "x"),
    }
    for ax, case in zip(axes[0], cases, strict=True):
        for row in ROWS:
            rows = [r for r in curve if r["case"] == case["name"] and r["row"] == row]
            color, style, marker = styles[row]
            label = "first-order MAML (no remat)" if row == "fomaml" else f"MAML, remat={row}"
            ax.plot(
                [r["inner_steps"] for r in rows],
                [r["temp_bytes"] / MIB for r in rows],
                style,
                marker=marker,
                color=color,
                label=label,
            )
        sizes = "-".join(str(h) for h in (1, *case["hidden"], 1))
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="inner steps K",
            ylabel="compiled temp memory (MiB)",
            title=f"MAML, MLP {sizes}, {case['tasks']} tasks, {case['shots']} shots",
        )
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 25, 50, 100, 200])
    parser.add_argument("--wide-steps", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--tasks", type=int, default=25)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--wide-hidden", type=int, default=400)
    parser.add_argument("--inner-lr", type=float, default=0.001)
    parser.add_argument("--time-steps", type=int, default=50, help="K of the timed runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wide-repeats", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true", help="only compile")
    args = parser.parse_args()
    began, load_at_start = time.perf_counter(), os.getloadavg()

    shared = {"tasks": args.tasks, "shots": args.shots, "inner_lr": args.inner_lr}
    cases = [
        {"name": "paper", "hidden": (40, 40), **shared},
        {"name": "wide", "hidden": (args.wide_hidden, args.wide_hidden), **shared},
    ]
    cases[0].update(steps=args.steps, repeats=args.repeats)
    cases[1].update(steps=args.wide_steps, repeats=args.wide_repeats)

    curve, kept = [], {}
    print(
        f"{'case':>6} {'K':>4} {'row':>7} {'temp MiB':>10} {'args KiB':>9} "
        f"{'out KiB':>8} {'compile s':>9}"
    )
    for case in cases:
        for steps in case["steps"]:
            for row in ROWS:
                compiled, inputs, record = compile_estimate(case, steps, row)
                curve.append(record)
                if steps == args.time_steps and row in POLICIES:
                    kept[case["name"], row] = (compiled, inputs)
                print(
                    f"{case['name']:>6} {steps:>4} {row:>7} {record['temp_bytes'] / MIB:>10.2f} "
                    f"{record['argument_bytes'] / 2**10:>9.1f} "
                    f"{record['output_bytes'] / 2**10:>8.1f} {record['compile_seconds']:>9.2f}",
                    flush=True,
                )

    ratios = {}
    for case in cases:
        largest = max(case["steps"])
        at = {
            r["row"]: r["temp_bytes"]
            for r in curve
            if r["case"] == case["name"] and r["inner_steps"] == largest
        }
        ratios[case["name"]] = {
            "inner_steps": largest,
            "none_over_nested": at["none"] / at["nested"],
            "none_over_step": at["none"] / at["step"],
            "none_over_fomaml": at["none"] / at["fomaml"],
        }
        print(
            f"{case['name']}, K={largest}: none/nested {at['none'] / at['nested']:.1f}x, "
            f"none/step {at['none'] / at['step']:.1f}x, "
            f"second/first order (no remat) {at['none'] / at['fomaml']:.1f}x"
        )

    timings = []
    if not args.skip_run:
        print(f"\nsteady-state time of one estimate at K={args.time_steps} (after compile)")
        print(
            f"{'case':>6} {'remat':>7} {'median s':>9} {'min s':>8} {'max s':>8} "
            f"{'vs none':>8} {'CPU s':>7} {'vs none':>8} {'1st call s':>10} "
            f"{'rel. grad diff':>15}"
        )
        for case in cases:
            programs = {}
            for remat in POLICIES:
                if (case["name"], remat) in kept:
                    programs[remat] = kept.pop((case["name"], remat))
                else:
                    programs[remat] = compile_estimate(case, args.time_steps, remat)[:2]
            results = time_runs(programs, case["repeats"])
            del programs
            base = results["none"]
            scale = jnp.max(jnp.abs(base["grad"]))
            for remat in POLICIES:
                timing = results[remat]
                diff = jnp.max(jnp.abs(timing["grad"] - base["grad"])) / scale
                timing.update(
                    case=case["name"],
                    inner_steps=args.time_steps,
                    remat=remat,
                    grad_norm=float(jnp.linalg.norm(timing["grad"])),
                    max_rel_grad_diff_vs_none=float(diff),
                    slowdown_vs_none=timing["median_seconds"] / base["median_seconds"],
                    cpu_slowdown_vs_none=timing["median_cpu_seconds"] / base["median_cpu_seconds"],
                )
                print(
                    f"{case['name']:>6} {remat:>7} {timing['median_seconds']:>9.4f} "
                    f"{timing['min_seconds']:>8.4f} {timing['max_seconds']:>8.4f} "
                    f"{timing['slowdown_vs_none']:>7.2f}x {timing['median_cpu_seconds']:>7.3f} "
                    f"{timing['cpu_slowdown_vs_none']:>7.2f}x "
                    f"{timing['first_call_seconds']:>10.4f} "
                    f"{timing['max_rel_grad_diff_vs_none']:>15.2e}",
                    flush=True,
                )
            for timing in results.values():
                del timing["grad"]
                timings.append(timing)

    record = {
        "config": {
            "estimator": "maml (second order) and fomaml (first order, remat none)",
            "learner": f"learned_initialization, inner optax.sgd({args.inner_lr})",
            "family": "sinusoid_family, query_shots = shots",
            "cases": cases,
            "time_steps": args.time_steps,
        },
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "total_seconds": time.perf_counter() - began,
        "curve": curve,
        "ratios_at_largest_steps": ratios,
        "timings": timings,
    }
    path = write("maml_memory", record)
    plot(cases, curve, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')} ({record['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
