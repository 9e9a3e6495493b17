"""Scoring by held-out loss: the training loop, rate tuning and the suite summary."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt.evaluation.judge import judge_problem, summarize_suite
from metaopt.evaluation.scoring import (
    ScoredProblem,
    baselines,
    best_rate,
    run_curves,
    stateless,
    tune_rate,
    warmup_cosine,
)

A, P0 = 2.0, 3.0


def quadratic(steps):
    """f(p) = A p² / 2 from p = P0; the held-out loss is f itself, so SGD has a closed form."""
    f = lambda p, s: 0.5 * A * jnp.sum(p**2)  # noqa: E731
    return ScoredProblem(
        "quad", "", lambda k: (jnp.full((1,), P0), ()), stateless(lambda p, k: f(p, ())), f, f,
        steps=steps, muon=False,
    )  # fmt: skip


def test_tuned_rate_is_the_argmin_of_the_closed_form():
    steps, grid = 10, (0.05, 0.3, 0.6, 0.95, 1.1)
    rate, finals = tune_rate(quadratic(steps), optax.sgd, grid, points=2)
    # SGD on A p²/2 multiplies p by (1 - lr A) each step.
    by_hand = {lr: 0.5 * A * (P0 * (1 - lr * A) ** steps) ** 2 for lr in grid}
    assert rate == min(by_hand, key=by_hand.get) == 0.6
    for lr in grid:
        assert finals[lr] == pytest.approx(by_hand[lr], rel=1e-4, abs=1e-30)  # float32


def test_a_diverging_rate_never_wins():
    assert best_rate({0.1: 3.0, 1.0: math.nan, 3.0: math.inf, 0.3: 2.0}) == 0.3
    _, finals = tune_rate(quadratic(30), optax.sgd, (0.1, 5.0))
    assert finals[5.0] == math.inf


def test_state_is_threaded_through_training_and_measured():
    """State counts loss calls; the held-out measure reads it at each chunk's end."""
    prob = ScoredProblem(
        "count", "", lambda k: (jnp.zeros(2), jnp.zeros((), jnp.int32)),
        lambda p, s, k: (jnp.sum(p**2), s + 1), lambda p, s: jnp.sum(p), lambda p, s: s * 1.0,
        steps=23,
    )  # fmt: skip
    curves = run_curves(prob, optax.sgd(0.1), jax.random.key(0), points=5)
    # 23 = 3 first + 5 chunks of 4: the counts at the chunks' ends.
    np.testing.assert_array_equal(np.asarray(curves.heldout), [7, 11, 15, 19, 23])


def test_curves_equal_a_python_loop():
    w_true = np.array([1.0, -2.0, 0.5])
    x_test = np.random.default_rng(0).normal(size=(50, 3))

    def loss(p, key):
        xb = jax.random.normal(key, (8, 3))
        return jnp.mean((xb @ p - xb @ w_true) ** 2)

    def heldout(p, s):
        return jnp.mean((x_test @ p - x_test @ w_true) ** 2)

    prob = ScoredProblem("lin", "", lambda k: (jax.random.normal(k, (3,)), ()), stateless(loss),
                         heldout, heldout, steps=12)  # fmt: skip
    curves = run_curves(prob, optax.adam(0.1), jax.random.key(3), points=3)
    k_init, k_run = jax.random.split(jax.random.key(3))
    p, tx = jax.random.normal(k_init, (3,)), optax.adam(0.1)
    state, want = tx.init(p), []
    for k in jax.random.split(k_run, 3):
        for kk in jax.random.split(k, 4):
            updates, state = tx.update(jax.grad(loss)(p, kk), state, p)
            p = optax.apply_updates(p, updates)
        pn = np.asarray(p, np.float64)
        want.append(np.mean((x_test @ pn - x_test @ w_true) ** 2))
    # Same float32 steps, fused differently by XLA; the held-out loss in float64 here.
    np.testing.assert_allclose(np.asarray(curves.heldout), want, rtol=1e-4)


def test_warmup_cosine_by_hand():
    for t in (0, 3, 10, 37, 64, 110, 200):
        want = t / 10 if t < 10 else 0.5 * (1 + math.cos(math.pi * min(t - 10, 100) / 100))
        assert float(warmup_cosine(t, 10, 110)) == pytest.approx(want, abs=1e-6)


def test_judge_runs_baselines_at_their_rates_and_ratios_hold():
    prob = quadratic(20)._replace(schedule=True)
    assert list(baselines(prob)) == ["adam_1e-3", "adamw_tuned", "adamw_cosine_tuned"]
    out = judge_problem(prob, {"sgd": optax.sgd(0.2)}, seeds=(1, 2), points=2)
    rows = out["optimizers"]
    direct = float(run_curves(prob, optax.adam(1e-3), jax.random.key(1), points=2).heldout[-1])
    assert rows["adam_1e-3"]["heldout_final"] == pytest.approx(direct, rel=1e-6)
    sgd = 0.5 * A * (P0 * (1 - 0.2 * A) ** 20) ** 2
    assert rows["sgd"]["heldout_final"] == pytest.approx(sgd, rel=1e-4)
    ratio = rows["sgd"]["heldout_final"] / rows["adamw_tuned"]["heldout_final"]
    assert rows["sgd"]["over_tuned_adamw"] == pytest.approx(ratio)
    grid = out["grids"]["adamw_tuned"]
    assert out["rates"]["adamw_tuned"] == float(min(grid, key=grid.get))


def test_summary_geomean_and_wins_by_hand():
    def row(r, d):
        return {"over_tuned_adamw": r, "over_adam_1e-3": d, "finite": True}

    problems = {
        "a": {"optimizers": {"x": row(0.5, 0.9), "y": row(2.0, 1.2)}},
        "b": {"optimizers": {"x": row(2.0, 1.1), "y": {**row(1.0, 0.5), "finite": False}}},
    }
    s = summarize_suite(problems)
    assert s["x"]["geomean_over_tuned_adamw"] == pytest.approx(1.0)
    assert s["x"]["better_than_adam_1e-3"] == 1 and s["x"]["all_finite"]
    assert s["y"]["geomean_over_tuned_adamw"] is None and not s["y"]["all_finite"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="grid"):
        tune_rate(quadratic(5), optax.sgd, ())
    with pytest.raises(ValueError, match="points"):
        run_curves(quadratic(5), optax.sgd(0.1), jax.random.key(0), points=0)
    with pytest.raises((TypeError, ValueError), match="key"):
        run_curves(quadratic(5), optax.sgd(0.1), 0)
