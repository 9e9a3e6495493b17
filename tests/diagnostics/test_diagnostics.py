"""Estimator diagnostics: checked against plain, independent re-computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.diagnostics import (
    estimator_report,
    format_report,
    particle_estimates,
    plot_report,
    predicted_error_variance,
    quadratic_learning_rates,
    step_cost,
    summarize,
    true_gradient,
    window_report,
    window_truths,
)
from metaopt.diagnostics.gradients import make_estimator
from metaopt.estimators.objectives import trajectory_mean
from metaopt.estimators.schedules import constant_schedule
from metaopt.estimators.truncation import init_tasks

H, K_SHORT = 16, 4


def _key(seed):
    # Compiling dominates these tests, and programs drawing from rbg keys compile
    # faster than threefry ones; any typed key must work.
    return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def problem():
    return quadratic_learning_rates(dim=6, num_tasks=2)


@pytest.fixture(scope="module")
def rows(problem):
    # Compiling dominates: each estimator is measured only where a test looks at it.
    common = dict(num_particles=32, key=_key(0), measure_cost=False)
    short = estimator_report(
        problem, ("full_bptt", "tbptt", "pes", "nres"), (K_SHORT,), (H,), **common
    )
    return short + estimator_report(problem, ("tbptt", "es", "pes"), (H,), (H,), **common)


def _row(rows, name, k):
    (row,) = [r for r in rows if r["estimator"] == name and r["truncation"] == k]
    return row


def _tasks(problem, key, horizon):
    schedule = constant_schedule(horizon)
    return init_tasks(problem.learner, problem.family, schedule, problem.theta, key, 2)


def _task(tasks, i):
    return tasks.cfg.w[i], tasks.cfg.y[i], tasks.inner.params[i]


def _plain_run(log_lr, w, y, x, steps, stop_start=False):
    """Per-coordinate SGD on ‖Wx − y‖², written out: the losses after each update."""
    if stop_start:
        x = jax.lax.stop_gradient(x)
    losses = []
    for _ in range(steps):
        grad = 2 * w.T @ (w @ x - y)
        x = x - jnp.exp(log_lr) * grad
        losses.append(jnp.sum((w @ x - y) ** 2))
    return x, jnp.stack(losses)


def test_true_gradient_is_the_gradient_of_the_plain_unrolled_objective(problem):
    tasks = _tasks(problem, _key(3), H)
    objective = trajectory_mean()

    @jax.jit
    def exact(theta):
        return true_gradient(
            problem.learner, problem.family, objective, theta, tasks, _key(4),
            horizon=H, truncation=K_SHORT,
        )  # fmt: skip

    got = exact(problem.theta)

    @jax.jit
    def want(log_lr):
        def objective(log_lr):
            runs = [_plain_run(log_lr, *_task(tasks, i), H)[1] for i in range(2)]
            return jnp.mean(jnp.stack(runs))  # mean over steps and tasks

        return jax.grad(objective)(log_lr)

    np.testing.assert_allclose(got["log_lr"], want(problem.theta["log_lr"]), rtol=2e-4, atol=1e-7)


def test_tbptt_estimate_is_the_plain_truncated_gradient(problem):
    key = _key(5)
    got = particle_estimates(problem, "tbptt", key[None], truncation=K_SHORT, horizon=H)[0]
    tasks = _tasks(problem, jax.random.split(key)[0], H)

    @jax.jit
    def want(log_lr):
        total = 0.0
        for i in range(2):
            w, y, x = _task(tasks, i)
            for _ in range(H // K_SHORT):
                # The truncation's trajectory mean, its starting point held constant.
                def truncation_loss(lr, x=x, w=w, y=y):
                    return jnp.mean(_plain_run(lr, w, y, x, K_SHORT, stop_start=True)[1])

                total = total + jax.grad(truncation_loss)(log_lr)
                x, _ = _plain_run(log_lr, w, y, x, K_SHORT)
        return total / 2 * K_SHORT / H  # mean over tasks, rescaled to the whole horizon

    np.testing.assert_allclose(got, want(problem.theta["log_lr"]), rtol=2e-4, atol=1e-7)


def test_full_bptt_is_exact(rows):
    row = _row(rows, "full_bptt", K_SHORT)
    assert row["relative_bias"] < 1e-4
    assert row["cosine_mean"] > 1 - 1e-6 and row["cosine_min"] > 1 - 1e-6
    # Its spread is the task sampling's alone.
    assert row["error_variance"] < 1e-8 * row["task_variance"]
    assert row["variance"] == pytest.approx(row["task_variance"], rel=1e-4)


def test_tbptt_is_biased_until_the_truncation_is_the_horizon(rows):
    short, whole = _row(rows, "tbptt", K_SHORT), _row(rows, "tbptt", H)
    assert short["relative_bias"] > 0.1
    # The error varies from task to task, so its mean has a standard error too.
    assert short["relative_bias"] > 3 * short["relative_bias_stderr"]
    assert whole["relative_bias"] < 1e-4 and whole["cosine_min"] > 1 - 1e-6


def test_pes_and_nres_are_unbiased_within_their_noise_and_es_is_pes_over_one_truncation(rows):
    for name, k in (("pes", K_SHORT), ("pes", H), ("nres", K_SHORT)):
        row = _row(rows, name, k)
        assert row["relative_bias"] < 3 * row["relative_bias_stderr"], name
        assert 0 < row["cosine_mean"] < 1
    es_row, pes_row = _row(rows, "es", H), _row(rows, "pes", H)
    for name in ("relative_bias", "variance", "cosine_mean"):
        assert es_row[name] == pytest.approx(pes_row[name], rel=1e-5)


def test_summarize_matches_a_plain_computation():
    rng = np.random.default_rng(0)
    truths = rng.normal(size=(7, 3)) + 2.0
    estimates = truths + rng.normal(size=(7, 3)) + 0.5
    got = summarize(estimates, truths)
    mean_truth = truths.mean(0)
    assert got["true_norm"] == pytest.approx(np.sqrt(np.sum(mean_truth**2)))
    bias = (estimates - truths).mean(0)
    assert got["relative_bias"] == pytest.approx(np.linalg.norm(bias) / got["true_norm"])
    assert got["variance"] == pytest.approx(np.trace(np.cov(estimates.T)))
    assert got["variance_of_mean"] == pytest.approx(np.trace(np.cov(estimates.T)) / 7)
    assert got["error_variance"] == pytest.approx(np.trace(np.cov((estimates - truths).T)))
    cos = [
        e @ t / np.linalg.norm(e) / np.linalg.norm(t)
        for e, t in zip(estimates, truths, strict=True)
    ]
    assert got["cosine_mean"] == pytest.approx(np.mean(cos))
    assert got["cosine_std"] == pytest.approx(np.std(cos))


def test_step_cost_reports_memory_and_time(problem):
    est = make_estimator(problem, "tbptt", truncation=K_SHORT, horizon=H)
    cost = step_cost(est, problem.theta, jax.random.key(0), repeats=2)
    assert cost["compile_seconds"] > 0 and cost["seconds_per_estimate"] > 0
    if cost["temp_bytes"] is not None:  # CPU and GPU report an analysis
        assert cost["argument_bytes"] > 0 and cost["total_bytes"] >= cost["temp_bytes"]


def test_plot_and_table(rows, tmp_path):
    path = tmp_path / "report.png"
    plot_report(rows, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_report(rows).splitlines()
    assert len(table) == len(rows) + 1 and table[1].split()[:3] == ["full_bptt", "4", "16"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(estimators=()), ValueError, "estimators"),
        (dict(estimators=("tbptt", "sgd")), ValueError, "estimators.*'sgd'"),
        (dict(estimators="tbptt"), TypeError, "estimators"),
        (dict(truncations=()), ValueError, "truncations"),
        (dict(truncations=(20,), horizons=(10,)), ValueError, "truncations \\[20\\]"),
        (dict(truncations=(3,), horizons=(10,)), ValueError, "divide"),
        (dict(horizons=(0,)), ValueError, "horizons\\[0\\]"),
        (dict(horizons=10), TypeError, "horizons"),
        (dict(num_particles=1), ValueError, "num_particles"),
        (dict(problem="quadratic"), TypeError, "problem"),
        (dict(options={"es": {"std": 0.1}}, estimators=("pes",)), ValueError, "options"),
        (dict(options={"pes": {"truncation": 2}}), ValueError, "options.*truncation"),
        (dict(key=0), TypeError, "key"),
    ],
)
def test_bad_report_arguments(kwargs, error, match):
    kwargs = dict(dict(truncations=(2,), horizons=(4,), measure_cost=False), **kwargs)
    with pytest.raises(error, match=match):
        estimator_report(**kwargs)


def test_bad_plot_and_summary_arguments(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        plot_report([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="estimates and truths"):
        summarize(np.zeros((3, 2)), np.zeros((3, 4)))


# ---------------------------------------------------------------------------------------
# One meta-step's estimate, window by window.


def test_window_truths_are_the_gradients_of_each_plain_truncation_loss(problem):
    key = _key(6)
    got = window_truths(problem, key[None], truncation=K_SHORT, horizon=H)[0]
    tasks = _tasks(problem, jax.random.split(key)[0], H)

    @jax.jit
    def want(log_lr):
        def losses(log_lr):  # (windows,): each truncation's trajectory mean, mean over tasks
            runs = [_plain_run(log_lr, *_task(tasks, i), H)[1] for i in range(2)]
            return jnp.mean(jnp.stack(runs).reshape(2, H // K_SHORT, K_SHORT), axis=(0, 2))

        return jax.jacfwd(losses)(log_lr)

    # float32 through 16 steps of a 6-d quadratic: a few 1e-5 relative.
    np.testing.assert_allclose(got, want(problem.theta["log_lr"]), rtol=2e-4, atol=1e-7)


def test_predicted_variance_comes_from_the_plain_per_window_derivatives(problem):
    key = _key(7)
    windows, d = H // K_SHORT, problem.theta["log_lr"].shape[0]
    got = predicted_error_variance(problem, key[None], truncation=K_SHORT, horizon=H)
    tasks = _tasks(problem, jax.random.split(key)[0], H)

    def plain_losses(log_lrs, w, y, x):  # truncation j trained with log_lrs[j]
        out = []
        for j in range(windows):
            x, losses = _plain_run(log_lrs[j], w, y, x, K_SHORT)
            out.append(jnp.mean(losses))
        return jnp.stack(out)

    start = jnp.tile(problem.theta["log_lr"], (windows, 1))
    pes, nres = np.zeros(windows), np.zeros(windows)
    for i in range(2):
        g = np.asarray(jax.jit(jax.jacfwd(plain_losses))(start, *_task(tasks, i)), np.float64)
        for w in range(windows):  # the formulas of the docstring, written out
            big_g = g[w, : w + 1].sum(axis=0)
            s = np.sum(g[w, : w + 1] ** 2)
            pes[w] += d * (w + 1) * s + big_g @ big_g
            nres[w] += (d + 1) * (big_g @ big_g)
    # Two tasks, one pair each: the mean of two estimates has a quarter of the summed variance.
    np.testing.assert_allclose(got["pes"][0], pes / 4, rtol=5e-4)
    np.testing.assert_allclose(got["nres"][0], nres / 4, rtol=5e-4)
    assert np.all(nres <= pes * (1 + 1e-9))


def test_measured_window_variances_match_the_prediction_and_nres_is_below_pes(problem):
    # 2048 particles: the measured error variance's standard error is ~6% of it (heavy
    # tails of products of Gaussians); 4 of them make a false failure ~1e-4 per window
    # under the normal approximation, and still catch a 25% departure (estimates drawn
    # on other tasks than the truths' did that).
    rows = window_report(problem, ("pes", "nres"), K_SHORT, H, num_particles=2048, key=_key(8))
    for row in rows:
        gap = abs(row["error_variance"] - row["predicted_error_variance"])
        assert gap < 4 * row["error_variance_stderr"], row
    pes = [r for r in rows if r["estimator"] == "pes"]
    nres = [r for r in rows if r["estimator"] == "nres"]
    assert [r["function_steps"] for r in pes] == [r["function_steps"] for r in nres]
    for p, n in zip(pes[1:], nres[1:], strict=True):  # the first window is the same ES
        assert n["predicted_error_variance"] < p["predicted_error_variance"]
