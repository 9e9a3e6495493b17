"""Per-step time of learned optimizers against optax.adam on the same MLP, same run.

Beside Adam: AdamW (whose compile time the learned optimizers' is compared with) and
Muon (``optax.contrib.muon``, Newton–Schulz on every matrix), the per-step cost of an
orthogonalized direction done in full.

A training step is loss, gradient, optimizer update and apply, jitted with the
params and optimizer state donated, as a user's loop would run it. Three models: an
MNIST-shaped 784-20-10 MLP with batch 128 (about 16k params), a 784-1024-256-10 MLP
(about 1.07M params), and the report suite's nnx character transformer (2 blocks of
width 48, batch 8 of 64 tokens), whose step is also compared with AdamW's. Data is
random: step time does not depend on its values.

Each optimizer's steps are timed in ``--repeats`` runs, the optimizers taking turns;
the median is reported, with the spread of its ratio to Adam over the repeats.

Run: python benchmarks/step_time.py [--steps N] [--repeats R] [--only NAME ...]
"""

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import metaopt as mo
from common import write
from metaopt.evaluation.report_models import CharTransformer, causal_lm_loss, nnx_functions
from metaopt.tasks.regression import init_mlp, mlp_forward

SIZES = {"16k": (784, 20, 10), "1M": (784, 1024, 256, 10)}
# The report suite's character transformer (2 blocks of width 48, 4 heads, context 64,
# batch 8): a full training step of a model with attention, LayerNorm and embeddings.
TRANSFORMER = {"vocab": 96, "dim": 48, "depth": 2, "heads": 4, "seq_len": 64, "batch": 8}


class Problem(NamedTuple):
    """A model to time: its params, one batch, and ``loss(params, *batch)``."""

    params: object
    batch: tuple
    loss: Callable
    params_count: int


def mlp_problem(sizes, batch=128) -> Problem:
    """An MLP classifier on one random batch (step time does not depend on the data)."""

    def loss(params, x, y):
        logits = mlp_forward(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    x = jax.random.normal(jax.random.key(1), (batch, sizes[0]))
    y = jax.random.randint(jax.random.key(2), (batch,), 0, sizes[-1])
    count = sum(a * b + b for a, b in itertools.pairwise(sizes))
    return Problem(init_mlp(jax.random.key(0), sizes), (x, y), loss, count)


def transformer_problem() -> Problem:
    """The report suite's nnx character transformer on one random batch of tokens."""
    c = TRANSFORMER
    init, apply = nnx_functions(
        lambda rngs: CharTransformer(
            c["vocab"], c["dim"], c["depth"], c["heads"], c["seq_len"], rngs=rngs
        )
    )
    params, state = init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (c["batch"], c["seq_len"] + 1), 0, c["vocab"])

    def loss(params, tokens):
        logits, _ = apply(params, state, True, tokens[:, :-1])
        return causal_lm_loss(logits, tokens[:, 1:])

    count = sum(x.size for x in jax.tree.leaves(params))
    return Problem(params, (tokens,), loss, count)


def make_step(tx, loss):
    def step(params, state, *batch):
        value, grads = jax.value_and_grad(loss)(params, *batch)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1))


class Timed:
    """One optimizer's compiled step on one problem, with its own params and state."""

    def __init__(self, tx, problem: Problem):
        self.params = jax.tree.map(jnp.copy, problem.params)
        self.batch = problem.batch
        self.state = tx.init(self.params)
        start = time.perf_counter()
        step = make_step(tx, problem.loss)
        self.step = step.lower(self.params, self.state, *self.batch).compile()
        self.compile_seconds = time.perf_counter() - start
        self.times = []
        self.run(5)  # warm-up

    def run(self, steps):
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.params, self.state, value = self.step(self.params, self.state, *self.batch)
        jax.block_until_ready((self.params, value))
        return (time.perf_counter() - start) / steps


def measure(makers, problem: Problem, steps, repeats=3):
    """Every optimizer's compile time and per-step times; the repeats take turns, so a
    change of load on a shared machine falls on all optimizers alike."""
    timed = {name: Timed(make(), problem) for name, make in makers.items()}
    for _ in range(repeats):
        for t in timed.values():
            t.times.append(t.run(steps))
    return {name: (t.compile_seconds, t.times) for name, t in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of --steps each")
    parser.add_argument("--only", nargs="*", help="optimizers to time besides adam")
    args = parser.parse_args()
    optimizers = {
        "adam": lambda: optax.adam(1e-3),
        "adamw": lambda: optax.adamw(1e-3),
        "muon": lambda: optax.contrib.muon(0.02),
    }
    for name in mo.pretrained_names():
        optimizers[name] = lambda name=name: mo.pretrained(name)
    # The versatile architecture's cost does not depend on its weights' values.
    versatile = mo.versatile_optimizer()
    optimizers["versatile"] = lambda: mo.as_optax(versatile, versatile.init(jax.random.key(0)))
    orthogonal = mo.orthogonal_optimizer()
    optimizers["orthogonal"] = lambda: mo.as_optax(orthogonal, orthogonal.init(jax.random.key(0)))
    if args.only:
        keep = ("adam", "adamw", *args.only)
        optimizers = {k: v for k, v in optimizers.items() if k in keep}
    record = {"steps": args.steps, "batch": 128, "transformer": TRANSFORMER, "sizes": {}}
    problems = {name: (sizes, lambda s=sizes: mlp_problem(s)) for name, sizes in SIZES.items()}
    problems["transformer"] = ("transformer 2×48", transformer_problem)
    for size_name, (sizes, make_problem) in problems.items():
        problem = make_problem()
        n_params = problem.params_count
        rows = {}
        for name, (compile_s, times) in measure(
            optimizers, problem, args.steps, repeats=args.repeats
        ).items():
            rows[name] = {
                "compile_seconds": compile_s,
                "step_seconds": statistics.median(times),
                "step_seconds_repeats": times,
            }
        adam, adamw = rows["adam"], rows.get("adamw")
        for row in rows.values():
            row["step_time_over_adam"] = row["step_seconds"] / adam["step_seconds"]
            if adamw is not None:
                row["compile_over_adamw"] = row["compile_seconds"] / adamw["compile_seconds"]
            # The spread of the ratio: each repeat against Adam's repeat of the same index.
            pairs = zip(row["step_seconds_repeats"], adam["step_seconds_repeats"], strict=True)
            ratios = [a / b for a, b in pairs]
            row["over_adam_min_max"] = [min(ratios), max(ratios)]
            if adamw is not None:
                row["step_time_over_adamw"] = row["step_seconds"] / adamw["step_seconds"]
        record["sizes"][size_name] = {"layers": sizes, "params": n_params, "optimizers": rows}
        shape = sizes if isinstance(sizes, str) else "MLP " + "-".join(map(str, sizes))
        print(f"\n{shape} ({n_params:,} params)")
        print(
            f"{'optimizer':<16} {'compile s':>9} {'× adamw':>8} {'step ms':>9} {'× adam':>7} "
            f"{'spread':>13} {'× adamw':>8}"
        )
        for name, row in rows.items():
            lo, hi = row["over_adam_min_max"]
            print(
                f"{name:<16} {row['compile_seconds']:9.2f} {row.get('compile_over_adamw', 0):8.2f} "
                f"{row['step_seconds'] * 1e3:9.3f} {row['step_time_over_adam']:7.2f} "
                f"{lo:6.2f}–{hi:<6.2f} {row.get('step_time_over_adamw', 0):8.2f}"
            )
    print(f"\nwrote {write('step_time', record)}")


if __name__ == "__main__":
    main()
