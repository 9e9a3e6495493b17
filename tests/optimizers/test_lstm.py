"""The coordinate-wise LSTM against independent NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import lstm_optimizer
from metaopt.optimizers import log_and_sign


def numpy_lstm_update(theta, grads, h, c, output_scale):
    """One step of a stacked LSTM written out in NumPy, one coordinate per row."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    x = np.asarray(grads, np.float64).reshape(-1, 1)
    new_h, new_c = [], []
    for layer, cell in enumerate(theta["cells"]):
        wx, wh, b = (np.asarray(cell[k], np.float64) for k in ("wx", "wh", "b"))
        z = x @ wx + h[layer] @ wh + b
        hidden = h[layer].shape[1]
        i, f, g, o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
        cc = sig(f) * c[layer] + sig(i) * np.tanh(g)
        hh = sig(o) * np.tanh(cc)
        new_h.append(hh)
        new_c.append(cc)
        x = hh
    out = x @ np.asarray(theta["out"]["w"], np.float64) + np.asarray(theta["out"]["b"])
    return output_scale * out[:, 0], new_h, new_c


def test_two_steps_match_numpy():
    lopt = lstm_optimizer(hidden_size=5, num_layers=2, output_scale=0.3)
    theta = lopt.init(jax.random.key(0))
    g1 = jax.random.normal(jax.random.key(1), (7,))
    g2 = jax.random.normal(jax.random.key(2), (7,))
    state = lopt.init_state(theta, g1)
    u1, state = lopt.update(theta, g1, state)
    u2, state = lopt.update(theta, g2, state)

    h = [np.zeros((7, 5))] * 2
    c = [np.zeros((7, 5))] * 2
    e1, h, c = numpy_lstm_update(theta, g1, h, c, 0.3)
    e2, h, c = numpy_lstm_update(theta, g2, h, c, 0.3)
    # float32 LSTM against a float64 reference: a few ulps of float32 per op.
    np.testing.assert_allclose(u1, e1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u2, e2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h[1], h[1], rtol=1e-5, atol=1e-6)


def test_nested_pytree_equals_flattened_vector():
    lopt = lstm_optimizer(log_and_sign_p=10.0)
    theta = lopt.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)
    params = {
        "dense": {"w": jax.random.normal(keys[0], (3, 4)), "b": jax.random.normal(keys[1], (4,))},
        "scale": jax.random.normal(keys[2], ()),
        "stack": [jax.random.normal(keys[3], (2, 2, 2))],
    }
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    tree_state = lopt.init_state(theta, params)
    flat_state = lopt.init_state(theta, flat)
    grads = params
    for step in range(3):
        grads = jax.tree.map(lambda g, s=step: jnp.sin(g * (s + 1.5)), grads)
        flat_grads, _ = jax.flatten_util.ravel_pytree(grads)
        tree_updates, tree_state = lopt.update(theta, grads, tree_state, params)
        flat_updates, flat_state = lopt.update(theta, flat_grads, flat_state, flat)
        # Same coordinates through the same per-row arithmetic: only matmul blocking
        # differs, so agreement is to float32 rounding.
        tree_as_flat, _ = jax.flatten_util.ravel_pytree(tree_updates)
        np.testing.assert_allclose(tree_as_flat, flat_updates, rtol=1e-6, atol=1e-7)
        for got, want in zip(
            jax.tree.leaves(tree_updates), jax.tree.leaves(unravel(flat_updates)), strict=True
        ):
            assert got.shape == want.shape


@pytest.mark.parametrize("p", [5.0, 10.0])
def test_log_and_sign_at_and_around_threshold(p):
    t = float(np.exp(-p))
    g = jnp.array([t, -t, t * (1 + 1e-4), t * (1 - 1e-4), 0.0, 3.0, -1e-9, -2.0])
    out = np.asarray(log_and_sign(g, p))
    # At and above the threshold: (log|g|/p, sign g). At exactly |g| = e^-p, log|g|/p = -1.
    np.testing.assert_allclose(out[0], [-1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [-1.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(out[2], [np.log(t * (1 + 1e-4)) / p, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[5], [np.log(3.0) / p, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[7], [np.log(2.0) / p, -1.0], rtol=1e-6)
    # Below: (-1, e^p g); just below the threshold the second feature is just below 1.
    np.testing.assert_allclose(out[3], [-1.0, 1 - 1e-4], rtol=1e-5)
    np.testing.assert_allclose(out[4], [-1.0, 0.0])
    np.testing.assert_allclose(out[6], [-1.0, -1e-9 * np.exp(p)], rtol=1e-5)
    # The first feature is continuous across the threshold.
    assert abs(out[2, 0] - out[3, 0]) < 2e-4 / p


def test_log_and_sign_gradient_is_finite_at_zero():
    grad = jax.grad(lambda g: jnp.sum(log_and_sign(g, 10.0) ** 2))(jnp.array([0.0, 1e-30, 1.0]))
    assert np.all(np.isfinite(grad))


def _cell_inputs(key, rows, inputs=2, hidden=5, batch=()):
    k = jax.random.split(key, 6)
    return (
        jax.random.normal(k[0], (inputs, 4 * hidden)) * 0.5,
        jax.random.normal(k[1], (hidden, 4 * hidden)) * 0.5,
        jax.random.normal(k[2], (4 * hidden,)) * 0.5,
        jax.random.normal(k[3], (*batch, rows, inputs)),
        jax.random.normal(k[4], (*batch, rows, hidden)),
        jax.random.normal(k[5], (*batch, rows, hidden)),
    )


# The hand-written backward and autodiff sum the same f32 terms in different orders;
# over 64 rows the rounding differences stay well below 1e-5 of the gradients' scale.
CELL_RTOL, CELL_ATOL = 1e-5, 1e-5


def _hand_written_cells():
    from metaopt.optimizers.lstm import _cell, _cell_pointwise

    return {"whole cell": _cell, "elementwise part": _cell_pointwise}


HAND_WRITTEN = pytest.mark.parametrize("which", ["whole cell", "elementwise part"])


@HAND_WRITTEN
def test_hand_written_cell_backward_matches_autodiff(which):
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]
    args = _cell_inputs(jax.random.key(3), rows=64)
    out, vjp_hand = jax.vjp(hand_cell, *args)
    ref_out, vjp_auto = jax.vjp(_cell_autodiff, *args)
    cotangents = tuple(jax.random.normal(jax.random.key(9 + i), o.shape) for i, o in enumerate(out))
    np.testing.assert_array_equal(out[0], ref_out[0])
    for name, hand, auto in zip(
        ("wx", "wh", "b", "x", "h", "c"), vjp_hand(cotangents), vjp_auto(cotangents), strict=True
    ):
        np.testing.assert_allclose(hand, auto, rtol=CELL_RTOL, atol=CELL_ATOL, err_msg=name)


@HAND_WRITTEN
def test_hand_written_cell_backward_under_vmap_sums_weight_gradients_over_tasks(which):
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]

    wx, wh, b, x, h, c = _cell_inputs(jax.random.key(4), rows=32, batch=(3,))
    target = jax.random.normal(jax.random.key(5), h.shape)

    def loss(cell, wx, wh, b, x, h, c):
        new_h, new_c = jax.vmap(cell, (None, None, None, 0, 0, 0))(wx, wh, b, x, h, c)
        return jnp.sum((new_h - target) ** 2) + jnp.sum(jnp.sin(new_c))

    hand = jax.grad(lambda *a: loss(hand_cell, *a), argnums=range(6))(wx, wh, b, x, h, c)
    # Independent of vmap: autodiff of a Python loop over the tasks.
    auto = jax.grad(
        lambda wx, wh, b, x, h, c: sum(
            jnp.sum((_cell_autodiff(wx, wh, b, x[t], h[t], c[t])[0] - target[t]) ** 2)
            + jnp.sum(jnp.sin(_cell_autodiff(wx, wh, b, x[t], h[t], c[t])[1]))
            for t in range(3)
        ),
        argnums=range(6),
    )(wx, wh, b, x, h, c)
    for name, g_hand, g_auto in zip(("wx", "wh", "b", "x", "h", "c"), hand, auto, strict=True):
        np.testing.assert_allclose(g_hand, g_auto, rtol=CELL_RTOL, atol=CELL_ATOL, err_msg=name)


def _cell_loss(cell):
    def loss(wx, wh, b, x, h, c):
        new_h, new_c = cell(wx, wh, b, x, h, c)
        return jnp.sum(new_h**2) + jnp.sum(jnp.sin(new_c))

    return loss


@pytest.mark.parametrize(
    "in_axes",
    [
        (0, None, None, 0, 0, 0),  # per-task input weights (a perturbed θ per task)
        (None, None, None, None, 0, 0),  # shared input rows, per-task states
        (None, None, None, 0, None, None),  # only the inputs per task
    ],
)
@HAND_WRITTEN
def test_hand_written_cell_backward_under_vmap_with_any_batched_arguments(in_axes, which):
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]

    wx, wh, b, x, h, c = _cell_inputs(jax.random.key(6), rows=16, batch=(3,))
    args = [wx, wh, b, x, h, c]
    if in_axes[0] == 0:
        args[0] = jax.random.normal(jax.random.key(7), (3, *wx.shape)) * 0.5
    # Rows shared by every task are one task's rows.
    args = [a[0] if ax is None and a.ndim == 3 else a for a, ax in zip(args, in_axes, strict=True)]

    def total(cell, *a):
        return jnp.sum(jax.vmap(_cell_loss(cell), in_axes)(*a))

    hand = jax.grad(lambda *a: total(hand_cell, *a), argnums=range(6))(*args)
    # Independent of vmap: autodiff of a Python loop over the tasks.
    auto = jax.grad(
        lambda *a: sum(
            _cell_loss(_cell_autodiff)(
                *(v if ax is None else v[t] for v, ax in zip(a, in_axes, strict=True))
            )
            for t in range(3)
        ),
        argnums=range(6),
    )(*args)
    for name, g_hand, g_auto in zip(("wx", "wh", "b", "x", "h", "c"), hand, auto, strict=True):
        assert g_hand.shape == g_auto.shape, name
        np.testing.assert_allclose(g_hand, g_auto, rtol=CELL_RTOL, atol=CELL_ATOL, err_msg=name)


@HAND_WRITTEN
def test_hand_written_cell_backward_under_nested_vmap(which):
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]

    wx, wh, b, x, h, c = _cell_inputs(jax.random.key(10), rows=8, batch=(2, 3))
    target = jax.random.normal(jax.random.key(11), h.shape)

    def total(cell, wx, wh, b):
        inner = jax.vmap(_cell_loss(cell), (None, None, None, 0, 0, 0))
        outer = jax.vmap(inner, (None, None, None, 0, 0, 0))
        return jnp.sum(outer(wx, wh, b, x, h, c) * target[..., 0, 0])

    hand = jax.grad(lambda *a: total(hand_cell, *a), argnums=range(3))(wx, wh, b)
    auto = jax.grad(lambda *a: total(_cell_autodiff, *a), argnums=range(3))(wx, wh, b)
    for name, g_hand, g_auto in zip(("wx", "wh", "b"), hand, auto, strict=True):
        np.testing.assert_allclose(g_hand, g_auto, rtol=CELL_RTOL, atol=CELL_ATOL, err_msg=name)


@HAND_WRITTEN
def test_hand_written_cell_backward_gives_per_task_gradients_with_vmap_outside_grad(which):
    # Per-example (per-task, per-particle) gradients of shared weights: each task must
    # get its own gradient, not the sum over tasks that grad-of-vmap would form.
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]

    wx, wh, b, x, h, c = _cell_inputs(jax.random.key(13), rows=8, batch=(3,))

    def per_task(cell):
        grad = jax.grad(_cell_loss(cell), argnums=(0, 1, 2))
        return jax.vmap(grad, (None, None, None, 0, 0, 0))(wx, wh, b, x, h, c)

    hand = per_task(hand_cell)
    for t in range(3):
        auto = jax.grad(_cell_loss(_cell_autodiff), argnums=(0, 1, 2))(wx, wh, b, x[t], h[t], c[t])
        for name, g_hand, g_auto in zip(("wx", "wh", "b"), hand, auto, strict=True):
            np.testing.assert_allclose(
                g_hand[t], g_auto, rtol=CELL_RTOL, atol=CELL_ATOL, err_msg=f"{name}, task {t}"
            )


@HAND_WRITTEN
def test_hand_written_cell_backward_is_differentiable_again_under_vmap(which):
    # Reverse over reverse: the gradient of a function of the meta-gradient (e.g. a
    # Hessian-vector product in θ) goes through the hand-written backward too.
    from metaopt.optimizers.lstm import _cell_autodiff

    hand_cell = _hand_written_cells()[which]

    wx, wh, b, x, h, c = _cell_inputs(jax.random.key(12), rows=8, batch=(3,))

    def grad_norm(cell, wx, wh):
        def loss(wx, wh):
            per_task = jax.vmap(_cell_loss(cell), (None, None, None, 0, 0, 0))
            return jnp.sum(per_task(wx, wh, b, x, h, c))

        g = jax.grad(loss, argnums=(0, 1))(wx, wh)
        return sum(jnp.sum(t**2) for t in g)

    hand = jax.grad(lambda *a: grad_norm(hand_cell, *a), argnums=(0, 1))(wx, wh)
    auto = jax.grad(lambda *a: grad_norm(_cell_autodiff, *a), argnums=(0, 1))(wx, wh)
    for name, g_hand, g_auto in zip(("wx", "wh"), hand, auto, strict=True):
        np.testing.assert_allclose(g_hand, g_auto, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("second_order", [False, True])
def test_meta_gradient_is_the_same_with_every_cell_backward(monkeypatch, second_order):
    import metaopt.optimizers.lstm
    from metaopt import learned_optimizer, tbptt
    from metaopt.tasks.quadratic import quadratic_family

    lopt = lstm_optimizer(hidden_size=6, log_and_sign_p=10.0)
    fam = quadratic_family(dim=12)
    est = tbptt(
        learned_optimizer(lopt),
        fam,
        num_tasks=4,
        truncation=6,
        horizon=6,
        second_order=second_order,
    )
    theta = lopt.init(jax.random.key(0))
    batch = est.init(theta, jax.random.key(1))

    def meta_grad(min_rows, small_leaf_cell):
        monkeypatch.setattr(metaopt.optimizers.lstm, "HAND_WRITTEN_BACKWARD_MIN_ROWS", min_rows)
        monkeypatch.setattr(metaopt.optimizers.lstm, "_cell_pointwise", small_leaf_cell)
        grad, _, _ = est.estimate(theta, batch, jax.random.key(2))
        return grad

    from metaopt.optimizers.lstm import _cell_autodiff, _cell_pointwise

    auto = meta_grad(10**9, _cell_autodiff)
    # Six unrolled steps compound the f32 reordering differences of one cell.
    for hand in (meta_grad(1, _cell_pointwise), meta_grad(10**9, _cell_pointwise)):
        for g_hand, g_auto in zip(jax.tree.leaves(hand), jax.tree.leaves(auto), strict=True):
            np.testing.assert_allclose(g_hand, g_auto, rtol=1e-4, atol=1e-6)
