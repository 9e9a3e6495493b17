"""Evaluation and learning-rate tuning against direct computations."""

import jax
import numpy as np
import optax

import metaopt as mo


def test_evaluate_sgd_matches_closed_form_descent():
    fam = mo.quadratic_family(dim=4)
    key = jax.random.key(0)
    curves = mo.evaluate(optax.sgd(0.02), fam, key, num_tasks=3, num_steps=6)
    assert curves.shape == (3, 7)
    # Rebuild the same tasks from the same key split, then descend by hand.
    k_cfg, k_init, _ = jax.random.split(key, 3)
    cfgs = jax.vmap(fam.sample)(jax.random.split(k_cfg, 3))
    for i, k in enumerate(jax.random.split(k_init, 3)):
        w, y = np.asarray(cfgs.w[i], np.float64), np.asarray(cfgs.y[i], np.float64)
        theta = np.asarray(fam.init(None, k), np.float64)
        losses = []
        for _ in range(7):
            r = w @ theta - y
            losses.append(r @ r)
            theta = theta - 0.02 * 2 * w.T @ r
        np.testing.assert_allclose(curves[i], losses, rtol=1e-4)


def test_tune_picks_the_grid_point_with_lowest_mean_final_loss():
    fam = mo.quadratic_family()
    key = jax.random.key(1)
    rates = [1e-3, 1e-2, 3e-2, 0.3]
    result = mo.evaluation.tune_learning_rate(
        optax.sgd, fam, key, rates, num_tasks=16, num_steps=20
    )
    direct = [
        mo.evaluate(optax.sgd(lr), fam, key, num_tasks=16, num_steps=20)[:, -1].mean()
        for lr in rates
    ]
    direct = np.where(np.isfinite(direct), direct, np.inf)
    # 0.3 diverges on 10-d Gaussian quadratics (2·0.3·λ_max ≫ 2) and must rank last.
    assert result.final_loss_mean[-1] == np.inf
    np.testing.assert_allclose(result.final_loss_mean[:3], direct[:3], rtol=1e-4)
    assert result.learning_rate == rates[int(np.argmin(direct))]
