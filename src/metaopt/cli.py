"""The ``metaopt`` command line."""

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``metaopt`` command."""
    parser = argparse.ArgumentParser(
        prog="metaopt", description="Learned optimizers and meta-learning in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="meta-train the LSTM optimizer on quadratics and compare it with tuned baselines",
    )
    demo.add_argument("--task", choices=["quadratic"], default="quadratic")
    demo.add_argument("--out", type=Path, default=Path("metaopt-demo"), help="output directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=150,
        help="meta-batches of fresh tasks (each = horizon/truncation meta-steps)",
    )
    demo.add_argument("--tasks", type=_positive_int, default=128, help="tasks per meta-batch")
    demo.add_argument("--truncation", type=_positive_int, default=20)
    demo.add_argument("--horizon", type=_positive_int, default=100)
    demo.add_argument("--meta-lr", type=_positive_float, default=3e-3)
    demo.add_argument("--eval-tasks", type=_positive_int, default=256)
    demo.add_argument("--tune-tasks", type=_positive_int, default=1024)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metaopt`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from metaopt.demo import quadratic_demo, summary

        try:
            results = quadratic_demo(
                args.out,
                seed=args.seed,
                epochs=args.epochs,
                num_tasks=args.tasks,
                truncation=args.truncation,
                horizon=args.horizon,
                meta_learning_rate=args.meta_lr,
                num_eval_tasks=args.eval_tasks,
                num_tune_tasks=args.tune_tasks,
                progress=not args.no_progress,
            )
        except (ValueError, TypeError, OSError) as e:
            print(f"metaopt demo: error: {e}", file=sys.stderr)
            return 2
        print(summary(results))
        print(f"\nwrote {args.out / 'results.json'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
