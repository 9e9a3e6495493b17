"""A learned optimizer behaves as an optax transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metaopt as mo


def test_update_under_jit_does_not_recompile(count_compiles):
    lopt = mo.lstm_optimizer()
    tx = mo.as_optax(lopt, lopt.init(jax.random.key(0)))
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = jax.tree.map(lambda p: p + 0.5, params)
    updates, state = update(grads, state, params)  # first call compiles
    with count_compiles() as n:
        for _ in range(3):
            updates, state = update(grads, state, params)
        jax.block_until_ready(updates)
    assert n[0] == 0


def test_meta_parameters_as_jit_argument_do_not_recompile(count_compiles):
    lopt = mo.lstm_optimizer()
    params = jnp.ones(5)

    @jax.jit
    def step(theta, state, grads):
        return mo.as_optax(lopt, theta).update(grads, state, params)

    theta = lopt.init(jax.random.key(0))
    state = mo.as_optax(lopt, theta).init(params)
    step(theta, state, params)
    with count_compiles() as n:
        step(lopt.init(jax.random.key(1)), state, params)
    assert n[0] == 0


def test_adapter_matches_learned_optimizer_and_ignores_extra_args():
    lopt = mo.lstm_optimizer(hidden_size=6)
    theta = lopt.init(jax.random.key(0))
    tx = mo.as_optax(lopt, theta)
    params = jnp.linspace(-1.0, 1.0, 5)
    grads = jnp.sin(3 * params)
    got, _ = tx.update(grads, tx.init(params), params, value=jnp.array(1.0), unused="x")
    want, _ = lopt.update(theta, grads, lopt.init_state(theta, params), params)
    np.testing.assert_array_equal(got, want)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
