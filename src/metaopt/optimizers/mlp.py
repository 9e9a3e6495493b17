"""A per-parameter MLP learned optimizer with momentum and second-moment features.

After Metz et al. 2022, "Practical tradeoffs between memory, compute, and performance
in learned optimizers" (arXiv 2203.11860): a small MLP shared by every coordinate reads
features of that coordinate's gradient history and outputs a direction ``d`` and a
log-magnitude ``m``; the update is ``d · exp(α·m) · β``. Features are normalized by
their second moment across each tensor, and a tanh embedding of the step number,
shared by all coordinates, enters as a per-tensor bias of the first layer.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta
from metaopt.optimizers.leafwise import accumulate_stacked, map_leaves, zero_moments

MOMENTUM_DECAYS = (0.5, 0.9, 0.99)
SECOND_MOMENT_DECAY = 0.999
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_FEATURES = 2 + 2 * len(MOMENTUM_DECAYS) + 2  # g, p, m_i, m_i/√v, √v, g/√v
EPS = 1e-8


class MLPLOptState(NamedTuple):
    """Per-parameter accumulators and the step count.

    Attributes:
      momenta: one tree per decay in ``MOMENTUM_DECAYS``, each shaped like the params.
      second_moment: running mean of g², shaped like the params.
      count: number of updates so far (int32).
    """

    momenta: tuple[PyTree, ...]
    second_moment: PyTree
    count: jax.Array


def _features(g, p, momenta, v):
    """The (coordinates, features) input of the MLP; ``momenta`` stacked on a leading axis."""
    rsqrt = jax.lax.rsqrt(v + EPS)
    # √v's derivative is infinite at v = 0 (a parameter whose gradient has always been
    # zero, e.g. behind a dead ReLU), and ∞ · 0 poisons second-order meta-gradients with
    # NaN. A floor of 1e-30 changes the value by at most 1e-15.
    n, k = g.size, momenta.shape[0]
    column = lambda f: f.reshape(n, 1)  # noqa: E731
    feats = [
        column(g),
        column(p),
        momenta.reshape(k, n).T,
        (momenta * rsqrt).reshape(k, n).T,
        column(jnp.sqrt(v + 1e-30)),
        column(g * rsqrt),
    ]
    # Coordinate-major (coordinates, features), so each layer is ``x @ w`` with the
    # weights' output axis contiguous. Under vmap with per-particle weights (ES, PES)
    # XLA runs this batched matmul several times faster than ``w.T @ x``.
    x = jnp.concatenate(feats, axis=1)
    # Normalize each feature by its root mean square over the tensor.
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=0, keepdims=True) + EPS)


def mlp_optimizer(
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    step_mult: float = 1e-3,
    exp_mult: float = 1e-3,
) -> LearnedOptimizer:
    """Builds the per-parameter MLP learned optimizer.

    Args:
      hidden_size: width of each hidden layer (32 in Metz et al. 2022).
      num_hidden_layers: hidden layers of the MLP (2 in Metz et al. 2022).
      step_mult: β, the scale of the update.
      exp_mult: α, the scale of the log-magnitude output.

    Returns:
      A :class:`~metaopt.core.types.LearnedOptimizer`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lopt = mlp_optimizer()
      >>> theta = lopt.init(jax.random.key(0))
      >>> params = {"w": jnp.ones((3, 2))}
      >>> state = lopt.init_state(theta, params)
      >>> updates, state = lopt.update(theta, params, state, params)
      >>> updates["w"].shape, int(state.count)
      ((3, 2), 1)
    """
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    num_hidden_layers = checks.positive_int("num_hidden_layers", num_hidden_layers)
    step_mult = checks.positive_float("step_mult", step_mult)
    exp_mult = checks.positive_float("exp_mult", exp_mult)
    config = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        step_mult=step_mult,
        exp_mult=exp_mult,
    )
    timescales = jnp.asarray(TIMESCALES)

    def init(key: jax.Array) -> Theta:
        sizes = [NUM_FEATURES] + [hidden_size] * num_hidden_layers + [2]
        keys = jax.random.split(key, len(sizes))
        layers = [
            {
                "w": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
                "b": jnp.zeros((n_out,)),
            }
            for k, n_in, n_out in zip(keys[:-1], sizes[:-1], sizes[1:], strict=True)
        ]
        layers[-1]["w"] = layers[-1]["w"] * 0.1
        step_embed = jax.random.normal(keys[-1], (len(TIMESCALES), hidden_size)) * 0.1
        return {"layers": layers, "step_embed": step_embed}

    def init_state(theta: Theta, params: Params) -> MLPLOptState:
        del theta
        momenta, second = zero_moments(params, len(MOMENTUM_DECAYS))
        return MLPLOptState(
            momenta=momenta,
            second_moment=second,
            count=jnp.zeros((), jnp.int32),
        )

    def leaf_update(theta, g, p, momenta, v, step_bias):
        dtype = theta["layers"][0]["w"].dtype
        g32 = g.astype(dtype)
        stacked, v = accumulate_stacked(
            g32, jnp.stack(momenta), v, MOMENTUM_DECAYS, SECOND_MOMENT_DECAY
        )
        x = _features(g32, p.astype(dtype), stacked, v)
        momenta = tuple(stacked)
        layers = theta["layers"]
        x = jax.nn.relu(x @ layers[0]["w"] + (layers[0]["b"] + step_bias))
        for layer in layers[1:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        out = x @ layers[-1]["w"] + layers[-1]["b"]
        direction, magnitude = out[:, 0], out[:, 1]
        step = direction * jnp.exp(exp_mult * magnitude) * step_mult
        return step.reshape(g.shape).astype(g.dtype), momenta, v

    def update(
        theta: Theta, grads: PyTree, state: MLPLOptState, params: Params | None = None
    ) -> tuple[PyTree, MLPLOptState]:
        count = state.count + 1
        step_bias = jnp.tanh(count.astype(jnp.float32) / timescales) @ theta["step_embed"]
        updates, momenta, second = map_leaves(
            lambda g, p, ms, v: leaf_update(theta, g, p, ms, v, step_bias),
            grads,
            params,
            state.momenta,
            state.second_moment,
            who="MLP",
        )
        return updates, MLPLOptState(momenta=momenta, second_moment=second, count=count)

    return LearnedOptimizer(
        name="mlp", config=config, init=init, init_state=init_state, update=update
    )


ENTRY = Entry("mlp", mlp_optimizer, None, "a per-parameter MLP after Metz et al. 2022")
