"""Two learned optimizers in one: one for convolution kernels, one for the rest.

Andrychowicz et al. 2016, §3.3, train the CIFAR-10 conv net with two LSTM optimizers,
"one proposing parameter updates for the convolutional layers and one for the fully
connected layers", so that each learns the statistics of its own kind of parameter.
Here a leaf is a convolution kernel when it has four dimensions (HWIO); every other
leaf (dense weights, biases, normalization scales and offsets) goes to ``rest``.
Each optimizer sees its leaves as a list and knows nothing of the other's.
"""

from typing import Any, NamedTuple

import jax

from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta


class SplitState(NamedTuple):
    """The two optimizers' states, each over its own leaves."""

    conv: PyTree
    rest: PyTree


def _is_conv(leaf: Any) -> bool:
    return jax.numpy.ndim(leaf) == 4


def _split(tree: PyTree, like: Params) -> tuple[list, list]:
    """The leaves of ``tree`` (structured like ``like``) as (conv, rest) lists."""
    kinds = [_is_conv(p) for p in jax.tree.leaves(like)]
    leaves = jax.tree.structure(like).flatten_up_to(tree)
    conv = [x for x, k in zip(leaves, kinds, strict=True) if k]
    rest = [x for x, k in zip(leaves, kinds, strict=True) if not k]
    return conv, rest


def _merge(conv: list, rest: list, like: Params) -> PyTree:
    conv_it, rest_it = iter(conv), iter(rest)
    leaves = [next(conv_it) if _is_conv(p) else next(rest_it) for p in jax.tree.leaves(like)]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def conv_and_rest_optimizer(conv: LearnedOptimizer, rest: LearnedOptimizer) -> LearnedOptimizer:
    """A learned optimizer that updates 4-D leaves with ``conv`` and the others with ``rest``.

    ``theta`` is ``{"conv": conv_theta, "rest": rest_theta}``; both parts are
    meta-trained together. With no 4-D leaves, ``conv`` simply has nothing to do.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from metaopt.optimizers.lstm import lstm_optimizer
      >>> lopt = conv_and_rest_optimizer(lstm_optimizer(), lstm_optimizer())
      >>> theta = lopt.init(jax.random.key(0))
      >>> params = {"kernel": jnp.ones((5, 5, 3, 16)), "bias": jnp.zeros(16)}
      >>> state = lopt.init_state(theta, params)
      >>> updates, state = lopt.update(theta, params, state, params)
      >>> updates["kernel"].shape
      (5, 5, 3, 16)

    """

    def init(key: jax.Array) -> Theta:
        k_conv, k_rest = jax.random.split(key)
        return {"conv": conv.init(k_conv), "rest": rest.init(k_rest)}

    def init_state(theta: Theta, params: Params) -> SplitState:
        p_conv, p_rest = _split(params, params)
        return SplitState(
            conv.init_state(theta["conv"], p_conv), rest.init_state(theta["rest"], p_rest)
        )

    def update(
        theta: Theta, grads: PyTree, state: SplitState, params: Params | None = None
    ) -> tuple[PyTree, SplitState]:
        g_conv, g_rest = _split(grads, grads)
        p_conv, p_rest = (None, None) if params is None else _split(params, grads)
        u_conv, s_conv = conv.update(theta["conv"], g_conv, state.conv, p_conv)
        u_rest, s_rest = rest.update(theta["rest"], g_rest, state.rest, p_rest)
        return _merge(u_conv, u_rest, grads), SplitState(s_conv, s_rest)

    config = {
        "conv": {"name": conv.name, "config": conv.config},
        "rest": {"name": rest.name, "config": rest.config},
    }
    return LearnedOptimizer(
        name="conv_and_rest", config=config, init=init, init_state=init_state, update=update
    )
