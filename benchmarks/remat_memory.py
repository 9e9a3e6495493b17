"""Memory of full-horizon BPTT against the horizon, with each rematerialization policy.

Full-horizon BPTT (:func:`metaopt.full_bptt`) differentiates through every inner step,
so without rematerialization its backward pass holds every step's residuals: memory
grows linearly with the horizon. ``remat="step"`` stores one carry per step and
recomputes the step; ``remat="nested"`` checkpoints segments of about √horizon steps,
holding about 2√horizon carries and one segment's residuals (Griewank and Walther
2000; Chen et al. 2016). This script compiles the meta-gradient (``estimate``) of the
LSTM optimizer on 10-dimensional quadratics, 8 tasks, horizons 10 to 1000, first and
second order, and records the compiled program's ``memory_analysis()``: temporary
bytes (what the program allocates while running), argument and output bytes.
Compiling allocates nothing, so it also reports configurations too large to run.

Then one configuration where second-order meta-gradients without rematerialization
would need more memory than this machine has: 1000-dimensional quadratics (each task
carries its 1000×1000 matrix, so every stored carry is 4 MB), 6 tasks, horizon 1000.
The nested-remat program, which fits, is run once to show that it does.

Run: python benchmarks/remat_memory.py [--horizons 10 30 100 300 1000] [--skip-run]
"""

import argparse
import os
import resource
import time

import jax
import optax

import metaopt as mo
from common import write

POLICIES = ("none", "step", "nested")
GIB = 2**30


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def compile_estimate(dim: int, tasks: int, horizon: int, remat: str, second_order: bool):
    """The compiled full-BPTT estimate, its inputs, and its memory analysis."""
    learner = mo.learned_optimizer(mo.lstm_optimizer())
    est = mo.full_bptt(
        learner,
        mo.quadratic_family(dim=dim),
        num_tasks=tasks,
        horizon=horizon,
        remat=remat,
        second_order=second_order,
    )
    theta = learner.init(jax.random.key(0))
    args = (theta, est.init(theta, jax.random.key(1)), jax.random.key(2))
    start = time.perf_counter()
    compiled = jax.jit(est.estimate).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    row = {
        "dim": dim,
        "tasks": tasks,
        "horizon": horizon,
        "remat": remat,
        "second_order": second_order,
        "temp_bytes": m.temp_size_in_bytes,
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "generated_code_bytes": m.generated_code_size_in_bytes,
        "compile_seconds": compile_seconds,
    }
    return compiled, args, row


def plot(curve: list[dict], large: list[dict], ran: dict | None, limit: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(POLICIES, ("tab:red", "tab:blue", "tab:green"), strict=True))
    for remat in POLICIES:
        for second_order, style, marker in ((False, "-", "o"), (True, "--", "x")):
            rows = [r for r in curve if r["remat"] == remat and r["second_order"] == second_order]
            ax.plot(
                [r["horizon"] for r in rows],
                [r["temp_bytes"] / 2**20 for r in rows],
                style,
                marker=marker,
                color=colors[remat],
                label=f"{remat}, {'second' if second_order else 'first'} order",
            )
    c = curve[0]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="horizon (inner steps)",
        ylabel="compiled temp memory (MiB)",
        title=f"full BPTT, LSTM, {c['tasks']} quadratics of dim {c['dim']}",
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    names = [r["remat"] for r in large]
    bx.bar(names, [r["temp_bytes"] / GIB for r in large], color=[colors[n] for n in names])
    bx.axhline(limit / GIB, color="k", linestyle=":", label=f"machine memory {limit / GIB:.1f} GiB")
    if ran is not None:
        bx.axhline(
            ran["peak_rss_bytes"] / GIB,
            color="tab:green",
            linestyle="--",
            label=f"peak RSS running nested ({ran['seconds']:.0f} s)",
        )
    r = large[0]
    bx.set(
        ylabel="compiled temp memory (GiB)",
        title=f"second order, {r['tasks']} quadratics of dim {r['dim']}, horizon {r['horizon']}",
    )
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--horizons", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--large-dim", type=int, default=1000)
    parser.add_argument("--large-tasks", type=int, default=6)
    parser.add_argument("--large-horizon", type=int, default=1000)
    parser.add_argument("--skip-run", action="store_true", help="only compile the large case")
    args = parser.parse_args()
    limit = machine_memory_bytes()

    curve = []
    header = f"{'horizon':>7} {'remat':>6} {'order':>5} {'temp MiB':>10} {'args KiB':>9}"
    print(f"{header} {'compile s':>9}")
    for horizon in args.horizons:
        for remat in POLICIES:
            for second_order in (False, True):
                _, _, row = compile_estimate(10, args.tasks, horizon, remat, second_order)
                curve.append(row)
                print(
                    f"{horizon:>7} {remat:>6} {2 if second_order else 1:>5} "
                    f"{row['temp_bytes'] / 2**20:>10.2f} {row['argument_bytes'] / 2**10:>9.1f} "
                    f"{row['compile_seconds']:>9.2f}",
                    flush=True,
                )

    large, nested = [], None
    for remat in POLICIES:
        compiled, inputs, row = compile_estimate(
            args.large_dim, args.large_tasks, args.large_horizon, remat, True
        )
        row["fits_in_machine_memory"] = row["temp_bytes"] + row["argument_bytes"] < limit
        large.append(row)
        if remat == "nested":
            nested = (compiled, inputs)
        print(
            f"dim {args.large_dim}, {args.large_tasks} tasks, horizon {args.large_horizon}, "
            f"second order, remat={remat}: temp {row['temp_bytes'] / GIB:.2f} GiB "
            f"({'fits' if row['fits_in_machine_memory'] else 'does not fit'} in "
            f"{limit / GIB:.1f} GiB)",
            flush=True,
        )

    ran = None
    if not args.skip_run:
        compiled, inputs = nested
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        grad, _, metrics = compiled(*inputs)
        jax.block_until_ready(grad)
        seconds = time.perf_counter() - start
        ran = {
            "remat": "nested",
            "seconds": seconds,
            "meta_loss": float(metrics["meta_loss"]),
            "grad_norm": float(optax.tree.norm(grad)),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_rss_bytes_before_run": rss_before,
        }
        print(
            f"ran remat=nested once: {seconds:.1f} s, meta-loss {ran['meta_loss']:.4f}, "
            f"peak RSS {ran['peak_rss_bytes'] / GIB:.2f} GiB"
        )

    record = {
        "config": {
            "lopt": "lstm 2x20",
            "estimator": "full_bptt",
            "curve_family": "quadratic dim=10",
            "curve_tasks": args.tasks,
            "large": {
                "dim": args.large_dim,
                "tasks": args.large_tasks,
                "horizon": args.large_horizon,
                "second_order": True,
            },
        },
        "machine_memory_bytes": limit,
        "curve": curve,
        "large": large,
        "large_nested_run": ran,
    }
    path = write("remat_memory", record)
    plot(curve, large, ran, limit, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
