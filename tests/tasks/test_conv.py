"""The CIFAR conv net against NumPy, and two learned optimizers sharing its params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt as mo
from metaopt.io.serialization import load_file as load
from metaopt.io.serialization import save
from metaopt.optimizers.split import conv_and_rest_optimizer
from metaopt.tasks.conv import BATCH_NORM_EPS, conv_classifier_family, conv_forward
from metaopt.tasks.datasets import from_arrays


@pytest.fixture(scope="module")
def tiny():
    """8×8 images: the tests that differentiate through training are compile-bound."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8, 8, 3)).astype(np.float32)
    return from_arrays(x, rng.integers(0, 10, size=40), num_classes=10)


@pytest.fixture(scope="module")
def images():
    """CIFAR-shaped data; the values do not matter to what is tested here."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 32, 32, 3)).astype(np.float32)
    return from_arrays(x, rng.integers(0, 10, size=60), num_classes=10)


def numpy_forward(params, x):
    """The same network with explicit loops over kernel offsets, in float64."""
    h = np.asarray(x, np.float64)
    for layer in params["conv"]:
        w = np.asarray(layer["w"], np.float64)
        k = w.shape[0]
        pad = np.pad(h, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        out = np.zeros((*h.shape[:3], w.shape[3]))
        for i in range(k):
            for j in range(k):
                window = pad[:, i : i + h.shape[1], j : j + h.shape[2], :]
                out += window @ w[i, j]
        mean, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
        out = (out - mean) / np.sqrt(var + BATCH_NORM_EPS)
        out = out * np.asarray(layer["scale"]) + np.asarray(layer["offset"])
        out = np.maximum(out, 0)
        n, hh, ww, c = out.shape
        h = out.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    h = h.reshape(len(h), -1)
    h = np.maximum(h @ np.asarray(params["hidden"]["w"]) + np.asarray(params["hidden"]["b"]), 0)
    return h @ np.asarray(params["out"]["w"]) + np.asarray(params["out"]["b"])


def test_conv_net_matches_numpy(images):
    fam = conv_classifier_family(images, batch_size=4)
    params = jax.jit(fam.init)(None, jax.random.key(1))
    # Non-trivial normalization parameters, so that they are checked too.
    for i, layer in enumerate(params["conv"]):
        layer["scale"] = layer["scale"] * (1.5 + 0.1 * i)
        layer["offset"] = layer["offset"] + 0.2
    x = images.split("train")[0][:4]
    # float32 against float64 through three normalized layers: 1e-4 relative.
    np.testing.assert_allclose(
        conv_forward(params, jnp.asarray(x)), numpy_forward(params, x), rtol=1e-4, atol=1e-5
    )


def test_the_paper_architecture_on_cifar_shapes(images):
    fam = conv_classifier_family(images)
    params = jax.jit(fam.init)(None, jax.random.key(1))
    shapes = jax.tree.map(jnp.shape, params)
    assert [c["w"] for c in shapes["conv"]] == [(5, 5, 3, 16), (5, 5, 16, 16), (5, 5, 16, 16)]
    # 32 → 16 → 8 → 4 after three poolings: 4 × 4 × 16 inputs to the 32 hidden units.
    assert shapes["hidden"]["w"] == (256, 32) and shapes["out"]["w"] == (32, 10)
    loss = jax.jit(fam.loss)(None, params, jax.random.key(2))
    # Random labels over 10 classes from a fresh net: about log(10).
    assert abs(float(loss) - np.log(10)) < 0.5


def test_split_optimizer_is_each_optimizer_on_its_own_leaves(tiny):
    conv_lopt = mo.lstm_optimizer(hidden_size=4, num_layers=1, output_scale=0.1)
    rest_lopt = mo.mlp_optimizer()
    lopt = conv_and_rest_optimizer(conv_lopt, rest_lopt)
    theta = jax.jit(lopt.init)(jax.random.key(0))
    fam = conv_classifier_family(tiny, channels=(4, 4), batch_size=8)
    params = jax.jit(fam.init)(None, jax.random.key(1))
    grads = jax.jit(jax.grad(fam.loss, argnums=1))(None, params, jax.random.key(2))
    state = lopt.init_state(theta, params)
    updates, _ = jax.jit(lopt.update)(theta, grads, state, params)
    # By hand: the LSTM on the three kernels alone, the MLP on the other leaves alone.
    kernels = [layer["w"] for layer in params["conv"]]
    k_grads = [layer["w"] for layer in grads["conv"]]
    k_updates, _ = jax.jit(conv_lopt.update)(
        theta["conv"], k_grads, conv_lopt.init_state(theta["conv"], kernels), kernels
    )
    others = {
        "bn": [(la["scale"], la["offset"]) for la in params["conv"]],
        "hidden": params["hidden"],
        "out": params["out"],
    }
    o_grads = {
        "bn": [(la["scale"], la["offset"]) for la in grads["conv"]],
        "hidden": grads["hidden"],
        "out": grads["out"],
    }
    o_updates, _ = jax.jit(rest_lopt.update)(
        theta["rest"], o_grads, rest_lopt.init_state(theta["rest"], others), others
    )
    for i, layer in enumerate(updates["conv"]):
        np.testing.assert_array_equal(layer["w"], k_updates[i])
        np.testing.assert_array_equal(layer["scale"], o_updates["bn"][i][0])
        np.testing.assert_array_equal(layer["offset"], o_updates["bn"][i][1])
    for name in ("hidden", "out"):
        for part in ("w", "b"):
            np.testing.assert_array_equal(updates[name][part], o_updates[name][part])


def test_both_optimizers_get_meta_gradients_and_save_as_one(tiny, tmp_path):
    small_lstm = mo.lstm_optimizer(hidden_size=4, num_layers=1)
    lopt = conv_and_rest_optimizer(small_lstm, small_lstm)
    fam = conv_classifier_family(tiny, channels=(4,), kernel_size=3, batch_size=8)
    theta = jax.jit(lopt.init)(jax.random.key(0))
    est = mo.tbptt(mo.learned_optimizer(lopt), fam, num_tasks=2, truncation=3, horizon=3)
    batch = jax.jit(est.init)(theta, jax.random.key(1))
    grad, _, metrics = jax.jit(est.estimate)(theta, batch, jax.random.key(2))
    assert np.isfinite(metrics["meta_loss"])
    for part in ("conv", "rest"):
        leaves = jax.tree.leaves(grad[part])
        assert all(np.all(np.isfinite(g)) for g in leaves)
        assert any(np.any(g != 0) for g in leaves)  # each optimizer is meta-trained
    # The pair saves and loads as one optimizer.
    path = save(tmp_path / "conv.mopt", lopt, theta)
    loaded, restored = load(path)
    assert loaded.name == "conv_and_rest" and loaded.config == lopt.config
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"channels": (16, 0)}, "channels"), ({"kernel_size": 0}, "kernel_size")],
)
def test_conv_family_rejects_bad_sizes(images, kwargs, name):
    with pytest.raises(ValueError, match=name):
        conv_classifier_family(images, **kwargs)


def test_conv_family_rejects_images_too_small_or_flat():
    flat = from_arrays(np.zeros((20, 5), np.float32), np.arange(20) % 2)
    with pytest.raises(ValueError, match="height, width, channels"):
        conv_classifier_family(flat)
    tiny = from_arrays(np.zeros((20, 4, 4, 1), np.float32), np.arange(20) % 2)
    with pytest.raises(ValueError, match="too small"):
        conv_classifier_family(tiny)
