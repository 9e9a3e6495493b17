"""Learned optimizers inside flax's training utilities."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

import metaopt as mo


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))


def test_train_state_apply_gradients_matches_manual_update():
    lopt = mo.mlp_optimizer()
    tx = mo.as_optax(lopt, lopt.init(jax.random.key(0)))
    model = MLP()
    x = jax.random.normal(jax.random.key(1), (16, 3))
    params = model.init(jax.random.key(2), x)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    manual_params, manual_opt = params, tx.init(params)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, x) ** 2)

    for _ in range(3):
        grads = jax.grad(loss)(state.params)
        state = state.apply_gradients(grads=grads)
        g = jax.grad(loss)(manual_params)
        updates, manual_opt = tx.update(g, manual_opt, manual_params)
        manual_params = optax.apply_updates(manual_params, updates)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(manual_params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nnx_optimizer_matches_manual_update():
    lopt = mo.lstm_optimizer(hidden_size=8)
    tx = mo.as_optax(lopt, lopt.init(jax.random.key(0)))
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 3))
    params0 = nnx.state(model, nnx.Param)
    manual = jax.tree.map(jnp.array, params0)
    manual_opt = tx.init(manual)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss(m):
        return jnp.mean(m(x) ** 2)

    for _ in range(2):
        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)
    for _ in range(2):

        def manual_loss(p):
            m = nnx.merge(nnx.graphdef(model), p)
            return loss(m)

        g = jax.grad(manual_loss)(manual)
        updates, manual_opt = tx.update(g, manual_opt, manual)
        manual = optax.apply_updates(manual, updates)
    got = nnx.state(model, nnx.Param)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(manual), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
