"""Meta-training end to end on small problems."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metaopt as mo
from metaopt.meta_train import make_meta_step


def test_meta_training_beats_its_initialization_on_validation():
    lopt = mo.lstm_optimizer(hidden_size=8, num_layers=1)
    result = mo.meta_train(
        lopt,
        mo.quadratic_family(dim=4),
        jax.random.key(0),
        num_epochs=30,
        num_tasks=16,
        truncation=5,
        horizon=20,
        meta_optimizer=optax.adam(3e-3),
        validate_every=5,
        num_validation_tasks=32,
        progress=False,
    )
    # 4 meta-steps per epoch: the first validation ends epoch 5, at meta-step 20.
    first_validation = result.history[19]["validation_loss"]
    assert result.best_validation_loss < 0.7 * first_validation
    assert result.best_validation_loss == min(
        h["validation_loss"] for h in result.history if "validation_loss" in h
    )
    assert all(h["skipped"] == 0 for h in result.history)


def test_same_seed_gives_identical_meta_parameters():
    kwargs = dict(
        num_epochs=3, num_tasks=4, truncation=3, horizon=6, progress=False, num_validation_tasks=4
    )
    lopt = mo.lstm_optimizer(hidden_size=4)
    a = mo.meta_train(lopt, mo.quadratic_family(dim=3), jax.random.key(5), **kwargs)
    b = mo.meta_train(lopt, mo.quadratic_family(dim=3), jax.random.key(5), **kwargs)
    for x, y in zip(jax.tree.leaves(a.last_theta), jax.tree.leaves(b.last_theta), strict=True):
        np.testing.assert_array_equal(x, y)


def test_meta_step_equals_manual_gradient_and_adam_update():
    fam = mo.quadratic_family(dim=3)
    lopt = mo.lstm_optimizer(hidden_size=4)
    theta = lopt.init(jax.random.key(0))
    batch = mo.init_task_batch(fam, lopt, theta, jax.random.key(1), 4)
    meta_opt = optax.adam(1e-2)
    step = make_meta_step(lopt, fam, meta_opt, 3)
    new_theta, _, _, metrics = step(theta, meta_opt.init(theta), batch, jax.random.key(2))
    grad, _, _ = mo.tbptt_gradient(theta, lopt, fam, batch, jax.random.key(2), 3)
    # Adam's first step moves each coordinate by lr·g/(|g| + eps): about ±lr.
    expected = jax.tree.map(lambda t, g: t - 1e-2 * g / (jnp.abs(g) + 1e-8), theta, grad)
    for x, y in zip(jax.tree.leaves(new_theta), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert int(metrics["skipped"]) == 0
