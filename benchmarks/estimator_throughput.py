"""Every meta-gradient estimator on the same configuration, against optax.adam.

10-dimensional quadratics (Andrychowicz et al. 2016), 32 tasks per meta-batch,
truncation 20 and horizon 100: truncated BPTT, ES and PES (one antithetic pair per
task; both trajectories count as function steps) and full-horizon BPTT over a horizon
of 20 (so one estimate covers as many inner steps as a truncation), each with the
MLP learned optimizer and with the LSTM; plus truncated BPTT with the LSTM at 128 tasks,
the configuration of ``meta_train_throughput.py``, with the default remat policy and with
``remat="dots"``. One meta-step is
``jax.jit(metaopt.make_meta_step(estimator, optax.adam(1e-3)))``: the estimate and
the meta-update.

The reference is optax.adam's forward unroll of 20 steps on the same tasks (32 and
128), timed in the same run and interleaved with the estimators, so ratios survive a
noisy machine. PES with the MLP optimizer is also compared with the same PES written as
a lean plain-JAX loop (``lean_pes.py``: the same optimizer, 32 antithetic pairs,
truncation 20, its own flat θ, hand-written loss gradient and Adam), and, when evosax
imports, with that loop driven by evosax's ``PersistentES`` (install it apart, e.g.
``pip install --no-deps --target DIR evosax`` and ``PYTHONPATH=DIR``). Each
configuration is timed in ``--repeats`` rounds of ``--calls`` consecutive calls (the
state fed back, as in training), after block_until_ready; figures are the median, min
and max over rounds. Compile time is the backend compile time of the first call; a
second call must not compile again.

Run: python benchmarks/estimator_throughput.py [--repeats N] [--calls N] [--only pes]
"""

import argparse
import os
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

import metaopt as mo
from common import write
from metaopt.core.unroll import init_inner

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# Absolute figures from the engine's specification. 85k was one reading of the code
# before the estimator engine, at a fast moment of this machine; the same code reads
# 49k-79k at other moments, so compare it in one process where it matters.
TARGETS = {"pes/mlp/32": 500_000, "tbptt/lstm/128": 85_000}


class Compiles:
    """Counts XLA compilations (and their seconds) while active."""

    def __init__(self):
        self.count, self.seconds, self.active = 0, 0.0, False
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **_) -> None:
        if self.active and event == COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def __enter__(self):
        self.count, self.seconds, self.active = 0, 0.0, True
        return self

    def __exit__(self, *exc):
        self.active = False


COMPILES = Compiles()


class Bench:
    """A jitted ``fn(carry, key) -> (carry, ...)`` timed on consecutive calls."""

    def __init__(self, name: str, fn: Callable, carry, work: int, config: dict):
        self.name, self.fn, self.carry, self.work, self.config = name, fn, carry, work, config
        self.keys = list(jax.random.split(jax.random.key(42), 64))
        self.seconds: list[float] = []
        start = time.perf_counter()
        with COMPILES as first:
            self._call(0)
        self.first_call_seconds = time.perf_counter() - start
        self.compile_seconds, self.first_compiles = first.seconds, first.count
        with COMPILES as second:
            self._call(1)
        self.recompiles = second.count

    def _call(self, i: int) -> None:
        self.carry = self.fn(self.carry, self.keys[i % len(self.keys)])[0]
        jax.block_until_ready(self.carry)

    def round(self, calls: int) -> None:
        """Times ``calls`` consecutive calls; records seconds per call."""
        start = time.perf_counter()
        carry = self.carry
        for i in range(calls):
            carry = self.fn(carry, self.keys[i % len(self.keys)])[0]
        jax.block_until_ready(carry)
        self.seconds.append((time.perf_counter() - start) / calls)
        self.carry = carry

    def summary(self) -> dict:
        rate = self.work / np.asarray(self.seconds)
        return {
            **self.config,
            "function_steps_per_call": self.work,
            "function_steps_per_second": {
                "median": float(np.median(rate)),
                "min": float(rate.min()),
                "max": float(rate.max()),
            },
            "seconds_per_call_median": float(np.median(self.seconds)),
            "compile_seconds": self.compile_seconds,
            "first_call_seconds": self.first_call_seconds,
            "compiles_on_first_call": self.first_compiles,
            "compiles_on_second_call": self.recompiles,
        }


def run_rounds(benches: list[Bench], repeats: int, calls: int) -> None:
    """Interleaves the benches: round r times every bench before round r + 1."""
    for _ in range(repeats):
        for bench in benches:
            bench.round(calls)


def estimator_bench(
    name: str, lopt_name: str, tasks: int, *, truncation=20, horizon=100, remat=None
):
    family = mo.quadratic_family(dim=10)
    lopt = mo.mlp_optimizer() if lopt_name == "mlp" else mo.lstm_optimizer()
    learner = mo.learned_optimizer(lopt)
    if name == "full_bptt":
        est = mo.full_bptt(learner, family, num_tasks=tasks, horizon=truncation)
    else:
        factory = {"tbptt": mo.tbptt, "es": mo.es, "pes": mo.pes}[name]
        extra = {} if remat is None else {"remat": remat}
        est = factory(
            learner, family, num_tasks=tasks, truncation=truncation, horizon=horizon, **extra
        )
    meta_opt = optax.adam(1e-3)
    theta = learner.init(jax.random.key(0))
    state = mo.MetaState(theta, meta_opt.init(theta), jax.jit(est.init)(theta, jax.random.key(1)))
    step = jax.jit(mo.make_meta_step(est, meta_opt))
    config = {
        "estimator": name,
        "lopt": lopt_name,
        "tasks": tasks,
        "truncation": truncation,
        "horizon": truncation if name == "full_bptt" else horizon,
        "remat": est.config.get("remat"),
    }
    label = f"{name}/{lopt_name}/{tasks}" + ("" if remat is None else f"/{remat}")
    return Bench(label, step, state, est.function_steps, config)


def adam_bench(tasks: int, steps: int = 20) -> Bench:
    """optax.adam's forward unroll of ``steps`` steps on ``tasks`` quadratics."""
    family = mo.quadratic_family(dim=10)
    adam = optax.adam(1e-2)
    keys = jax.random.split(jax.random.key(1), tasks)
    cfgs = jax.vmap(family.sample)(keys)
    inner = jax.vmap(lambda c, k: init_inner(family, adam, c, k))(cfgs, keys)

    def unroll(inner, key):
        keys = jax.random.split(key, tasks)
        run = lambda c, s, k: mo.unroll(family, adam, c, s, k, steps)  # noqa: E731
        inner, losses = jax.vmap(run)(cfgs, inner, keys)
        return inner, losses

    config = {"estimator": "adam unroll", "lopt": "adam", "tasks": tasks, "truncation": steps}
    return Bench(f"adam/{tasks}", jax.jit(unroll), inner, tasks * steps, config)


def lean_bench(driver: str = "lean") -> Bench:
    """The lean plain-JAX PES of ``lean_pes.py`` (``"evosax"``: driven by evosax)."""
    from lean_pes import evosax_pes, lean_pes

    theta = mo.mlp_optimizer().init(jax.random.key(0))
    init, step = {"lean": lean_pes, "evosax": evosax_pes}[driver](theta)
    config = {"estimator": f"{driver} pes", "lopt": "mlp", "tasks": 32, "truncation": 20}
    return Bench(
        f"{driver}-pes/mlp/32", jax.jit(step), jax.jit(init)(jax.random.key(1)), 2 * 32 * 20, config
    )


def build_benches(only: str | None) -> list[Bench]:
    """Every configuration, compiled (``only="pes"``: PES/MLP, its lean references, Adam)."""
    benches = [adam_bench(32)]
    if only != "pes":
        benches.append(adam_bench(128))
    for name in ("tbptt", "es", "pes", "full_bptt"):
        for lopt_name in ("mlp", "lstm"):
            if only == "pes" and (name, lopt_name) != ("pes", "mlp"):
                continue
            benches.append(estimator_bench(name, lopt_name, 32))
            print(f"compiled {benches[-1].name} in {benches[-1].compile_seconds:.1f} s", flush=True)
    for remat in (None, "dots") if only != "pes" else ():
        benches.append(estimator_bench("tbptt", "lstm", 128, remat=remat))
        print(f"compiled {benches[-1].name} in {benches[-1].compile_seconds:.1f} s", flush=True)
    benches.append(lean_bench())
    try:
        benches.append(lean_bench("evosax"))
    except ImportError:
        print("evosax does not import: its PersistentES is not timed")
    return benches


def summarize(benches: list[Bench]) -> tuple[dict, dict]:
    """Each configuration's figures, and whether the targets were met."""
    rows = {b.name: b.summary() for b in benches}
    for row in rows.values():
        adam = rows[f"adam/{row['tasks']}"]["function_steps_per_second"]["median"]
        row["adam_over_this"] = adam / row["function_steps_per_second"]["median"]
    pes = next(b for b in benches if b.name == "pes/mlp/32")
    for bench in benches:
        if bench.name.endswith("-pes/mlp/32"):
            # Round by round (interleaved, so both saw the same moment of the machine).
            ratio = np.asarray(bench.seconds) / np.asarray(pes.seconds)
            rows[bench.name]["metaopt_pes_over_this_per_round"] = {
                "median": float(np.median(ratio)),
                "min": float(ratio.min()),
                "max": float(ratio.max()),
            }
    targets = {
        name: {
            "target_function_steps_per_second": target,
            "median": rows[name]["function_steps_per_second"]["median"],
            "met": rows[name]["function_steps_per_second"]["median"] >= target,
        }
        for name, target in TARGETS.items()
        if name in rows
    }
    ahead = rows["lean-pes/mlp/32"]["metaopt_pes_over_this_per_round"]["median"]
    targets["pes/mlp/32 ahead of lean-pes/mlp/32"] = {"median_ratio": ahead, "met": ahead > 1}
    return rows, targets


def print_table(rows: dict, targets: dict, repeats: int, calls: int) -> None:
    print(f"\nfunction-steps/s, {repeats} rounds of {calls} calls: median, min, max")
    header = f"{'configuration':<22} {'steps/call':>10} {'median':>10} {'min':>10} {'max':>10}"
    print(f"{header} {'adam/this':>9} {'compile s':>9} {'recompiles':>10}")
    for name, row in rows.items():
        fs = row["function_steps_per_second"]
        print(
            f"{name:<22} {row['function_steps_per_call']:>10,} {fs['median']:>10,.0f} "
            f"{fs['min']:>10,.0f} {fs['max']:>10,.0f} {row['adam_over_this']:>9.1f} "
            f"{row['compile_seconds']:>9.2f} {row['compiles_on_second_call']:>10}"
        )
    for name, row in rows.items():
        if "metaopt_pes_over_this_per_round" in row:
            r = row["metaopt_pes_over_this_per_round"]
            print(
                f"pes/mlp/32 over {name}, per round: median {r['median']:.3f} "
                f"(min {r['min']:.3f}, max {r['max']:.3f})"
            )
    for name, t in targets.items():
        verdict = "met" if t["met"] else "NOT met"
        if "median_ratio" in t:
            print(f"target {name}: median ratio {t['median_ratio']:.3f} > 1: {verdict}")
            continue
        target = t["target_function_steps_per_second"]
        print(f"target {name}: median {t['median']:,.0f} >= {target:,}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per configuration")
    parser.add_argument("--calls", type=int, default=10, help="consecutive calls per round")
    parser.add_argument(
        "--only", choices=["pes"], help="pes: only PES with the MLP, the lean PES and Adam/32"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    benches = build_benches(args.only)
    run_rounds(benches, args.repeats, args.calls)
    rows, targets = summarize(benches)
    record = {
        "config": {
            "family": "quadratic dim=10",
            "meta_optimizer": "adam(1e-3)",
            "repeats": args.repeats,
            "calls_per_repeat": args.calls,
            "es_pes_perturbations_per_task": 1,
            "only": args.only,
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": rows,
        "targets": targets,
    }
    path = write("estimator_throughput", record)
    print_table(rows, targets, args.repeats, args.calls)
    print(f"load average before {load_before}, after {record['load_average_after']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
