"""A small, cheap learned optimizer built around Adam's direction, for use on unseen problems.

Three published ingredients, combined:

- a per-parameter MLP over Adam-normalized features, shared by every coordinate, as in
  Celo (Moudgil et al. 2025, "Learning versatile optimizers on a compute diet") and
  the small MLP optimizers of Metz et al. 2022 (arXiv 2203.11860);
- a *nominal* descent direction that the network corrects rather than replaces,
  after Harrison, Metz and Sohl-Dickstein 2022 ("A closer look at learned
  optimization: stability, robustness, and inductive biases"): here the direction is
  Adam's bias-corrected ``m̂ / (√v̂ + ε)``, so with the output layer at zero the
  optimizer *is* Adam at rate ``exp(log_lr)``;
- per-tensor context (the step count on several timescales, the tensor's parameter
  and update scales) that enters the first layer as a bias, so step sizes can follow
  the parameterization and the stage of training, as in VeLO's tensor-level inputs
  (Metz et al. 2022, arXiv 2211.09760) at a fraction of its cost.

The update of a coordinate is ``-exp(log_lr + 3 tanh(s/3)) · (u + sign(u) tanh(d))``
where ``u`` is Adam's direction and ``(d, s)`` the network's two outputs on features
multiplied by ``sign(u)``: bounded in magnitude for any θ, which keeps long runs finite,
and odd in the gradient history, so noise does not make parameters drift. The
per-coordinate network reads three features and has one hidden layer, about 200
multiply-adds per parameter.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta
from metaopt.optimizers.leafwise import accumulate, map_leaves, zero_moments

BETAS = (0.9, 0.99)
SECOND_MOMENT_DECAY = 0.999
TIMESCALES = (1.0, 10.0, 100.0, 1e3, 1e4)
NUM_FEATURES = len(BETAS) + 1  # m̂_k / √v̂ for each decay, and g / √v̂
NUM_TENSOR_FEATURES = len(TIMESCALES) + 3  # step embedding, log rms(p), rms(u), log size
MAX_LOG_SCALE = 3.0
EPS = 1e-8


class VersatileState(NamedTuple):
    """Per-parameter accumulators and the step count.

    Attributes:
      momenta: one tree per decay in ``BETAS``, each shaped like the params (float32).
      second_moment: running mean of g², shaped like the params (float32).
      count: number of updates so far (int32).
    """

    momenta: tuple[PyTree, ...]
    second_moment: PyTree
    count: jax.Array


def _tensor_features(embed: jax.Array, p: jax.Array, u: jax.Array) -> jax.Array:
    rms_p = jnp.sqrt(jnp.mean(p * p))
    rms_u = jnp.sqrt(jnp.mean(u * u))
    size = jnp.log(float(max(p.size, 1))) / 10.0
    log_p = jnp.log(rms_p + 1e-3) / 3.0
    return jnp.concatenate([embed, jnp.stack([log_p, rms_u, jnp.asarray(size)])])


def versatile_optimizer(hidden_size: int = 32, init_lr: float = 1e-3) -> LearnedOptimizer:
    """Builds the versatile learned optimizer (Adam's direction, corrected by a small MLP).

    Args:
      hidden_size: width of the per-parameter network's hidden layer.
      init_lr: the Adam rate that freshly initialized meta-parameters reproduce.

    Returns:
      A :class:`~metaopt.core.types.LearnedOptimizer` named ``"versatile"``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lopt = versatile_optimizer()
      >>> theta = lopt.init(jax.random.key(0))
      >>> params = {"w": jnp.ones((3, 2))}
      >>> state = lopt.init_state(theta, params)
      >>> updates, state = lopt.update(theta, params, state, params)
      >>> [round(float(u), 6) for u in updates["w"][0]]  # Adam's first step
      [-0.001, -0.001]
    """
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    init_lr = checks.positive_float("init_lr", init_lr)
    config = dict(hidden_size=hidden_size, init_lr=init_lr)
    timescales = jnp.asarray(TIMESCALES)

    def init(key: jax.Array) -> Theta:
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (NUM_FEATURES, hidden_size)) * jnp.sqrt(2.0 / NUM_FEATURES),
            "b1": jnp.zeros((hidden_size,)),
            "tensor_w": jax.random.normal(k2, (NUM_TENSOR_FEATURES, hidden_size)) * 0.1,
            # Zero output weights: the update starts as exactly Adam's.
            "w2": jnp.zeros((hidden_size, 2)),
            "b2": jnp.zeros((2,)),
            "log_lr": jnp.log(jnp.asarray(init_lr, jnp.float32)),
        }

    def init_state(theta: Theta, params: Params) -> VersatileState:
        del theta
        momenta, second = zero_moments(params, len(BETAS))
        return VersatileState(
            momenta=momenta,
            second_moment=second,
            count=jnp.zeros((), jnp.int32),
        )

    def leaf_update(theta, g, p, momenta, v, count, embed):
        g32 = g.astype(jnp.float32)
        momenta, v = accumulate(g32, momenta, v, BETAS, SECOND_MOMENT_DECAY)
        t = count.astype(jnp.float32)
        # The floor keeps √'s derivative finite where v = 0 (see optimizers/mlp.py).
        scale = 1.0 / (jnp.sqrt(v / (1 - SECOND_MOMENT_DECAY**t) + 1e-30) + EPS)
        directions = [m / (1 - b**t) * scale for b, m in zip(BETAS, momenta, strict=True)]
        u = directions[0]
        # Features in the frame of Adam's direction: multiplied by sign(u), the network's
        # direction output multiplied back. The correction is then an odd function of the
        # gradient history, so gradient noise symmetric about zero moves no parameter on
        # average, and a coordinate with u = 0 gets no correction.
        sign = jnp.sign(u).reshape(-1, 1)
        x = jnp.stack([d.reshape(-1) for d in (*directions, g32 * scale)], axis=-1) * sign
        tensor = _tensor_features(embed, p.astype(jnp.float32), u)
        bias = theta["b1"] + tensor @ theta["tensor_w"]
        h = jax.nn.relu(x @ theta["w1"] + bias)
        out = h @ theta["w2"] + theta["b2"]
        correction = (sign[:, 0] * jnp.tanh(out[:, 0])).reshape(u.shape)
        log_scale = MAX_LOG_SCALE * jnp.tanh(out[:, 1] / MAX_LOG_SCALE).reshape(u.shape)
        step = -jnp.exp(theta["log_lr"] + log_scale) * (u + correction)
        # A coordinate that has never had a gradient (an unused parameter, a masked
        # unit), or whose g² overflowed, stays where it is, as under Adam.
        step = jnp.where((v > 0) & jnp.isfinite(v), step, 0.0)
        return step.astype(g.dtype), momenta, v

    def update(
        theta: Theta, grads: PyTree, state: VersatileState, params: Params | None = None
    ) -> tuple[PyTree, VersatileState]:
        count = state.count + 1
        embed = jnp.tanh(count.astype(jnp.float32) / timescales)
        updates, momenta, second = map_leaves(
            lambda g, p, ms, v: leaf_update(theta, g, p, ms, v, count, embed),
            grads,
            params,
            state.momenta,
            state.second_moment,
            who="versatile",
        )
        return updates, VersatileState(momenta=momenta, second_moment=second, count=count)

    return LearnedOptimizer(
        name="versatile", config=config, init=init, init_state=init_state, update=update
    )
