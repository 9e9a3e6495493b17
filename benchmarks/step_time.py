"""Per-step time of learned optimizers against optax.adam on the same MLP, same run.

Beside Adam: AdamW (whose compile time the learned optimizers' is compared with) and
Muon (``optax.contrib.muon``, Newton–Schulz on every matrix), the per-step cost of an
orthogonalized direction done in full.

A training step is loss, gradient, optimizer update and apply, jitted with the
params and optimizer state donated, as a user's loop would run it. Two sizes: an
MNIST-shaped 784-20-10 MLP with batch 128 (about 16k params) and a 784-1024-256-10
MLP (about 1.07M params). Data is random: step time does not depend on its values.

Each optimizer's steps are timed in ``--repeats`` runs, the optimizers taking turns;
the median is reported, with the spread of its ratio to Adam over the repeats.

Run: python benchmarks/step_time.py [--steps N] [--repeats R] [--only NAME ...]
"""

import argparse
import itertools
import statistics
import time

import jax
import optax

import metaopt as mo
from common import write
from metaopt.tasks.regression import init_mlp, mlp_forward

SIZES = {"16k": (784, 20, 10), "1M": (784, 1024, 256, 10)}


def make_step(tx):
    def loss(params, x, y):
        logits = mlp_forward(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1))


class Timed:
    """One optimizer's compiled step on one MLP, with its own params and state."""

    def __init__(self, tx, sizes, batch=128):
        self.params = init_mlp(jax.random.key(0), sizes)
        self.x = jax.random.normal(jax.random.key(1), (batch, sizes[0]))
        self.y = jax.random.randint(jax.random.key(2), (batch,), 0, sizes[-1])
        self.state = tx.init(self.params)
        start = time.perf_counter()
        self.step = make_step(tx).lower(self.params, self.state, self.x, self.y).compile()
        self.compile_seconds = time.perf_counter() - start
        self.times = []
        self.run(5)  # warm-up

    def run(self, steps):
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.params, self.state, value = self.step(self.params, self.state, self.x, self.y)
        jax.block_until_ready((self.params, value))
        return (time.perf_counter() - start) / steps


def measure(makers, sizes, steps, repeats=3):
    """Every optimizer's compile time and per-step times; the repeats take turns, so a
    change of load on a shared machine falls on all optimizers alike."""
    timed = {name: Timed(make(), sizes) for name, make in makers.items()}
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
    record = {"steps": args.steps, "batch": 128, "sizes": {}}
    for size_name, sizes in SIZES.items():
        n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
        rows = {}
        for name, (compile_s, times) in measure(
            optimizers, sizes, args.steps, repeats=args.repeats
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
        record["sizes"][size_name] = {"layers": sizes, "params": n_params, "optimizers": rows}
        print(f"\nMLP {'-'.join(map(str, sizes))} ({n_params:,} params), batch 128")
        print(
            f"{'optimizer':<16} {'compile s':>9} {'× adamw':>8} {'step ms':>9} {'× adam':>7} "
            f"{'spread':>13}"
        )
        for name, row in rows.items():
            lo, hi = row["over_adam_min_max"]
            print(
                f"{name:<16} {row['compile_seconds']:9.2f} {row.get('compile_over_adamw', 0):8.2f} "
                f"{row['step_seconds'] * 1e3:9.3f} {row['step_time_over_adam']:7.2f} "
                f"{lo:6.2f}–{hi:<6.2f}"
            )
    print(f"\nwrote {write('step_time', record)}")


if __name__ == "__main__":
    main()
