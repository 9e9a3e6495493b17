"""Meta-training throughput on an MNIST-size MLP (784-20-10, batch 128), LSTM 2×20.

The data is MNIST-shaped random pixels: throughput does not depend on the values.
One meta-step is a truncation of 20 inner steps on every task of the meta-batch plus
the meta-update. Also times the forward-only unroll on the same tasks with the LSTM
(what evaluation and validation run) and with optax.adam, and records where a
meta-step's time goes: the compiled program's temporary memory, user and system CPU
seconds, and minor page faults per meta-step.

Run: python benchmarks/mnist_meta_train_throughput.py [--tasks N] [--repeats N]
"""

import argparse
import time

import jax
import numpy as np
import optax

import metaopt as mo
from common import cpu_usage, timed, write
from metaopt.core.types import with_data
from metaopt.core.unroll import unroll
from metaopt.tasks.classification import mlp_classifier_family
from metaopt.tasks.datasets import from_arrays
from metaopt.train.loop import make_meta_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((12000, 28, 28, 1), dtype=np.float32)
    dataset = from_arrays(x, rng.integers(0, 10, 12000), num_classes=10)
    family = mlp_classifier_family(dataset, split="train", hidden_sizes=(20,))
    lopt = mo.lstm_optimizer(log_and_sign_p=10.0, output_scale=0.1)
    theta = lopt.init(jax.random.key(0))
    meta_opt = optax.adam(1e-3)
    meta_state = meta_opt.init(theta)
    batch = mo.init_task_batch(family, lopt, theta, jax.random.key(1), args.tasks)
    key = jax.random.key(2)

    def step(data, *rest):
        return make_meta_step(lopt, with_data(family, data), meta_opt, args.truncation)(*rest)

    start = time.perf_counter()
    compiled = jax.jit(step).lower(family.data, theta, meta_state, batch, key).compile()
    compile_s = time.perf_counter() - start
    usage = cpu_usage(compiled, family.data, theta, meta_state, batch, key, repeats=args.repeats)
    meta_step_s = usage["wall_seconds"]
    memory = compiled.memory_analysis()
    steps = args.truncation * args.tasks

    def forward_unroll(make_tx):
        """A jitted forward-only unroll of every task with ``make_tx(tx_args)``."""

        def run(data, tx_args, inner):
            fam, tx = with_data(family, data), make_tx(tx_args)
            return jax.vmap(lambda c, s: unroll(fam, tx, c, s, key, args.truncation)[1])(
                batch.cfgs, inner
            )

        return jax.jit(run)

    lstm = forward_unroll(lambda theta: mo.as_optax(lopt, theta))
    lstm_s = timed(lstm, family.data, theta, batch.inner, repeats=args.repeats)

    adam = optax.adam(1e-3)
    adam_inner = mo.InnerState(
        batch.inner.params, jax.vmap(adam.init)(batch.inner.params), batch.inner.step
    )
    adam_s = timed(
        forward_unroll(lambda _: adam), family.data, None, adam_inner, repeats=args.repeats
    )
    record = {
        "config": {
            "mlp": "784-20-10 sigmoid",
            "batch": 128,
            "tasks": args.tasks,
            "truncation": args.truncation,
            "lstm": lopt.config,
        },
        "compile_seconds": compile_s,
        "meta_step_seconds": meta_step_s,
        "function_steps_per_second": steps / meta_step_s,
        "meta_step_cpu": usage,
        "meta_step_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "lstm_forward_unroll_seconds": lstm_s,
        "lstm_forward_function_steps_per_second": steps / lstm_s,
        "adam_forward_unroll_seconds": adam_s,
        "adam_forward_function_steps_per_second": steps / adam_s,
    }
    print(f"compile                      {compile_s:8.2f} s")
    print(f"meta-step ({steps} function steps) {meta_step_s:8.3f} s")
    print(f"throughput                   {steps / meta_step_s:8.1f} function-steps/s")
    print(
        f"  CPU per meta-step: user {usage['user_cpu_seconds']:.2f} s, "
        f"system {usage['system_cpu_seconds']:.2f} s, "
        f"{usage['minor_page_faults']:.0f} minor page faults"
    )
    if record["meta_step_temp_bytes"] is not None:
        print(f"  temporary memory: {record['meta_step_temp_bytes'] / 2**20:.0f} MiB")
    print(f"LSTM forward unroll          {steps / lstm_s:8.1f} function-steps/s")
    print(f"Adam forward unroll          {steps / adam_s:8.1f} function-steps/s")
    print(f"wrote {write('mnist_meta_train_throughput', record)}")


if __name__ == "__main__":
    main()
