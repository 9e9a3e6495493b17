"""Meta-training end to end on small problems."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.train import hooks


def tbptt_lstm(family, *, hidden_size=4, num_layers=2, **kwargs):
    learner = mo.learned_optimizer(
        mo.lstm_optimizer(hidden_size=hidden_size, num_layers=num_layers)
    )
    return mo.tbptt(learner, family, **kwargs)


def test_meta_training_beats_its_initialization_on_validation():
    family = mo.quadratic_family(dim=4)
    est = tbptt_lstm(family, hidden_size=8, num_layers=1, num_tasks=16, truncation=5, horizon=20)
    result = mo.meta_train(
        est,
        jax.random.key(0),
        num_steps=120,
        meta_optimizer=optax.adam(3e-3),
        validate=mo.evaluation.validation_loss(
            est.learner, family, jax.random.key(1), num_tasks=32, num_steps=20
        ),
        validate_every=20,
        progress=False,
    )
    # The first validation after training starts is at meta-step 20.
    first_validation = result.history[19]["validation_loss"]
    assert result.best_validation_loss < 0.7 * first_validation
    assert result.best_validation_loss == min(
        h["validation_loss"] for h in result.history if "validation_loss" in h
    )
    assert all(h["skipped"] == 0 for h in result.history)


@pytest.mark.parametrize("estimator", [mo.tbptt, mo.pes, mo.nres])
def test_same_seed_gives_identical_meta_parameters(estimator):
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=4))
    est = estimator(learner, mo.quadratic_family(dim=3), num_tasks=4, truncation=3, horizon=6)
    a = mo.meta_train(est, jax.random.key(5), num_steps=6, progress=False)
    b = mo.meta_train(est, jax.random.key(5), num_steps=6, progress=False)
    for x, y in zip(jax.tree.leaves(a.last_theta), jax.tree.leaves(b.last_theta), strict=True):
        np.testing.assert_array_equal(x, y)


def test_meta_step_equals_manual_gradient_and_adam_update():
    est = tbptt_lstm(mo.quadratic_family(dim=3), num_tasks=4, truncation=3, horizon=6)
    theta = est.learner.init(jax.random.key(0))
    tasks = est.init(theta, jax.random.key(1))
    meta_opt = optax.adam(1e-2)
    step = mo.make_meta_step(est, meta_opt)
    state, metrics = step(mo.MetaState(theta, meta_opt.init(theta), tasks), jax.random.key(2))
    new_theta = state.theta
    grad, _, _ = est.estimate(theta, tasks, jax.random.key(2))
    # Adam's first step moves each coordinate by lr·g/(|g| + eps): about ±lr.
    expected = jax.tree.map(lambda t, g: t - 1e-2 * g / (jnp.abs(g) + 1e-8), theta, grad)
    for x, y in zip(jax.tree.leaves(new_theta), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert int(metrics["skipped"]) == 0


def scaled_quadratics(scale: np.ndarray) -> mo.TaskFamily:
    """Quadratics with loss ``scale[()] * f``; ``scale`` is read at every meta-step.

    ``scale`` enters the compiled meta-step as the family's data argument, so a test
    can make the loss NaN at a meta-step of its choosing by writing into it.
    """
    base = mo.quadratic_family(dim=3)

    def bind(data):
        loss = lambda cfg, p, k: data * base.loss(cfg, p, k)  # noqa: E731
        return base._replace(loss=loss, data=data, bind=bind)

    return bind(scale)


def test_a_nan_loss_skips_and_counts_updates_and_training_goes_on():
    scale = np.ones((), np.float32)
    thetas = {}

    def on_step(state, record):
        thetas[state.step] = jax.device_get(state.theta)
        # Meta-step 3 (the first truncation of the tasks' second horizon) sees a NaN
        # loss. The tasks' parameters turn NaN with it, so meta-step 4 is skipped too;
        # at meta-step 5 the tasks reach their horizon and fresh ones replace them.
        scale[()] = np.nan if state.step == 2 else 1.0

    family = scaled_quadratics(scale)
    est = tbptt_lstm(family, num_tasks=4, truncation=5, horizon=10)
    result = mo.meta_train(
        est,
        jax.random.key(0),
        num_steps=6,
        validate=mo.evaluation.validation_loss(
            est.learner, mo.quadratic_family(dim=3), jax.random.key(1), num_tasks=4, num_steps=10
        ),
        validate_every=2,
        progress=False,
        hooks=[hooks.callback(on_step)],
    )
    assert [r["skipped"] for r in result.history] == [0, 0, 1, 1, 0, 0]
    assert [r["skipped_total"] for r in result.history] == [0, 0, 1, 2, 2, 2]
    assert result.state.skipped == 2 and result.state.consecutive_skipped == 0
    assert np.isnan(result.history[2]["meta_loss"])
    for x, y in zip(jax.tree.leaves(thetas[2]), jax.tree.leaves(thetas[4]), strict=True):
        np.testing.assert_array_equal(x, y)  # skipped updates leave theta as it was
    changed = [
        not np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(thetas[4]), jax.tree.leaves(thetas[6]), strict=True)
    ]
    assert any(changed)  # and training goes on afterwards
    for t in thetas.values():
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(t))
    assert np.isfinite(result.best_validation_loss)


def test_too_many_consecutive_skips_stop_with_a_clear_error():
    scale = np.ones((), np.float32)

    def on_step(state, record):
        if state.step == 2:
            scale[()] = np.nan  # every meta-step from 3 on is non-finite

    with pytest.raises(mo.MetaTrainingDiverged, match=r"3 consecutive.*meta-steps 3\.\.5"):
        mo.meta_train(
            tbptt_lstm(scaled_quadratics(scale), num_tasks=4, truncation=5, horizon=10),
            jax.random.key(0),
            num_steps=20,
            max_consecutive_skips=3,
            progress=False,
            hooks=[hooks.callback(on_step)],
        )
