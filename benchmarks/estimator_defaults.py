"""Settings under which each estimator, from the command line, beats tuned Adam.

For every estimator of ``metaopt train`` that meta-trains a learned optimizer over
truncations or whole horizons (truncated BPTT, full BPTT, ES, PES, NRES) and both
learned optimizers (the per-parameter MLP and the LSTM), ``SEARCH`` holds the candidate
flags of ``metaopt train --task quadratic`` runs; the best became the estimator's
defaults, which ``metaopt train --estimator NAME`` now uses with no other flag. Each
run is the command line itself, in a subprocess: ``metaopt train`` in a fresh directory, timed, then
``metaopt eval --task quadratic`` on its ``optimizer.mopt`` (100 steps, 256 held-out
quadratics, Adam and the other baselines tuned on 256 others over a 26-point grid).

Candidates are compared on validation tasks, ``metaopt eval --seed 1``; the chosen
settings are confirmed once on ``metaopt eval --seed 0``, the protocol a user runs.
The default mode runs ``metaopt train`` with only the estimator and optimizer named,
which is what a new user gets.

Meta-training must take under 5 minutes on this machine (2 cores, shared with other
work); each record keeps the wall seconds, the CPU seconds of the training process
and the load average, since a busy machine stretches the wall time.

Run:
  python benchmarks/estimator_defaults.py                  # the defaults, on seed 0
  python benchmarks/estimator_defaults.py --search pes/mlp # the candidates, on seed 1
  python benchmarks/estimator_defaults.py --pairs pes/mlp es/lstm
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write

LOPTS = ("mlp", "lstm")
ESTIMATOR_NAMES = ("tbptt", "full_bptt", "es", "pes", "nres")
VALIDATION_SEED, EVAL_SEED = 1, 0
BUDGET_SECONDS = 300

# The chosen settings are the estimators' own defaults (``Entry.defaults`` in each
# estimator's module), so the confirming run names only the estimator and optimizer.
# Candidates per pair, in the order they were tried; the defaults are the best of them
# on the validation seed among those that meta-train in under BUDGET_SECONDS. The flags
# are as they were run, under the defaults of the time (32 tasks, meta-rate 1e-3, no
# clipping, desync off, validation every 10 epochs); ``--epochs`` is the deprecated
# budget, read as epochs × ceil(horizon / truncation) meta-steps.
ES_WHOLE = (
    "--perturbations 4 --truncation 100 --objective final --clip 1 --epochs 1000 "
    "--validation-tasks 128 --validate-every 50"
)
FULL = "--epochs 1000 --clip 1 --validation-tasks 128 --validate-every 50"
PES_MEAN = "--std 0.1 --perturbations 4 --truncation 10 --clip 1 --desync --epochs 300 "
PES_MEAN += "--validation-tasks 128"
PES_FINAL = (
    "--std 0.01 --perturbations 4 --truncation 10 --clip 1 --desync --objective final "
    "--epochs 300 --validation-tasks 128"
)
SEARCH: dict[str, list[list[str]]] = {
    "pes/mlp": [
        # 1: the settings of the first PES results (benchmarks/results/pes_quadratic_eval-*).
        f"{PES_FINAL} --meta-lr 3e-3".split(),
        # 2: more tasks instead of more pairs per task.
        f"{PES_FINAL} --meta-lr 3e-3 --perturbations 1 --tasks 128".split(),
        # 3: a faster meta-learning rate.
        f"{PES_FINAL} --meta-lr 1e-2".split(),
        # 4: and larger perturbations.
        f"{PES_FINAL} --meta-lr 1e-2 --std 0.1".split(),
        # 5, 6: faster still; the trajectory mean instead of the final loss.
        f"{PES_FINAL} --meta-lr 3e-2 --std 0.1".split(),
        f"{PES_FINAL} --meta-lr 1e-2 --std 0.1 --objective mean".split(),
        # 7: twice as long.
        f"{PES_FINAL} --meta-lr 1e-2 --std 0.1 --epochs 600".split(),
        # 8: the trajectory mean at 3e-2.
        f"{PES_MEAN} --meta-lr 3e-2".split(),
    ],
    "pes/lstm": [
        f"{PES_FINAL} --meta-lr 3e-3".split(),
        f"{PES_FINAL} --meta-lr 1e-2".split(),
        # 3: the settings that worked best for the MLP (pes/mlp 6).
        f"{PES_MEAN} --meta-lr 1e-2".split(),
    ],
    # NRES: PES's best settings.
    "nres/mlp": [f"{PES_MEAN} --meta-lr 1e-2".split()],
    "nres/lstm": [f"{PES_MEAN} --meta-lr 1e-2".split()],
    "es/mlp": [
        # Truncated ES sees only one truncation's effect of θ: a whole horizon per
        # estimate is ES without truncation bias.
        "--std 0.01 --perturbations 4 --truncation 100 --objective final --clip 1 "
        "--meta-lr 1e-2 --epochs 1000 --validation-tasks 128 --validate-every 50".split(),
        "--std 0.01 --perturbations 4 --truncation 10 --desync --objective final --clip 1 "
        "--meta-lr 1e-2 --epochs 300 --validation-tasks 128".split(),
        # 3, 4: larger perturbations, as for PES; and a faster rate.
        f"{ES_WHOLE} --std 0.1 --meta-lr 1e-2".split(),
        f"{ES_WHOLE} --std 0.1 --meta-lr 3e-2".split(),
        # 5: 600 meta-steps.
        f"{ES_WHOLE} --std 0.1 --meta-lr 3e-2 --epochs 600".split(),
    ],
    "es/lstm": [
        "--std 0.01 --perturbations 4 --truncation 100 --objective final --clip 1 "
        "--meta-lr 1e-2 --epochs 1000 --validation-tasks 128 --validate-every 50".split(),
        # 2: 600 meta-steps, larger perturbations.
        f"{ES_WHOLE} --std 0.1 --meta-lr 1e-2 --epochs 600".split(),
        # 3: the MLP's best rate (es/mlp 5).
        f"{ES_WHOLE} --std 0.1 --meta-lr 3e-2 --epochs 600".split(),
    ],
    "full_bptt/mlp": [
        "--epochs 1000 --meta-lr 3e-3 --clip 1 --validation-tasks 128 --validate-every 50".split(),
        "--epochs 1000 --meta-lr 3e-3 --clip 1 --objective final --validation-tasks 128 "
        "--validate-every 50".split(),
        # 3, 4: a faster rate; and twice as long.
        f"{FULL} --meta-lr 1e-2".split(),
        f"{FULL} --meta-lr 1e-2 --epochs 2000".split(),
    ],
    "full_bptt/lstm": [
        "--epochs 1000 --meta-lr 3e-3 --clip 1 --validation-tasks 128 --validate-every 50".split(),
        "--epochs 1000 --meta-lr 3e-3 --clip 1 --objective final --validation-tasks 128 "
        "--validate-every 50".split(),
        # 3: the MLP's faster rate; 4: and as long as the MLP's best (full_bptt/mlp 4).
        f"{FULL} --meta-lr 1e-2".split(),
        f"{FULL} --meta-lr 1e-2 --epochs 2000".split(),
    ],
    "tbptt/mlp": [
        "--tasks 128 --meta-lr 1e-2 --clip 1 --validation-tasks 128".split(),
        "--tasks 128 --meta-lr 1e-2 --clip 1 --desync --objective final --truncation 10 "
        "--epochs 300 --validation-tasks 128".split(),
    ],
    "tbptt/lstm": [
        [],  # the defaults of the time
        "--tasks 128 --meta-lr 3e-3 --validation-tasks 128".split(),
        # 3: the MLP's settings (tbptt/mlp 1).
        "--tasks 128 --meta-lr 1e-2 --clip 1 --validation-tasks 128".split(),
    ],
}


def _metaopt(args: list[str], *, cwd: Path) -> tuple[float, float, str]:
    """Runs ``python -m metaopt ARGS``; returns wall seconds, CPU seconds and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "metaopt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"metaopt {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, cpu, done.stdout


def run_pair(estimator: str, lopt: str, flags: list[str], seed: int, workdir: Path) -> dict:
    """Meta-trains with ``flags`` and evaluates with ``metaopt eval --seed seed``."""
    out = workdir / f"{estimator}-{lopt}-{abs(hash(tuple(flags))) % 10**8}"
    train = ["train", "--task", "quadratic", "--estimator", estimator, "--lopt", lopt, *flags]
    load_before = os.getloadavg()
    wall, cpu, _ = _metaopt([*train, "--out", str(out), "--no-progress"], cwd=workdir)
    load_after = os.getloadavg()
    summary = json.loads((out / "summary.json").read_text())
    evaluate = ["eval", "--lopt", str(out / "optimizer.mopt"), "--task", "quadratic"]
    _metaopt([*evaluate, "--seed", str(seed), "--out", str(out / "eval")], cwd=workdir)
    table = json.loads((out / "eval" / "results.json").read_text())["optimizers"]
    learned, adam = table["learned"]["final_loss_mean"], table["adam"]["final_loss_mean"]
    return {
        "estimator": estimator,
        "lopt": lopt,
        "command": "metaopt " + " ".join(train),
        "eval_seed": seed,
        "learned_final_loss": learned,
        "adam_final_loss": adam,
        "adam_learning_rate": table["adam"]["learning_rate"],
        "learned_over_adam": learned / adam,
        "beats_adam": learned < adam,
        "train_wall_seconds": wall,
        "train_cpu_seconds": cpu,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "meta_steps": summary["step"],
        "compile_seconds": summary["compile_seconds"],
        "best_validation_loss": summary["best_validation_loss"],
        "within_budget": wall < BUDGET_SECONDS,
    }


def _pairs(names: list[str] | None) -> list[tuple[str, str]]:
    pairs = [(e, lo) for e in ESTIMATOR_NAMES for lo in LOPTS]
    if not names:
        return pairs
    chosen = [tuple(n.split("/")) for n in names]
    unknown = [f"{e}/{lo}" for e, lo in chosen if (e, lo) not in pairs]
    if unknown:
        raise SystemExit(f"unknown pairs {unknown}; known: {[f'{e}/{lo}' for e, lo in pairs]}")
    return chosen


def _print(rows: list[dict]) -> None:
    print(
        f"\n{'pair':<12} {'learned':>8} {'adam':>8} {'ratio':>6} {'wall s':>7} {'cpu s':>7}  flags"
    )
    for r in rows:
        flags = r["command"].split("--lopt " + r["lopt"], 1)[1].strip()
        print(
            f"{r['estimator'] + '/' + r['lopt']:<12} {r['learned_final_loss']:>8.4f} "
            f"{r['adam_final_loss']:>8.4f} {r['learned_over_adam']:>6.3f} "
            f"{r['train_wall_seconds']:>7.1f} {r['train_cpu_seconds']:>7.1f}  {flags}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--search", nargs="+", metavar="EST/LOPT", help="run SEARCH's candidates")
    parser.add_argument("--pairs", nargs="+", metavar="EST/LOPT", help="only these pairs")
    parser.add_argument(
        "--candidates", type=int, nargs="+", metavar="I", help="--search: only these (from 1)"
    )
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="estimator-defaults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.search:
        for estimator, lopt in _pairs(args.search):
            for i, flags in enumerate(SEARCH.get(f"{estimator}/{lopt}", []), 1):
                if args.candidates and i not in args.candidates:
                    continue
                rows.append(run_pair(estimator, lopt, flags, VALIDATION_SEED, workdir))
                _print(rows[-1:])
        mode_name = "search"
    else:
        for estimator, lopt in _pairs(args.pairs):
            rows.append(run_pair(estimator, lopt, [], EVAL_SEED, workdir))
            _print(rows[-1:])
        mode_name = "defaults"
    _print(rows)
    record = {
        "mode": mode_name,
        "protocol": (
            "metaopt train --task quadratic (subprocess, wall and CPU seconds), then "
            "metaopt eval --task quadratic --steps 100 --eval-tasks 256 --tune-tasks 256 "
            f"--seed {VALIDATION_SEED if args.search else EVAL_SEED}"
        ),
        "budget_seconds": BUDGET_SECONDS,
        "runs": rows,
    }
    print(f"wrote {write(f'estimator_defaults_{mode_name}', record)}")


if __name__ == "__main__":
    main()
