"""The wide MLP family against a NumPy MLP of the task's true width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks.datasets import digits
from metaopt.tasks.wide_mlp import WideConfig, wide_mlp_family


@pytest.fixture(scope="module")
def data():
    return digits()


def numpy_cross_entropy(params, x, y, widths, act):
    p = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]
    h, n_in = x.reshape(len(x), -1).astype(np.float64), x[0].size
    for layer, w in zip(p[:-1], widths, strict=True):
        h = act(h @ layer["w"][:n_in, :w] + layer["b"][:w])
        n_in = w
    logits = h @ p[-1]["w"][:n_in] + p[-1]["b"]
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    logp -= logits.max(1, keepdims=True)
    return -logp[np.arange(len(y)), y].mean()


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("widths,activation", [((256, 1024), 0), ((512, 256), 1)])
def test_masked_mlp_is_the_narrower_mlp(data, widths, activation):
    fam = wide_mlp_family(data, num_layers=2)
    cfg = WideConfig(jnp.asarray(widths, jnp.int32), jnp.int32(activation))
    params = fam.init(cfg, jax.random.key(0))
    # Fill the masked entries too: the mask, not zeros, must hide them.
    params = [
        {k: v + 0.1 * jax.random.normal(jax.random.key(i), v.shape) for k, v in p.items()}
        for i, p in enumerate(params)
    ]
    x, y = data.split("val")
    act = [lambda h: np.maximum(h, 0), gelu][activation]
    want = numpy_cross_entropy(params, x, y, widths, act)
    got = float(fam.eval_loss(cfg, params, jax.random.key(1)))
    assert got == pytest.approx(want, rel=1e-4)  # float32 sums of 1,024 terms against float64


def test_he_initialization_of_the_active_block(data):
    fam = wide_mlp_family(data, num_layers=2)
    cfg = WideConfig(jnp.asarray([512, 1024], jnp.int32), jnp.int32(0))
    params = fam.init(cfg, jax.random.key(0))
    w = np.asarray(params[1]["w"])
    assert not np.any(w[512:])
    # 524,288 draws: the sample standard deviation is within 0.3% of sqrt(2/512).
    assert w[:512].std() == pytest.approx(np.sqrt(2 / 512), rel=0.01)
    assert np.asarray(params[2]["w"]).std() == pytest.approx(np.sqrt(1 / 1024), rel=0.02)


def test_parameter_count_by_hand(data):
    fam = wide_mlp_family(data, widths=(1024,), num_layers=2)
    params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
    want = (64 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
    assert sum(x.size for x in jax.tree.leaves(params)) == want


def test_training_loss_is_a_minibatch_of_the_training_split(data):
    fam = wide_mlp_family(data, widths=(256,), activations=("relu",), batch_size=1258)
    cfg = fam.sample(jax.random.key(0))
    params = fam.init(cfg, jax.random.key(1))
    losses = [float(fam.loss(cfg, params, jax.random.key(i))) for i in range(2)]
    x, y = data.split("train")
    full = numpy_cross_entropy(params, x, y, (256,), lambda h: np.maximum(h, 0))
    # Batches as large as the split, drawn with replacement: within a few percent of the
    # full-split loss, and different from each other.
    assert losses[0] != losses[1]
    np.testing.assert_allclose(losses, full, rtol=0.1)


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="activations"):
        wide_mlp_family(data, activations=("swish",))
    with pytest.raises(ValueError, match="widths"):
        wide_mlp_family(data, widths=(0,))
    with pytest.raises(ValueError, match="eval_batch_size"):
        wide_mlp_family(data, eval_batch_size=0)
