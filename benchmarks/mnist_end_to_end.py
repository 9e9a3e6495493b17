"""The paper's MNIST experiment end to end, at MNIST size, timed phase by phase.

Runs ``metaopt.experiments.learning_to_learn.mlp_demo`` (meta-training the LSTM 2×20 on
MLP(784-20-10, sigmoid), tuning SGD, NAG, RMSprop and Adam, evaluating all five, and the four
generalization settings unless ``--no-generalization``) on 28×28 images. Real MNIST
needs a download this machine may not have, so by default the images are
scikit-learn's 8×8 digits upscaled to 28×28: the same network sizes and work per step
as MNIST, with images that carry real class structure. ``--data-dir DIR`` with the
four MNIST files runs on MNIST itself.

Run: python benchmarks/mnist_end_to_end.py [--epochs N] [--tasks N] [--data-dir DIR]
"""

import argparse
import tempfile
import time

import numpy as np

from common import write
from metaopt.experiments.learning_to_learn import mlp_demo
from metaopt.tasks import datasets


def digits_28() -> datasets.Dataset:
    """The 8×8 digits, each pixel a 3×3 block, padded by 2 to 28×28."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((3, 3)))
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None]
    return datasets.from_arrays(x, d.target, name="digits_28x28", num_classes=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-generalization", action="store_true")
    args = parser.parse_args()

    data = datasets.mnist(args.data_dir, download=False) if args.data_dir else digits_28()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        res = mlp_demo(
            out,
            data=data,
            epochs=args.epochs,
            num_tasks=args.tasks,
            generalization=not args.no_generalization,
        )
    wall = time.perf_counter() - start
    meta = res["meta_train"]
    record = {
        "data": data.name,
        "config": res["config"],
        "wall_seconds": wall,
        "meta_train_seconds": meta["seconds"],
        "meta_train_compile_seconds": meta["compile_seconds"],
        "meta_train_function_steps_per_second": meta["function_steps_per_second"],
        # Everything but meta-training steps: validation, tuning, evaluation, plots.
        "tune_and_evaluate_seconds": wall - meta["seconds"],
        "final_loss_mean": {k: v["final_loss_mean"] for k, v in res["optimizers"].items()},
        "generalization_final_loss_mean": {
            name: {k: v["final_loss_mean"] for k, v in entry["optimizers"].items()}
            for name, entry in res["generalization"].items()
        },
    }
    print(f"data                       {data.name}")
    print(f"wall, end to end           {wall:8.1f} s")
    print(f"meta-training              {meta['seconds']:8.1f} s", end=" ")
    print(f"({meta['function_steps_per_second']:.1f} function-steps/s)")
    print(f"validation, tuning, eval   {wall - meta['seconds']:8.1f} s")
    print(f"wrote {write('mnist_end_to_end', record)}")


if __name__ == "__main__":
    main()
