"""Meta-training throughput on an MNIST-size MLP (784-20-10, batch 128), LSTM 2×20.

The data is MNIST-shaped random pixels: throughput does not depend on the values.
One meta-step is a truncated-BPTT meta-gradient (:func:`metaopt.tbptt`, truncation 20,
horizon 100) on every task of the meta-batch plus the meta-update; the dataset enters
the compiled program as an argument (``with_data``), never as a constant. Also times
the forward-only unroll on the same tasks with the LSTM (what evaluation and
validation run) and with optax.adam, interleaved with the meta-step so the ratios
survive a noisy machine, and records where a meta-step's time goes: the compiled
program's temporary memory, user and system CPU seconds, and minor page faults per
meta-step. Figures are the median, min and max over ``--repeats`` rounds.

Run: python benchmarks/mnist_meta_train_throughput.py [--tasks N] [--repeats N]
"""

import argparse
import os

import jax
import numpy as np
import optax

import metaopt as mo
from common import cpu_usage, write
from estimator_throughput import Bench, run_rounds
from metaopt.core.types import with_data
from metaopt.core.unroll import InnerState
from metaopt.tasks.classification import mlp_classifier_family
from metaopt.tasks.datasets import from_arrays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()

    rng = np.random.default_rng(0)
    x = rng.random((12000, 28, 28, 1), dtype=np.float32)
    dataset = from_arrays(x, rng.integers(0, 10, 12000), num_classes=10)
    family = mlp_classifier_family(dataset, split="train", hidden_sizes=(20,))
    lopt = mo.lstm_optimizer(log_and_sign_p=10.0, output_scale=0.1)
    learner = mo.learned_optimizer(lopt)
    est = mo.tbptt(
        learner, family, num_tasks=args.tasks, truncation=args.truncation, horizon=args.horizon
    )
    meta_opt = optax.adam(1e-3)
    theta = learner.init(jax.random.key(0))
    data = family.data
    tasks = jax.jit(lambda d, th, k: with_data(est, d).init(th, k))(data, theta, jax.random.key(1))
    state = mo.MetaState(theta, meta_opt.init(theta), tasks)
    steps = est.function_steps

    def meta_step(data, state, key):
        return mo.make_meta_step(with_data(est, data), meta_opt)(state, key)

    step = jax.jit(meta_step)
    meta = Bench("meta-step", lambda s, k: step(data, s, k), state, steps, {})
    compiled = step.lower(data, meta.carry, jax.random.key(2)).compile()
    memory = compiled.memory_analysis()

    def forward_unroll(make_tx):
        """A jitted forward-only unroll of every task with ``make_tx(tx_args)``."""

        def run(data, carry, key):
            tx_args, inner = carry
            fam, tx = with_data(family, data), make_tx(tx_args)
            keys = jax.random.split(key, args.tasks)
            inner, losses = jax.vmap(lambda c, s, k: mo.unroll(fam, tx, c, s, k, args.truncation))(
                tasks.cfg, inner, keys
            )
            return (tx_args, inner), losses

        jitted = jax.jit(run)
        return lambda carry, key: jitted(data, carry, key)

    lstm = Bench(
        "lstm forward",
        forward_unroll(lambda theta: mo.as_optax(lopt, theta)),
        (theta, tasks.inner),
        steps,
        {},
    )
    adam = optax.adam(1e-3)
    adam_inner = InnerState(
        tasks.inner.params, jax.vmap(adam.init)(tasks.inner.params), tasks.inner.step
    )
    adam_fn = forward_unroll(lambda _: adam)
    adam_bench = Bench("adam forward", adam_fn, (None, adam_inner), steps, {})
    benches = [meta, lstm, adam_bench]
    run_rounds(benches, args.repeats, 1)
    rows = {b.name: b.summary() for b in benches}
    usage = cpu_usage(compiled, data, meta.carry, jax.random.key(3), repeats=args.repeats)

    record = {
        "config": {
            "mlp": "784-20-10 sigmoid",
            "batch": 128,
            "tasks": args.tasks,
            "truncation": args.truncation,
            "horizon": args.horizon,
            "lstm": lopt.config,
            "repeats": args.repeats,
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "compile_seconds": meta.compile_seconds,
        "compiles_on_second_call": meta.recompiles,
        "meta_step_seconds": rows["meta-step"]["seconds_per_call_median"],
        "function_steps_per_second": rows["meta-step"]["function_steps_per_second"],
        "meta_step_cpu": usage,
        "meta_step_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "lstm_forward_unroll_seconds": rows["lstm forward"]["seconds_per_call_median"],
        "lstm_forward_function_steps_per_second": rows["lstm forward"]["function_steps_per_second"],
        "adam_forward_unroll_seconds": rows["adam forward"]["seconds_per_call_median"],
        "adam_forward_function_steps_per_second": rows["adam forward"]["function_steps_per_second"],
        "details": rows,
    }

    def spread(name):
        fs = rows[name]["function_steps_per_second"]
        return f"{fs['median']:8.1f} function-steps/s (min {fs['min']:.1f}, max {fs['max']:.1f})"

    print(
        f"compile                      {meta.compile_seconds:8.2f} s "
        f"(second call compiles: {meta.recompiles})"
    )
    print(f"meta-step ({steps} function steps) {record['meta_step_seconds']:8.3f} s (median)")
    print(f"throughput                   {spread('meta-step')}")
    print(
        f"  CPU per meta-step: user {usage['user_cpu_seconds']:.2f} s, "
        f"system {usage['system_cpu_seconds']:.2f} s, "
        f"{usage['minor_page_faults']:.0f} minor page faults"
    )
    if record["meta_step_temp_bytes"] is not None:
        print(f"  temporary memory: {record['meta_step_temp_bytes'] / 2**20:.0f} MiB")
    print(f"LSTM forward unroll          {spread('lstm forward')}")
    print(f"Adam forward unroll          {spread('adam forward')}")
    print(f"load average before {load_before}, after {record['load_average_after']}")
    print(f"wrote {write('mnist_meta_train_throughput', record)}")


if __name__ == "__main__":
    main()
