"""Bad input gets a clear error of a fitting type that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo


@pytest.fixture
def lstm():
    lopt = mo.lstm_optimizer(hidden_size=4)
    return lopt, lopt.init(jax.random.key(0))


@pytest.mark.parametrize(
    "params",
    [jnp.arange(3), {"a": jnp.ones(2), "b": jnp.ones(2, jnp.int32)}, jnp.ones(2, jnp.complex64)],
)
def test_integer_or_complex_params_are_rejected(lstm, params):
    lopt, theta = lstm
    with pytest.raises(TypeError, match="params"):
        mo.as_optax(lopt, theta).init(params)


def test_integer_grads_are_rejected(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init(jnp.ones(3))
    with pytest.raises(TypeError, match="grads"):
        tx.update(jnp.ones(3, jnp.int32), state)


def test_grads_with_other_tree_structure_are_rejected(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init({"w": jnp.ones(3), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match="grads has tree structure"):
        tx.update({"w": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="grads leaf of shape"):
        tx.update({"w": jnp.ones(4), "b": jnp.ones(2)}, state)


def test_structure_error_is_raised_under_jit_too(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init([jnp.ones(3)])
    with pytest.raises(ValueError, match="grads"):
        jax.jit(tx.update)([jnp.ones(3), jnp.ones(3)], state)


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (mo.lstm_optimizer, {"hidden_size": 0}, "hidden_size"),
        (mo.lstm_optimizer, {"num_layers": -1}, "num_layers"),
        (mo.lstm_optimizer, {"output_scale": 0.0}, "output_scale"),
        (mo.lstm_optimizer, {"log_and_sign_p": -2.0}, "log_and_sign_p"),
        (mo.quadratic_family, {"dim": 0}, "dim"),
        (mo.quadratic_family, {"dim": -3}, "dim"),
        (mo.quadratic_family, {"init_scale": float("nan")}, "init_scale"),
        (mo.truncation_lengths, {"horizon": 0, "truncation": 5}, "horizon"),
        (mo.truncation_lengths, {"horizon": 10, "truncation": -5}, "truncation"),
        (mo.truncation_lengths, {"horizon": 10, "truncation": 20}, "truncation"),
        (mo.log_grid, {"low": 0.0, "high": 1.0, "num": 3}, "low"),
    ],
)
def test_nonpositive_sizes_are_rejected(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


def test_non_integer_size_is_a_type_error():
    with pytest.raises(TypeError, match="hidden_size"):
        mo.lstm_optimizer(hidden_size=2.5)
    with pytest.raises(TypeError, match="dim"):
        mo.quadratic_family(dim="10")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_epochs": 0}, "num_epochs"),
        ({"num_tasks": -1}, "num_tasks"),
        ({"truncation": 0}, "truncation"),
        ({"horizon": -10}, "horizon"),
        ({"validate_every": 0}, "validate_every"),
        ({"weights": jnp.ones(3)}, "weights"),
    ],
)
def test_meta_train_rejects_bad_sizes(lstm, kwargs, name):
    lopt, _ = lstm
    with pytest.raises(ValueError, match=name):
        mo.meta_train(lopt, mo.quadratic_family(), jax.random.key(0), progress=False, **kwargs)


def test_evaluation_rejects_bad_sizes_and_grids():
    fam = mo.quadratic_family()
    with pytest.raises(ValueError, match="num_tasks"):
        mo.evaluate(optax.sgd(0.1), fam, jax.random.key(0), num_tasks=0)
    with pytest.raises(ValueError, match="num_steps"):
        mo.evaluate(optax.sgd(0.1), fam, jax.random.key(0), num_steps=-1)
    with pytest.raises(ValueError, match="learning_rates"):
        mo.tune_learning_rate(optax.sgd, fam, jax.random.key(0), [])
    with pytest.raises(ValueError, match="learning_rates"):
        mo.tune_learning_rate(optax.sgd, fam, jax.random.key(0), [0.1, -1.0])


def test_horizon_remainder_is_trained_as_a_short_truncation(lstm):
    lopt, _ = lstm
    assert mo.truncation_lengths(7, 3) == [3, 3, 1]
    result = mo.meta_train(
        lopt,
        mo.quadratic_family(dim=2),
        jax.random.key(0),
        num_epochs=2,
        num_tasks=2,
        truncation=3,
        horizon=7,
        num_validation_tasks=2,
        progress=False,
    )
    # Each epoch is meta-steps of 3, 3 and 1 inner steps.
    assert len(result.history) == 6
    assert all(np.isfinite(h["meta_loss"]) for h in result.history)
    assert result.function_steps_per_second == pytest.approx(2 * 7 * 2 / result.seconds)
    assert result.function_steps_per_second > 0
