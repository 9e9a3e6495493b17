"""The transformer LM family against a NumPy transformer of the task's true size."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks.text import char_dataset, pydoc_topics
from metaopt.tasks.transformer_lm import LMConfig, lm_logits, transformer_lm_family


@pytest.fixture(scope="module")
def data():
    return pydoc_topics()


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_logits(params, tokens, width, depth, heads):
    """A plain pre-LayerNorm transformer on the first ``width`` units, heads by reshape."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    d, hd = width, width // heads
    b, t = tokens.shape

    def ln(x, q):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * q["scale"][:d] + q["bias"][:d]

    def dense(x, q, n_in, n_out):
        return x @ q["w"][:n_in, :n_out] + q["b"][:n_out]

    h = p["embed"][tokens][..., :d] + p["pos"][:t, :d]
    for blk in p["blocks"][:depth]:
        x = ln(h, blk["ln1"])
        q, k, v = (dense(x, blk[n], d, d).reshape(b, t, heads, hd) for n in "qkv")
        out = np.zeros((b, t, heads, hd))
        for j in range(heads):
            s = q[:, :, j] @ k[:, :, j].transpose(0, 2, 1) / np.sqrt(hd)
            s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            out[:, :, j] = (w / w.sum(-1, keepdims=True)) @ v[:, :, j]
        h = h + dense(out.reshape(b, t, d), blk["o"], d, d)
        x = gelu(dense(ln(h, blk["ln2"]), blk["up"], d, 4 * d))
        h = h + dense(x, blk["down"], 4 * d, d)
    return dense(ln(h, p["ln_f"]), p["head"], d, p["head"]["w"].shape[1])


def random_fill(params, key):
    """Every entry random, masked ones included: a mask must ignore them, not rely on zeros."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten(
        [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("width,depth,heads", [(64, 2, 4), (32, 1, 2), (48, 2, 4), (64, 1, 1)])
def test_masked_model_is_the_smaller_transformer(data, width, depth, heads):
    fam = transformer_lm_family(data)
    cfg = LMConfig(*map(jnp.int32, (width, depth, heads, 64)))
    params = random_fill(fam.init(cfg, jax.random.key(0)), jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (3, 12), 0, data.vocab_size)
    got = np.asarray(lm_logits(cfg, params, tokens, 4))
    want = numpy_logits(params, np.asarray(tokens), width, depth, heads)
    # float32 against float64 through two blocks of O(1) activations: ~1e-5 relative.
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_changing_a_future_token_leaves_earlier_logits(data):
    fam = transformer_lm_family(data)
    cfg = LMConfig(*map(jnp.int32, (64, 2, 4, 64)))
    params = random_fill(fam.init(cfg, jax.random.key(0)), jax.random.key(3))
    tokens = jax.random.randint(jax.random.key(4), (2, 16), 1, data.vocab_size)
    changed = tokens.at[:, 10].set(0)
    a, b = lm_logits(cfg, params, tokens, 4), lm_logits(cfg, params, changed, 4)
    np.testing.assert_array_equal(np.asarray(a[:, :10]), np.asarray(b[:, :10]))
    assert not np.allclose(np.asarray(a[:, 10:]), np.asarray(b[:, 10:]))


def test_loss_at_initialization_is_log_vocab(data):
    fam = transformer_lm_family(data)
    losses = []
    for i in range(4):
        cfg = fam.sample(jax.random.key(i))
        params = fam.init(cfg, jax.random.key(10 + i))
        losses.append(float(fam.loss(cfg, params, jax.random.key(20 + i))))
    # Initial logits have standard deviation about 0.02·√64 ≈ 0.16, which raises the
    # expected cross-entropy above log V by about σ²/2 ≈ 0.013 nats.
    np.testing.assert_allclose(losses, math.log(data.vocab_size), atol=0.05)


def test_only_the_first_seq_len_positions_are_scored():
    text = "".join(chr(97 + (i * 7 + i // 5) % 26) for i in range(40_000))
    data = char_dataset(text, max_vocab=27)
    fam = transformer_lm_family(data, widths=(32,), depths=(1,), heads=(2,), seq_lens=(8, 16))
    cfg = LMConfig(*map(jnp.int32, (32, 1, 2, 8)))
    params = random_fill(fam.init(cfg, jax.random.key(0)), jax.random.key(1))
    key = jax.random.key(5)
    starts = np.asarray(jax.random.randint(key, (16,), 0, len(data.split("train")) - 17))
    windows = np.stack([data.split("train")[s : s + 9] for s in starts])
    logits = numpy_logits(params, windows[:, :-1], 32, 1, 2)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, windows[:, 1:, None], -1).mean()
    # The same windows (starts drawn with the family's key, as it does); float32 vs float64.
    np.testing.assert_allclose(float(fam.loss(cfg, params, key)), want, rtol=1e-4)


def test_eval_loss_reads_the_validation_split(data):
    fam = transformer_lm_family(data)
    on_val = transformer_lm_family(data, split="val", batch_size=32)
    cfg = fam.sample(jax.random.key(0))
    params = fam.init(cfg, jax.random.key(1))
    key = jax.random.key(2)
    assert float(fam.eval_loss(cfg, params, key)) == float(on_val.loss(cfg, params, key))


def test_parameter_count_by_hand(data):
    fam = transformer_lm_family(data, widths=(32,), depths=(1,), heads=(2,), seq_lens=(32,))
    params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
    d, v, t = 32, data.vocab_size, 32
    block = 2 * d + 4 * (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    want = v * d + t * d + block + 2 * d + d * v + v
    assert sum(x.size for x in jax.tree.leaves(params)) == want


def test_masked_weights_get_no_gradient(data):
    fam = transformer_lm_family(data)
    cfg = LMConfig(*map(jnp.int32, (32, 1, 2, 32)))
    params = fam.init(cfg, jax.random.key(0))
    grads = jax.grad(lambda p: fam.loss(cfg, p, jax.random.key(1)))(params)
    assert not np.any(np.asarray(grads["embed"][:, 32:]))
    assert not np.any(np.asarray(grads["pos"][32:]))
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads["blocks"][1]))
    assert not np.any(np.asarray(grads["blocks"][0]["up"]["w"][:, 128:]))
    assert np.any(np.asarray(grads["blocks"][0]["q"]["w"][:32, :32]))


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="divisible"):
        transformer_lm_family(data, widths=(30,), heads=(4,))
    with pytest.raises(ValueError, match="seq_lens"):
        transformer_lm_family(data, seq_lens=())
    with pytest.raises(ValueError, match="batch_size"):
        transformer_lm_family(data, batch_size=0)
    with pytest.raises(ValueError, match="split"):
        transformer_lm_family(data, eval_split="dev")
