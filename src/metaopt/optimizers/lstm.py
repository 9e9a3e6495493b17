"""The coordinate-wise LSTM optimizer of Andrychowicz et al. 2016.

"Learning to learn by gradient descent by gradient descent" (NIPS 2016, arXiv 1606.04474),
§2.1: a small LSTM reads one gradient coordinate at a time and proposes that
coordinate's update. One set of weights is shared by every coordinate of every
parameter tensor; each coordinate carries its own hidden and cell state.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta
from metaopt.optimizers.preprocess import log_and_sign


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


def _gate_scale(hidden: int, dtype) -> jax.Array:
    # sigmoid(z) = 0.5·tanh(z/2) + 0.5, so with this scale s every gate is
    # tanh(s·z)·s + 1 - s: s = 1/2 for the input, forget and output gates, 1 for the
    # candidate. One tanh over the whole contiguous row is much cheaper than four
    # transcendentals over strided slices, and its derivative is one expression too.
    half, one = jnp.full((hidden,), 0.5), jnp.ones((hidden,))
    return jnp.concatenate([half, half, one, half]).astype(dtype)


def _pointwise_forward(z: jax.Array, c: jax.Array):
    """The cell's elementwise part, from pre-activations ``z`` and cell state ``c``.

    Returns ``((h_new, c_new), residuals)``; the residuals are what
    :func:`_pointwise_backward` reads.
    """
    scale = _gate_scale(c.shape[-1], z.dtype)
    t = jnp.tanh(z * scale)
    i, f, g, o = jnp.split(t * scale + (1 - scale), 4, axis=-1)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    return (o * tanh_c, c_new), (t, c, tanh_c)


def _pointwise_backward(residuals, cotangents):
    """The pre-activations' and the old cell state's cotangents, written out by hand.

    The gate gradients are stacked on a non-minor axis and materialized once (the
    barrier) instead of being recomputed by each of their consumers.
    """
    t, c, tanh_c = residuals
    dh_new, dc_new = cotangents
    scale = _gate_scale(c.shape[-1], t.dtype)
    i, f, g, o = jnp.split(t * scale + (1 - scale), 4, axis=-1)
    dc = dc_new + dh_new * o * (1 - tanh_c * tanh_c)
    d_gates = jnp.stack([dc * g, dc * c, dc * i, dh_new * tanh_c], axis=-2)
    dz = d_gates.reshape(t.shape) * (scale * scale) * (1 - t * t)
    return jax.lax.optimization_barrier(dz), dc * f


@jax.custom_vjp
def _pointwise(z: jax.Array, c: jax.Array):
    return _pointwise_forward(z, c)[0]


_pointwise.defvjp(_pointwise_forward, _pointwise_backward)


def _cell_autodiff(
    wx: jax.Array, wh: jax.Array, b: jax.Array, x: jax.Array, h: jax.Array, c: jax.Array
):
    """One LSTM step for every coordinate (rows of ``x``, ``h`` and ``c``), by autodiff.

    ``[x, h] @ [wx; wh]``: one matmul writes the pre-activations once instead of twice.
    """
    w, xh = jnp.concatenate([wx, wh]), jnp.concatenate([x, h], axis=-1)
    return _pointwise_forward(xh @ w + b, c)[0]


def _cell_pointwise(
    wx: jax.Array, wh: jax.Array, b: jax.Array, x: jax.Array, h: jax.Array, c: jax.Array
):
    """:func:`_cell_autodiff` with the elementwise part's backward written by hand.

    The matmul stays with autodiff, so under ``vmap`` inside ``grad`` the shared
    weights' gradient is one product over every task's rows, and with ``vmap``
    outside ``grad`` each task still gets its own.
    """
    w, xh = jnp.concatenate([wx, wh]), jnp.concatenate([x, h], axis=-1)
    return _pointwise(xh @ w + b, c)


# From this many coordinates in a leaf, the whole cell's backward is written by hand
# (`_cell`): its weight gradient is one product per task with no transposed copy of
# the gate gradients, which makes an MNIST-size MLP meta-train ~15% faster than with
# `_cell_pointwise`. Below it the autodiff matmul's single product over all tasks is
# worth more: a 10-dimensional quadratic meta-trains ~10% faster with `_cell_pointwise`.
HAND_WRITTEN_BACKWARD_MIN_ROWS = 4096

_cell = jax.custom_vjp(_cell_autodiff)


def _cell_fwd(wx, wh, b, x, h, c):
    return _cell_autodiff(wx, wh, b, x, h, c), (wx, wh, b, x, h, c)


def _cell_bwd(residuals, cotangents):
    # Autodiff gives the same numbers (tested). The weight gradients are one matmul
    # over all coordinates of a task; left to autodiff, the vmapped transpose copied
    # the gate gradients into a feature-major layout on every step. The gates are
    # recomputed from the inputs, which is cheaper than storing them.
    wx, wh, b, x, h, c = residuals
    w, xh = jnp.concatenate([wx, wh]), jnp.concatenate([x, h], axis=-1)
    _, pointwise_residuals = _pointwise_forward(xh @ w + b, c)
    dz, dc = _pointwise_backward(pointwise_residuals, cotangents)
    dz_rows = dz.reshape(-1, dz.shape[-1])
    d_w = xh.reshape(-1, xh.shape[-1]).T @ dz_rows
    d_xh = dz @ w.T
    k = x.shape[-1]
    return d_w[:k], d_w[k:], jnp.sum(dz_rows, axis=0), d_xh[..., :k], d_xh[..., k:], dc


_cell.defvjp(_cell_fwd, _cell_bwd)


def init_lstm_cell(
    key: jax.Array, num_inputs: int, hidden_size: int, *, recurrent_size: int | None = None
) -> dict:
    """One LSTM cell's weights ``{"wx", "wh", "b"}``.

    Gates are ordered input, forget, candidate, output. Weights are
    N(0, 1/(num_inputs + hidden_size)); the forget gate's bias starts at 1.

    Args:
      key: draws the weights.
      num_inputs: width of the input.
      hidden_size: width of the hidden and cell states.
      recurrent_size: width of the recurrent input ``h`` if it is not the hidden
        state alone (matching networks' attention LSTM feeds ``[h, r]``).

    Example:
      >>> import jax
      >>> w = init_lstm_cell(jax.random.key(0), 3, 4)
      >>> w["wx"].shape, w["wh"].shape, w["b"].shape
      ((3, 16), (4, 16), (16,))
    """
    recurrent_size = hidden_size if recurrent_size is None else recurrent_size
    kx, kh = jax.random.split(key)
    bias = jnp.zeros((4 * hidden_size,)).at[hidden_size : 2 * hidden_size].set(1.0)
    return {
        "wx": jax.random.normal(kx, (num_inputs, 4 * hidden_size))
        / jnp.sqrt(num_inputs + hidden_size),
        "wh": jax.random.normal(kh, (recurrent_size, 4 * hidden_size))
        / jnp.sqrt(num_inputs + hidden_size),
        "b": bias,
    }


def lstm_cell(
    weights: dict, x: jax.Array, h: jax.Array, c: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One step of the LSTM cell ``weights`` (from :func:`init_lstm_cell`); returns ``(h, c)``.

    The optimizer's own cell, differentiated by autodiff; rows of ``x``, ``h`` and
    ``c`` (or single vectors) step independently.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = init_lstm_cell(jax.random.key(0), 3, 4)
      >>> h, c = lstm_cell(w, jnp.ones(3), jnp.zeros(4), jnp.zeros(4))
      >>> h.shape, c.shape
      ((4,), (4,))
    """
    return _cell_autodiff(weights["wx"], weights["wh"], weights["b"], x, h, c)


def _init_theta(key: jax.Array, num_layers: int, hidden_size: int, num_inputs: int) -> Theta:
    keys = jax.random.split(key, num_layers + 1)
    cells = []
    for layer, k in enumerate(keys[:-1]):
        fan_in = num_inputs if layer == 0 else hidden_size
        cells.append(init_lstm_cell(k, fan_in, hidden_size))
    out = {
        "w": 0.1 * jax.random.normal(keys[-1], (hidden_size, 1)) / jnp.sqrt(hidden_size),
        "b": jnp.zeros((1,)),
    }
    return {"cells": cells, "out": out}


def _leaf_update(
    theta: Theta,
    grad: jax.Array,
    h: list,
    c: list,
    log_and_sign_p: float | None,
    output_scale: float,
):
    """One step of the stacked LSTM for every coordinate of one parameter leaf."""
    dtype = theta["out"]["w"].dtype
    x = grad.reshape(-1).astype(dtype)
    x = x[:, None] if log_and_sign_p is None else log_and_sign(x, log_and_sign_p)
    hs, cs = [], []
    for layer in range(len(theta["cells"])):
        w = theta["cells"][layer]
        cell = _cell if x.shape[0] >= HAND_WRITTEN_BACKWARD_MIN_ROWS else _cell_pointwise
        x, c_new = cell(w["wx"], w["wh"], w["b"], x, h[layer], c[layer])
        hs.append(x)
        cs.append(c_new)
    out = (x @ theta["out"]["w"] + theta["out"]["b"])[:, 0]
    update = (output_scale * out).reshape(grad.shape).astype(grad.dtype)
    return update, hs, cs


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
        :func:`~metaopt.optimizers.preprocess.log_and_sign` with this ``p`` (10 in the paper
        for MNIST and CIFAR); if ``None`` the raw gradient is the input.
      output_scale: the LSTM's linear output is multiplied by this to give the update.

    The cell's backward pass is written by hand for speed, so the optimizer supports
    reverse-mode differentiation (``jax.grad``, ``jax.vjp``, also nested), not
    forward mode (``jax.jvp``, ``jax.jacfwd``).

    Returns:
      A :class:`~metaopt.core.types.LearnedOptimizer`.

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
        return _init_theta(key, num_layers, hidden_size, num_inputs)

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
            u, hs, cs = _leaf_update(
                theta,
                g,
                [t[i] for t in h_leaves],
                [t[i] for t in c_leaves],
                log_and_sign_p,
                output_scale,
            )
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


@dataclasses.dataclass(frozen=True)
class LSTMOptions:
    """The LSTM optimizer's command-line options (see :func:`lstm_optimizer`)."""

    log_and_sign_p: float | None = option(
        None,
        "LogAndSign preprocessing with this p; none if unset",
        check=checks.positive_float,
        optional=True,
    )
    output_scale: float = option(0.1, "scale of the proposed update", check=checks.positive_float)


ENTRY = Entry(
    "lstm",
    lstm_optimizer,
    LSTMOptions,
    "the coordinate-wise LSTM of Andrychowicz et al. 2016",
)
