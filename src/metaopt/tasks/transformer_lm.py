"""Small causal transformer language models on characters: a task family.

A pre-LayerNorm decoder in the style of GPT-2 (Radford et al. 2019): token and learned
position embeddings, blocks of multi-head causal self-attention and a GELU MLP (four
times wider), each added to the residual stream, a final LayerNorm and an untied
output layer. Weights start from N(0, 0.02²), the residual projections from
N(0, 0.02²/(2·depth)); biases at zero, LayerNorm scales at one.

Each task draws a width, a depth, a head count and a sequence length from small sets.
All tasks have the parameter shapes of the largest model, and a task masks the rest:

- width ``w``: units past ``w`` of the residual stream (and past ``4w`` in the MLP) are
  zero, LayerNorm averages over the first ``w`` only;
- depth ``d``: blocks past ``d`` add nothing to the residual stream;
- heads ``h``: the first ``w`` units are cut into ``h`` heads of ``w/h`` units;
- sequence length ``T``: only the first ``T`` positions are scored. Attention is causal,
  so they are exactly the predictions of a model that sees ``T`` characters.

Masked weights get zero gradient, so the loss and its gradient are those of the smaller
model. Single-element choices give a family of one architecture with its true shapes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core import checks
from metaopt.core.types import PyTree, TaskFamily
from metaopt.tasks.text import TextData

LAYER_NORM_EPS = 1e-5
INIT_STD = 0.02


class LMConfig(NamedTuple):
    """The architecture of one task (int32 scalars)."""

    width: jax.Array
    depth: jax.Array
    heads: jax.Array
    seq_len: jax.Array


def layer_norm(x: jax.Array, p: dict, mask: jax.Array, width: jax.Array) -> jax.Array:
    """LayerNorm over the last axis's first ``width`` units (``mask``); zero past them.

    Example:
      >>> import jax.numpy as jnp
      >>> p = {"scale": jnp.ones(3), "bias": jnp.zeros(3)}
      >>> out = layer_norm(jnp.array([1.0, 3.0, 7.0]), p, jnp.array([True, True, False]), 2)
      >>> out.round(3).tolist()
      [-1.0, 1.0, 0.0]
    """
    mean = jnp.sum(x * mask, axis=-1, keepdims=True) / width
    var = jnp.sum(((x - mean) * mask) ** 2, axis=-1, keepdims=True) / width
    return ((x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * p["scale"] + p["bias"]) * mask


def head_masks(cfg: LMConfig, max_heads: int, max_width: int) -> jax.Array:
    """``(max_heads, max_width)`` booleans: unit ``i < width`` belongs to head ``i // (w/h)``."""
    units = jnp.arange(max_width)
    head_dim = cfg.width // cfg.heads
    owner = units[None, :] // head_dim == jnp.arange(max_heads)[:, None]
    return (units[None, :] < cfg.width) & owner


def attention(h: jax.Array, p: dict, heads: jax.Array, head_dim: jax.Array) -> jax.Array:
    """Causal multi-head self-attention of ``h`` (batch, time, units); ``heads`` masks units."""
    q, k, v = (h @ p[name]["w"] + p[name]["b"] for name in ("q", "k", "v"))
    scores = jnp.einsum("btd,bsd,hd->bhts", q, k, heads) * jax.lax.rsqrt(head_dim * 1.0)
    t = h.shape[1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    probs = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    out = jnp.einsum("bhts,bsd,hd->btd", probs, v, heads)
    return out @ p["o"]["w"] + p["o"]["b"]


def lm_logits(cfg: LMConfig, params: PyTree, tokens: jax.Array, max_heads: int) -> jax.Array:
    """Next-token logits ``(batch, time, vocab)`` of the masked model for ``tokens``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metaopt.tasks.text import char_dataset
      >>> fam = transformer_lm_family(char_dataset("hello world. " * 2000))
      >>> cfg = fam.sample(jax.random.key(0))
      >>> params = fam.init(cfg, jax.random.key(1))
      >>> lm_logits(cfg, params, jnp.zeros((2, 5), jnp.int32), 4).shape
      (2, 5, 10)
    """
    max_width = params["embed"].shape[1]
    unit = jnp.arange(max_width) < cfg.width
    hidden = jnp.arange(4 * max_width) < 4 * cfg.width
    heads = head_masks(cfg, max_heads, max_width).astype(params["embed"].dtype)
    head_dim = cfg.width // cfg.heads
    t = tokens.shape[1]
    h = (params["embed"][tokens] + params["pos"][:t]) * unit
    for i, block in enumerate(params["blocks"]):
        gate = (i < cfg.depth) * unit
        a = attention(layer_norm(h, block["ln1"], unit, cfg.width), block, heads, head_dim)
        h = h + gate * a
        x = layer_norm(h, block["ln2"], unit, cfg.width)
        x = jax.nn.gelu(x @ block["up"]["w"] + block["up"]["b"]) * hidden
        h = h + gate * (x @ block["down"]["w"] + block["down"]["b"])
    h = layer_norm(h, params["ln_f"], unit, cfg.width)
    return h @ params["head"]["w"] + params["head"]["b"]


def _windows(tokens: jax.Array, key: jax.Array, batch: int, length: int) -> jax.Array:
    starts = jax.random.randint(key, (batch,), 0, tokens.shape[0] - length)
    return jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (length,)))(starts)


def _init(cfg: LMConfig, key: jax.Array, sizes: dict) -> dict:
    d, v, depth = sizes["width"], sizes["vocab"], sizes["depth"]
    unit = jnp.arange(d) < cfg.width
    hidden = jnp.arange(4 * d) < 4 * cfg.width
    keys = iter(jax.random.split(key, 3 + 6 * depth))

    def dense(n_in, n_out, mask_in, mask_out, std=INIT_STD):
        w = std * jax.random.normal(next(keys), (n_in, n_out)) * mask_in[:, None] * mask_out
        return {"w": w, "b": jnp.zeros(n_out)}

    def norm():
        return {"scale": jnp.ones(d), "bias": jnp.zeros(d)}

    resid_std = INIT_STD / np.sqrt(2 * depth)
    blocks = [
        {
            "ln1": norm(),
            **{name: dense(d, d, unit, unit) for name in ("q", "k", "v")},
            "o": dense(d, d, unit, unit, resid_std),
            "ln2": norm(),
            "up": dense(d, 4 * d, unit, hidden),
            "down": dense(4 * d, d, hidden, unit, resid_std),
        }
        for _ in range(depth)
    ]
    return {
        "embed": INIT_STD * jax.random.normal(next(keys), (v, d)) * unit,
        "pos": INIT_STD * jax.random.normal(next(keys), (sizes["seq_len"], d)) * unit,
        "blocks": blocks,
        "ln_f": norm(),
        "head": dense(d, v, unit, jnp.ones(v, bool)),
    }


def _choices(name: str, values: tuple[int, ...]) -> tuple[int, ...]:
    values = tuple(checks.positive_int(name, x) for x in values)
    if not values:
        raise ValueError(f"{name} must name at least one value")
    return values


def transformer_lm_family(
    data: TextData,
    *,
    split: str = "train",
    eval_split: str = "val",
    widths: tuple[int, ...] = (32, 48, 64),
    depths: tuple[int, ...] = (1, 2),
    heads: tuple[int, ...] = (1, 2, 4),
    seq_lens: tuple[int, ...] = (32, 64),
    batch_size: int = 16,
    eval_batch_size: int = 32,
) -> TaskFamily:
    """Causal transformer LMs trained on random windows of one split of ``data``.

    ``loss`` is the mean next-character cross-entropy (nats) of ``batch_size`` windows of
    ``split``; ``eval_loss`` the same on ``eval_batch_size`` windows of ``eval_split``.

    Args:
      data: a character corpus (:mod:`metaopt.tasks.text`).
      split: the training split.
      eval_split: the held-out split ``eval_loss`` reads.
      widths: residual-stream widths to draw from; each divisible by every head count.
      depths: numbers of blocks to draw from.
      heads: attention head counts to draw from.
      seq_lens: context lengths to draw from.
      batch_size: windows per training minibatch.
      eval_batch_size: windows per held-out measurement.

    Example:
      >>> import jax
      >>> from metaopt.tasks.text import pydoc_topics
      >>> fam = transformer_lm_family(pydoc_topics())
      >>> cfg = fam.sample(jax.random.key(0))
      >>> params = fam.init(cfg, jax.random.key(1))
      >>> params["embed"].shape, len(params["blocks"])
      ((96, 64), 2)
    """
    tokens, held_out = data.split(split), data.split(eval_split)
    widths, depths = _choices("widths", widths), _choices("depths", depths)
    heads, seq_lens = _choices("heads", heads), _choices("seq_lens", seq_lens)
    if any(w % h for w in widths for h in heads):
        raise ValueError(f"every width must be divisible by every head count: {widths}, {heads}")
    batch_size = checks.positive_int("batch_size", batch_size)
    eval_batch_size = checks.positive_int("eval_batch_size", eval_batch_size)
    sizes = {"width": max(widths), "depth": max(depths), "vocab": data.vocab_size,
             "seq_len": max(seq_lens)}  # fmt: skip
    if min(len(tokens), len(held_out)) <= sizes["seq_len"] + 1:
        raise ValueError(f"the splits are too short for windows of {sizes['seq_len']} + 1")
    choices = [jnp.asarray(c, jnp.int32) for c in (widths, depths, heads, seq_lens)]
    name = f"transformer_lm_{sizes['depth']}x{sizes['width']}_{data.name}_{split}"

    def bind(arrays: PyTree) -> TaskFamily:
        train_tokens, eval_tokens = arrays

        def sample(key: jax.Array) -> LMConfig:
            keys = jax.random.split(key, 4)
            return LMConfig(*(jax.random.choice(k, c) for k, c in zip(keys, choices, strict=True)))

        def nll(cfg, params, source, key, batch):
            window = _windows(source, key, batch, sizes["seq_len"] + 1)
            logits = lm_logits(cfg, params, window[:, :-1], max(heads))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, window[:, 1:])
            scored = jnp.arange(sizes["seq_len"]) < cfg.seq_len
            return jnp.sum(ce * scored) / (batch * cfg.seq_len)

        return TaskFamily(
            name=name,
            sample=sample,
            init=lambda cfg, key: _init(cfg, key, sizes),
            loss=lambda cfg, params, key: nll(cfg, params, train_tokens, key, batch_size),
            data=arrays,
            bind=bind,
            eval_loss=lambda cfg, p, key: nll(cfg, p, eval_tokens, key, eval_batch_size),
        )

    return bind((jnp.asarray(tokens), jnp.asarray(held_out)))
