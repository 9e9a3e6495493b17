"""Learned optimizers behave like any optax transformation, compared by numbers.

Every check runs for every registered architecture (``OPTIMIZERS``), built from its
small recipe (``recipes.py``) with perturbed meta-parameters so that every leaf of θ
matters; the comparisons are exact or to float32 rounding because both sides perform
the same arithmetic in a different composition.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.optimizers.registry import OPTIMIZERS
from tests.conformance import recipes


@pytest.fixture(params=OPTIMIZERS.names())
def lopt_theta(request):
    # The update is jitted: both sides of every comparison call the same compiled
    # programs, and each input signature compiles once rather than op by op.
    lopt, theta, _ = recipes.jitted_lopt(request.param)
    return lopt, theta


def make_params(key=1):
    # A 4-D kernel: the conv_and_rest optimizer sends it to its convolution half.
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    return {
        "conv": {"w": jax.random.normal(k1, (2, 2, 1, 3)), "b": jnp.zeros(3)},
        "dense": {"w": jax.random.normal(k2, (4, 3)), "b": jax.random.normal(k3, (3,))},
    }


def grads_like(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def run(tx, params, steps=3, **extra):
    state = tx.init(params)
    out = []
    for s in range(steps):
        updates, state = tx.update(grads_like(params, s), state, params, **extra)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out, state


def test_chain_after_clip_equals_manual_composition(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    tx = optax.chain(optax.clip_by_global_norm(0.5), mo.as_optax(lopt, theta))
    chained, _ = run(tx, params)
    inner = mo.as_optax(lopt, theta)
    state = inner.init(params)
    for s, got in enumerate(chained):
        g = grads_like(params, s)
        scale = jnp.minimum(1.0, 0.5 / optax.tree.norm(g))
        want, state = inner.update(jax.tree.map(lambda x, c=scale: x * c, g), state, params)
        assert_trees_close(got, want)
        params = optax.apply_updates(params, want)


@pytest.mark.parametrize("before", [True, False])
def test_chain_with_decayed_weights_equals_manual_composition(lopt_theta, before):
    lopt, theta = lopt_theta
    params = make_params()
    wd = optax.add_decayed_weights(0.1)
    inner = mo.as_optax(lopt, theta)
    tx = optax.chain(wd, inner) if before else optax.chain(inner, wd)
    chained, _ = run(tx, params)
    state = inner.init(params)
    for s, got in enumerate(chained):
        g = grads_like(params, s)
        if before:
            want, state = inner.update(
                jax.tree.map(lambda x, p: x + 0.1 * p, g, params), state, params
            )
        else:
            u, state = inner.update(g, state, params)
            want = jax.tree.map(lambda x, p: x + 0.1 * p, u, params)
        assert_trees_close(got, want)
        params = optax.apply_updates(params, want)


def test_masked_leaves_are_untouched_and_others_match(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    mask = {"conv": {"w": True, "b": False}, "dense": {"w": True, "b": False}}
    tx = optax.masked(mo.as_optax(lopt, theta), mask)
    masked_updates, _ = run(tx, params, steps=2)
    sub = {"conv": {"w": params["conv"]["w"]}, "dense": {"w": params["dense"]["w"]}}
    inner = mo.as_optax(lopt, theta)
    state = inner.init(sub)
    for s, got in enumerate(masked_updates):
        g = grads_like(params, s)
        # Masked-out leaves pass through unchanged (the raw gradient).
        np.testing.assert_array_equal(got["conv"]["b"], g["conv"]["b"])
        np.testing.assert_array_equal(got["dense"]["b"], g["dense"]["b"])
        want, state = inner.update(
            {"conv": {"w": g["conv"]["w"]}, "dense": {"w": g["dense"]["w"]}}, state, sub
        )
        np.testing.assert_allclose(got["conv"]["w"], want["conv"]["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["dense"]["w"], want["dense"]["w"], rtol=1e-6, atol=1e-7)
        sub = optax.apply_updates(sub, want)
        params = optax.apply_updates(params, got)


def test_masked_with_every_leaf_masked_passes_gradients_through(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    tx = optax.masked(mo.as_optax(lopt, theta), jax.tree.map(lambda _: False, params))
    g = grads_like(params, 0)
    updates, _ = tx.update(g, tx.init(params), params)
    assert_trees_close(updates, g, rtol=0, atol=0)


def test_multisteps_equals_accumulate_then_apply(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    inner = mo.as_optax(lopt, theta)
    tx = optax.MultiSteps(inner, every_k_schedule=3).gradient_transformation()
    # Called eagerly, each update would compile its lax.cond anew.
    tx = tx._replace(update=jax.jit(tx.update))
    state = tx.init(params)
    ref_state = inner.init(params)
    for block in range(2):
        grads = [grads_like(params, 10 * block + i) for i in range(3)]
        for i, g in enumerate(grads):
            updates, state = tx.update(g, state, params)
            if i < 2:
                assert all(jnp.all(u == 0) for u in jax.tree.leaves(updates))
        mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
        want, ref_state = inner.update(mean, ref_state, params)
        assert_trees_close(updates, want, rtol=1e-5, atol=1e-6)
        params = optax.apply_updates(params, updates)


def test_apply_if_finite_skips_nonfinite_and_keeps_state(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    inner = mo.as_optax(lopt, theta)
    tx = optax.apply_if_finite(inner, max_consecutive_errors=5)
    tx = tx._replace(update=jax.jit(tx.update))  # one compiled lax.cond, not one per call
    state = tx.init(params)
    ref = inner.init(params)
    g = grads_like(params, 0)
    updates, state = tx.update(g, state, params)
    want, ref = inner.update(g, ref, params)
    assert_trees_close(updates, want)
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), g)
    updates, state = tx.update(bad, state, params)
    assert all(jnp.all(u == 0) for u in jax.tree.leaves(updates))
    g2 = grads_like(params, 1)
    updates, state = tx.update(g2, state, params)
    want, ref = inner.update(g2, ref, params)
    assert_trees_close(updates, want)


def test_multi_transform_uses_one_optimizer_per_group():
    (lstm, lstm_theta, _), (mlp, mlp_theta, _) = map(recipes.jitted_lopt, ("lstm", "mlp"))
    tx_conv, tx_rest = mo.as_optax(lstm, lstm_theta), mo.as_optax(mlp, mlp_theta)
    params = make_params()
    labels = {"conv": {"w": "conv", "b": "rest"}, "dense": {"w": "rest", "b": "rest"}}
    tx = optax.multi_transform({"conv": tx_conv, "rest": tx_rest}, labels)
    got, _ = run(tx, params, steps=1)
    g = grads_like(params, 0)
    conv_u, _ = tx_conv.update(
        g["conv"]["w"], tx_conv.init(params["conv"]["w"]), params["conv"]["w"]
    )
    rest_p = {"b": params["conv"]["b"], "dense": params["dense"]}
    rest_g = {"b": g["conv"]["b"], "dense": g["dense"]}
    rest_u, _ = tx_rest.update(rest_g, tx_rest.init(rest_p), rest_p)
    np.testing.assert_allclose(got[0]["conv"]["w"], conv_u, rtol=1e-6, atol=1e-7)
    assert_trees_close(got[0]["dense"], rest_u["dense"])
    np.testing.assert_allclose(got[0]["conv"]["b"], rest_u["b"], rtol=1e-6, atol=1e-7)


def test_value_and_unknown_extra_args_are_ignored(lopt_theta):
    lopt, theta = lopt_theta
    params = make_params()
    plain, _ = run(mo.as_optax(lopt, theta), params, steps=2)
    extra, _ = run(mo.as_optax(lopt, theta), params, steps=2, value=jnp.array(3.0), other=1)
    assert_trees_close(plain, extra, rtol=0, atol=0)


def test_state_leaves_are_typed_arrays(lopt_theta):
    lopt, theta = lopt_theta
    _, state = run(mo.as_optax(lopt, theta), make_params(), steps=1)
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array)
        assert leaf.dtype in (jnp.float32, jnp.int32)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_get_updates_of_their_dtype(lopt_theta, dtype):
    lopt, theta = lopt_theta
    params = jax.tree.map(lambda x: x.astype(dtype), make_params())
    tx = mo.as_optax(lopt, theta)
    updates, _ = tx.update(jax.tree.map(lambda x: x * 0.1, params), tx.init(params), params)
    ref, _ = tx.update(
        jax.tree.map(lambda x: (x * 0.1).astype(jnp.float32), params),
        tx.init(jax.tree.map(lambda x: x.astype(jnp.float32), params)),
        jax.tree.map(lambda x: x.astype(jnp.float32), params),
    )
    for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(ref), strict=True):
        assert u.dtype == dtype
        # The update is computed in float32 and rounded once to the params' dtype.
        np.testing.assert_allclose(u.astype(jnp.float32), r.astype(dtype).astype(jnp.float32))


def test_float64_params_work_with_x64(lopt_theta):
    lopt, theta = lopt_theta
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), make_params())
        tx = mo.as_optax(lopt, theta)
        updates, _ = tx.update(grads_like(params, 0), tx.init(params), params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == jnp.float64
            assert jnp.all(jnp.isfinite(u))


def test_update_vmaps_over_a_batch_of_models(lopt_theta):
    lopt, theta = lopt_theta
    tx = mo.as_optax(lopt, theta)
    models = [make_params(k) for k in (1, 2, 3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *models)
    grads = jax.tree.map(lambda *x: jnp.stack(x), *(grads_like(m, 7) for m in models))
    batched, _ = jax.vmap(tx.update)(grads, jax.vmap(tx.init)(stacked), stacked)
    for i, m in enumerate(models):
        single, _ = tx.update(grads_like(m, 7), tx.init(m), m)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), single)


def test_state_can_be_donated_in_a_jitted_step(lopt_theta):
    lopt, theta = lopt_theta
    tx = mo.as_optax(lopt, theta)
    params = make_params()

    @jax.jit
    def reference(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    donated = jax.jit(reference.__wrapped__, donate_argnums=(0, 1))
    want = reference(params, tx.init(params), grads_like(params, 0))
    p, s = jax.tree.map(jnp.copy, params), tx.init(params)
    got = donated(p, s, grads_like(params, 0))
    assert_trees_close(got, want, rtol=0, atol=0)
