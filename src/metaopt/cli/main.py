"""The ``metaopt`` command line: ``demo``, ``train``, ``plot`` and ``eval``."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from metaopt.cli import flags
from metaopt.evaluation.report import EVAL_TASKS, TUNE_TASKS

DEMO_DEFAULTS = {
    "quadratic": {"epochs": 100, "tasks": 128, "eval_tasks": EVAL_TASKS, "tune_tasks": TUNE_TASKS},
    "mlp": {"epochs": 20, "tasks": 16, "eval_tasks": 64, "tune_tasks": 32},
}
"""Each demo's sizes where no flag gives them; the quadratic one compares as ``metaopt eval``."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser of the ``metaopt`` command."""
    parser = argparse.ArgumentParser(
        prog="metaopt", description="Learned optimizers and meta-learning in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    _add_train_parser(sub)
    plot = sub.add_parser("plot", help="write PNGs of a run's meta-training curves")
    plot.add_argument("run_dir", type=Path, help="a directory written by metaopt train")
    _add_eval_parser(sub)
    return parser


def _add_demo_parser(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="meta-train the LSTM optimizer on quadratics and compare it with tuned baselines",
    )
    demo.add_argument(
        "--task",
        choices=["quadratic", "mlp", "sinusoid", "fewshot", "oneshot"],
        default="quadratic",
        help="quadratic: §3.1 of the paper; mlp: the MNIST experiment of §3.2; sinusoid, "
        "fewshot: MAML, FOMAML, Reptile and Meta-SGD against joint pretraining; oneshot: "
        "matching networks, prototypical networks and a memory-augmented network beside "
        "the MAML family on the same digit episodes",
    )
    demo.add_argument("--out", type=Path, default=Path("metaopt-demo"), help="output directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the meta-training checkpointed in --out (same settings)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_demo_training_args(demo.add_argument_group("meta-training and evaluation"))
    _add_demo_mlp_args(demo.add_argument_group("--task mlp"))
    _add_demo_fewshot_args(demo.add_argument_group("--task sinusoid, fewshot and oneshot"))


def _add_demo_training_args(group) -> None:
    group.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="meta-batches of fresh tasks (default: 100 quadratic, 20 mlp)",
    )
    group.add_argument(
        "--tasks",
        type=_positive_int,
        default=None,
        help="tasks per meta-batch (default: 128 quadratic, 16 mlp)",
    )
    group.add_argument("--truncation", type=_positive_int, default=20)
    group.add_argument("--horizon", type=_positive_int, default=100)
    group.add_argument(
        "--meta-lr",
        type=_positive_float,
        default=None,
        help="meta-learning rate (default: 3e-3, fewshot 1e-3)",
    )
    group.add_argument(
        "--eval-tasks",
        type=_positive_int,
        default=None,
        help="held-out tasks (default: {quadratic} quadratic, as metaopt eval; {mlp} mlp)".format(
            **{task: sizes["eval_tasks"] for task, sizes in DEMO_DEFAULTS.items()}
        ),
    )
    group.add_argument(
        "--tune-tasks",
        type=_positive_int,
        default=None,
        help="tasks for tuning baselines (default: {quadratic} quadratic, as metaopt eval; "
        "{mlp} mlp)".format(**{task: sizes["tune_tasks"] for task, sizes in DEMO_DEFAULTS.items()}),
    )


def _add_demo_mlp_args(group) -> None:
    group.add_argument(
        "--data",
        choices=["digits", "mnist", "fashion_mnist"],
        default="digits",
        help="--task mlp only: the dataset (digits ship with scikit-learn)",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="--task mlp only: a directory holding the dataset's files",
    )
    group.add_argument(
        "--no-generalization",
        action="store_true",
        help="--task mlp only: skip the four generalization experiments",
    )
    group.add_argument(
        "--generalization",
        nargs="+",
        choices=["steps_200", "hidden_40", "layers_2", "relu"],
        default=None,
        help="--task mlp only: run just these generalization experiments",
    )


def _add_demo_fewshot_args(group) -> None:
    from metaopt.experiments.oneshot import EPISODIC as EPISODIC_METHODS

    group.add_argument(
        "--meta-steps",
        type=_positive_int,
        default=None,
        help="sinusoid/fewshot/oneshot: meta-steps per method (default: 20000 sinusoid, "
        "2000 fewshot, 1000 oneshot)",
    )
    group.add_argument(
        "--methods",
        nargs="+",
        choices=["maml", "fomaml", "reptile", "metasgd", "pretrained", *EPISODIC_METHODS],
        default=None,
        help="sinusoid/fewshot: run just these methods (default: all five); oneshot: "
        f"{', '.join(EPISODIC_METHODS)} and the MAML family (default: all but matching_fce)",
    )
    group.add_argument(
        "--shots",
        type=_positive_int,
        nargs="+",
        default=None,
        help="sinusoid/fewshot/oneshot: support examples per task or class (default: 10; 1 and 5)",
    )


def _add_train_parser(sub) -> None:
    from metaopt.estimators.registry import ESTIMATORS
    from metaopt.learners.registry import LEARNERS
    from metaopt.optimizers.registry import OPTIMIZERS
    from metaopt.tasks.registry import TASKS
    from metaopt.train.config import default_text, run_fields

    train = sub.add_parser(
        "train",
        help="meta-train a learned optimizer in a run directory (checkpointed, resumable)",
        description=(
            "Meta-train a learned optimizer. Settings come from defaults, then --config, "
            "then flags. The run directory gets config.toml, checkpoints/, metrics.jsonl, "
            "optimizer.mopt and summary.json. Ctrl-C or SIGTERM stops after the current "
            "meta-step with a checkpoint; --resume continues."
        ),
    )
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--config", type=Path, help="a TOML file of settings (keys as below)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    registries = {"task": TASKS, "lopt": OPTIMIZERS, "learner": LEARNERS, "estimator": ESTIMATORS}
    run = train.add_argument_group("the run")
    for field in run_fields():
        registry = registries.get(field.name)
        choices = None if registry is None else [*registry, *registry.aliases]
        flags.add_field(run, field, defaults=default_text(field), choices=choices)
    for registry in (ESTIMATORS, OPTIMIZERS, LEARNERS, TASKS):
        _add_option_flags(train, registry)
    _add_hosts_args(
        train.add_argument_group(
            "several processes", "run one metaopt train per host, with the same flags and --out"
        )
    )


def _add_option_flags(train, registry) -> None:
    """One group per role: each option any entry declares, once, with who takes it."""
    declared: dict[str, list] = {}
    for entry in registry.values():
        for field in entry.option_fields():
            declared.setdefault(field.name, []).append((entry.name, field))
    if not declared:
        return
    summaries = "; ".join(f"{e.name}: {e.summary}" for e in registry.values())
    group = train.add_argument_group(f"{registry.role} options", summaries)
    for owners in declared.values():
        defaults = {}
        for entry_name, field in owners:
            value = flags.default_text(registry[entry_name].default(field))
            defaults.setdefault(value, []).append(entry_name)
        shown = "; ".join(f"{', '.join(who)}: {d}" for d, who in defaults.items())
        flags.add_field(group, owners[0][1], defaults=shown)


def _add_hosts_args(hosts) -> None:
    hosts.add_argument("--coordinator-address", help="host:port of process 0")
    hosts.add_argument("--num-processes", type=_positive_int, help="processes in the job")
    hosts.add_argument("--process-id", type=_non_negative_int, help="this process's index")
    hosts.add_argument(
        "--distributed",
        action="store_true",
        help="join a job described by the cluster's environment (Slurm, Open MPI, Cloud TPU)",
    )


def _add_eval_parser(sub) -> None:
    from metaopt.tasks.registry import TASKS

    ev = sub.add_parser("eval", help="evaluate a learned optimizer against tuned baselines")
    ev.add_argument("--lopt", required=True, help="pretrained name or path to a saved optimizer")
    ev.add_argument("--task", choices=list(TASKS), required=True)
    ev.add_argument("--out", type=Path, required=True, help="output directory")
    ev.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws the tuning and held-out tasks: on quadratics those of metaopt demo --seed",
    )
    ev.add_argument("--steps", type=_positive_int, default=100, help="updates per task")
    ev.add_argument(
        "--eval-tasks",
        type=_positive_int,
        default=EVAL_TASKS,
        help="held-out tasks (default: %(default)s, as metaopt demo on quadratics)",
    )
    ev.add_argument(
        "--tune-tasks",
        type=_positive_int,
        default=TUNE_TASKS,
        help="tasks the baselines' learning rates are tuned on, drawn from the task's "
        "validation split (default: %(default)s, as metaopt demo on quadratics)",
    )


_NOT_CONFIG = {
    "command",
    "out",
    "config",
    "resume",
    "coordinator_address",
    "num_processes",
    "process_id",
    "distributed",
}


def _train(args: argparse.Namespace) -> int:
    from metaopt.train.config import check_key, read_toml, resolve
    from metaopt.train.hosts import start_jax
    from metaopt.train.train_run import saved_config, train_run

    given = read_toml(args.config) if args.config is not None else {}
    typed = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    for key, value in typed.items():
        try:
            check_key(key, value, "flags")
        except (TypeError, ValueError) as e:
            raise type(e)(f"argument {flags.flag_name(key)}: {e}") from None
    given |= typed
    source = "--config and flags"
    if args.resume:
        config = resolve(given, saved_config(args.out), source=source)
    else:
        config = resolve(given, source=source)
    start_jax(
        config.devices,
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        distributed=args.distributed,
    )
    outcome = train_run(config, args.out, resume=args.resume)
    print(outcome.message, file=sys.stderr if outcome.status != "completed" else sys.stdout)
    if outcome.status == "stopped":
        return 128 + outcome.signal
    return 1 if outcome.status == "diverged" else 0


def _plot(args: argparse.Namespace) -> int:
    from metaopt.train.plots import plot_run

    for path in plot_run(args.run_dir):
        print(f"wrote {path}")
    return 0


def _eval(args: argparse.Namespace) -> None:
    from metaopt.core.files import prepare_dir
    from metaopt.io.pretrained import load

    lopt, theta = load(_optimizer_path(args.lopt))
    existed = args.out.exists()
    out = prepare_dir(args.out, "out")
    try:
        _write_eval(args, out, lopt, theta)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed eval leaves nothing behind
        raise


def _optimizer_path(lopt: str) -> str:
    """``--lopt`` as given, or a run directory's ``optimizer.mopt``."""
    path = Path(lopt)
    if not path.is_dir():
        return lopt
    saved = path / "optimizer.mopt"
    if not saved.is_file():
        raise FileNotFoundError(
            f"--lopt {lopt!r} is a directory without optimizer.mopt; give a run directory "
            "written by metaopt train, a .mopt file or a pretrained name"
        )
    return str(saved)


def _write_eval(args: argparse.Namespace, out: Path, lopt, theta) -> None:
    from metaopt.core.files import write_json
    from metaopt.core.optax_adapter import as_optax
    from metaopt.evaluation.machine import machine
    from metaopt.evaluation.report import (
        compare_optimizers,
        comparison_keys,
        format_table,
        plot_curves,
    )
    from metaopt.train.build import build_family

    family = build_family(args.task, "test")
    k_tune, k_eval = comparison_keys(args.seed)  # the tasks metaopt demo draws
    optimizers = compare_optimizers(
        {"learned": as_optax(lopt, theta)},
        family,
        k_tune,
        k_eval,
        num_eval_tasks=args.eval_tasks,
        num_tune_tasks=args.tune_tasks,
        num_steps=args.steps,
        tune_family=build_family(args.task, "val"),  # never tuned on the test split
    )
    write_json(
        out / "results.json",
        {
            "experiment": args.task,
            "learned_optimizer": str(args.lopt),
            "lopt": lopt.name,
            "lopt_config": lopt.config,
            "machine": machine(),
            "optimizers": optimizers,
        },
    )
    plot_curves(out / "curves.png", optimizers, f"{args.task}: {args.lopt}")
    print(format_table(optimizers))
    print(f"\nwrote {out / 'results.json'} and {out / 'curves.png'}")


def _fewshot_demo(args: argparse.Namespace) -> None:
    from metaopt.experiments.fewshot import fewshot_demo, format_summary, sinusoid_demo

    sizes = {
        k: v
        for k, v in dict(
            seed=args.seed,
            meta_steps=args.meta_steps,
            num_tasks=args.tasks,
            meta_lr=args.meta_lr,
            num_eval_tasks=args.eval_tasks,
            num_tune_tasks=args.tune_tasks,
            methods=None if args.methods is None else tuple(args.methods),
        ).items()
        if v is not None
    } | {"resume": args.resume}
    if args.task == "sinusoid":
        if args.shots is not None and len(args.shots) != 1:
            raise SystemExit("metaopt demo: --task sinusoid takes one --shots value")
        shots = {} if args.shots is None else {"shots": args.shots[0]}
        results = sinusoid_demo(args.out, progress=not args.no_progress, **shots, **sizes)
        written = f"{args.out / 'results.json'}, {args.out / 'fits.png'}"
    else:
        shots = {} if args.shots is None else {"shots": tuple(args.shots)}
        results = fewshot_demo(args.out, progress=not args.no_progress, **shots, **sizes)
        written = str(args.out / "results.json")
    print(format_summary(results))
    print(f"\nwrote {written}")


def _oneshot_demo(args: argparse.Namespace) -> None:
    from metaopt.experiments.oneshot import format_summary, oneshot_demo

    given = dict(
        seed=args.seed,
        meta_steps=args.meta_steps,
        maml_meta_steps=args.meta_steps,
        num_tasks=args.tasks,
        meta_lr=args.meta_lr,
        num_eval_tasks=args.eval_tasks,
        shots=None if args.shots is None else tuple(args.shots),
        methods=None if args.methods is None else tuple(args.methods),
    )
    kwargs = {k: v for k, v in given.items() if v is not None}
    results = oneshot_demo(args.out, progress=not args.no_progress, resume=args.resume, **kwargs)
    print(format_summary(results))
    written = ", ".join(str(p) for p in sorted(args.out.glob("*.png")))
    print(f"\nwrote {args.out / 'results.json'}, {written}")


def _demo(args: argparse.Namespace) -> None:
    from metaopt.experiments.learning_to_learn import mlp_demo, quadratic_demo, summary

    if args.task in ("sinusoid", "fewshot"):
        return _fewshot_demo(args)
    if args.task == "oneshot":
        return _oneshot_demo(args)

    sizes = {k: getattr(args, k) or v for k, v in DEMO_DEFAULTS[args.task].items()}
    common = dict(
        seed=args.seed,
        epochs=sizes["epochs"],
        num_tasks=sizes["tasks"],
        truncation=args.truncation,
        horizon=args.horizon,
        meta_learning_rate=3e-3 if args.meta_lr is None else args.meta_lr,
        num_eval_tasks=sizes["eval_tasks"],
        num_tune_tasks=sizes["tune_tasks"],
        progress=not args.no_progress,
        resume=args.resume,
    )
    if args.task == "quadratic":
        results = quadratic_demo(args.out, **common)
    else:
        results = mlp_demo(
            args.out,
            data=args.data,
            data_dir=args.data_dir,
            generalization=False if args.no_generalization else args.generalization or True,
            **common,
        )
    print(summary(results))
    written = ", ".join(str(p) for p in sorted(args.out.glob("*.png")))
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'optimizer.mopt'}, {written}")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``command``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metaopt`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, with its usage, not metaopt's
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    run = {"demo": _demo, "train": _train, "eval": _eval, "plot": _plot}[args.command]
    from metaopt.train.loop import MetaTrainingDiverged
    from metaopt.train.run import RunStopped

    try:
        status = run(args)
    except RunStopped as e:
        print(f"metaopt {args.command}: {e}", file=sys.stderr)
        return 128 + e.signal
    except MetaTrainingDiverged as e:
        print(f"metaopt {args.command}: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as e:
        print(f"metaopt {args.command}: error: {e}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
