"""Meta-training throughput against the number of devices the task batch is split over.

The paper's quadratic configuration (128 quadratics of 10 dims per meta-batch, LSTM
2×20, truncation 20, horizon 100) meta-trained with truncated BPTT (and PES, with
``--estimators tbptt pes``), its task batch split over 1, 2 and 4 devices. On a CPU the
devices are virtual: ``jax_num_cpu_devices`` makes JAX present the cores as N devices,
fixed when JAX starts, so each device count runs in its own process. "none" is the
unsharded path (no mesh, one device), as ``meta_train`` runs without ``mesh``.

For each: compile time of the meta-step, then ``--repeats`` rounds of ``--calls``
consecutive meta-steps, timed after block_until_ready; function-steps/s is reported as
median, min and max over the rounds. Speedup is against the unsharded path and
scaling efficiency is speedup / devices: on a machine with fewer cores than devices,
efficiency cannot reach 1, and the record says how many cores there were.

Run: python benchmarks/sharding_throughput.py [--devices 1 2 4] [--repeats N] [--calls N]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD = "--child"


def child(devices: int | None, estimator: str, args: argparse.Namespace) -> dict:
    """Runs in a fresh process: times meta-steps on ``devices`` virtual devices."""
    import jax

    jax.config.update("jax_num_cpu_devices", devices or 1)
    import optax

    import metaopt as mo
    from metaopt.core.sharding import replicate, task_mesh
    from metaopt.train.loop import compile_meta_step, init_meta_train_state, run_keys

    family = mo.quadratic_family(dim=10)
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=20, num_layers=2))
    factory = {"tbptt": mo.tbptt, "pes": mo.pes}[estimator]
    est = factory(
        learner, family, num_tasks=args.tasks, truncation=args.truncation, horizon=args.horizon
    )
    mesh = None if devices is None else task_mesh(devices)
    meta_opt = optax.adam(1e-3)
    key = jax.random.key(0)
    state = init_meta_train_state(est, key, meta_optimizer=meta_opt, mesh=mesh)
    t0 = time.perf_counter()
    step = compile_meta_step(est, meta_opt, state, mesh)
    compile_seconds = time.perf_counter() - t0
    k_train = run_keys(key)[2]
    keys = [jax.random.fold_in(k_train, i) for i in range(args.calls)]
    if mesh is not None:
        keys = [replicate(k, mesh) for k in keys]
    arrays = (state.theta, state.meta_opt_state, state.estimator_state)

    def run(arrays, n):
        for i in range(n):
            out, metrics = step(est.data, *arrays, keys[i])
            arrays = (out.theta, out.meta_opt_state, out.estimator_state)
        jax.block_until_ready((arrays, metrics))
        return arrays

    arrays = run(arrays, 1)  # warm-up
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        arrays = run(arrays, args.calls)
        seconds = (time.perf_counter() - t0) / args.calls
        rates.append(est.function_steps / seconds)
    return {
        "estimator": estimator,
        "devices": devices,
        "visible_devices": [str(d) for d in jax.devices()],
        "function_steps_per_meta_step": est.function_steps,
        "compile_seconds": compile_seconds,
        "function_steps_per_second": {
            "median": float(np.median(rates)),
            "min": float(np.min(rates)),
            "max": float(np.max(rates)),
            "all": rates,
        },
        "seconds_per_meta_step_median": est.function_steps / float(np.median(rates)),
    }


def spawn(devices: int | None, estimator: str, argv: list[str]) -> dict:
    env = dict(os.environ)
    cmd = [sys.executable, __file__, CHILD, str(devices or 0), estimator, *argv]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--estimators", nargs="+", default=["tbptt"], choices=["tbptt", "pes"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=128)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    return parser.parse_args(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        devices, estimator, argv = int(sys.argv[2]) or None, sys.argv[3], sys.argv[4:]
        print(json.dumps(child(devices, estimator, parse(argv))))
        return
    argv = sys.argv[1:]
    args = parse(argv)
    passed = argv  # each child parses the same flags and ignores --devices
    load_before = os.getloadavg()
    rows = []
    for estimator in args.estimators:
        base = spawn(None, estimator, passed)
        rows.append(base)
        print(
            f"{estimator} none: {base['function_steps_per_second']['median']:,.0f} "
            f"function-steps/s, compile {base['compile_seconds']:.1f} s",
            flush=True,
        )
        ref = base["function_steps_per_second"]["median"]
        for n in args.devices:
            row = spawn(n, estimator, passed)
            fs = row["function_steps_per_second"]
            row["speedup_over_unsharded"] = fs["median"] / ref
            row["scaling_efficiency"] = fs["median"] / ref / n
            rows.append(row)
            print(
                f"{estimator} {n} device(s): {fs['median']:,.0f} function-steps/s "
                f"(min {fs['min']:,.0f}, max {fs['max']:,.0f}), compile "
                f"{row['compile_seconds']:.1f} s, speedup {row['speedup_over_unsharded']:.2f}x, "
                f"efficiency {row['scaling_efficiency']:.2f}",
                flush=True,
            )
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import write

    record = {
        "config": {
            "tasks": args.tasks,
            "dim": 10,
            "lstm": {"hidden_size": 20, "num_layers": 2},
            "truncation": args.truncation,
            "horizon": args.horizon,
            "repeats": args.repeats,
            "calls_per_repeat": args.calls,
            "device_counts": args.devices,
        },
        "cpu_cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    print(f"wrote {write('sharding_throughput', record)}")


if __name__ == "__main__":
    main()
