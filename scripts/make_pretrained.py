"""Rebuilds the pretrained learned optimizers shipped in src/metaopt/pretrained/.

Each optimizer is made by the metaopt command line; its command, seed, meta-training
figures and evaluation against tuned baselines are recorded beside it as JSON.

Run from the repository root: python scripts/make_pretrained.py [--only NAME]
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "metaopt" / "pretrained"
BUILD = ROOT / "build" / "pretrained"

RECIPES = {
    "lstm_quadratic": {
        "lopt": "lstm",
        "seed": 0,
        "train": "metaopt demo --seed {seed} --no-progress --out {out}",
        "eval": None,
    },
    "mlp_regression": {
        "lopt": "mlp",
        "seed": 0,
        "train": (
            "metaopt train --task mlp_regression --lopt mlp --seed {seed} --epochs 150 "
            "--tasks 32 --horizon 200 --truncation 20 --meta-lr 3e-3 --no-progress --out {out}"
        ),
        "eval": (
            "metaopt eval --lopt {out}/optimizer.mopt --task mlp_regression --steps 200 "
            "--seed 1 --out {out}/eval"
        ),
    },
}


def run(command: str) -> None:
    print(f"$ {command}", flush=True)
    argv = shlex.split(command)
    # The metaopt of this interpreter, whether or not its scripts are on PATH.
    subprocess.run([sys.executable, "-m", "metaopt", *argv[1:]], check=True)


def summarize(optimizers: dict, learned_key: str) -> dict:
    keep = ("final_loss_mean", "final_loss_std", "learning_rate")
    out = {
        name: {k: v for k, v in entry.items() if k in keep} for name, entry in optimizers.items()
    }
    out["learned"] = out.pop(learned_key)
    return out


def make(name: str, recipe: dict) -> None:
    out = BUILD / name
    shutil.rmtree(out, ignore_errors=True)
    train = recipe["train"].format(seed=recipe["seed"], out=out)
    run(train)
    if recipe["eval"] is None:
        results = json.loads((out / "results.json").read_text())
        meta = results["meta_train"]
        evaluation = summarize(results["optimizers"], "lstm")
        eval_command = None
    else:
        eval_command = recipe["eval"].format(out=out)
        run(eval_command)
        meta = json.loads((out / "summary.json").read_text())
        results = json.loads((out / "eval" / "results.json").read_text())
        evaluation = summarize(results["optimizers"], "learned")
    record = {
        "name": name,
        "lopt": recipe["lopt"],
        "command": train.replace(str(out), f"build/pretrained/{name}"),
        "eval_command": eval_command and eval_command.replace(str(out), f"build/pretrained/{name}"),
        "seed": recipe["seed"],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": results["machine"],
        "meta_train": {
            k: meta[k]
            for k in (
                "seconds",
                "compile_seconds",
                "function_steps_per_second",
                "best_validation_loss",
            )
        },
        "evaluation": evaluation,
    }
    TARGET.mkdir(exist_ok=True)
    shutil.copyfile(out / "optimizer.mopt", TARGET / f"{name}.mopt")
    (TARGET / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {TARGET / name}.mopt and .json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(RECIPES))
    args = parser.parse_args()
    for name, recipe in RECIPES.items():
        if args.only in (None, name):
            make(name, recipe)


if __name__ == "__main__":
    main()
