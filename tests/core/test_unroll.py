"""The scan unroll against a hand-written Python loop of the same steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import as_optax, lstm_optimizer, quadratic_family, unroll
from metaopt.core.unroll import init_inner


def python_loop(family, tx, cfg, params, opt_state, keys):
    losses = []
    for k in keys:
        loss, grads = jax.value_and_grad(family.loss, argnums=1)(cfg, params, k)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        losses.append(loss)
    return params, opt_state, np.array(losses)


def test_scan_unroll_equals_python_loop_for_lstm():
    family = quadratic_family(dim=6)
    lopt = lstm_optimizer(hidden_size=8)
    tx = as_optax(lopt, lopt.init(jax.random.key(0)))
    cfg = family.sample(jax.random.key(1))
    state = init_inner(family, tx, cfg, jax.random.key(2))
    key = jax.random.key(3)

    # Two truncations of 4 carried one into the next, against one loop of 8 steps.
    mid, losses_a = jax.jit(lambda s, k: unroll(family, tx, cfg, s, k, 4))(state, key)
    end, losses_b = jax.jit(lambda s, k: unroll(family, tx, cfg, s, k, 4))(mid, key)
    keys = list(jax.random.split(key, 4)) * 2
    params, opt_state, losses = python_loop(family, tx, cfg, state.params, state.opt_state, keys)
    # Same float32 operations in a different program: agreement to rounding.
    np.testing.assert_allclose(np.concatenate([losses_a, losses_b]), losses, rtol=1e-5)
    np.testing.assert_allclose(end.params, params, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(end.opt_state), jax.tree.leaves(opt_state), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(end.step) == 8


def test_sgd_unroll_matches_closed_form_gradient_steps():
    family = quadratic_family(dim=5)
    cfg = family.sample(jax.random.key(4))
    tx = optax.sgd(0.01)
    state = init_inner(family, tx, cfg, jax.random.key(5))
    end, losses = unroll(family, tx, cfg, state, jax.random.key(6), 10)

    w, y = np.asarray(cfg.w, np.float64), np.asarray(cfg.y, np.float64)
    theta = np.asarray(state.params, np.float64)
    expected = []
    for _ in range(10):
        r = w @ theta - y
        expected.append(r @ r)
        theta = theta - 0.01 * 2 * w.T @ r  # ∇‖Wθ − y‖² = 2Wᵀ(Wθ − y)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(end.params, theta, rtol=1e-4, atol=1e-5)


def test_unroll_is_vmappable_over_tasks():
    family = quadratic_family()
    tx = optax.adam(0.1)
    cfgs = jax.vmap(family.sample)(jax.random.split(jax.random.key(0), 3))
    states = jax.vmap(lambda c, k: init_inner(family, tx, c, k))(
        cfgs, jax.random.split(jax.random.key(1), 3)
    )
    _, batched = jax.vmap(lambda c, s: unroll(family, tx, c, s, jax.random.key(2), 5))(cfgs, states)
    for i in range(3):
        cfg = jax.tree.map(lambda x, i=i: x[i], cfgs)
        state = jax.tree.map(lambda x, i=i: x[i], states)
        _, single = unroll(family, tx, cfg, state, jax.random.key(2), 5)
        np.testing.assert_allclose(batched[i], single, rtol=1e-5)
    assert jnp.all(batched[:, -1] < batched[:, 0])
