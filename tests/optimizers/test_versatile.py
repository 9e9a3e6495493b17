"""The versatile learned optimizer, task rescaling, estimator mixtures, and their use.

Every behaviour is checked against an independent computation: optax's Adam, a float64
NumPy re-implementation of the documented update, a hand-written optax/flax loop, or
the member estimators called one by one.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import metaopt as mo
from metaopt.estimators.mixture import mixture
from metaopt.optimizers.versatile import versatile_optimizer
from metaopt.tasks.augment import rescaled
from metaopt.tasks.classification import mixed_mlp_classifier_family
from metaopt.tasks.datasets import digits
from metaopt.train.versatile import log_loss_objective, versatile_estimator

# The documented constants, written out again so the reference does not import them.
BETAS = (0.9, 0.99)
BETA2 = 0.999
EPS = 1e-8
TIMESCALES = np.array([1.0, 10.0, 100.0, 1e3])
RATE_STEP = 0.1  # largest change of a tensor's log rate per step
RATE_GAIN = 0.02  # fresh θ: d log(rate) ≈ 0.02 · cos(g, previous Adam direction)
RATE_RANGE = (np.log(1e-2), np.log(3e2))


def with_output_weights(theta, key, scale=0.5):
    """θ with random nonzero output layer and rate head, so both change the update."""
    k1, k2, k3 = jax.random.split(key, 3)
    theta = dict(theta)
    theta["w2"] = scale * jax.random.normal(k1, theta["w2"].shape)
    theta["b2"] = scale * jax.random.normal(k2, theta["b2"].shape)
    theta["rate_w"] = theta["rate_w"] + scale * jax.random.normal(k3, theta["rate_w"].shape)
    return theta


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


def tree_allclose(a, b, **tol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), **tol)


# ---------------------------------------------------------------------------------------
# The update rule.


def test_fresh_versatile_is_adam_with_hypergradient_rates():
    """Fresh θ: Adam's direction at a per-tensor rate that follows the cosine between the
    gradient and the previous Adam direction, computed here with optax and NumPy."""
    lopt = versatile_optimizer()
    theta = lopt.init(jax.random.key(0))
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=EPS)
    target = {"w": jnp.linspace(-2.0, 3.0, 12).reshape(3, 4), "b": jnp.array([0.5, -1.0, 4.0])}
    curv = {"w": jnp.linspace(0.1, 5.0, 12).reshape(3, 4), "b": jnp.array([1.0, 10.0, 0.01])}

    def loss(p):
        return sum(
            jnp.sum(c * (x - t) ** 2)
            for c, x, t in zip(*map(jax.tree.leaves, (curv, p, target)), strict=True)
        )

    lopt_update = jax.jit(lambda s, p: lopt.update(theta, jax.grad(loss)(p), s, p))
    adam_update = jax.jit(lambda s, p: adam.update(jax.grad(loss)(p), s, p))
    p_l = p_a = {"w": jnp.zeros((3, 4)), "b": jnp.ones(3)}
    s_l, s_a = lopt.init_state(theta, p_l), adam.init(p_a)
    log_rate = {"w": 0.0, "b": 0.0}
    previous = {"w": np.zeros((3, 4)), "b": np.zeros(3)}
    for step in range(30):
        grads = jax.grad(loss)(p_a)
        u_l, s_l = lopt_update(s_l, p_l)
        u_a, s_a = adam_update(s_a, p_a)
        for k in log_rate:
            change = RATE_STEP * np.tanh(RATE_GAIN / RATE_STEP * cosine(grads[k], previous[k]))
            log_rate[k] = float(np.clip(log_rate[k] + change, *RATE_RANGE))
        previous = {k: np.asarray(u, np.float64) for k, u in u_a.items()}
        u_a = {k: -1e-3 * np.exp(log_rate[k]) * np.asarray(u) for k, u in u_a.items()}
        if step == 0:  # no previous direction yet: Adam's first step
            tree_allclose(u_l, jax.tree.map(lambda g: -1e-3 * jnp.sign(g), grads), rtol=1e-5)
        p_l, p_a = optax.apply_updates(p_l, u_l), optax.apply_updates(p_a, u_a)
        # Same formula, different float32 op order (exp(log 1e-3) vs 1e-3, a multiply by
        # 1/(√v̂+ε) vs a divide, a 1e-30 floor under the root, the cosine in float32 vs
        # float64): a few ulp per update of ~1e-3 on params of O(1), so the trajectories
        # agree far inside rtol 1e-4, atol 1e-6.
        tree_allclose(u_l, u_a, rtol=1e-4, atol=1e-9)
        tree_allclose(p_l, p_a, rtol=1e-4, atol=1e-6)
        tree_allclose(s_l.log_rate, log_rate, rtol=1e-4, atol=1e-6)
    # The comparison means something: the params moved and the rates adapted.
    assert float(jnp.max(jnp.abs(p_l["w"]))) > 0.01
    assert min(abs(r) for r in log_rate.values()) > 0.05


def test_rate_follows_closed_form_under_steady_and_alternating_gradients():
    """A steady gradient agrees with the previous direction (cosine 1) and an alternating
    one opposes it (cosine -1): from the second step on, each tensor's log rate moves by
    ±0.1 tanh(0.2) per step until it reaches its bound."""
    lopt = versatile_optimizer()
    theta = lopt.init(jax.random.key(0))
    params = {"steady": jnp.zeros(5), "alternating": jnp.zeros((2, 3))}
    state = lopt.init_state(theta, params)
    update = jax.jit(lambda g, s: lopt.update(theta, g, s, params))
    per_step = RATE_STEP * np.tanh(RATE_GAIN / RATE_STEP)
    for t in range(1, 301):
        sign = 1.0 if t % 2 else -1.0
        grads = {"steady": jnp.full(5, 0.7), "alternating": jnp.full((2, 3), sign * 3.0)}
        updates, state = update(grads, state)
        up = min((t - 1) * per_step, RATE_RANGE[1])
        down = max(-(t - 1) * per_step, RATE_RANGE[0])
        np.testing.assert_allclose(float(state.log_rate["steady"]), up, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(state.log_rate["alternating"]), down, rtol=1e-5, atol=1e-6)
    # Both bounds were reached, and the steady tensor moves at the top rate: 1e-3 · 300.
    np.testing.assert_allclose(updates["steady"], -0.3, rtol=1e-5)


def reference_step(theta, grads, params, state):
    """The documented update in float64 NumPy. ``state`` = (m_0.9, m_0.99, v, ℓ, count)."""
    th = {k: np.asarray(v, np.float64) for k, v in theta.items()}
    ms, v_all, rates, count = state
    t = count + 1
    embed = np.tanh(t / TIMESCALES)
    updates, new_ms, new_v, new_rates = {}, ([{}, {}]), {}, {}
    for name in grads:
        g = np.asarray(grads[name], np.float64)
        p = np.asarray(params[name], np.float64)
        # Adam's direction before this step (none at t = 1).
        tp = max(t - 1, 1)
        previous = (
            ms[0][name] / (1 - BETAS[0] ** tp) / (np.sqrt(v_all[name] / (1 - BETA2**tp)) + EPS)
        )
        m = [b * ms[k][name] + (1 - b) * g for k, b in enumerate(BETAS)]
        v = BETA2 * v_all[name] + (1 - BETA2) * g * g
        denom = np.sqrt(v / (1 - BETA2**t)) + EPS
        dirs = [m[k] / (1 - b**t) / denom for k, b in enumerate(BETAS)]
        u = dirs[0]
        # Features in the frame of sign(u); the direction output is multiplied back.
        x = np.stack([d.ravel() for d in (*dirs, g / denom)], axis=-1) * np.sign(u).reshape(-1, 1)
        tensor = np.concatenate(
            [
                embed,
                [
                    np.log(np.sqrt(np.mean(p**2)) + 1e-3) / 3,
                    np.sqrt(np.mean(u**2)),
                    np.log(max(p.size, 1)) / 10,
                    cosine(g, previous),
                    rates[name] / 3,
                ],
            ]
        )
        cos = tensor[len(TIMESCALES) + 3]
        context = np.where(np.arange(tensor.size) == len(TIMESCALES) + 3, 0.0, tensor)
        change = RATE_STEP * np.tanh(cos * (context @ th["rate_w"] + th["rate_b"]))
        rate = float(np.clip(rates[name] + change, *RATE_RANGE))
        h = np.maximum(x @ th["w1"] + th["b1"] + tensor @ th["tensor_w"], 0.0)
        out = h @ th["w2"] + th["b2"]
        d = out[:, 0].reshape(u.shape)
        s = out[:, 1].reshape(u.shape)
        correction = np.sign(u) * np.tanh(d)
        updates[name] = -np.exp(th["log_lr"] + rate + np.tanh(s)) * (u + correction)
        for k in range(2):
            new_ms[k][name] = m[k]
        new_v[name] = v
        new_rates[name] = rate
    return updates, (new_ms, new_v, new_rates, t)


def test_update_matches_numpy_reference_with_nonzero_output_layer():
    lopt = versatile_optimizer(hidden_size=8)
    theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1))
    keys = jax.random.split(jax.random.key(2), 6)
    # A matrix, a vector and a scalar: three tensor sizes for the per-tensor features.
    params = {
        "a": jax.random.normal(keys[0], (3, 4)),
        "b": 0.01 * jax.random.normal(keys[1], (5,)),
        "c": jnp.asarray(2.0),
    }
    grads = [
        {
            k: jax.random.normal(kk, jnp.shape(p)) * 3.0
            for (k, p), kk in zip(params.items(), ks, strict=True)
        }
        for ks in (keys[2:5], jax.random.split(keys[5], 3), jax.random.split(keys[4], 3))
    ]
    zeros = {k: np.zeros(np.shape(p)) for k, p in params.items()}
    ref_state = ([dict(zeros), dict(zeros)], dict(zeros), {k: 0.0 for k in params}, 0)
    state = lopt.init_state(theta, params)
    p_lib = params
    p_ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    update = jax.jit(lopt.update)
    for g in grads:
        got, state = update(theta, g, state, p_lib)
        want, ref_state = reference_step(theta, g, p_ref, ref_state)
        # The network must matter: the update is not Adam's -lr·u.
        adam_like = -np.exp(float(theta["log_lr"])) * np.sign(np.asarray(g["a"]))
        assert np.max(np.abs(want["a"] - adam_like)) > 1e-4
        # The library computes in float32, where β₂ = 0.999 is off by 1.3e-8; the bias
        # correction 1/(1 - β₂ᵗ) ≈ 1000/t magnifies that to 1.3e-5 relative in v̂ at t = 1
        # (optax's Adam does the same), so ~1e-5 in u and the update. rtol 5e-5, and an
        # atol of 5e-5 of the largest update where u + tanh(d) nearly cancels.
        scale = max(np.max(np.abs(w)) for w in want.values())
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=5e-5, atol=5e-5 * scale)
        assert int(state.count) == ref_state[3]
        tree_allclose(state.second_moment, ref_state[1], rtol=1e-5, atol=0)
        tree_allclose(state.log_rate, ref_state[2], rtol=1e-5, atol=1e-6)
        p_lib = optax.apply_updates(p_lib, got)
        p_ref = {k: p_ref[k] + want[k] for k in p_ref}


def test_long_run_with_extreme_gradients_is_finite_and_bounded():
    lopt = versatile_optimizer(hidden_size=8)
    adam_dir = optax.scale_by_adam(b1=0.9, b2=0.999, eps=EPS)  # u, independently
    shape = (4,)
    params = {
        k: jnp.linspace(-1.0, 1.0, 4) for k in ("huge", "large", "tiny", "zero", "switch", "unit")
    }
    steps = 10_000

    def grads_at(t, key):
        n = jax.random.normal(key, shape)
        return {
            "huge": 1e30 * jnp.sign(n),  # g² overflows float32 to inf
            "large": 1e18 * n,  # g² near float32's largest value
            "tiny": 1e-30 * n,  # g² underflows to 0
            "zero": jnp.zeros(shape),
            "switch": jnp.where(t < steps // 2, 1e-30, 1e30) * n,
            "unit": n,
        }

    def body(theta, carry, xs):
        p, s, a = carry
        t, key = xs
        bound = jnp.exp(theta["log_lr"] + RATE_RANGE[1] + 1.0)
        g = grads_at(t, key)
        upd, s = lopt.update(theta, g, s, p)
        u, a = adam_dir.update(g, a, p)
        # |exp(log_lr + ℓ + tanh(·)) (u + tanh(d))| ≤ e^(log_lr+ℓmax+1) (|u| + 1); 1e-5 relative
        # slack covers float32 rounding of u (computed by optax in another op order).
        ok = jnp.all(
            jnp.stack(
                [
                    jnp.all(
                        jnp.isfinite(x) & (jnp.abs(x) <= bound * (jnp.abs(y) + 1.0) * (1 + 1e-5))
                    )
                    for x, y in zip(jax.tree.leaves(upd), jax.tree.leaves(u), strict=True)
                ]
            )
        )
        return (optax.apply_updates(p, upd), s, a), ok

    @jax.jit
    def run(theta, params):
        keys = jax.random.split(jax.random.key(3), steps)
        carry = (params, lopt.init_state(theta, params), adam_dir.init(params))
        (p, _, _), ok = jax.lax.scan(
            functools.partial(body, theta), carry, (jnp.arange(steps), keys)
        )
        return p, ok

    # A network of moderate output and one whose outputs saturate both tanh's.
    for out_scale in (0.5, 100.0):
        theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), out_scale)
        p, ok = run(theta, params)
        assert bool(jnp.all(ok)), f"out_scale {out_scale}: first bad step {int(jnp.argmin(ok))}"
        for leaf in jax.tree.leaves(p):
            assert bool(jnp.all(jnp.isfinite(leaf)))
        # The unit-gradient tensor really was optimized.
        assert float(jnp.max(jnp.abs(p["unit"] - params["unit"]))) > 1e-3
        # Where g² underflowed to zero or overflowed, the step is gated off, so those
        # tensors stay put, as under Adam.
        for name in ("zero", "tiny", "huge"):
            np.testing.assert_array_equal(p[name], params[name], err_msg=name)


def test_non_finite_gradient_entries_and_huge_params_spoil_nothing_else():
    """With fresh θ the network is silent and the rate reads only the cosine, so a tensor
    whose bad entries are frozen must move its other entries exactly as the optimizer
    moves the tensor of those entries alone; a param of 1e20 must not change its
    tensor's updates either."""
    lopt = versatile_optimizer(hidden_size=8)
    fresh = lopt.init(jax.random.key(0))
    update = jax.jit(lopt.update)
    keys = jax.random.split(jax.random.key(5), 40)
    good = jnp.array([2, 3, 4, 5])
    mixed = {"w": jnp.zeros(6), "big": jnp.array([1e20, 1.0, -1.0, 0.5])}
    alone = {"w": jnp.zeros(4), "big": jnp.array([1.0, 1.0, -1.0, 0.5])}
    s_mixed, s_alone = lopt.init_state(fresh, mixed), lopt.init_state(fresh, alone)
    for t, k in enumerate(keys):
        n = jax.random.normal(k, (4,)) + 0.5
        bad = jnp.array([jnp.inf, jnp.nan]) if t % 2 == 0 else jnp.array([-jnp.inf, 1.0])
        g_mixed = {"w": jnp.concatenate([bad, n]), "big": n}
        g_alone = {"w": n, "big": n}
        u_mixed, s_mixed = update(fresh, g_mixed, s_mixed, mixed)
        u_alone, s_alone = update(fresh, g_alone, s_alone, alone)
        np.testing.assert_array_equal(u_mixed["w"][:2], 0.0)
        # Same arithmetic on the same values, up to the sums' order: float32 rounding.
        np.testing.assert_allclose(u_mixed["w"][good], u_alone["w"], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(u_mixed["big"], u_alone["big"], rtol=1e-5, atol=1e-9)
        tree_allclose(s_mixed.log_rate, s_alone.log_rate, rtol=1e-5, atol=1e-6)
        mixed = optax.apply_updates(mixed, u_mixed)
        alone = optax.apply_updates(alone, u_alone)
    assert float(jnp.max(jnp.abs(alone["w"]))) > 0.01  # the good entries did move
    # A network that matters, on the same inputs: every update and rate stays finite.
    theta = with_output_weights(fresh, jax.random.key(1))
    state = lopt.init_state(theta, mixed)
    for _ in range(3):
        updates, state = update(theta, g_mixed, state, mixed)
        for leaf in jax.tree.leaves((updates, state.log_rate)):
            assert bool(jnp.all(jnp.isfinite(leaf)))


def test_bfloat16_params_stay_bfloat16_and_track_float32():
    lopt = versatile_optimizer(hidden_size=8, init_lr=0.02)
    tx = mo.as_optax(
        lopt, with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), 0.1)
    )
    p0 = {"w": jnp.linspace(-0.5, 0.5, 8).reshape(2, 4), "b": jnp.array([0.3, -0.4, 0.2])}
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p0)
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p16)  # the same starting values

    def loss(p):
        return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p))

    update = jax.jit(lambda s, p: tx.update(jax.grad(loss)(p), s, p))  # compiled per dtype
    s16, s32 = tx.init(p16), tx.init(p32)
    steps = 10
    for _ in range(steps):
        u16, s16 = update(s16, p16)
        u32, s32 = update(s32, p32)
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u16))
        p16, p32 = optax.apply_updates(p16, u16), optax.apply_updates(p32, u32)
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p16))
    # Each bf16 step rounds the update and the new param to 8 significant bits
    # (relative 2⁻⁸); over 10 steps on params of size ≤ 0.5 that is at most
    # 10 · 2⁻⁸ · 0.5 ≈ 0.02, while the float32 run moves the params by much more.
    tol = steps * 2.0**-8 * 0.5
    tree_allclose(p16, p32, rtol=0, atol=tol)
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p0), strict=True)
    )
    assert moved > 4 * tol


def test_errors():
    with pytest.raises(ValueError, match="hidden_size"):
        versatile_optimizer(hidden_size=0)
    lopt = versatile_optimizer()
    theta = lopt.init(jax.random.key(0))
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="params"):
        lopt.update(theta, params, lopt.init_state(theta, params))


# ---------------------------------------------------------------------------------------
# In user code, as an optax transformation: the versatile optimizer with a network that
# matters, and every shipped optimizer present at test time.


def make_tx(name):
    """The optimizer as a user gets it: an optax transformation."""
    if name == "versatile_random":
        lopt = versatile_optimizer()
        theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), 0.1)
        return mo.as_optax(lopt, theta)
    return mo.pretrained(name)


@functools.cache
def make_jitted_tx(name):
    """``make_tx(name)`` with its update compiled once per parameter structure and kept
    across tests: eager dispatch of a learned optimizer's many small ops is what would
    make these tests slow. Both sides of every comparison use the same transformation."""
    tx = make_tx(name)
    return optax.GradientTransformationExtraArgs(tx.init, jax.jit(tx.update))


OPTIMIZERS = ["versatile_random", *mo.pretrained_names()]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))


def regression_data(key, n=32):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (n, 3))
    y = 3.0 * jnp.sin(x @ jax.random.normal(kw, (3, 1)))
    return x, y


def linen_problem():
    model = MLP()
    x, y = regression_data(jax.random.key(10))
    params = model.init(jax.random.key(11), x)["params"]

    def loss(p):
        return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    return model, params, loss


def hand_loop(tx, params, loss, steps, transform=lambda g: g):
    """``steps`` of tx.update then optax.apply_updates, the loop of optax's docs (eager)."""
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(transform(jax.grad(loss)(params)), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_chain_with_clipping_matches_clipping_by_hand(name):
    tx = make_jitted_tx(name)
    _, params, loss = linen_problem()
    steps = 10

    def clip(g):
        norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
        return jax.tree.map(lambda x: x * jnp.minimum(1.0, 1.0 / norm), g)

    assert float(optax.tree.norm(jax.grad(loss)(params))) > 1.0  # the clip is active
    chained = hand_loop(optax.chain(optax.clip_by_global_norm(1.0), tx), params, loss, steps)
    by_hand = hand_loop(tx, params, loss, steps, transform=clip)
    # optax divides by the norm where the hand version multiplies by its inverse: 1 ulp
    # per gradient, carried through 10 smooth steps, stays well below rtol 1e-5.
    tree_allclose(chained, by_hand, rtol=1e-5, atol=1e-7)
    assert float(loss(chained)) < float(loss(params))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_flax_train_state_matches_hand_loop(name):
    tx = make_jitted_tx(name)
    model, params, loss = linen_problem()
    steps = 10

    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    for _ in range(steps):
        state = state.apply_gradients(grads=jax.grad(loss)(state.params))
    # apply_gradients runs the same compiled tx.update, then optax.apply_updates, on the
    # same inputs in the same order as the hand loop, so the results are bitwise equal.
    tree_allclose(state.params, hand_loop(tx, params, loss, steps), rtol=0, atol=0)
    assert int(state.step) == steps
    assert float(loss(state.params)) < float(loss(params))


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_flax_nnx_optimizer_matches_hand_loop(name):
    tx = make_jitted_tx(name)
    x, y = regression_data(jax.random.key(10))
    model = NnxMLP(nnx.Rngs(0))
    graphdef, params0 = nnx.split(model, nnx.Param)
    params0 = jax.tree.map(jnp.array, params0)  # a copy, untouched by the optimizer

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    def manual_loss(p):
        return loss(nnx.merge(graphdef, p))

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    steps = 10
    for _ in range(steps):
        optimizer.update(model, nnx.grad(loss)(model))
    assert int(optimizer.step[...]) == steps
    # The same tx.update on the same values; nnx passes them in its own variable
    # containers (another compiled program of tx.update), so allow a few ulp.
    tree_allclose(
        nnx.state(model, nnx.Param),
        hand_loop(tx, params0, manual_loss, steps),
        rtol=1e-6,
        atol=1e-7,
    )
    assert float(loss(model)) < float(manual_loss(params0))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jitted_train_step_compiles_once_and_matches_hand_loop(name, count_compiles):
    tx = make_tx(name)
    model, params, _ = linen_problem()
    traces = [0]

    def loss(p, x, y):
        return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    @jax.jit
    def train_step(p, s, x, y):
        traces[0] += 1  # runs only while tracing
        value, g = jax.value_and_grad(loss)(p, x, y)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    batches = [regression_data(jax.random.key(20 + i)) for i in range(3)]
    p, s = params, tx.init(params)
    p, s, first = train_step(p, s, *batches[0])
    with count_compiles() as n:
        for x, y in batches[1:]:
            p, s, _ = train_step(p, s, x, y)
        jax.block_until_ready(p)
    assert traces[0] == 1 and n[0] == 0 and train_step._cache_size() == 1

    # The hand loop over the same batches, step by step (tx.update compiled on its own);
    # XLA may fuse and reorder float32 ops differently in the whole train step, a few
    # ulp per op over 3 smooth steps: rtol 1e-5.
    hand_tx = make_jitted_tx(name)
    want, ws = params, hand_tx.init(params)
    for x, y in batches:
        updates, ws = hand_tx.update(jax.grad(loss)(want, x, y), ws, want)
        want = optax.apply_updates(want, updates)
    tree_allclose(p, want, rtol=1e-5, atol=1e-7)
    x, y = batches[0]
    assert float(loss(p, x, y)) < float(first)


# ---------------------------------------------------------------------------------------
# Rescaled tasks.


@pytest.mark.parametrize(
    "inner",
    [
        mo.quadratic_family(dim=5, init_scale=1.0),
        mo.mlp_regression_family(input_dim=3, hidden_sizes=(4,)),
    ],
)
def test_rescaled_loss_and_gradient(inner):
    fam = rescaled(inner, max_scale=10.0)

    @jax.jit
    def compute(key):
        k_task, k_init, k_loss = jax.random.split(key, 3)
        cfg = fam.sample(k_task)
        q = fam.init(cfg, k_init)
        p = inner.init(cfg.inner, k_init)
        losses = fam.loss(cfg, q, k_loss), inner.loss(cfg.inner, p, k_loss)
        grads = (
            jax.grad(fam.loss, argnums=1)(cfg, q, k_loss),
            jax.grad(inner.loss, argnums=1)(cfg.inner, p, k_loss),
        )
        return cfg, q, p, losses, grads

    cfg, q, p, (loss_q, loss_p), (g_q, g_p) = compute(jax.random.key(0))
    scales = jax.tree.leaves(cfg.scales)
    assert len(scales) == len(jax.tree.leaves(p))
    # q = p / s per tensor: one float32 division, within 1 ulp.
    tree_allclose(q, jax.tree.map(lambda s, x: x / s, cfg.scales, p), rtol=1e-6, atol=0)
    # s · (p / s) recovers p to 1 ulp; the loss is a smooth function of it.
    np.testing.assert_allclose(loss_q, loss_p, rtol=1e-5)
    # Chain rule: ∂L(s q)/∂q = s · ∂L/∂p. The ulp-level change of p moves the gradient by
    # (curvature × 1 ulp) relative; rtol 1e-4 leaves room for it.
    tree_allclose(g_q, jax.tree.map(lambda s, g: s * g, cfg.scales, g_p), rtol=1e-4, atol=1e-6)
    if len(scales) > 1:  # one scale per tensor, not one for all
        assert len({float(s) for s in scales}) == len(scales)


@pytest.mark.parametrize("max_scale", [1.0, 4.0, 10.0])
def test_rescaled_scales_are_within_bounds(max_scale):
    inner = mo.mlp_regression_family(input_dim=3, hidden_sizes=(4,))
    cfgs = jax.vmap(rescaled(inner, max_scale=max_scale).sample)(
        jax.random.split(jax.random.key(0), 300)
    )
    s = np.concatenate([np.ravel(x) for x in jax.tree.leaves(cfgs.scales)])
    assert s.size == 300 * 4
    # exp of a float32 log can land 1 ulp past the end of the interval.
    assert np.all(s >= (1 / max_scale) * (1 - 1e-6)) and np.all(s <= max_scale * (1 + 1e-6))
    if max_scale > 1:
        # Log-uniform: 1,200 draws reach into both outer tenths of the log range (the
        # chance of missing one is 0.9^1200).
        log_s, log_max = np.log(s), np.log(max_scale)
        assert log_s.min() < -0.9 * log_max and log_s.max() > 0.9 * log_max
    else:
        np.testing.assert_array_equal(s, 1.0)


def test_rescaled_rejects_max_scale_below_one():
    with pytest.raises(ValueError, match="max_scale"):
        rescaled(mo.quadratic_family(), max_scale=0.5)


def test_rescaled_bound_family_reads_new_data():
    inner = mixed_mlp_classifier_family(digits(), widths=(4, 8), batch_size=16)
    fam = rescaled(inner, max_scale=10.0)
    assert fam.bind is not None
    k_task, k_init, k_loss = jax.random.split(jax.random.key(0), 3)
    cfg = fam.sample(k_task)
    q = fam.init(cfg, k_init)
    p = jax.tree.map(lambda s, x: s * x, cfg.scales, q)
    xs, ys = inner.data
    new = (xs[::-1], ys[::-1])  # same shapes, other examples in each minibatch

    @jax.jit
    def bound_loss(data, q):  # the data is a traced argument, as in metaopt's programs
        return fam.bind(data).loss(cfg, q, k_loss)

    @jax.jit
    def inner_loss(data, p):
        return inner.bind(data).loss(cfg.inner, p, k_loss)

    for data in (inner.data, new):
        # s · q recovers p to 1 ulp and two programs may order ops differently: a few
        # ulp in a cross-entropy, hence rtol 1e-5.
        np.testing.assert_allclose(bound_loss(data, q), inner_loss(data, p), rtol=1e-5)
    assert not np.isclose(float(bound_loss(new, q)), float(bound_loss(inner.data, q)))


# ---------------------------------------------------------------------------------------
# Mixtures of estimators.


def test_mixture_gradient_is_weighted_mean_of_members():
    learner = mo.learned_optimizer(versatile_optimizer(hidden_size=4))
    members = [
        mo.pes(learner, mo.quadratic_family(d), num_tasks=2, truncation=5, horizon=10)
        for d in (4, 8)
    ]
    mix = mixture(members, weights=(1, 3))
    assert mix.function_steps == sum(e.function_steps for e in members)

    @jax.jit  # one program for both sides: one compile
    def both(theta, k_init, k_est):
        state = mix.init(theta, k_init)
        got = mix.estimate(theta, state, k_est)
        # The members by hand, each with its share of the split keys.
        ref = [e.init(theta, k) for e, k in zip(members, jax.random.split(k_init, 2), strict=True)]
        out = [
            e.estimate(theta, s, k)
            for e, s, k in zip(members, ref, jax.random.split(k_est, 2), strict=True)
        ]
        return state, got, tuple(ref), out

    theta = learner.init(jax.random.key(0))
    state, (grad, new_state, metrics), ref, out = both(theta, jax.random.key(1), jax.random.key(2))
    (g0, s0, m0), (g1, s1, m1) = out
    tree_allclose(state, ref, rtol=0, atol=0)
    # The same computations on the same keys, and 1/4, 3/4 are exact in float32: only the
    # summation order (0 + w0 g0 + w1 g1) may differ, hence 1e-6.
    tree_allclose(
        grad, jax.tree.map(lambda a, b: 0.25 * a + 0.75 * b, g0, g1), rtol=1e-6, atol=1e-8
    )
    tree_allclose(new_state, (s0, s1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        metrics["meta_loss"], 0.25 * m0["meta_loss"] + 0.75 * m1["meta_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(metrics["loss"], 0.25 * m0["loss"] + 0.75 * m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["meta_loss_0"], m0["meta_loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["meta_loss_1"], m1["meta_loss"], rtol=1e-6)
    # The weights are visible in the result: the members' gradients differ.
    assert (
        max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True)
        )
        > 1e-3
    )


def test_mixture_rejects_bad_weights_and_mixed_learners():
    learner = mo.learned_optimizer(versatile_optimizer(hidden_size=4))
    members = [
        mo.es(learner, mo.quadratic_family(d), num_tasks=2, truncation=5, horizon=10)
        for d in (4, 8)
    ]
    for weights in [(1.0, -1.0), (1.0,), (1.0, 2.0, 3.0), (0.0, 0.0), (float("nan"), 1.0)]:
        with pytest.raises(ValueError, match="weights"):
            mixture(members, weights=weights)
    other = mo.learned_optimizer(versatile_optimizer(hidden_size=8))
    with pytest.raises(ValueError, match="meta-learner"):
        mixture(
            [
                members[0],
                mo.es(other, mo.quadratic_family(4), num_tasks=2, truncation=5, horizon=10),
            ]
        )


# ---------------------------------------------------------------------------------------
# The meta-training distribution.


def test_versatile_estimator_meta_step():
    learner = mo.learned_optimizer(versatile_optimizer(hidden_size=4))
    est = versatile_estimator(learner, num_tasks=2, truncation=5, min_horizon=10, max_horizon=20)
    theta = learner.init(jax.random.key(0))
    opt = optax.adam(1e-3)
    meta_step = mo.make_meta_step(est, opt)

    @jax.jit  # one program: the estimator's state, then one meta-step
    def first_step(theta, key):
        k_init, k_step = jax.random.split(key)
        return meta_step(mo.MetaState(theta, opt.init(theta), est.init(theta, k_init)), k_step)

    new, metrics = first_step(theta, jax.random.key(1))
    assert {"meta_loss", "loss", "meta_loss_0", "meta_loss_1", "meta_loss_2"} <= set(metrics)
    for k, v in metrics.items():
        assert bool(jnp.isfinite(v)), k
    assert int(metrics["skipped"]) == 0
    assert float(metrics["grad_norm"]) > 0
    # Each family's meta-loss is a mean of log-losses, clipped to [log 1e-8, log 1e4].
    for i in range(3):
        assert np.log(1e-8) <= float(metrics[f"meta_loss_{i}"]) <= np.log(1e4)
    # A step was taken: θ moved.
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(new.theta), jax.tree.leaves(theta), strict=True)
    )


def test_log_loss_objective():
    obj = log_loss_objective()
    assert not obj.final_only
    fam = mo.quadratic_family(dim=3)
    cfg = fam.sample(jax.random.key(0))
    params = fam.init(cfg, jax.random.key(1))
    np.testing.assert_allclose(
        obj.measure(fam, cfg, params, None), np.log(float(fam.loss(cfg, params, None))), rtol=1e-6
    )
    # A family whose loss is its parameter, to reach the edge cases.
    ident = mo.TaskFamily(
        name="ident", sample=lambda k: (), init=lambda c, k: 0.0, loss=lambda c, p, k: p
    )
    for value in [float("nan"), float("inf"), -float("inf")]:
        np.testing.assert_allclose(
            obj.measure(ident, (), jnp.asarray(value), None), np.log(1e4), rtol=1e-6
        )
    np.testing.assert_allclose(
        obj.measure(ident, (), jnp.asarray(2.5), None), np.log(2.5), rtol=1e-6
    )


def test_regression_label_noise_adds_its_variance():
    clean = mo.mlp_regression_family(batch_size=64)
    noisy = mo.mlp_regression_family(batch_size=64, noise_std=0.1)
    cfg = clean.sample(jax.random.key(0))
    params = clean.init(cfg, jax.random.key(1))
    keys = jax.random.split(jax.random.key(2), 2000)
    diff = jax.vmap(lambda k: noisy.loss(cfg, params, k) - clean.loss(cfg, params, k))(keys)
    # Same inputs per key, targets plus N(0, 0.1²): the loss grows by 0.01 on average.
    # Over 128,000 targets the cross term 2·noise·residual (residual ~1) has standard
    # error ≈ 2·0.1·1/√128000 ≈ 6e-4, so 3e-3 is five standard errors.
    assert abs(float(diff.mean()) - 0.01) < 3e-3
    with pytest.raises(ValueError, match="noise_std"):
        mo.mlp_regression_family(noise_std=-1.0)
