"""MAML on sinusoids: a learned initialization, a learned optimizer, and both jointly.

Finn et al. 2017's sinusoid regression (``sinusoid_family``: 10 support and 10 query
points per task for meta-training, 100 query points for the held-out evaluation). Three
meta-learners are meta-trained with the same MAML estimator (``maml``, ``num_tasks=25``,
K inner steps, second order by default), the same meta-optimizer (Adam with cosine
decay), the same number of meta-steps and the same seed:

* ``init``: ``learned_initialization(family, optax.sgd(--inner-lr))``, i.e. MAML;
* ``lopt``: ``learned_optimizer(mlp_optimizer(...))``; each task starts from the
  family's random initialization;
* ``init+lopt``: ``combine(learned_initialization(family), learned_optimizer(...))``,
  θ = {"init", "rule"}, meta-trained jointly.

Each is then evaluated on the same held-out tasks with ``adaptation_curves``: the query
loss before and after each of ``--eval-steps`` inner updates, as mean and standard
error over tasks. An untrained reference (the family's random initialization with
SGD(0.01)) is evaluated alongside. The script prints a table and writes JSON and a PNG
plot to benchmarks/results/.

Second-order meta-gradients through ``mlp_optimizer`` were NaN on this family when
these figures were taken: about half the coordinates of the inner gradient are exactly
zero (dead ReLU units), so the optimizer's second moment ``v`` is 0 there and the
derivative of its ``sqrt(v)`` feature was infinite. The learned optimizers here start
``v`` at 1e-20 instead of 0 (``V0``), which leaves the forward computation unchanged to
float32 precision; metaopt's MLP optimizer now floors ``v`` inside the square root
itself, so ``V0`` is kept only to reproduce the recorded run. ``--first-order``
meta-trains all three with first-order MAML instead.

Settings (tuned lightly with 150-400 meta-steps, 300 held-out tasks, seed 0). MAML's
inner SGD(0.01) diverges from this family's He initialization (inputs in [-5, 5]): the
untrained reference goes from query MSE 22 to 776 after one step and to NaN, and MAML
meta-training with SGD(0.01) diverged at every meta-rate tried (Adam 1e-2, 3e-3, 1e-3,
3e-4). With SGD(0.003) it trains, best at Adam 1e-2 (query MSE after 10 steps 1.09;
3.24 at 3e-3, 3.91 at 1e-3, 4.52 at 3e-4, 400 meta-steps), so the defaults are
``--inner-lr 0.003`` and ``--lr 1e-2`` for all three learners. The MLP optimizer's
``step_mult`` β was tried at 1e-3, 1e-2 and 1e-1: for ``init+lopt`` the default 1e-3 was
best (query MSE after 5 steps 3.17, against 4.11 and 4.67, 200 meta-steps at Adam 1e-2);
for ``lopt`` 1e-2 was slightly better than 1e-3 (3.99 against 4.22); the default 1e-3 is
used for both.

Run: python benchmarks/maml_combined.py [--meta-steps 600] [--inner-steps 5] [--first-order]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metaopt as mo
from common import write
from metaopt.evaluation.adaptation import adaptation_curves

LEARNERS = ("init", "lopt", "init+lopt")
REFERENCE = "untrained"
REPORT_STEPS = (0, 1, 5, 10)
V0 = 1e-20  # initial second moment of the MLP optimizer; see the module docstring


def mlp_rule(step_mult: float) -> mo.MetaLearner:
    """``learned_optimizer(mlp_optimizer(step_mult=...))`` with ``v`` starting at ``V0``."""
    lopt = mo.mlp_optimizer(step_mult=step_mult)

    def init_state(theta, params):
        state = lopt.init_state(theta, params)
        return state._replace(second_moment=jax.tree.map(lambda v: v + V0, state.second_moment))

    return mo.learned_optimizer(lopt._replace(init_state=init_state))


def make_learner(name: str, family: mo.TaskFamily, args) -> mo.MetaLearner:
    if name == "init":
        return mo.learned_initialization(family, optax.sgd(args.inner_lr))
    if name == "lopt":
        return mlp_rule(args.step_mult)
    if name == "init+lopt":
        return mo.combine(mo.learned_initialization(family), mlp_rule(args.step_mult))
    if name == REFERENCE:
        # Not meta-trained: each task starts from the family's random init, plain SGD.
        return mo.MetaLearner(
            name=REFERENCE,
            config={},
            init=lambda key: {},
            init_params=lambda theta, fam, cfg, key: fam.init(cfg, key),
            tx=lambda theta: optax.sgd(args.inner_lr),
        )
    raise ValueError(f"unknown learner {name!r}")


def evaluate(learner, theta, family, key, args) -> dict:
    """Adaptation curves on held-out tasks: mean and standard error per inner step."""
    run = jax.jit(
        lambda th, k: adaptation_curves(
            learner, th, family, k, num_tasks=args.eval_tasks, num_steps=args.eval_steps
        )
    )
    start = time.perf_counter()
    losses = np.asarray(jax.block_until_ready(run(theta, key)), dtype=np.float64)
    n = losses.shape[0]
    return {
        "losses": losses,
        "mean": losses.mean(axis=0).tolist(),
        "stderr": (losses.std(axis=0, ddof=1) / np.sqrt(n)).tolist(),
        "median": np.median(losses, axis=0).tolist(),
        "finite_tasks": int(np.isfinite(losses).all(axis=1).sum()),
        "seconds": time.perf_counter() - start,
    }


def meta_train(name, family, args) -> tuple[mo.MetaLearner, dict, dict]:
    learner = make_learner(name, family, args)
    est = mo.maml(
        learner,
        family,
        num_tasks=args.num_tasks,
        inner_steps=args.inner_steps,
        first_order=args.first_order,
        remat=args.remat,
    )
    schedule = optax.cosine_decay_schedule(args.lr, args.meta_steps)
    result = mo.meta_train(
        est,
        jax.random.key(args.seed),
        num_steps=args.meta_steps,
        meta_optimizer=optax.adam(schedule),
        progress=False,
    )
    meta_loss = [float(h["meta_loss"]) for h in result.history]
    tail = meta_loss[-max(1, len(meta_loss) // 10) :]
    record = {
        "meta_train_seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "seconds_per_meta_step": result.seconds / args.meta_steps,
        "skipped_updates": int(sum(h["skipped"] for h in result.history)),
        "final_meta_loss": float(np.mean(tail)),
        "meta_loss_history": meta_loss,
    }
    return learner, result.last_theta, record


def smooth(xs: list[float], width: int) -> np.ndarray:
    width = max(1, min(width, len(xs)))
    return np.convolve(np.asarray(xs), np.ones(width) / width, mode="valid")


def plot(results: dict, args, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "init": "tab:blue",
        "lopt": "tab:orange",
        "init+lopt": "tab:green",
        REFERENCE: "tab:gray",
    }
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = np.arange(args.eval_steps + 1)
    for name, r in results.items():
        mean, se = np.asarray(r["eval"]["mean"]), np.asarray(r["eval"]["stderr"])
        style = ":" if name == REFERENCE else "-"
        ax.plot(steps, mean, style, marker="o", ms=3, color=colors[name], label=name)
        ax.fill_between(steps, mean - se, mean + se, color=colors[name], alpha=0.2)
    ax.axvline(args.inner_steps, color="k", linestyle=":", lw=0.8)
    ax.set(
        yscale="log",
        xlabel="adaptation step on the support set",
        ylabel="query MSE (mean ± s.e.)",
        title=f"held-out sinusoids: {args.eval_tasks} tasks, {args.eval_query_shots} query points",
    )
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    width = max(1, args.meta_steps // 20)
    for name, r in results.items():
        if "meta_loss_history" not in r:
            continue
        curve = smooth(r["meta_loss_history"], width)
        bx.plot(np.arange(len(curve)) + width, curve, color=colors[name], label=name)
    order = "first" if args.first_order else "second"
    bx.set(
        yscale="log",
        xlabel="meta-step",
        ylabel=f"meta-loss (query MSE after K={args.inner_steps}), moving mean",
        title=f"{order}-order MAML, {args.num_tasks} tasks/step, Adam {args.lr:g} cosine",
    )
    bx.legend()
    bx.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meta-steps", type=int, default=600, help="meta-steps per learner")
    parser.add_argument("--inner-steps", type=int, default=5, help="K during meta-training")
    parser.add_argument("--num-tasks", type=int, default=25, help="tasks per meta-batch")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's peak meta-learning rate")
    parser.add_argument("--inner-lr", type=float, default=0.003, help="SGD rate of 'init'")
    parser.add_argument("--step-mult", type=float, default=1e-3, help="mlp_optimizer's β")
    parser.add_argument("--first-order", action="store_true", help="first-order MAML")
    parser.add_argument("--remat", default="none", choices=("none", "step", "nested"))
    parser.add_argument("--eval-tasks", type=int, default=1000)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--eval-query-shots", type=int, default=100)
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only (for tuning)")
    args = parser.parse_args()

    train_family = mo.sinusoid_family(shots=10, query_shots=10)
    eval_family = mo.sinusoid_family(shots=10, query_shots=args.eval_query_shots)
    eval_key = jax.random.key(args.seed + 1000)  # the same held-out tasks for every learner

    results = {}
    for name in args.learners:
        learner, theta, record = meta_train(name, train_family, args)
        print(
            f"{name}: {args.meta_steps} meta-steps in {record['meta_train_seconds']:.1f} s "
            f"(+{record['compile_seconds']:.1f} s compile), "
            f"final meta-loss {record['final_meta_loss']:.3f}, "
            f"{record['skipped_updates']} updates skipped",
            flush=True,
        )
        record["eval"] = evaluate(learner, theta, eval_family, eval_key, args)
        results[name] = record
    reference = make_learner(REFERENCE, train_family, args)
    results[REFERENCE] = {"eval": evaluate(reference, {}, eval_family, eval_key, args)}

    shown = [s for s in REPORT_STEPS if s <= args.eval_steps]
    header = f"{'learner':>10} " + " ".join(f"{f'after {s}':>15}" for s in shown)
    print(f"\nquery MSE on {args.eval_tasks} held-out tasks, mean ± s.e.")
    print(f"{header} {'meta-train s':>12} {'compile s':>9}")
    for name, r in results.items():
        e = r["eval"]
        cells = " ".join(f"{e['mean'][s]:>7.3f} ± {e['stderr'][s]:<5.3f}" for s in shown)
        timing = (
            f"{r['meta_train_seconds']:>12.1f} {r['compile_seconds']:>9.1f}"
            if "meta_train_seconds" in r
            else f"{'-':>12} {'-':>9}"
        )
        print(f"{name:>10} {cells} {timing}")

    # Paired comparison on the same tasks: the best against each other, at each step shown.
    trained = list(args.learners)
    comparisons = {}
    for s in shown:
        best = min(trained, key=lambda n: results[n]["eval"]["mean"][s])
        for other in trained:
            if other == best:
                continue
            diff = results[other]["eval"]["losses"][:, s] - results[best]["eval"]["losses"][:, s]
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            comparisons[f"{other}-{best}@{s}"] = {"mean": float(diff.mean()), "stderr": float(se)}
        print(f"best after {s} steps: {best}")
    for k, v in comparisons.items():
        print(f"  paired difference {k}: {v['mean']:.3f} ± {v['stderr']:.3f}")

    for r in results.values():
        del r["eval"]["losses"]
    if args.no_write:
        return
    order = "first" if args.first_order else "second"
    record = {
        "config": {
            "train_family": "sinusoid shots=10 query_shots=10",
            "eval_family": f"sinusoid shots=10 query_shots={args.eval_query_shots}",
            "estimator": f"maml ({order} order), remat={args.remat}",
            "num_tasks": args.num_tasks,
            "inner_steps": args.inner_steps,
            "meta_steps": args.meta_steps,
            "meta_optimizer": f"adam(cosine_decay_schedule({args.lr}, {args.meta_steps}))",
            "init_inner_optimizer": f"sgd({args.inner_lr})",
            "lopt": f"mlp_optimizer(step_mult={args.step_mult}), second moment starts at {V0}",
            "eval_tasks": args.eval_tasks,
            "eval_steps": args.eval_steps,
            "seed": args.seed,
            "jax_backend": jax.default_backend(),
            "float": str(jnp.zeros(()).dtype),
        },
        "results": results,
        "paired_differences": comparisons,
    }
    path = write("maml_combined", record)
    plot(results, args, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
