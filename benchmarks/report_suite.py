"""An optimizer against tuned baselines on a suite scored by held-out loss.

By default the report suite (metaopt.evaluation.report_suite), which is run only to
report, never to choose; ``--suite selection`` runs the held-in selection suite
(metaopt.evaluation.selection) that design and checkpoint choices are made on. Each
problem's baselines are tuned on seed 0 (AdamW's constant rate, warmup-cosine AdamW's
peak where the problem asks for it, Muon's rate where it has weight matrices) and every
optimizer then trains from seeds 1-3. Prints, per problem and optimizer, the final
held-out loss (the score), the best held-out loss along the run, the final training loss
and the ratio to tuned AdamW; then the geometric mean of that ratio, on how many
problems each ends below Adam at 1e-3, and whether every run stayed finite. Writes JSON
and a PNG of the held-out curves under benchmarks/results/.

Run: python benchmarks/report_suite.py [--lopt versatile ...] [--suite report] [--quick]
"""

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

import metaopt as mo
from common import write
from metaopt.evaluation.judge import EVAL_SEEDS, format_summary, judge_problem, summarize_suite
from metaopt.evaluation.report_suite import report_problems
from metaopt.evaluation.selection import selection_problems

SUITES = {"report": report_problems, "selection": selection_problems}


def load_candidates(names: list[str]) -> dict:
    """``NAME`` (a pretrained name or .mopt file) or ``LABEL=FILE``, as optax transformations."""
    out = {}
    for name in names:
        label, _, source = name.rpartition("=")
        out[label or source] = mo.as_optax(*mo.load(source))
    return out


def print_problem(name: str, row: dict) -> None:
    rates = ", ".join(f"{n} {r:.0e}" for n, r in row["rates"].items() if n != "adam_1e-3")
    print(f"\n{name} ({row['steps']} steps, {row['seconds']:.0f} s): {row['description']}")
    print(f"  tuned on seed 0: {rates}")
    print(f"  {'optimizer':<20} {'held-out':>9} {'best':>9} {'train':>9} {'× AdamW':>8}  finite")
    for opt, r in row["optimizers"].items():
        print(
            f"  {opt:<20} {r['heldout_final']:>9.4f} {r['heldout_best']:>9.4f}"
            f" {r['train_final']:>9.4f} {r['over_tuned_adamw']:>8.3f}  {r['finite']}"
        )


def plot(problems: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = len(problems), 2
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows))
    # One colour per optimizer in every panel, whichever baselines a problem has.
    names = list(dict.fromkeys(o for p in problems.values() for o in p["optimizers"]))
    colours = {o: f"C{i}" for i, o in enumerate(names)}
    for ax, (name, p) in zip(np.ravel(axes), problems.items(), strict=False):
        for opt, row in p["optimizers"].items():
            curve = np.asarray(row["heldout_curve"])
            steps = np.linspace(p["steps"] / len(curve), p["steps"], len(curve))
            ax.plot(steps, curve, label=opt, lw=1.4, color=colours[opt])
        ax.set_yscale("log")
        ax.set_title(f"{name}: held-out loss", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in np.ravel(axes)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lopt", nargs="*", default=["orthogonal", "versatile"], help="optimizers to judge"
    )
    parser.add_argument("--suite", choices=sorted(SUITES), default="report")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --scale 0.02, 1 seed")
    parser.add_argument("--seeds", type=int, nargs="*", default=list(EVAL_SEEDS))
    parser.add_argument("--points", type=int, default=10, help="measures along each run")
    parser.add_argument(
        "--only", nargs="*", default=None, help="problem names to run, in this order"
    )
    parser.add_argument(
        "--combine",
        nargs="*",
        default=None,
        help="JSON records of runs of parts of a suite: "
        "writes one record and plot of all their problems, and runs nothing",
    )
    args = parser.parse_args()
    if args.combine:
        combine(args.combine)
        return
    if args.quick:
        args.scale, args.seeds = min(args.scale, 0.02), args.seeds[:1]
    candidates = load_candidates(args.lopt)
    chosen = {p.name: p for p in SUITES[args.suite](args.scale)}
    order = args.only or list(chosen)
    unknown = sorted(set(order) - set(chosen))
    if unknown:
        parser.error(f"--only: no problems named {unknown}; the suite has {sorted(chosen)}")
    record = {
        "suite": args.suite,
        "seeds": args.seeds,
        "tuning_seed": 0,
        "scale": args.scale,
        "candidates": args.lopt,
        "complete": False,
        "problems": {},
    }
    path = None
    for name in order:
        print(f"\n{name}: tuning and running ...", flush=True)
        row = judge_problem(
            chosen[name], candidates, seeds=args.seeds, points=args.points, log=print
        )
        record["problems"][name] = row
        print_problem(name, row)
        record["summary"] = summarize_suite(record["problems"])
        record["complete"] = len(record["problems"]) == len(order)
        path = save(record, path, args.suite)
    print("\n" + format_summary(record["summary"]))
    plot(record["problems"], path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png').name}")


def combine(paths: list[str]) -> None:
    """One record (and plot) from runs that each judged part of the same suite."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    problems = {n: row for r in records for n, row in r["problems"].items()}
    record = {k: v for k, v in records[0].items() if k not in ("benchmark", "date", "machine")}
    record.update(problems=problems, summary=summarize_suite(problems), parts=paths)
    record["complete"] = all(r.get("complete", True) for r in records)
    path = write(f"{record['suite']}_suite", record)
    print(format_summary(record["summary"]))
    plot(problems, path.with_suffix(".png"))
    print(f"\nwrote {path} and {path.with_suffix('.png').name}")


def save(record: dict, path, suite: str):
    """Writes the record after every problem, so a run cut short keeps what it finished."""
    if path is None:
        return write(f"{suite}_suite", record)
    stamped = json.loads(path.read_text())
    stamped.update(record)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stamped, indent=2) + "\n")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    main()
