"""The orthogonal learned optimizer, checked against independent computations.

Newton–Schulz against NumPy's SVD; the update rule against a float64 NumPy
re-implementation of the documented step; bounds under extreme gradients; and its use
in user code (optax chains, flax, bf16) against hand-written loops.
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
from metaopt.optimizers.orthogonal import newton_schulz, orthogonal_optimizer

# The documented constants, written out again so the reference does not import them.
BETA, BETA2, EPS = 0.9, 0.999, 1e-8
QUINTIC = (3.4445, -4.7750, 2.0315)
TIMESCALES = np.array([10.0, 100.0, 1000.0])
RATE_STEP, RATE_RANGE = 0.1, (np.log(1e-2), np.log(10.0))
MAX_LOG_DECAY = np.log(1e-2)


def random_matrix(key, shape, condition):
    """A random matrix whose singular values run from 1 to 1 / condition."""
    k1, k2 = jax.random.split(jax.random.key(key))
    m, n = shape
    r = min(m, n)
    u, _ = np.linalg.qr(np.asarray(jax.random.normal(k1, (m, r)), np.float64))
    v, _ = np.linalg.qr(np.asarray(jax.random.normal(k2, (n, r)), np.float64))
    return (u * np.geomspace(1.0, 1.0 / condition, r)) @ v.T


@pytest.mark.parametrize("shape", [(6, 6), (12, 5), (5, 12), (40, 24)])
def test_cubic_newton_schulz_converges_to_svd_polar_factor(shape):
    x = random_matrix(0, shape, condition=10.0)
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    got = newton_schulz(jnp.asarray(x, jnp.float32), steps=60, coefficients=(1.5, -0.5, 0.0))
    # Normalized by its Frobenius norm the smallest singular value is ≥ 1/(10·√r), and the
    # cubic map converges quadratically once it nears 1: 60 steps leave float32 rounding
    # (about 1e-6 per product, accumulated over a few dozen products), hence 1e-4.
    np.testing.assert_allclose(got, u @ vt, atol=1e-4)


@pytest.mark.parametrize("shape", [(8, 8), (30, 7), (7, 30)])
def test_quintic_newton_schulz_maps_each_singular_value_by_the_scalar_polynomial(shape):
    x = random_matrix(1, shape, condition=100.0) * 37.0
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    sigma = s / np.linalg.norm(x)
    a, b, c = QUINTIC
    for _ in range(5):
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    got = np.asarray(newton_schulz(jnp.asarray(x, jnp.float32)), np.float64)
    # The iteration acts on singular values only; float32 products of entries of size
    # ≤ 1 over 5 steps (15 products, each with relative error ~1e-6·√n), hence 2e-4.
    np.testing.assert_allclose(got, (u * sigma) @ vt, atol=2e-4)
    # And the point of the quintic: every singular value in about [0.7, 1.2].
    sv = np.linalg.svd(got, compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.25


def test_newton_schulz_keeps_zero_rows_zero_and_rejects_vectors():
    x = jnp.asarray(random_matrix(2, (5, 9), 5.0), jnp.float32).at[2].set(0.0)
    np.testing.assert_array_equal(newton_schulz(x)[2], 0.0)
    np.testing.assert_array_equal(newton_schulz(jnp.zeros((3, 4))), 0.0)
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(jnp.ones(3))


def numpy_ns(x, steps=5):
    a, b, c = QUINTIC
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + 1e-30)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


def reference_step(theta, grads, params, state, max_dim=128):
    """The documented update in float64 NumPy. ``state`` = (m, v, ℓ, count)."""
    th = {k: np.asarray(v, np.float64) for k, v in theta.items()}
    ms, vs, rates, count = state
    t = count + 1
    embed = np.tanh(t / TIMESCALES)
    out = ({}, {}, {}, {}, t)
    for name in grads:
        g = np.asarray(grads[name], np.float64)
        p = np.asarray(params[name], np.float64)
        m = BETA * ms[name] + (1 - BETA) * g
        v = BETA2 * vs[name] + (1 - BETA2) * g * g
        cos = cosine(g, ms[name])
        r = 1 / (np.sqrt(v / (1 - BETA2**t)) + EPS)
        m_hat = m / (1 - BETA**t)
        n = BETA * m_hat + (1 - BETA) * g
        u = n * r
        ortho = vector = aspect = 0.0
        width = 1.0
        if g.ndim >= 2 and min(int(np.prod(g.shape[:-1])), g.shape[-1]) >= 2:
            # Every entry has had a gradient, so the live sides are the full sides.
            fan_in, fan_out = int(np.prod(g.shape[:-1])), g.shape[-1]
            aspect = np.clip(np.log(fan_out / fan_in) / 4, -2, 2)
            width = np.sqrt(max(1.0, fan_out / fan_in))
            if min(fan_in, fan_out) <= max_dim:
                d = numpy_ns(n.reshape(fan_in, fan_out)).reshape(g.shape)
                ortho = 1.0
            else:
                d = u * np.sqrt(min(fan_in, fan_out)) / np.linalg.norm(u)
        else:
            d, vector = u, 1.0
        tensor = np.concatenate(
            [embed, [ortho, vector, aspect, np.log(np.sqrt(np.mean(p**2)) + 1e-3) / 3, cos]]
        )
        tensor = np.append(tensor, rates[name] / 3)
        context = tensor.copy()
        context[7] = 0.0  # the cosine's own gain entry is unused
        change = RATE_STEP * np.tanh(cos * (context @ th["rate_w"] + th["rate_b"]))
        rate = float(np.clip(rates[name] + change, *RATE_RANGE))
        sign = np.sign(d)
        rms_d = np.sqrt(np.mean(d**2))
        x = np.stack([np.abs(d) / rms_d, g * r * sign, m_hat * r * sign], -1).reshape(-1, 3)
        h = np.maximum(x @ th["w1"] + th["b1"] + tensor @ th["tensor_w"], 0.0)
        c, s = (h @ th["w2"] + th["b2"]).T
        c, s = c.reshape(g.shape), s.reshape(g.shape)
        lr = th["log_lr"][1 if vector else 0]
        step = -width * np.exp(lr + rate + np.tanh(s)) * (d + sign * rms_d * np.tanh(c))
        decay = np.exp(min(tensor @ th["decay_w"] + th["decay_b"], MAX_LOG_DECAY))
        out[0][name] = step - decay * p
        out[1][name], out[2][name], out[3][name] = m, v, rate
    return out[0], out[1:]


def with_output_weights(theta, key, scale=0.5):
    """θ with a nonzero output layer, rate head and decay, so each changes the update."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    theta = dict(theta)
    theta["w2"] = scale * jax.random.normal(k1, theta["w2"].shape)
    theta["b2"] = scale * jax.random.normal(k2, theta["b2"].shape)
    theta["rate_w"] = theta["rate_w"] + scale * jax.random.normal(k3, theta["rate_w"].shape)
    theta["decay_w"] = theta["decay_w"] + scale * jax.random.normal(k4, theta["decay_w"].shape)
    return theta


@pytest.mark.parametrize("trained", [False, True])
def test_update_matches_numpy_reference(trained):
    """Fresh θ (Muon on matrices, NAdam on vectors) and a θ whose network matters, on a
    tree with every kind of tensor: orthogonalized matrices (square, tall, a conv kernel),
    a matrix too large to orthogonalize, a one-column matrix, a vector and a scalar."""
    max_dim = 6
    lopt = orthogonal_optimizer(max_orthogonal_dim=max_dim)
    theta = lopt.init(jax.random.key(0))
    if trained:
        theta = with_output_weights(theta, jax.random.key(1), 0.3)
    shapes = {
        "square": (4, 4),
        "tall": (9, 3),
        "conv": (3, 3, 2, 5),
        "large": (8, 7),
        "column": (6, 1),
        "bias": (5,),
        "scalar": (),
    }
    keys = jax.random.split(jax.random.key(2), len(shapes))
    params = {k: jax.random.normal(kk, s) for (k, s), kk in zip(shapes.items(), keys, strict=True)}
    p_lib = params
    p_ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    zeros = {k: np.zeros(s) for k, s in shapes.items()}
    ref_state = (zeros, zeros, {k: 0.0 for k in shapes}, 0)
    state = lopt.init_state(theta, params)
    update = jax.jit(lopt.update)
    for step in range(6):
        # Gradients that keep a direction (so rates move) plus noise.
        grads = {
            k: jnp.sin(p_lib[k] + 0.3 * step) + 0.3 * jax.random.normal(jax.random.key(step), s)
            for k, s in shapes.items()
        }
        got, state = update(theta, grads, state, p_lib)
        want, ref_state = reference_step(theta, grads, p_ref, ref_state, max_dim)
        # float32 against float64: β₂ = 0.999 is off by 1.3e-8 in float32, which the bias
        # correction 1/(1 - β₂ᵗ) ≈ 1000/t magnifies to ~1e-5 relative; Newton–Schulz's
        # products add ~1e-6. rtol 1e-4, and atol 1e-4 of the largest update where the
        # correction nearly cancels the nominal direction.
        scale = max(np.max(np.abs(w)) for w in want.values())
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * scale, err_msg=k)
        np.testing.assert_allclose(
            np.array([state.log_rate[k] for k in shapes]),
            np.array([ref_state[2][k] for k in shapes]),
            rtol=1e-5,
            atol=1e-6,
        )
        p_lib = optax.apply_updates(p_lib, got)
        p_ref = {k: p_ref[k] + want[k] for k in p_ref}
    # The comparison means something: rates moved away from 0.
    assert max(abs(float(r)) for r in jax.tree.leaves(state.log_rate)) > 0.02


def test_fresh_matrix_step_is_muon_at_spectral_scale():
    """With fresh θ a matrix's first step has all singular values equal (to the quintic's
    image of 1/√r), times 0.01 · sqrt(max(1, fan_out / fan_in)): width-independent."""
    lopt = orthogonal_optimizer()
    theta = lopt.init(jax.random.key(0))
    for shape in [(16, 16), (16, 64), (64, 16)]:
        params = {"w": jnp.zeros(shape)}
        g = jnp.asarray(random_matrix(3, shape, 1.0), jnp.float32)  # equal singular values
        updates, _ = lopt.update(theta, {"w": g}, lopt.init_state(theta, params), params)
        sv = np.linalg.svd(np.asarray(updates["w"], np.float64), compute_uv=False)
        sigma = 1 / np.sqrt(min(shape))
        a, b, c = QUINTIC
        for _ in range(5):
            sigma = a * sigma + b * sigma**3 + c * sigma**5
        want = 0.01 * np.sqrt(max(1.0, shape[1] / shape[0])) * sigma
        # float32 Newton–Schulz on a 64-wide matrix: ~1e-5 relative.
        np.testing.assert_allclose(sv, want, rtol=1e-4)


def test_long_run_with_extreme_gradients_is_finite_and_bounded():
    lopt = orthogonal_optimizer()
    shapes = {"unit": (6, 4), "huge": (6, 4), "switch": (5,), "tiny": (4, 3), "zero": (3, 3)}
    params = {k: jnp.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s) for k, s in shapes.items()}
    steps = 5_000

    def grads_at(t, key):
        n = {
            k: jax.random.normal(jax.random.fold_in(key, i), s)
            for i, (k, s) in enumerate(shapes.items())
        }
        return {
            "unit": n["unit"],
            "huge": 1e30 * n["huge"],  # g² overflows float32 to inf
            "switch": jnp.where(t < steps // 2, 1e-30, 1e30) * n["switch"],
            "tiny": 1e-30 * n["tiny"],  # g² underflows to 0
            "zero": jnp.zeros(shapes["zero"]),
        }

    def body(theta, carry, xs):
        p, s = carry
        t, key = xs
        upd, s = lopt.update(theta, grads_at(t, key), s, p)
        # |step| ≤ e^(log_lr + ℓmax + 1) · width · (|d| + rms(d)) + 1% |p|, where |d| is at most
        # 1.25 (a Newton–Schulz entry) or Adam's |u| ≤ 1/√(1 − β₂) ≈ 31.6 (on vectors); the
        # widths here are ≤ 1. A generous common bound: 40 · e^(log_lr + ℓmax + 1).
        bound = [
            40.0 * jnp.exp(jnp.max(theta["log_lr"]) + np.log(10.0) + 1.0) + 0.01 * jnp.abs(x)
            for x in jax.tree.leaves(p)
        ]
        ok = jnp.all(
            jnp.stack(
                [
                    jnp.all(jnp.isfinite(u) & (jnp.abs(u) <= b))
                    for u, b in zip(jax.tree.leaves(upd), bound, strict=True)
                ]
            )
        )
        return (optax.apply_updates(p, upd), s), ok

    @jax.jit
    def run(theta, params):
        keys = jax.random.split(jax.random.key(3), steps)
        carry = (params, lopt.init_state(theta, params))
        (p, _), ok = jax.lax.scan(functools.partial(body, theta), carry, (jnp.arange(steps), keys))
        return p, ok

    for out_scale in (0.5, 100.0):  # moderate outputs, and outputs that saturate every tanh
        theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), out_scale)
        p, ok = run(theta, params)
        assert bool(jnp.all(ok)), f"out_scale {out_scale}: first bad step {int(jnp.argmin(ok))}"
        for leaf in jax.tree.leaves(p):
            assert bool(jnp.all(jnp.isfinite(leaf)))
        assert float(jnp.max(jnp.abs(p["unit"] - params["unit"]))) > 1e-2
        # Where g² underflowed to zero or overflowed, nothing moves, as under Adam.
        for name in ("zero", "tiny", "huge"):
            np.testing.assert_array_equal(p[name], params[name], err_msg=name)


def test_non_finite_gradient_entries_freeze_only_their_coordinates():
    """A vector whose bad entries are frozen moves its other entries exactly as the vector
    of those entries alone; in a matrix the bad entry's row and column of the momentum
    read as zero, so it does not poison the orthogonalization."""
    lopt = orthogonal_optimizer()
    theta = lopt.init(jax.random.key(0))
    update = jax.jit(lopt.update)
    mixed = {"v": jnp.zeros(6), "w": jnp.zeros((4, 5))}
    alone = {"v": jnp.zeros(4)}
    s_mixed, s_alone = lopt.init_state(theta, mixed), lopt.init_state(theta, alone)
    for t in range(20):
        n = jax.random.normal(jax.random.key(t), (4,)) + 0.5
        bad = jnp.array([jnp.inf, jnp.nan]) if t % 2 == 0 else jnp.array([-jnp.inf, jnp.nan])
        w = jax.random.normal(jax.random.key(100 + t), (4, 5)).at[1, 2].set(jnp.nan)
        u_mixed, s_mixed = update(theta, {"v": jnp.concatenate([bad, n]), "w": w}, s_mixed, mixed)
        u_alone, s_alone = update(theta, {"v": n}, s_alone, alone)
        np.testing.assert_array_equal(u_mixed["v"][:2], 0.0)
        # Same arithmetic on the same values, up to the sums' order: float32 rounding.
        np.testing.assert_allclose(u_mixed["v"][2:], u_alone["v"], rtol=1e-5, atol=1e-9)
        assert bool(jnp.all(jnp.isfinite(u_mixed["w"]))) and float(u_mixed["w"][1, 2]) == 0.0
        mixed = optax.apply_updates(mixed, u_mixed)
        alone = optax.apply_updates(alone, u_alone)
    assert float(jnp.max(jnp.abs(mixed["w"]))) > 0.01


def test_errors():
    for arg in ("hidden_size", "max_orthogonal_dim", "ns_steps"):
        with pytest.raises(ValueError, match=arg):
            orthogonal_optimizer(**{arg: 0})
    lopt = orthogonal_optimizer()
    theta = lopt.init(jax.random.key(0))
    params = {"w": jnp.ones((3, 3))}
    with pytest.raises(ValueError, match="params"):
        lopt.update(theta, params, lopt.init_state(theta, params))
    with pytest.raises(TypeError, match="grads"):
        lopt.update(
            theta, {"w": jnp.ones((3, 3), jnp.int32)}, lopt.init_state(theta, params), params
        )


# ---------------------------------------------------------------------------------------
# In user code, as an optax transformation, with a network that matters.


@functools.cache
def user_tx():
    """The optimizer as a user gets it, its update compiled once and kept across tests
    (both sides of every comparison use this same transformation)."""
    lopt = orthogonal_optimizer()
    theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), 0.1)
    tx = mo.as_optax(lopt, theta)
    return optax.GradientTransformationExtraArgs(tx.init, jax.jit(tx.update))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))


def regression_data(key, n=32):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (n, 3))
    return x, 3.0 * jnp.sin(x @ jax.random.normal(kw, (3, 1)))


def linen_problem():
    model = MLP()
    x, y = regression_data(jax.random.key(10))
    params = model.init(jax.random.key(11), x)["params"]
    return model, params, lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)


def hand_loop(tx, params, loss, steps, transform=lambda g: g):
    """``steps`` of tx.update then optax.apply_updates, the loop of optax's docs."""
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(transform(jax.grad(loss)(params)), state, params)
        params = optax.apply_updates(params, updates)
    return params


def tree_allclose(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), **tol)


def test_chain_with_clipping_matches_clipping_by_hand():
    tx = user_tx()
    _, params, loss = linen_problem()

    def clip(g):
        norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
        return jax.tree.map(lambda x: x * jnp.minimum(1.0, 1.0 / norm), g)

    assert float(optax.tree.norm(jax.grad(loss)(params))) > 1.0  # the clip is active
    chained = hand_loop(optax.chain(optax.clip_by_global_norm(1.0), tx), params, loss, 10)
    # optax divides by the norm where the hand version multiplies by its inverse: 1 ulp
    # per gradient; the orthogonalization is scale-free, the rest smooth: rtol 1e-5.
    tree_allclose(chained, hand_loop(tx, params, loss, 10, transform=clip), rtol=1e-5, atol=1e-7)
    assert float(loss(chained)) < float(loss(params))


def test_flax_train_state_matches_hand_loop():
    tx = user_tx()
    model, params, loss = linen_problem()
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    for _ in range(10):
        state = state.apply_gradients(grads=jax.grad(loss)(state.params))
    # The same compiled tx.update and apply_updates on the same inputs: bitwise equal.
    tree_allclose(state.params, hand_loop(tx, params, loss, 10), rtol=0, atol=0)
    assert float(loss(state.params)) < float(loss(params))


class NnxMLP(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float32):
        self.l1 = nnx.Linear(3, 8, rngs=rngs, param_dtype=dtype)
        self.l2 = nnx.Linear(8, 1, rngs=rngs, param_dtype=dtype)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def test_flax_nnx_optimizer_matches_hand_loop():
    tx = user_tx()
    x, y = regression_data(jax.random.key(10))
    model = NnxMLP(nnx.Rngs(0))
    graphdef, params0 = nnx.split(model, nnx.Param)
    params0 = jax.tree.map(jnp.array, params0)

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(10):
        optimizer.update(model, nnx.grad(loss)(model))
    want = hand_loop(tx, params0, lambda p: loss(nnx.merge(graphdef, p)), 10)
    # nnx passes the values in its own containers (another compiled program): a few ulp.
    tree_allclose(nnx.state(model, nnx.Param), want, rtol=1e-6, atol=1e-7)
    assert float(loss(model)) < float(loss(nnx.merge(graphdef, params0)))


def test_jitted_train_step_compiles_once(count_compiles):
    tx = user_tx()
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
    assert traces[0] == 1 and n[0] == 0
    want, ws = params, tx.init(params)
    for x, y in batches:
        updates, ws = tx.update(jax.grad(loss)(want, x, y), ws, want)
        want = optax.apply_updates(want, updates)
    # XLA may fuse and reorder float32 ops differently in the whole step: rtol 1e-5.
    tree_allclose(p, want, rtol=1e-5, atol=1e-7)
    assert float(loss(p, *batches[0])) < float(first)


def test_bfloat16_nnx_params_stay_bfloat16_and_track_float32():
    lopt = orthogonal_optimizer()
    theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), 0.1)
    # Steps three times as large as fresh θ's, so that 10 steps move the params well
    # beyond bf16's rounding.
    theta["log_lr"] = theta["log_lr"] + np.log(3.0)
    tx = mo.as_optax(lopt, theta)
    x, y = regression_data(jax.random.key(10))
    models = {dt: NnxMLP(nnx.Rngs(0), dtype=dt) for dt in (jnp.bfloat16, jnp.float32)}
    # The same starting values: the float32 model starts from the bf16 one's.
    nnx.update(
        models[jnp.float32],
        jax.tree.map(lambda v: v.astype(jnp.float32), nnx.state(models[jnp.bfloat16], nnx.Param)),
    )
    start = jax.tree.map(jnp.array, nnx.state(models[jnp.float32], nnx.Param))
    steps = 10
    for model in models.values():
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        for _ in range(steps):
            optimizer.update(model, nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model))
    p16 = nnx.state(models[jnp.bfloat16], nnx.Param)
    p32 = nnx.state(models[jnp.float32], nnx.Param)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(p16))
    # Each bf16 step rounds the param to 8 significant bits (at most 2⁻⁸ relative):
    # over 10 steps on params ≤ 1.5 that is 10 · 2⁻⁸ · 1.5 ≈ 0.06, while the float32 run
    # moves some param by several times as much.
    tol = steps * 2.0**-8 * 1.5
    tree_allclose(p16, p32, rtol=0, atol=tol)
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(start), strict=True)
    )
    assert moved > 3 * tol


@pytest.mark.parametrize("max_dim", [128, 2])  # orthogonalized, and Adam's direction
def test_masked_rows_and_columns_leave_the_rest_as_the_smaller_matrix(max_dim):
    """A layer of which only a block ever gets a gradient (a masked or dead part, as in
    the width-masked task families) moves that block exactly as the optimizer moves the
    block alone, and nothing else."""
    lopt = orthogonal_optimizer(max_orthogonal_dim=max_dim)
    theta = with_output_weights(lopt.init(jax.random.key(0)), jax.random.key(1), 0.3)
    small = {"w": jax.random.normal(jax.random.key(2), (5, 3))}
    big = {"w": jnp.zeros((8, 6)).at[:5, :3].set(small["w"])}
    s_small, s_big = lopt.init_state(theta, small), lopt.init_state(theta, big)
    update = jax.jit(lopt.update)
    for t in range(5):
        g = jax.random.normal(jax.random.key(10 + t), (5, 3))
        u_small, s_small = update(theta, {"w": g}, s_small, small)
        u_big, s_big = update(theta, {"w": jnp.zeros((8, 6)).at[:5, :3].set(g)}, s_big, big)
        # The same arithmetic, with sums over extra zeros in another order: float32
        # rounding, relative to the largest entry where an entry nearly cancels.
        atol = 1e-5 * float(jnp.max(jnp.abs(u_small["w"])))
        np.testing.assert_allclose(u_big["w"][:5, :3], u_small["w"], rtol=1e-5, atol=atol)
        np.testing.assert_array_equal(u_big["w"].at[:5, :3].set(0.0), 0.0)
        small = optax.apply_updates(small, u_small)
        big = optax.apply_updates(big, u_big)
    assert float(jnp.max(jnp.abs(u_small["w"]))) > 1e-4


def test_log_held_out_objective_reads_eval_loss_where_a_family_has_one():
    from metaopt.train.orthogonal import log_held_out_objective

    obj = log_held_out_objective()
    assert not obj.final_only

    def family(eval_loss):
        return mo.TaskFamily(
            name="ident",
            sample=lambda k: (),
            init=lambda c, k: 0.0,
            loss=lambda c, p, k: p,
            eval_loss=eval_loss,
        )

    with_eval = family(lambda c, p, k: 3.0 * p)
    without = family(None)
    # log of the held-out loss, or of the training loss where there is none.
    np.testing.assert_allclose(obj.measure(with_eval, (), jnp.asarray(2.0), None), np.log(6.0))
    np.testing.assert_allclose(obj.measure(without, (), jnp.asarray(2.0), None), np.log(2.0))
    # A diverged or non-finite loss counts as 1e4; a zero loss as 1e-8.
    for value, want in [(float("nan"), 1e4), (float("inf"), 1e4), (1e9, 1e4), (0.0, 1e-8)]:
        got = obj.measure(without, (), jnp.asarray(value), None)
        np.testing.assert_allclose(got, np.log(want), rtol=1e-6)
