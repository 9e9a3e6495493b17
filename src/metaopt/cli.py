"""The ``metaopt`` command line: ``demo``, ``train`` and ``eval``."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


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


TASKS = ("quadratic", "mlp_regression")


def make_family(name: str):
    """The task family a CLI ``--task`` name stands for."""
    from metaopt.quadratic import quadratic_family
    from metaopt.regression import mlp_regression_family

    return {"quadratic": quadratic_family, "mlp_regression": mlp_regression_family}[name]()


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser of the ``metaopt`` command."""
    parser = argparse.ArgumentParser(
        prog="metaopt", description="Learned optimizers and meta-learning in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="meta-train the LSTM optimizer on quadratics and compare it with tuned baselines",
    )
    demo.add_argument(
        "--task",
        choices=["quadratic", "mlp"],
        default="quadratic",
        help="quadratic: §3.1 of the paper; mlp: the MNIST experiment of §3.2",
    )
    demo.add_argument(
        "--data",
        choices=["digits", "mnist", "fashion_mnist"],
        default="digits",
        help="--task mlp only: the dataset (digits ship with scikit-learn)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="--task mlp only: a directory holding the dataset's files",
    )
    demo.add_argument("--out", type=Path, default=Path("metaopt-demo"), help="output directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="meta-batches of fresh tasks (default: 100 quadratic, 20 mlp)",
    )
    demo.add_argument(
        "--tasks",
        type=_positive_int,
        default=None,
        help="tasks per meta-batch (default: 128 quadratic, 16 mlp)",
    )
    demo.add_argument("--truncation", type=_positive_int, default=20)
    demo.add_argument("--horizon", type=_positive_int, default=100)
    demo.add_argument("--meta-lr", type=_positive_float, default=3e-3)
    demo.add_argument(
        "--eval-tasks",
        type=_positive_int,
        default=None,
        help="held-out tasks (default: 256 quadratic, 64 mlp)",
    )
    demo.add_argument(
        "--tune-tasks",
        type=_positive_int,
        default=None,
        help="tasks for tuning baselines (default: 1024 quadratic, 32 mlp)",
    )
    demo.add_argument(
        "--no-generalization",
        action="store_true",
        help="--task mlp only: skip the four generalization experiments",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    train = sub.add_parser("train", help="meta-train a learned optimizer and save it")
    train.add_argument("--task", choices=TASKS, required=True)
    train.add_argument("--lopt", choices=["lstm", "mlp"], required=True)
    train.add_argument("--out", type=Path, required=True, help="output directory")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=100,
        help="meta-batches of fresh tasks (each = horizon/truncation meta-steps)",
    )
    train.add_argument("--tasks", type=_positive_int, default=32, help="tasks per meta-batch")
    train.add_argument("--truncation", type=_positive_int, default=20)
    train.add_argument("--horizon", type=_positive_int, default=100)
    train.add_argument("--meta-lr", type=_positive_float, default=1e-3)
    train.add_argument("--validate-every", type=_positive_int, default=10)
    train.add_argument("--validation-tasks", type=_positive_int, default=64)
    train.add_argument(
        "--log-and-sign-p",
        type=_positive_float,
        default=None,
        help="LSTM only: LogAndSign preprocessing with this p",
    )
    train.add_argument(
        "--output-scale",
        type=_positive_float,
        default=0.1,
        help="LSTM only: scale of the proposed update",
    )
    train.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("eval", help="evaluate a learned optimizer against tuned baselines")
    ev.add_argument("--lopt", required=True, help="pretrained name or path to a saved optimizer")
    ev.add_argument("--task", choices=TASKS, required=True)
    ev.add_argument("--out", type=Path, required=True, help="output directory")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--steps", type=_positive_int, default=100, help="updates per task")
    ev.add_argument("--eval-tasks", type=_positive_int, default=256)
    ev.add_argument("--tune-tasks", type=_positive_int, default=256)
    return parser


def _train(args: argparse.Namespace) -> None:
    import jax
    import optax

    from metaopt.demo import machine
    from metaopt.files import prepare_dir, write_json
    from metaopt.lstm import lstm_optimizer
    from metaopt.meta_train import meta_train
    from metaopt.mlp_lopt import mlp_optimizer
    from metaopt.serialization import save

    out = prepare_dir(args.out, "out")
    family = make_family(args.task)
    if args.lopt == "lstm":
        lopt = lstm_optimizer(log_and_sign_p=args.log_and_sign_p, output_scale=args.output_scale)
    else:
        lopt = mlp_optimizer()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(out / "config.json", config | {"lopt_config": lopt.config})
    metrics_path = out / "metrics.jsonl"
    with metrics_path.open("w") as metrics:

        def log(record):
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

        result = meta_train(
            lopt,
            family,
            jax.random.key(args.seed),
            num_epochs=args.epochs,
            num_tasks=args.tasks,
            truncation=args.truncation,
            horizon=args.horizon,
            meta_optimizer=optax.adam(args.meta_lr),
            validate_every=args.validate_every,
            num_validation_tasks=args.validation_tasks,
            progress=not args.no_progress,
            on_epoch=log,
        )
    save(out / "optimizer.mopt", lopt, result.theta)
    summary = {
        "best_validation_loss": result.best_validation_loss,
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "function_steps_per_second": result.function_steps_per_second,
        "machine": machine(),
    }
    write_json(out / "summary.json", summary)
    print(
        f"best validation loss {result.best_validation_loss:.4g}; "
        f"{result.function_steps_per_second:,.0f} function-steps/s"
    )
    print(f"wrote {out / 'optimizer.mopt'} and {metrics_path}")


def _eval(args: argparse.Namespace) -> None:
    import jax

    from metaopt.demo import machine
    from metaopt.files import prepare_dir, write_json
    from metaopt.optax_adapter import as_optax
    from metaopt.pretrained import load
    from metaopt.report import compare_optimizers, format_table, plot_curves

    out = prepare_dir(args.out, "out")
    lopt, theta = load(args.lopt)
    family = make_family(args.task)
    k_tune, k_eval = jax.random.split(jax.random.key(args.seed))
    optimizers = compare_optimizers(
        {"learned": as_optax(lopt, theta)},
        family,
        k_tune,
        k_eval,
        num_eval_tasks=args.eval_tasks,
        num_tune_tasks=args.tune_tasks,
        num_steps=args.steps,
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


DEMO_DEFAULTS = {
    "quadratic": {"epochs": 100, "tasks": 128, "eval_tasks": 256, "tune_tasks": 1024},
    "mlp": {"epochs": 20, "tasks": 16, "eval_tasks": 64, "tune_tasks": 32},
}


def _demo(args: argparse.Namespace) -> None:
    from metaopt.demo import mlp_demo, quadratic_demo, summary

    sizes = {k: getattr(args, k) or v for k, v in DEMO_DEFAULTS[args.task].items()}
    common = dict(
        seed=args.seed,
        epochs=sizes["epochs"],
        num_tasks=sizes["tasks"],
        truncation=args.truncation,
        horizon=args.horizon,
        meta_learning_rate=args.meta_lr,
        num_eval_tasks=sizes["eval_tasks"],
        num_tune_tasks=sizes["tune_tasks"],
        progress=not args.no_progress,
    )
    if args.task == "quadratic":
        results = quadratic_demo(args.out, **common)
    else:
        results = mlp_demo(
            args.out,
            data=args.data,
            data_dir=args.data_dir,
            generalization=not args.no_generalization,
            **common,
        )
    print(summary(results))
    written = ", ".join(str(p) for p in sorted(args.out.glob("*.png")))
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'optimizer.mopt'}, {written}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metaopt`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    run = {"demo": _demo, "train": _train, "eval": _eval}[args.command]
    try:
        run(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"metaopt {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
