"""The batch-normalized conv family against a NumPy conv net of the task's true size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks.batchnorm_conv import (
    ConvConfig,
    batch_norm,
    batchnorm_conv_family,
    conv_bn_logits,
)
from metaopt.tasks.datasets import digits


@pytest.fixture(scope="module")
def data():
    return digits()


def numpy_logits(params, x, channels):
    """Loops over kernel offsets on the first ``channels[i]`` channels, float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h, c_in = np.asarray(x, np.float64), x.shape[-1]
    for blk, c in zip(p["conv"], channels, strict=True):
        w = blk["w"][:, :, :c_in, :c]
        pad = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros((*h.shape[:3], c))
        for i in range(3):
            for j in range(3):
                out += pad[:, i : i + h.shape[1], j : j + h.shape[2]] @ w[i, j]
        mu, var = out.mean((0, 1, 2)), out.var((0, 1, 2))
        out = (out - mu) / np.sqrt(var + 1e-5) * blk["scale"][:c] + blk["offset"][:c]
        out = np.maximum(out, 0)
        n, hh, ww, _ = out.shape
        h = out.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        c_in = c
    full = p["conv"][-1]["w"].shape[-1]
    rows = np.arange(p["hidden"]["w"].shape[0]).reshape(-1, full)[:, :c_in].ravel()
    h = np.maximum(h.reshape(len(h), -1) @ p["hidden"]["w"][rows] + p["hidden"]["b"], 0)
    return h @ p["out"]["w"] + p["out"]["b"]


def random_fill(params, key):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten(
        [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("channels", [(32, 32), (8, 16), (16, 8)])
def test_masked_net_is_the_narrower_net(data, channels):
    fam = batchnorm_conv_family(data)
    cfg = ConvConfig(jnp.asarray(channels, jnp.int32), jnp.float32(0.2))
    params = random_fill(fam.init(cfg, jax.random.key(0)), jax.random.key(1))
    x = jnp.asarray(data.split("val")[0][:40])
    got = np.asarray(conv_bn_logits(cfg, params, x, None))
    # float32 convolutions and batch statistics against float64: ~1e-5 relative.
    np.testing.assert_allclose(got, numpy_logits(params, x, channels), rtol=1e-3, atol=1e-3)


def test_batch_norm_output_is_standardized_per_channel():
    h = np.random.default_rng(0).normal(size=(16, 4, 4, 3)) * [1.0, 10.0, 0.1] + [5, -3, 0]
    out = np.asarray(batch_norm(jnp.asarray(h, jnp.float32), jnp.ones(3), jnp.zeros(3)), np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    # The variance is 1 − eps/(var + eps): 1e-5/0.01 = 1e-3 below one for the 0.1-scaled channel.
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1.0, atol=2e-3)
    want = (h - h.mean((0, 1, 2))) / np.sqrt(h.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_eval_loss_is_the_validation_cross_entropy_without_dropout(data):
    fam = batchnorm_conv_family(data, dropouts=(0.4,))
    cfg = fam.sample(jax.random.key(0))
    params = fam.init(cfg, jax.random.key(1))
    x, y = data.split("val")
    logits = numpy_logits(params, x, tuple(int(c) for c in cfg.channels))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -logp[np.arange(len(y)), y].mean()
    got = float(fam.eval_loss(cfg, params, jax.random.key(2)))
    assert got == pytest.approx(want, rel=1e-4)  # float32 against float64


def test_dropout_zeroes_a_rate_of_hidden_units_and_rescales(data):
    fam = batchnorm_conv_family(data, dropouts=(0.4,))
    cfg = fam.sample(jax.random.key(0))
    params = fam.init(cfg, jax.random.key(1))
    params["out"]["w"] = jnp.eye(64, 10)  # logits read the first ten hidden units
    params["out"]["b"] = jnp.zeros(10)
    x = jnp.asarray(data.split("train")[0][:500])
    plain = np.asarray(conv_bn_logits(cfg, params, x, None))
    dropped = np.asarray(conv_bn_logits(cfg, params, x, jax.random.key(3)))
    live = plain > 0
    kept = np.isclose(dropped[live], plain[live] / 0.6, rtol=1e-5)
    assert np.all(kept | (dropped[live] == 0))
    # ~2,500 live units: the kept fraction's standard error is about 0.01.
    assert abs(kept.mean() - 0.6) < 0.04


def test_shapes_and_masked_gradients(data):
    fam = batchnorm_conv_family(data, channels=(8, 16), num_blocks=2, hidden_size=32)
    cfg = ConvConfig(jnp.asarray([8, 16], jnp.int32), jnp.float32(0.0))
    params = fam.init(cfg, jax.random.key(0))
    assert [b["w"].shape for b in params["conv"]] == [(3, 3, 1, 16), (3, 3, 16, 16)]
    assert params["hidden"]["w"].shape == (2 * 2 * 16, 32)
    grads = jax.grad(lambda p: fam.loss(cfg, p, jax.random.key(1)))(params)
    assert not np.any(np.asarray(grads["conv"][0]["w"][..., 8:]))
    assert not np.any(np.asarray(grads["conv"][0]["scale"][8:]))
    assert not np.any(np.asarray(grads["conv"][1]["w"][:, :, 8:]))
    assert np.any(np.asarray(grads["conv"][1]["w"][:, :, :8]))


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="dropouts"):
        batchnorm_conv_family(data, dropouts=(1.0,))
    with pytest.raises(ValueError, match="poolings"):
        batchnorm_conv_family(data, num_blocks=4)
    with pytest.raises(ValueError, match="channels"):
        batchnorm_conv_family(data, channels=())
