"""NRES against independent computations of what it estimates.

The problem is the one of ``test_estimators.py``: θ is the log learning rate of plain
SGD on random diagonal quadratics ½ Σ a x² with the start x0 in the task's
configuration, where the whole unroll can be written by hand and differentiated with
``jax.grad``, evaluated in float64 NumPy, and integrated over a Gaussian perturbation by
Gauss–Hermite quadrature.

NRES reuses one ε for all truncations of an episode, so its estimates summed over an
episode are the antithetic ES estimate of the episode's whole objective: unbiased for
the gradient of E_ε[L(θ + ε)], the full-horizon objective smoothed along one Gaussian
perturbation shared by every step (with small σ, the plain gradient). Tolerances
come from the estimator's own measured standard error over independent groups of
tasks, as in ``test_estimators.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite_e import hermegauss

import metaopt as mo
from metaopt.estimators.common import perturbations
from tests.conformance.references import reference_for
from tests.estimators.test_estimators import (
    DIM,
    FAMILY,
    HORIZON,
    LEARNER,
    LOG_LR,
    SMOOTH_LOG_LR,
    THETA,
    TRUNCATION,
    exact_gradient,
    group_error,
    grouped,
    horizon_sum,
    np_objective,
    to_numpy,
)

# ---------------------------------------------------------------------------------------
# 1. Summed over an episode, NRES is unbiased for the full-horizon gradient.


@reference_for("nres")
def test_nres_summed_over_an_episode_is_unbiased_for_the_full_horizon_gradient():
    groups, tasks, std = 64, 64, 0.01
    est = mo.nres(LEARNER, FAMILY, num_tasks=tasks, truncation=TRUNCATION, horizon=HORIZON, std=std)
    run = horizon_sum(est, THETA, HORIZON // TRUNCATION, lambda s: s.pos.cfg)
    nres_sum, cfg = grouped(run, jax.random.key(21), groups)
    exact = np.asarray(exact_gradient(cfg), np.float64)  # jax.grad of the full unroll
    true = exact.mean()
    err, stderr = group_error(nres_sum, exact.mean(axis=1))
    # The test has power: the standard error is a few % of the gradient, where
    # truncated BPTT's bias on this problem is ~70% (test_estimators.py).
    assert stderr < 0.05 * abs(true), (stderr, true)
    # 4 standard errors: a false failure has probability ~1e-4 under the normal
    # approximation, which 64 groups of 64 independent particles justify.
    assert abs(err) < 4 * stderr, (err, stderr, true)

    # One ε for the whole horizon smooths along the diagonal: the bias is
    # ≈ σ²/2 · d³J/dθ³ (J the full-horizon objective of all truncations at θ).
    # Negligible at σ = 0.01; check it by finite differences of the float64 objective.
    c = to_numpy(cfg)
    a, x0 = c["a"].reshape(-1, DIM), c["x0"].reshape(-1, DIM)
    n, h = HORIZON // TRUNCATION, 1e-2

    def objective(theta):
        return np_objective([np.float64(theta)] * n, a, x0, TRUNCATION).mean()

    third = (
        objective(LOG_LR + 2 * h)
        - 2 * objective(LOG_LR + h)
        + 2 * objective(LOG_LR - h)
        - objective(LOG_LR - 2 * h)
    ) / (2 * h**3)
    assert abs(std**2 / 2 * third) < 0.1 * stderr, (third, stderr)


# ---------------------------------------------------------------------------------------
# 2. With a large σ, the target is the smoothed objective, and the check discriminates.
#
# As in test_estimators.py (section 3), at lr = 0.001 every loss is close to linear in
# lr = e^θ, and E[e^(θ+ε)] = e^(σ²/2) e^θ; over a horizon of 100 steps the losses bend
# more: σ = 0.5 moves the derivative by ~5%, σ = 0.7 (used here) by ~9%, 11 standard
# errors of this test (measured). SGD diverges only once lr·a > 2, which needs
# ε > log(1000) ≈ 10σ: the smoothed objective is the well-behaved bulk that the
# particles and the quadrature see.

SMOOTH_STD = 0.7


def smoothed_full_horizon(cfg, num_truncations, nodes=20):
    """Per task: d/dθ of E_z[L(θ + σz, ..., θ + σz)] (one z for every truncation) by
    Gauss–Hermite quadrature and central differences, and the plain dL/dθ; float64."""
    c = to_numpy(cfg)
    shape = c["a"].shape[:-1]
    a, x0 = c["a"].reshape(-1, DIM), c["x0"].reshape(-1, DIM)
    z, w = hermegauss(nodes)
    w = w / w.sum()
    zs = z.reshape(-1, 1, 1)

    def smoothed(theta):
        return w @ np_objective([theta + SMOOTH_STD * zs] * num_truncations, a, x0, TRUNCATION)

    def plain(theta):
        return np_objective([theta] * num_truncations, a, x0, TRUNCATION)

    # h = 1e-4: the central difference's error is ~h² relative, far below the
    # statistical tolerance (~1e-2 relative); float64 rounding is ~1e-12 / h.
    h = 1e-4
    d_smooth = (smoothed(SMOOTH_LOG_LR + h) - smoothed(SMOOTH_LOG_LR - h)) / (2 * h)
    d_plain = (plain(SMOOTH_LOG_LR + h) - plain(SMOOTH_LOG_LR - h)) / (2 * h)
    return d_smooth.reshape(shape), d_plain.reshape(shape)


@reference_for("nres")
def test_nres_matches_the_derivative_of_the_objective_smoothed_along_one_perturbation():
    # Ten truncations per episode: one ε must carry through all of them.
    # 64 groups × 16 tasks × 64 antithetic pairs: the standard error is ~1% of the
    # gradient.
    groups, tasks, pairs = 64, 16, 64
    num_truncations = HORIZON // TRUNCATION
    est = mo.nres(
        LEARNER,
        FAMILY,
        num_tasks=tasks,
        truncation=TRUNCATION,
        horizon=HORIZON,
        std=SMOOTH_STD,
        num_perturbations=pairs,
    )
    theta = {"log_lr": jnp.asarray(SMOOTH_LOG_LR, jnp.float32)}

    def cfg_of(state):  # one config per task: its pairs are task-major copies
        return jax.tree.map(lambda x: x[::pairs], state.pos.cfg)

    total, cfg = grouped(
        horizon_sum(est, theta, num_truncations, cfg_of), jax.random.key(22), groups
    )
    d_smooth, d_plain = smoothed_full_horizon(cfg, num_truncations)
    # The quadrature has converged: more nodes change nothing at the tolerance's scale.
    d_more, _ = smoothed_full_horizon(jax.tree.map(lambda x: x[:1], cfg), num_truncations, 30)
    np.testing.assert_allclose(d_more, d_smooth[:1], rtol=1e-6)

    err, stderr = group_error(total, d_smooth.mean(axis=1))
    assert abs(err) < 4 * stderr, (err, stderr, d_smooth.mean())  # 4 standard errors
    # The check discriminates: the plain derivative lies far outside the tolerance.
    assert abs(d_smooth.mean() - d_plain.mean()) > 8 * stderr
    err_plain, _ = group_error(total, d_plain.mean(axis=1))
    assert abs(err_plain) > 4 * stderr


# ---------------------------------------------------------------------------------------
# 3. The pairs, the reused ε and a replacement mid-truncation, by hand.


def sgd_losses(a, x0, log_lr, steps):
    """f(x_t) = ½ Σ a x_t² for t = 1..steps of SGD at lr exp(log_lr), float64, per row."""
    x = np.asarray(x0, np.float64)
    lr = np.exp(np.asarray(log_lr, np.float64))[:, None]
    out = []
    for _ in range(steps):
        x = x - lr * a * x
        out.append(0.5 * np.sum(a * x**2, axis=-1))
    return np.stack(out, axis=-1), x


def test_nres_reuses_one_perturbation_per_episode_and_draws_a_new_one_at_replacement():
    # Horizon 7, truncation 5: the first episode ends after 2 steps of the second
    # truncation, its replacement after 4 steps of the third. Two pairs per task, so
    # pairs of one task share the task but not ε. σ = 0.1: the formulas hold for any
    # σ; a larger one makes the float32 rounding of the losses (~1e-6) small against
    # their ± differences (~0.1).
    num_tasks, pairs, truncation, horizon, std = 4, 2, 5, 7, 0.1
    n = num_tasks * pairs
    est = mo.nres(
        LEARNER,
        FAMILY,
        num_tasks=num_tasks,
        truncation=truncation,
        horizon=horizon,
        std=std,
        num_perturbations=pairs,
    )
    estimate = jax.jit(est.estimate)
    # The estimator's own split: k_eps, k_run = split(key), ε' = perturbations(k_eps).
    fresh_of = jax.jit(lambda key: perturbations(THETA, jax.random.split(key)[0], n, std)["log_lr"])
    keys = jax.random.split(jax.random.key(23), 3)
    fresh = [np.asarray(fresh_of(k), np.float64) for k in keys]
    states = [jax.jit(est.init)(THETA, jax.random.key(24))]
    grads = []
    for k in keys:
        grad, state, _ = estimate(THETA, states[-1], k)
        grads.append(float(grad["log_lr"]))
        states.append(state)
    s0, s1, s2, s3 = states
    eps0 = np.asarray(s0.eps["log_lr"], np.float64)
    cfg = [to_numpy(s.pos.cfg) for s in (s0, s2, s3)]  # episodes A, B, C

    # Episodes: A for 7 steps, B from the 3rd step of the 2nd truncation, C from the
    # 5th step of the 3rd. ε: A's until it ends, then B's own fresh draw, then C's.
    for s, steps in ((s1, 5), (s2, 3), (s3, 1)):
        np.testing.assert_array_equal(s.pos.inner.step, steps)
        np.testing.assert_array_equal(s.neg.inner.step, steps)
    for s in (s1, s2, s3):
        jax.tree.map(np.testing.assert_array_equal, s.pos.cfg, s.neg.cfg)
    assert np.all(cfg[1]["a"] != cfg[0]["a"]) and np.all(cfg[2]["a"] != cfg[1]["a"])
    np.testing.assert_array_equal(cfg[0]["a"][::pairs], cfg[0]["a"][1::pairs])
    assert np.all(eps0[::pairs] != eps0[1::pairs])
    np.testing.assert_array_equal(s1.eps["log_lr"], s0.eps["log_lr"])
    np.testing.assert_allclose(s2.eps["log_lr"], fresh[1], rtol=1e-6)
    np.testing.assert_allclose(s3.eps["log_lr"], fresh[2], rtol=1e-6)

    # Each trajectory trained with exactly θ ± its episode's ε: SGD by hand, float64.
    # float32 against float64 over ≤ 5 steps: a few ulps.
    def run(c, eps, sign, steps):
        return sgd_losses(c["a"], c["x0"], LOG_LR + sign * eps, steps)

    for sign, traj in ((1, "pos"), (-1, "neg")):
        for s, c, eps, steps in (
            (s1, cfg[0], eps0, 5),
            (s2, cfg[1], fresh[1], 3),
            (s3, cfg[2], fresh[2], 1),
        ):
            params = getattr(s, traj).inner.params
            np.testing.assert_allclose(params, run(c, eps, sign, steps)[1], rtol=1e-5, atol=1e-6)

    # The estimates, by hand: the mean over particles of Σ_t (f⁺ − f⁻)/K · ε / 2σ²,
    # each step weighed with the ε of the episode it belongs to.
    def diff(c, eps, steps):
        return run(c, eps, 1, steps)[0] - run(c, eps, -1, steps)[0]

    d_a = diff(cfg[0], eps0, 7) / truncation
    d_b = diff(cfg[1], fresh[1], 7) / truncation
    d_c = diff(cfg[2], fresh[2], 1) / truncation
    scale = 1 / (2 * std**2 * n)
    expected = [
        np.sum(d_a[:, :5].sum(1) * eps0) * scale,
        np.sum(d_a[:, 5:].sum(1) * eps0 + d_b[:, :3].sum(1) * fresh[1]) * scale,
        np.sum(d_b[:, 3:].sum(1) * fresh[1] + d_c.sum(1) * fresh[2]) * scale,
    ]
    # float32 losses are off by ~1e-6, which ε/(2σ²) turns into ~1e-5 of the estimate.
    np.testing.assert_allclose(grads, expected, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# 4. The command line builds it by name.


def test_the_command_line_builds_nres_with_its_settings():
    from metaopt.train.build import build_estimator
    from metaopt.train.config import TrainConfig

    options = {"std": 0.05, "perturbations": 2, "truncation": 5}
    config = TrainConfig(estimator="nres", horizon=20, options=options)
    est = build_estimator(config, mo.mlp_optimizer(), mo.quadratic_family())
    assert est.name == "nres"
    assert (est.config["std"], est.config["num_perturbations"]) == (0.05, 2)
    assert (est.config["truncation"], est.config["max_horizon"]) == (5, 20)
