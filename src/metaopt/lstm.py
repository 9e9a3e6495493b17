"""The coordinate-wise LSTM optimizer of Andrychowicz et al. 2016.

"Learning to learn by gradient descent by gradient descent" (NIPS 2016, arXiv 1606.04474),
§2.1: a small LSTM reads one gradient coordinate at a time and proposes that
coordinate's update. One set of weights is shared by every coordinate of every
parameter tensor; each coordinate carries its own hidden and cell state.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt import checks
from metaopt.preprocess import log_and_sign
from metaopt.types import LearnedOptimizer, Params, PyTree, Theta


class LSTMState(NamedTuple):
    """Optimizer state of the LSTM: hidden and cell states of every coordinate.

    Each layer has a tree shaped like the params that holds, for each parameter leaf,
    a ``(size, hidden)`` array with one row per coordinate.

    Attributes:
      h: hidden states, one params-shaped tree per layer.
      c: cell states, one params-shaped tree per layer.
    """

    h: tuple[PyTree, ...]
    c: tuple[PyTree, ...]


def _cell(weights: dict, x: jax.Array, h: jax.Array, c: jax.Array):
    z = x @ weights["wx"] + h @ weights["wh"] + weights["b"]
    # One tanh over all four gates: sigmoid(z) = 0.5·tanh(z/2) + 0.5 for the input,
    # forget and output gates, plain tanh for the candidate. A single transcendental
    # over the whole contiguous row is much cheaper than four over strided slices.
    hidden = h.shape[-1]
    scale = jnp.concatenate(
        [jnp.full((2 * hidden,), 0.5), jnp.ones((hidden,)), jnp.full((hidden,), 0.5)]
    ).astype(z.dtype)
    gates = jnp.tanh(z * scale) * scale + (1 - scale)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return h, c


def lstm_optimizer(
    hidden_size: int = 20,
    num_layers: int = 2,
    log_and_sign_p: float | None = None,
    output_scale: float = 0.1,
) -> LearnedOptimizer:
    """Builds the coordinate-wise LSTM learned optimizer.

    Args:
      hidden_size: units per LSTM layer (20 in the paper).
      num_layers: stacked LSTM layers (2 in the paper).
      log_and_sign_p: if given, gradients pass through
        :func:`~metaopt.preprocess.log_and_sign` with this ``p`` (10 in the paper
        for MNIST and CIFAR); if ``None`` the raw gradient is the input.
      output_scale: the LSTM's linear output is multiplied by this to give the update.

    Returns:
      A :class:`~metaopt.types.LearnedOptimizer`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lopt = lstm_optimizer()
      >>> theta = lopt.init(jax.random.key(0))
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> state = lopt.init_state(theta, params)
      >>> updates, state = lopt.update(theta, params, state, params)
      >>> updates["w"].shape
      (3, 2)

    """
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    num_layers = checks.positive_int("num_layers", num_layers)
    output_scale = checks.positive_float("output_scale", output_scale)
    if log_and_sign_p is not None:
        log_and_sign_p = checks.positive_float("log_and_sign_p", log_and_sign_p)
    num_inputs = 1 if log_and_sign_p is None else 2
    config = dict(
        hidden_size=hidden_size,
        num_layers=num_layers,
        log_and_sign_p=log_and_sign_p,
        output_scale=output_scale,
    )

    def init(key: jax.Array) -> Theta:
        keys = jax.random.split(key, num_layers + 1)
        cells = []
        for layer, k in enumerate(keys[:-1]):
            fan_in = num_inputs if layer == 0 else hidden_size
            kx, kh = jax.random.split(k)
            bias = jnp.zeros((4 * hidden_size,)).at[hidden_size : 2 * hidden_size].set(1.0)
            cells.append(
                {
                    "wx": jax.random.normal(kx, (fan_in, 4 * hidden_size))
                    / jnp.sqrt(fan_in + hidden_size),
                    "wh": jax.random.normal(kh, (hidden_size, 4 * hidden_size))
                    / jnp.sqrt(fan_in + hidden_size),
                    "b": bias,
                }
            )
        out = {
            "w": 0.1 * jax.random.normal(keys[-1], (hidden_size, 1)) / jnp.sqrt(hidden_size),
            "b": jnp.zeros((1,)),
        }
        return {"cells": cells, "out": out}

    def init_state(theta: Theta, params: Params) -> LSTMState:
        checks.float_tree("params", params)
        dtype = jnp.result_type(theta["out"]["w"])

        def zeros():
            # Fresh buffers for every layer and for h and c, so the state can be donated.
            return jax.tree.map(lambda p: jnp.zeros((jnp.size(p), hidden_size), dtype), params)

        return LSTMState(
            h=tuple(zeros() for _ in range(num_layers)),
            c=tuple(zeros() for _ in range(num_layers)),
        )

    def leaf_update(theta: Theta, grad: jax.Array, h: list, c: list):
        dtype = theta["out"]["w"].dtype
        x = grad.reshape(-1).astype(dtype)
        x = x[:, None] if log_and_sign_p is None else log_and_sign(x, log_and_sign_p)
        hs, cs = [], []
        for layer in range(num_layers):
            x, c_new = _cell(theta["cells"][layer], x, h[layer], c[layer])
            hs.append(x)
            cs.append(c_new)
        out = (x @ theta["out"]["w"] + theta["out"]["b"])[:, 0]
        update = (output_scale * out).reshape(grad.shape).astype(grad.dtype)
        return update, hs, cs

    def update(
        theta: Theta, grads: PyTree, state: LSTMState, params: Params | None = None
    ) -> tuple[PyTree, LSTMState]:
        del params
        checks.float_tree("grads", grads)
        treedef = jax.tree.structure(grads)
        checks.same_structure(
            "grads",
            treedef,
            jax.tree.structure(state.h[0]),
            "the optimizer state (built from params at init)",
        )
        grad_leaves = treedef.flatten_up_to(grads)
        h_leaves = [treedef.flatten_up_to(t) for t in state.h]
        c_leaves = [treedef.flatten_up_to(t) for t in state.c]
        updates, new_h, new_c = [], [[] for _ in range(num_layers)], [[] for _ in range(num_layers)]
        for i, g in enumerate(grad_leaves):
            rows = h_leaves[0][i].shape[0]
            if rows != g.size:
                raise ValueError(
                    f"grads leaf of shape {g.shape} does not match the optimizer state, "
                    f"which was built for {rows} coordinates"
                )
            u, hs, cs = leaf_update(theta, g, [t[i] for t in h_leaves], [t[i] for t in c_leaves])
            updates.append(u)
            for layer in range(num_layers):
                new_h[layer].append(hs[layer])
                new_c[layer].append(cs[layer])
        return treedef.unflatten(updates), LSTMState(
            h=tuple(treedef.unflatten(x) for x in new_h),
            c=tuple(treedef.unflatten(x) for x in new_c),
        )

    return LearnedOptimizer(
        name="lstm", config=config, init=init, init_state=init_state, update=update
    )
