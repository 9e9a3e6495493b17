"""Meta-training throughput on the paper's quadratic configuration.

128 quadratics of 10 dims per meta-batch, LSTM 2×20, truncation 20: one meta-step is
one truncated-BPTT meta-gradient plus an Adam meta-update over 20 × 128 = 2,560
function steps. Reports compile time separately from steady state, and, for scale,
the forward-only cost of the same unroll with the LSTM and with optax.adam.

Run: python benchmarks/meta_train_throughput.py [--repeats N]
"""

import argparse
import time

import jax
import optax

import metaopt as mo
from common import timed, write
from metaopt.core.unroll import unroll
from metaopt.estimators.tbptt import truncated_meta_loss
from metaopt.train.loop import make_meta_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=128)
    parser.add_argument("--truncation", type=int, default=20)
    args = parser.parse_args()

    family = mo.quadratic_family(dim=10)
    lopt = mo.lstm_optimizer(hidden_size=20, num_layers=2)
    theta = lopt.init(jax.random.key(0))
    meta_opt = optax.adam(1e-3)
    meta_state = meta_opt.init(theta)
    batch = jax.jit(lambda k: mo.init_task_batch(family, lopt, theta, k, args.tasks))(
        jax.random.key(1)
    )
    key = jax.random.key(2)
    steps = args.truncation * args.tasks

    start = time.perf_counter()
    step = (
        jax.jit(make_meta_step(lopt, family, meta_opt, args.truncation))
        .lower(theta, meta_state, batch, key)
        .compile()
    )
    compile_s = time.perf_counter() - start
    meta_step_s = timed(step, theta, meta_state, batch, key, repeats=args.repeats)

    forward = jax.jit(
        lambda th, b, k: truncated_meta_loss(th, lopt, family, b, k, args.truncation)[0]
    )
    forward_s = timed(forward, theta, batch, key, repeats=args.repeats)

    adam = optax.adam(0.1)
    adam_states = jax.vmap(lambda c, k: mo.init_inner(family, adam, c, k))(
        batch.cfgs, jax.random.split(key, args.tasks)
    )
    adam_unroll = jax.jit(
        jax.vmap(lambda c, s: unroll(family, adam, c, s, key, args.truncation)[1])
    )
    adam_s = timed(adam_unroll, batch.cfgs, adam_states, repeats=args.repeats)

    record = {
        "config": {
            "tasks": args.tasks,
            "dim": 10,
            "truncation": args.truncation,
            "lstm": lopt.config,
            "repeats": args.repeats,
        },
        "compile_seconds": compile_s,
        "meta_step_seconds": meta_step_s,
        "function_steps_per_second": steps / meta_step_s,
        "lstm_forward_unroll_seconds": forward_s,
        "adam_forward_unroll_seconds": adam_s,
        "lstm_forward_over_adam_forward": forward_s / adam_s,
        "meta_step_over_lstm_forward": meta_step_s / forward_s,
    }
    path = write("meta_train_throughput", record)
    print(f"compile                     {compile_s:8.2f} s")
    print(f"meta-step (fwd+bwd+update)  {meta_step_s * 1e3:8.2f} ms")
    print(f"throughput                  {steps / meta_step_s:8,.0f} function-steps/s")
    print(f"LSTM forward unroll         {forward_s * 1e3:8.2f} ms")
    print(
        f"Adam forward unroll         {adam_s * 1e3:8.2f} ms  (LSTM/Adam {forward_s / adam_s:.1f}x)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
