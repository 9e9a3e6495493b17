"""The report suite's models, written as a user writes them in flax nnx.

A small causal transformer (pre-LayerNorm, ``nnx.MultiHeadAttention`` with a causal
mask) and a conv net with batch norm and dropout whose batch-norm running averages are
used at evaluation (``model.eval()``). :func:`nnx_functions` turns an nnx model into the
``init / apply`` pair a :class:`~metaopt.evaluation.scoring.ScoredProblem` needs: the
params (``nnx.Param``) are what the optimizer trains, everything else (batch statistics)
is the state carried beside them.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.down = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """The block applied to ``x`` (batch, time, dim) under attention ``mask``."""
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))


class CharTransformer(nnx.Module):
    """A causal character-level transformer language model."""

    def __init__(self, vocab: int, dim: int, depth: int, heads: int, seq_len: int, *, rngs):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, dim)))
        self.blocks = nnx.List([Block(dim, heads, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Next-token logits for ``tokens`` (batch, time)."""
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))


class ConvNet(nnx.Module):
    """Three 3×3 conv layers with batch norm, ReLU and two poolings; dropout, two dense."""

    def __init__(self, channels: tuple[int, int, int], classes: int, pixels: int, *, rngs):
        c1, c2, c3 = channels
        self.convs = nnx.List(
            [nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in ((1, c1), (c1, c2), (c2, c3))]
        )
        self.norms = nnx.List([nnx.BatchNorm(c, momentum=0.9, rngs=rngs) for c in channels])
        self.drop = nnx.Dropout(0.3)
        self.dense = nnx.Linear(pixels * c3, 64, rngs=rngs)
        self.out = nnx.Linear(64, classes, rngs=rngs)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits for NHWC images ``x``; ``rngs`` draws dropout masks in training mode."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = jax.nn.relu(norm(conv(x)))
            if i < 2:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        x = self.drop(x.reshape(x.shape[0], -1), rngs=rngs)
        x = self.drop(jax.nn.relu(self.dense(x)), rngs=rngs)
        return self.out(x)


def nnx_functions(
    make: Callable[[nnx.Rngs], nnx.Module],
) -> tuple[Callable, Callable]:
    """``init(key) -> (params, state)`` and ``apply(params, state, train, *args) -> (out, state)``.

    ``apply`` runs the model in training mode (batch statistics, dropout) when ``train``
    is true and in evaluation mode otherwise, and returns the state after the call.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> init, apply = nnx_functions(lambda rngs: nnx.Linear(2, 3, rngs=rngs))
      >>> params, state = init(jax.random.key(0))
      >>> apply(params, state, True, jnp.ones((4, 2)))[0].shape
      (4, 3)
    """
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(nnx.Rngs(0))))

    def init(key: jax.Array):
        _, params, state = nnx.split(make(nnx.Rngs(params=key)), nnx.Param, ...)
        return params, state

    def apply(params, state, train: bool, *args, **kwargs):
        # Fresh variables at the caller's trace level, so batch norm may update its own.
        params, state = jax.tree.map(lambda a: a, (params, state))
        model = nnx.merge(graphdef, params, state)
        if train:
            model.train()
        else:
            model.eval()
        out = model(*args, **kwargs)
        _, _, state = nnx.split(model, nnx.Param, ...)
        return out, state

    return init, apply


def causal_lm_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats) of ``(batch, time, vocab)`` logits."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()
