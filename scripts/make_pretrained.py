"""Rebuilds the pretrained learned optimizers shipped in src/metaopt/pretrained/.

``lstm_quadratic`` and ``mlp_regression`` are made by the metaopt command line;
``versatile`` is meta-trained here with PES on the mixture of
:mod:`metaopt.train.versatile` (about 45 minutes on a 2-core CPU), checkpointed in
build/pretrained/versatile: stop it with Ctrl-C and continue with ``--resume``. It is
judged on benchmarks/heldout_suite.py and shipped only if it helps there (see
SHIP_GEOMEAN); otherwise the candidate stays in build/pretrained/versatile. Each
optimizer's command, seed, meta-training figures and evaluation are recorded beside it
as JSON; the versatile optimizer's held-out evaluation is benchmarks/heldout_suite.py.

Run from the repository root: python scripts/make_pretrained.py [--only NAME] [--resume]
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


# A candidate ships only if it helps on the held-out suite: final losses within this
# factor of per-problem tuned Adam in geometric mean, better than Adam at 1e-3 on most
# problems, and finite on all.
SHIP_GEOMEAN = 1.0

VERSATILE = {
    "seed": 0,
    "num_steps": 1500,
    "estimator": {
        "num_tasks": 8,
        "truncation": 50,
        "min_horizon": 300,
        "max_horizon": 5000,
        "std": 0.01,
        "max_scale": 10.0,
    },
    "optimizer": {"hidden_size": 16, "init_lr": 1e-3},
    "meta_lr": 1e-3,
    "final_meta_lr": 1e-4,
    "clip": 10.0,
}


def make_versatile(resume: bool) -> None:
    import jax
    import optax

    import metaopt as mo
    from metaopt.cli.run import checkpointed_meta_train
    from metaopt.evaluation.machine import machine
    from metaopt.io.checkpoint import checkpoint_steps
    from metaopt.optimizers.versatile import versatile_optimizer
    from metaopt.train.versatile import versatile_estimator

    recipe = VERSATILE
    out = BUILD / "versatile"
    out.mkdir(parents=True, exist_ok=True)
    lopt = versatile_optimizer(**recipe["optimizer"])
    estimator = versatile_estimator(mo.learned_optimizer(lopt), **recipe["estimator"])
    schedule = optax.cosine_decay_schedule(
        recipe["meta_lr"], recipe["num_steps"], recipe["final_meta_lr"] / recipe["meta_lr"]
    )
    meta_optimizer = optax.chain(optax.clip_by_global_norm(recipe["clip"]), optax.adam(schedule))
    resume = resume and bool(checkpoint_steps(out / "checkpoints"))
    run = checkpointed_meta_train(
        out,
        estimator,
        jax.random.key(recipe["seed"]),
        num_steps=recipe["num_steps"],
        meta_optimizer=meta_optimizer,
        config=recipe,
        resume=resume,
        checkpoint_every=100,
    )
    state = run.state
    print(f"meta-training {run.status} at meta-step {state.step} of {recipe['num_steps']}")
    if run.status != "completed":
        print("continue with: python scripts/make_pretrained.py --only versatile --resume")
        return
    mo.save(out / "optimizer.mopt", lopt, state.theta)
    # The starting point, for comparison: with its output layer at zero the network is
    # silent, so this is Adam with hypergradient rates whatever the key.
    mo.save(out / "untrained.mopt", lopt, lopt.init(jax.random.key(recipe["seed"])))
    heldout = out / "heldout.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "heldout_suite.py"),
            "--lopt",
            f"versatile={out / 'optimizer.mopt'}",
            f"versatile_untrained={out / 'untrained.mopt'}",
            *[name for name in RECIPES if (TARGET / f"{name}.mopt").exists()],
            "--json",
            str(heldout),
        ],
        check=True,
    )
    suite = json.loads(heldout.read_text())
    record = {
        "name": "versatile",
        "lopt": "versatile",
        "command": "python scripts/make_pretrained.py --only versatile [--resume]",
        "eval_command": "python benchmarks/heldout_suite.py --lopt versatile=FILE ...",
        "seed": recipe["seed"],
        "recipe": recipe,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "meta_train": {
            "meta_steps": state.step,
            "seconds": state.seconds,
            "wall_seconds": state.wall_seconds,
            "function_steps_per_second": state.step * estimator.function_steps / state.seconds,
            "skipped": state.skipped,
        },
        "evaluation": {
            "suite": "heldout",
            "results": suite["date"],
            "summary": suite["summary"],
            "problems": {
                name: {
                    "tuned_adam_lr": p["tuned_lr"],
                    **{
                        opt: {
                            "final_loss_mean": row["final_loss_mean"],
                            "over_tuned_adam": row["over_tuned_adam"],
                        }
                        for opt, row in p["optimizers"].items()
                    },
                }
                for name, p in suite["problems"].items()
            },
        },
    }
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    verdict = suite["summary"]["versatile"]
    geomean = verdict["geomean_over_tuned_adam"]
    helps = (
        verdict["all_finite"]
        and geomean is not None
        and geomean <= SHIP_GEOMEAN
        and 2 * verdict["better_than_default_adam"] > verdict["problems"]
    )
    if not helps:
        print(
            f"not shipped: geomean {geomean} x tuned Adam (at most {SHIP_GEOMEAN} needed), "
            f"better than Adam 1e-3 on {verdict['better_than_default_adam']} of "
            f"{verdict['problems']} (most needed); the candidate and its record stay in {out}"
        )
        return
    TARGET.mkdir(exist_ok=True)
    shutil.copyfile(out / "optimizer.mopt", TARGET / "versatile.mopt")
    shutil.copyfile(out / "record.json", TARGET / "versatile.json")
    print(f"wrote {TARGET / 'versatile'}.mopt and .json")


ORTHOGONAL = {
    "seed": 0,
    "num_steps": 800,
    "estimator": {
        "num_tasks": 4,
        "truncation": 20,
        "min_horizon": 300,
        "max_horizon": 3000,
        "std": 0.01,
        "max_scale": 3.0,
    },
    "optimizer": {"hidden_size": 8, "max_orthogonal_dim": 128, "ns_steps": 5},
    "meta_lr": 1e-3,
    "final_meta_lr": 1e-4,
    "clip": 10.0,
    "checkpoint_every": 50,
}


def meta_train_orthogonal(resume: bool, out: Path, num_steps: int | None = None):
    """Meta-trains the orthogonal optimizer in ``out``; returns the run and the learned optimizer.

    ``num_steps`` (a smoke test) overrides the recipe's length, schedule included.
    """
    import jax
    import optax

    import metaopt as mo
    from metaopt.cli.run import checkpointed_meta_train
    from metaopt.io.checkpoint import checkpoint_steps
    from metaopt.optimizers.orthogonal import orthogonal_optimizer
    from metaopt.train.orthogonal import orthogonal_estimator

    recipe = dict(ORTHOGONAL, num_steps=num_steps or ORTHOGONAL["num_steps"])
    out.mkdir(parents=True, exist_ok=True)
    lopt = orthogonal_optimizer(**recipe["optimizer"])
    estimator = orthogonal_estimator(mo.learned_optimizer(lopt), **recipe["estimator"])
    schedule = optax.cosine_decay_schedule(
        recipe["meta_lr"], recipe["num_steps"], recipe["final_meta_lr"] / recipe["meta_lr"]
    )
    meta_optimizer = optax.chain(optax.clip_by_global_norm(recipe["clip"]), optax.adam(schedule))
    resume = resume and bool(checkpoint_steps(out / "checkpoints"))
    run = checkpointed_meta_train(
        out,
        estimator,
        jax.random.key(recipe["seed"]),
        num_steps=recipe["num_steps"],
        meta_optimizer=meta_optimizer,
        config=recipe,
        resume=resume,
        checkpoint_every=recipe["checkpoint_every"],
        # Every periodic checkpoint stays: the selection suite chooses among them.
        keep_checkpoints=recipe["num_steps"] // recipe["checkpoint_every"] + 1,
        progress=False,
    )
    print(f"meta-training {run.status} at meta-step {run.state.step} of {recipe['num_steps']}")
    return run, lopt, estimator


def make_orthogonal(resume: bool, smoke: bool) -> None:
    out = BUILD / ("orthogonal_smoke" if smoke else "orthogonal")
    run, _, _ = meta_train_orthogonal(resume and not smoke, out, 3 if smoke else None)
    if run.status != "completed" and not smoke:
        print("continue with: python scripts/make_pretrained.py --only orthogonal --resume")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted([*RECIPES, "versatile", "orthogonal"]))
    parser.add_argument(
        "--resume", action="store_true", help="continue the versatile run from its checkpoint"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="three meta-steps of the orthogonal run, to check it"
    )
    args = parser.parse_args()
    for name, recipe in RECIPES.items():
        if args.only in (None, name):
            make(name, recipe)
    if args.only in (None, "versatile"):
        make_versatile(args.resume)
    if args.only in (None, "orthogonal"):
        make_orthogonal(args.resume, args.smoke)


if __name__ == "__main__":
    main()
