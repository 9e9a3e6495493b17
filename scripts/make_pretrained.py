"""Rebuilds the pretrained learned optimizers shipped in src/metaopt/pretrained/.

``lstm_quadratic`` and ``mlp_regression`` are made by the metaopt command line;
``versatile`` is meta-trained here with PES on the mixture of
:mod:`metaopt.train.versatile` (about 45 minutes on a 2-core CPU), checkpointed in
build/pretrained/versatile: stop it with Ctrl-C and continue with ``--resume``. It is
judged on benchmarks/heldout_suite.py and shipped only if it helps there (see
SHIP_GEOMEAN); otherwise the candidate stays in build/pretrained/versatile. Each
optimizer's command, seed, meta-training figures and evaluation are recorded beside it
as JSON; the versatile optimizer's held-out evaluation is benchmarks/heldout_suite.py.

``orthogonal`` is meta-trained with PES on the mixture of :mod:`metaopt.train.orthogonal`
(about an hour here), checkpointed every 50 meta-steps in build/pretrained/orthogonal
(``--resume`` continues it). Every 100th meta-step's θ and the untrained θ are then
judged on the held-in selection suite (:mod:`metaopt.evaluation.selection`, by held-out
loss; never the report suite), the best checkpoint is chosen there, and it ships only if
it is at least as good as its untrained θ (``--judge`` redoes this step alone).

Run from the repository root:
python scripts/make_pretrained.py [--only NAME] [--resume] [--smoke] [--judge]
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
            # The shipped run's settings, pinned (it ran as --epochs 150, before
            # truncated BPTT had defaults of its own).
            "metaopt train --task mlp_regression --lopt mlp --seed {seed} --meta-steps 1500 "
            "--tasks 32 --horizon 200 --truncation 20 --meta-lr 3e-3 --clip none "
            "--validate-every 100 --validation-tasks 64 --no-progress --out {out}"
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
    from metaopt.evaluation.machine import machine
    from metaopt.io.checkpoint import checkpoint_steps
    from metaopt.optimizers.versatile import versatile_optimizer
    from metaopt.train.run import checkpointed_meta_train
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
    "num_steps": 500,
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


def judge_orthogonal(out: Path, every: int) -> dict:
    """The untrained θ and every ``every``-th checkpoint's θ on the selection suite.

    Baselines are tuned once; each problem's results are cached in
    ``out/selection.json`` as they come, so an interrupted judgement continues where it
    stopped and later checkpoints add only their own runs.
    """
    import jax

    import metaopt as mo
    from metaopt.evaluation.judge import EVAL_SEEDS, add_ratios, judge_problem, summarize_suite
    from metaopt.evaluation.scoring import runner, summarize_runs
    from metaopt.evaluation.selection import selection_problems
    from metaopt.io.checkpoint import checkpoint_steps, read_theta
    from metaopt.optimizers.orthogonal import orthogonal_optimizer
    from metaopt.train.loop import run_keys

    lopt = orthogonal_optimizer(**ORTHOGONAL["optimizer"])
    # The θ the run started from (meta_train draws it from the run key's first split).
    untrained = lopt.init(run_keys(jax.random.key(ORTHOGONAL["seed"]))[0])
    thetas = {"orthogonal_untrained": untrained}
    for step, _, path in checkpoint_steps(out / "checkpoints"):
        if step % every == 0:
            thetas[f"orthogonal_step{step}"] = read_theta(path, untrained)
    cache_path = out / "selection.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"problems": {}}
    for problem in selection_problems():
        row = cache["problems"].get(problem.name)
        done = set() if row is None else set(row["optimizers"])
        new = {k: mo.as_optax(lopt, th) for k, th in thetas.items() if k not in done}
        print(f"{problem.name}: {', '.join(new) or 'nothing new'}", flush=True)
        if row is None:
            row = judge_problem(problem, new, seeds=EVAL_SEEDS, log=print)
        else:
            for name, tx in new.items():
                run = runner(problem, lambda tx=tx: tx, 20)
                row["optimizers"][name] = summarize_runs([run((), s) for s in EVAL_SEEDS])
            add_ratios(row["optimizers"])
        cache["problems"][problem.name] = row
        cache["summary"] = summarize_suite(cache["problems"])
        cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    return cache


def make_orthogonal(resume: bool, smoke: bool, judge_only: bool) -> None:
    """Meta-trains, chooses a checkpoint on the selection suite, and ships it if it helps."""
    import jax

    import metaopt as mo
    from metaopt.evaluation.judge import format_summary
    from metaopt.evaluation.machine import machine
    from metaopt.io.checkpoint import checkpoint_steps, read_theta

    out = BUILD / ("orthogonal_smoke" if smoke else "orthogonal")
    if not judge_only:
        run, _, _ = meta_train_orthogonal(resume and not smoke, out, 3 if smoke else None)
        if run.status != "completed" or smoke:
            if not smoke:
                print("continue with: python scripts/make_pretrained.py --only orthogonal --resume")
            return
    cache = judge_orthogonal(out, every=2 * ORTHOGONAL["checkpoint_every"])
    summary = cache["summary"]
    print(format_summary(summary))
    # The checkpoint with the lowest geometric mean over tuned AdamW; the later one on ties.
    steps = sorted(
        (int(k.removeprefix("orthogonal_step")), v)
        for k, v in summary.items()
        if k.startswith("orthogonal_step") and v["all_finite"]
    )
    untrained = summary["orthogonal_untrained"]
    if not steps:
        print("not shipped: no checkpoint stayed finite on every selection problem")
        return
    step, chosen = min(reversed(steps), key=lambda sv: sv[1]["geomean_over_tuned_adamw"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    record = {
        "name": "orthogonal",
        "lopt": "orthogonal",
        "command": "python scripts/make_pretrained.py --only orthogonal [--resume]",
        "eval_command": "python scripts/make_pretrained.py --only orthogonal --judge",
        "seed": ORTHOGONAL["seed"],
        "recipe": ORTHOGONAL,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "meta_train": {
            "meta_steps": last["step"],
            "seconds": last["seconds"],
            "wall_seconds": last["wall_seconds"],
            "function_steps_per_second": last["function_steps_per_second"],
            "skipped": last["skipped_total"],
        },
        "chosen_checkpoint": step,
        "evaluation": {
            "suite": "selection",
            "seeds": [1, 2, 3],
            "summary": summary,
            "problems": {
                name: {
                    "rates": p["rates"],
                    "optimizers": {
                        opt: {
                            k: r[k]
                            for k in (
                                "heldout_final",
                                "heldout_best",
                                "train_final",
                                "over_tuned_adamw",
                                "over_adam_1e-3",
                                "finite",
                            )
                        }
                        for opt, r in p["optimizers"].items()
                    },
                }
                for name, p in cache["problems"].items()
            },
        },
    }
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    if chosen["geomean_over_tuned_adamw"] > untrained["geomean_over_tuned_adamw"]:
        print(
            f"not shipped: the best checkpoint (meta-step {step}) scores "
            f"{chosen['geomean_over_tuned_adamw']:.3f} × tuned AdamW on the selection suite, "
            f"its untrained θ {untrained['geomean_over_tuned_adamw']:.3f}; see {out}"
        )
        return
    path = next(p for s, _, p in checkpoint_steps(out / "checkpoints") if s == step)
    lopt = mo.orthogonal_optimizer(**ORTHOGONAL["optimizer"])
    theta = read_theta(path, lopt.init(jax.random.key(0)))
    TARGET.mkdir(exist_ok=True)
    mo.save(TARGET / "orthogonal.mopt", lopt, theta)
    shutil.copyfile(out / "record.json", TARGET / "orthogonal.json")
    print(f"wrote {TARGET / 'orthogonal'}.mopt and .json (meta-step {step})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted([*RECIPES, "versatile", "orthogonal"]))
    parser.add_argument(
        "--resume", action="store_true", help="continue the versatile run from its checkpoint"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="three meta-steps of the orthogonal run, to check it"
    )
    parser.add_argument(
        "--judge",
        action="store_true",
        help="judge the orthogonal run's checkpoints on the selection suite, without training",
    )
    args = parser.parse_args()
    for name, recipe in RECIPES.items():
        if args.only in (None, name):
            make(name, recipe)
    if args.only in (None, "versatile"):
        make_versatile(args.resume)
    if args.only in (None, "orthogonal"):
        make_orthogonal(args.resume, args.smoke, args.judge)


if __name__ == "__main__":
    main()
