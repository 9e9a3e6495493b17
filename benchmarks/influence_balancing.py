"""Influence balancing: where truncated backprop moves θ the wrong way and PES and NRES do not.

The problem of Tallec and Ollivier 2017 (UORO, arXiv 1702.05043) as set up by Vicol et
al. 2021 (PES, ICML 2021, sec. 5.1): an n = 23-dimensional linear system

    s_{t+1} = A s_t + θ · b,   A = ½ I + ½ (superdiagonal),   b = (+1 ×10, −1 ×13),

started at s_0 = 1, with the loss ½ (s_t[0] − 1)² measured at the end of every
truncation, and θ the one scalar meta-learned. A step's direct effect on s[0] is
positive (b's first 10 entries), but over about 20 steps and more it turns negative
(the superdiagonal carries the −1 entries up): θ's long-run influence on s[0] is
[(I − A)⁻¹ b]_0 = −6, so the optimum is θ* = −1/6, where the stationary s*[0] = 1.
Truncated BPTT over K steps sees only the first K lags, whose summed influence is
K for K ≤ 10 and still positive at K = 20: with K = 1 or 10 its meta-gradient has the
wrong sign and θ runs away from θ*; with K = 100 it sees all of it.

The run is online, as in the paper: one task (the system never resets; its horizon
is the whole run), one truncation per meta-step, plain SGD on θ from θ = 0.5. Every
estimator is metaopt's own (:func:`metaopt.tbptt`, :func:`metaopt.es`,
:func:`metaopt.pes`, :func:`metaopt.nres`) over a tiny ``TaskFamily`` (the system's
state is the "params") and ``MetaLearner`` (its ``tx(θ)`` applies ``s ← A s + θ b``),
meta-trained with :func:`metaopt.meta_train`. The loss "at the end of every
truncation" is a ``trajectory_mean`` whose weights are K at every K-th step and 0
elsewhere. The paper's settings (its ``influence_balancing.py`` defaults): SGD with
meta learning rate 1e-4, 3000 meta-iterations, σ = 0.1, N = 1000 particles (500
antithetic pairs) for ES, PES and NRES. With no resets NRES draws its ε once for
the whole run.

The script prints a markdown table of θ at the end and writes JSON and a PNG (θ
over meta-iterations against θ*) to benchmarks/results/.

Run: python benchmarks/influence_balancing.py [--iterations 3000]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metaopt as mo
from common import RESULTS, write

N = 23
NUM_POSITIVE = 10
THETA0 = 0.5
METHODS = (
    ("tbptt", 1),
    ("tbptt", 10),
    ("tbptt", 100),
    ("es", 1),
    ("pes", 1),
    ("nres", 1),
)


def system() -> tuple[np.ndarray, np.ndarray]:
    """A (½ on the diagonal and the superdiagonal) and b (+1 ×10, −1 ×13)."""
    a = 0.5 * np.eye(N) + 0.5 * np.eye(N, k=1)
    b = np.array([1.0] * NUM_POSITIVE + [-1.0] * (N - NUM_POSITIVE))
    return a, b


def optimum() -> float:
    """θ* with the stationary state's first coordinate at 1: 1 / [(I − A)⁻¹ b]_0."""
    a, b = system()
    return float(1.0 / np.linalg.solve(np.eye(N) - a, b)[0])


def influence_family() -> mo.TaskFamily:
    """One fixed task: the state s (the "params") starts at 1; loss ½ (s[0] − 1)²."""

    def sample(key):
        del key
        return {"target": jnp.ones(())}

    def init(cfg, key):
        del cfg, key
        return jnp.ones(N)

    def loss(cfg, params, key):
        del key
        return 0.5 * (params[0] - cfg["target"]) ** 2

    return mo.TaskFamily(name="influence_balancing", sample=sample, init=init, loss=loss)


def influence_learner() -> mo.MetaLearner:
    """θ = {"theta": scalar}; the inner "optimizer" is the system's step s ← A s + θ b."""
    a, b = (jnp.asarray(x, jnp.float32) for x in system())

    def init(key):
        del key
        return {"theta": jnp.asarray(THETA0, jnp.float32)}

    def init_params(theta, family, cfg, key):
        del theta
        return family.init(cfg, key)

    def tx(theta):
        def update(grads, state, params):
            del grads  # the system ignores its loss's gradient
            return a @ params + theta["theta"] * b - params, state

        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    return mo.MetaLearner(
        name="influence_balancing", config={}, init=init, init_params=init_params, tx=tx
    )


def end_of_truncation(truncation: int, horizon: int) -> mo.Objective:
    """The loss after every ``truncation``-th step only (weight K, so K · 1/K = 1)."""
    t = np.arange(1, horizon + 1)
    return mo.trajectory_mean(np.where(t % truncation == 0, float(truncation), 0.0))


def make_estimator(name: str, truncation: int, args) -> mo.Estimator:
    family, learner = influence_family(), influence_learner()
    horizon = args.iterations * truncation  # online: the task is never replaced
    common = dict(
        num_tasks=1,
        truncation=truncation,
        horizon=horizon,
        objective=end_of_truncation(truncation, horizon),
    )
    if name == "tbptt":
        return mo.tbptt(learner, family, **common)
    factory = {"es": mo.es, "pes": mo.pes, "nres": mo.nres}[name]
    return factory(learner, family, std=args.sigma, num_perturbations=args.pairs, **common)


def run(name: str, truncation: int, args) -> dict:
    est = make_estimator(name, truncation, args)
    thetas = []

    def record(state, _):
        thetas.append(float(jax.device_get(state.theta["theta"])))

    start = time.perf_counter()
    result = mo.meta_train(
        est,
        jax.random.key(args.seed),
        num_steps=args.iterations,
        meta_optimizer=optax.sgd(args.lr),
        hooks=[mo.train.hooks.callback(record)],
        progress=False,
    )
    seconds = time.perf_counter() - start
    skipped = sum(h["skipped"] for h in result.history)
    return {
        "estimator": name,
        "truncation": truncation,
        "theta": [float(f"{t:.7g}") for t in thetas],  # float32 precision
        "final_theta": thetas[-1],
        "skipped_updates": int(skipped),
        "seconds": seconds,
    }


def label(r: dict) -> str:
    return f"{r['estimator'].upper() if r['estimator'] != 'tbptt' else 'TBPTT'} K={r['truncation']}"


STYLES = {  # TBPTT K=1 and ES K=1 nearly coincide: a wide line under a narrow one
    ("tbptt", 1): dict(color="C0", lw=5, alpha=0.4),
    ("tbptt", 10): dict(color="C1", ls="--"),
    ("tbptt", 100): dict(color="C2", ls="--"),
    ("es", 1): dict(color="C3", lw=1.5),
    ("pes", 1): dict(color="C4", lw=2),
    ("nres", 1): dict(color="C5", lw=1.2, ls="-."),
}


def plot(results: list[dict], theta_star: float, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in results:
        style = STYLES.get((r["estimator"], r["truncation"]), {})
        curve = [THETA0, *r["theta"]]
        text = f"{label(r)}: ends at {r['final_theta']:+.4g}"
        ax.plot(np.arange(len(curve)), curve, label=text, **style)
    ax.axhline(theta_star, color="k", linestyle=":", label=f"θ* = {theta_star:.4f}")
    ax.set(
        xlabel="meta-iteration",
        ylabel="θ",
        title="influence balancing (n = 23): θ under each estimator",
        ylim=(theta_star - 0.6, THETA0 + 1.0),
    )
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="meta-iterations")
    parser.add_argument("--lr", type=float, default=1e-4, help="SGD meta learning rate")
    parser.add_argument("--sigma", type=float, default=0.1, help="ES/PES/NRES σ")
    parser.add_argument("--pairs", type=int, default=500, help="antithetic pairs (N / 2)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    theta_star = optimum()
    results = []
    for name, truncation in METHODS:
        r = run(name, truncation, args)
        results.append(r)
        print(f"{label(r)}: θ = {r['final_theta']:+.4f} ({r['seconds']:.1f} s)", flush=True)

    print(f"\nθ after {args.iterations} meta-iterations, θ* = {theta_star:.4f}, θ0 = {THETA0}\n")
    print("| estimator | θ at the end | error relative to θ* | within 5% of θ* |")
    print("| --- | --- | --- | --- |")
    for r in results:
        rel = abs(r["final_theta"] - theta_star) / abs(theta_star)
        r["relative_error"] = rel
        near = "yes" if rel < 0.05 else "no"
        print(f"| {label(r)} | {r['final_theta']:+.6g} | {rel:.2e} | {near} |")
    if args.no_write:
        return
    record = {
        "setup": {
            "n": N,
            "num_positive": NUM_POSITIVE,
            "A": "0.5 I + 0.5 superdiagonal",
            "s0": "ones",
            "loss": "0.5 (s[0] - 1)^2 at the end of every truncation",
            "theta0": THETA0,
            "theta_star": theta_star,
            "meta_optimizer": f"sgd({args.lr})",
            "meta_lr": args.lr,
            "iterations": args.iterations,
            "sigma": args.sigma,
            "antithetic_pairs": args.pairs,
            "particles": 2 * args.pairs,
            "truncations": sorted({t for _, t in METHODS}),
            "online": "one task, horizon = iterations x truncation (never replaced)",
            "seed": args.seed,
        },
        "results": results,
    }
    path = write("influence_balancing", record)
    png = RESULTS / path.name.replace(".json", ".png")
    plot(results, theta_star, png)
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    main()
