"""A learned optimizer as the meta-optimizer: the versatile optimizer trains an LSTM optimizer.

Andrychowicz et al. 2016 suggest the meta-optimizer "could be another optimizer trained
by an even higher-level meta-learner". ``meta_train`` takes any optax transformation as
its meta-optimizer, and a shipped learned optimizer is one (``metaopt.pretrained``), so
this script meta-trains the same LSTM optimizer (``lstm_optimizer()``) on 10-d random
quadratics with the same estimator, seed and meta-steps under several meta-optimizers:

* ``metaopt.pretrained("versatile")``, which has no learning rate to set;
* ``optax.adam`` at 1e-3 (``metaopt train``'s default meta learning rate) and 3e-3;

each behind ``optax.clip_by_global_norm(1.0)``, as the README uses the versatile
optimizer. The estimator is truncated BPTT (32 tasks, truncation 20, horizon 100); every
``--validate-every`` meta-steps the LSTM optimizer's mean final loss after 100 steps on
the same 128 held-out quadratics is recorded. For scale, tuned Adam as the inner
optimizer on those tasks (its rate picked on other tasks) and the untrained LSTM are
measured too. Prints a table and writes JSON and a PNG (validation loss over
meta-steps) to benchmarks/results/.

Run: python benchmarks/learned_meta_optimizer.py [--meta-steps 1500]
"""

import argparse
import time

import jax
import numpy as np
import optax

import metaopt as mo
from common import RESULTS, write

META_OPTIMIZERS = {
    "versatile (learned)": lambda: mo.pretrained("versatile"),
    "adam 1e-3": lambda: optax.adam(1e-3),
    "adam 3e-3": lambda: optax.adam(3e-3),
}
INNER_STEPS = 100


def meta_train(name: str, args, validate) -> dict:
    learner = mo.learned_optimizer(mo.lstm_optimizer())
    est = mo.tbptt(learner, mo.quadratic_family(), num_tasks=32, truncation=20, horizon=100)
    meta_opt = optax.chain(optax.clip_by_global_norm(1.0), META_OPTIMIZERS[name]())
    start = time.perf_counter()
    result = mo.meta_train(
        est,
        jax.random.key(args.seed),
        num_steps=args.meta_steps,
        meta_optimizer=meta_opt,
        validate=validate,
        validate_every=args.validate_every,
        progress=False,
    )
    seconds = time.perf_counter() - start
    curve = [(h["step"], h["validation_loss"]) for h in result.history if "validation_loss" in h]
    return {
        "meta_optimizer": name,
        "validation_steps": [s for s, _ in curve],
        "validation_loss": [v for _, v in curve],
        "meta_loss": [h["meta_loss"] for h in result.history],
        "final_validation_loss": curve[-1][1],
        "best_validation_loss": result.best_validation_loss,
        "skipped_updates": int(sum(h["skipped"] for h in result.history)),
        "seconds": seconds,
        "compile_seconds": result.compile_seconds,
    }


def plot(runs: list[dict], references: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        style = "-" if r["meta_optimizer"].startswith("versatile") else "--"
        ax.plot(r["validation_steps"], r["validation_loss"], style, marker="o", ms=3,
                label=r["meta_optimizer"])  # fmt: skip
        width = max(1, len(r["meta_loss"]) // 30)
        smooth = np.convolve(r["meta_loss"], np.ones(width) / width, mode="valid")
        bx.plot(np.arange(len(smooth)) + width, smooth, style, label=r["meta_optimizer"])
    for name, value in references.items():
        ax.axhline(value, color="gray", linestyle=":" if "adam" in name else "-.", lw=1)
        ax.annotate(name, (0, value), textcoords="offset points", xytext=(4, 3), fontsize=8,
                    color="gray")  # fmt: skip
    ax.set(
        yscale="log",
        xlabel="meta-step",
        ylabel=f"held-out final loss after {INNER_STEPS} steps",
        title="LSTM optimizer on 10-d quadratics: validation",
    )
    bx.set(yscale="log", xlabel="meta-step", ylabel="meta-loss (moving mean)",
           title="truncated BPTT meta-loss")  # fmt: skip
    for a in (ax, bx):
        a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meta-steps", type=int, default=1500)
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    family = mo.quadratic_family()
    learner = mo.learned_optimizer(mo.lstm_optimizer())
    validate = mo.validation_loss(
        learner, family, jax.random.key(1000), num_tasks=128, num_steps=INNER_STEPS
    )
    tuned = mo.tune_learning_rate(
        optax.adam, family, jax.random.key(2000), list(mo.log_grid(1e-3, 1.0, 13)),
        num_steps=INNER_STEPS,
    )  # fmt: skip
    adam_loss = mo.validation_loss(
        mo.MetaLearner("adam", {}, lambda k: {}, lambda th, f, c, k: f.init(c, k),
                       lambda th: optax.adam(tuned.learning_rate)),
        family, jax.random.key(1000), num_tasks=128, num_steps=INNER_STEPS,
    )({})  # fmt: skip
    references = {
        f"inner Adam, tuned ({tuned.learning_rate:.3g})": adam_loss,
        "untrained LSTM": validate(learner.init(jax.random.key(args.seed))),
    }
    runs = []
    for name in META_OPTIMIZERS:
        r = meta_train(name, args, validate)
        runs.append(r)
        print(
            f"{name}: final {r['final_validation_loss']:.4g}, best "
            f"{r['best_validation_loss']:.4g} ({r['seconds']:.0f} s)",
            flush=True,
        )

    print(f"\nheld-out final loss after {INNER_STEPS} steps (128 quadratics), "
          f"{args.meta_steps} meta-steps\n")  # fmt: skip
    print("| meta-optimizer | final | best | meta-train s |")
    print("| --- | --- | --- | --- |")
    for r in runs:
        print(
            f"| {r['meta_optimizer']} | {r['final_validation_loss']:.4g} | "
            f"{r['best_validation_loss']:.4g} | {r['seconds']:.0f} |"
        )
    for name, value in references.items():
        print(f"| ({name}) | {value:.4g} | | |")
    if args.no_write:
        return
    record = {
        "setup": {
            "inner": "lstm_optimizer() on quadratic_family(dim=10)",
            "estimator": "tbptt(num_tasks=32, truncation=20, horizon=100)",
            "meta_optimizers": "optax.chain(optax.clip_by_global_norm(1.0), X)",
            "meta_steps": args.meta_steps,
            "validate_every": args.validate_every,
            "validation": f"128 held-out quadratics, final loss after {INNER_STEPS} steps",
            "seed": args.seed,
        },
        "references": references,
        "inner_adam_tuned_learning_rate": tuned.learning_rate,
        "runs": runs,
    }
    path = write("learned_meta_optimizer", record)
    png = RESULTS / path.name.replace(".json", ".png")
    plot(runs, references, png)
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    main()
