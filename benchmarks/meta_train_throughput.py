"""Meta-training throughput on the paper's quadratic configuration.

128 quadratics of 10 dims per meta-batch, LSTM 2×20, truncation 20, horizon 100: one
meta-step is one truncated-BPTT meta-gradient (:func:`metaopt.tbptt`) plus an Adam
meta-update over 20 × 128 = 2,560 function steps. Reports compile time separately
from steady state, and, for scale, the forward-only cost of the same truncation with
the LSTM (``run_truncation`` vmapped over the tasks, no gradient) and of optax.adam's
unroll on the same tasks, timed in the same run, interleaved, so the ratios survive a
noisy machine. Figures are the median, min and max over ``--repeats`` rounds of
``--calls`` consecutive calls each, after block_until_ready.

Run: python benchmarks/meta_train_throughput.py [--repeats N] [--calls N] [--remat POLICY]
"""

import argparse
import os

import jax
import optax

import metaopt as mo
from common import write
from estimator_throughput import Bench, run_rounds
from metaopt.core.unroll import init_inner
from metaopt.estimators.objectives import trajectory_mean
from metaopt.estimators.schedules import constant_schedule
from metaopt.estimators.truncation import REMAT_POLICIES, run_truncation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=128)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--remat", default="step", choices=REMAT_POLICIES)
    args = parser.parse_args()
    load_before = os.getloadavg()

    family = mo.quadratic_family(dim=10)
    lopt = mo.lstm_optimizer(hidden_size=20, num_layers=2)
    learner = mo.learned_optimizer(lopt)
    est = mo.tbptt(
        learner,
        family,
        num_tasks=args.tasks,
        truncation=args.truncation,
        horizon=args.horizon,
        remat=args.remat,
    )
    meta_opt = optax.adam(1e-3)
    theta = learner.init(jax.random.key(0))
    tasks = jax.jit(est.init)(theta, jax.random.key(1))
    state = mo.MetaState(theta, meta_opt.init(theta), tasks)
    steps = est.function_steps
    meta = Bench("meta-step", jax.jit(mo.make_meta_step(est, meta_opt)), state, steps, {})

    schedule, objective = constant_schedule(args.horizon), trajectory_mean()

    def lstm_forward(carry, key):
        """The tasks' truncation with the LSTM, forward only (what the estimator differentiates)."""
        theta, tasks = carry
        keys = jax.random.split(key, args.tasks)
        one = lambda t, k: run_truncation(  # noqa: E731
            learner, family, objective, schedule, theta, t, k, args.truncation
        )
        tasks, trace = jax.vmap(one)(tasks, keys)
        return (theta, tasks), trace.measure

    forward = Bench("lstm forward", jax.jit(lstm_forward), (theta, tasks), steps, {})

    adam = optax.adam(0.1)
    adam_inner = jax.vmap(lambda c, k: init_inner(family, adam, c, k))(
        tasks.cfg, jax.random.split(jax.random.key(2), args.tasks)
    )

    def adam_forward(inner, key):
        keys = jax.random.split(key, args.tasks)
        run = lambda c, s, k: mo.unroll(family, adam, c, s, k, args.truncation)  # noqa: E731
        return jax.vmap(run)(tasks.cfg, inner, keys)

    adam_bench = Bench("adam forward", jax.jit(adam_forward), adam_inner, steps, {})
    benches = [meta, forward, adam_bench]
    run_rounds(benches, args.repeats, args.calls)
    rows = {b.name: b.summary() for b in benches}

    def median_seconds(name):
        return rows[name]["seconds_per_call_median"]

    record = {
        "config": {
            "tasks": args.tasks,
            "dim": 10,
            "truncation": args.truncation,
            "remat": args.remat,
            "horizon": args.horizon,
            "lstm": lopt.config,
            "estimator": est.config,
            "repeats": args.repeats,
            "calls_per_repeat": args.calls,
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "compile_seconds": meta.compile_seconds,
        "compiles_on_second_call": meta.recompiles,
        "meta_step_seconds": median_seconds("meta-step"),
        "function_steps_per_second": rows["meta-step"]["function_steps_per_second"],
        "lstm_forward_unroll_seconds": median_seconds("lstm forward"),
        "adam_forward_unroll_seconds": median_seconds("adam forward"),
        "lstm_forward_over_adam_forward": median_seconds("lstm forward")
        / median_seconds("adam forward"),
        "meta_step_over_lstm_forward": median_seconds("meta-step") / median_seconds("lstm forward"),
        "details": rows,
    }
    path = write("meta_train_throughput", record)
    fs = record["function_steps_per_second"]
    print(
        f"compile                     {meta.compile_seconds:8.2f} s  (second call compiles: "
        f"{meta.recompiles})"
    )
    print(f"meta-step (fwd+bwd+update)  {record['meta_step_seconds'] * 1e3:8.2f} ms (median)")
    print(
        f"throughput                  {fs['median']:8,.0f} function-steps/s "
        f"(min {fs['min']:,.0f}, max {fs['max']:,.0f})"
    )
    print(f"LSTM forward unroll         {record['lstm_forward_unroll_seconds'] * 1e3:8.2f} ms")
    print(
        f"Adam forward unroll         {record['adam_forward_unroll_seconds'] * 1e3:8.2f} ms  "
        f"(LSTM/Adam {record['lstm_forward_over_adam_forward']:.1f}x, "
        f"meta-step/LSTM forward {record['meta_step_over_lstm_forward']:.1f}x)"
    )
    print(f"load average before {load_before}, after {record['load_average_after']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
