"""A small, cheap learned optimizer built around Adam's direction, for use on unseen problems.

Four published ingredients, combined:

- a per-parameter MLP over Adam-normalized features, shared by every coordinate, as in
  Celo (Moudgil et al. 2025, "Learning versatile optimizers on a compute diet") and
  the small MLP optimizers of Metz et al. 2022 (arXiv 2203.11860);
- a *nominal* descent direction that the network corrects rather than replaces,
  after Harrison, Metz and Sohl-Dickstein 2022 ("A closer look at learned
  optimization: stability, robustness, and inductive biases"): here the direction is
  Adam's bias-corrected ``m̂ / (√v̂ + ε)``;
- a per-tensor learning rate that adapts online from the hypergradient signal, the
  cosine between a tensor's gradient and its previous Adam direction (Baydin et al.
  2018, "Online learning rate adaptation with hypergradient descent", in the
  multiplicative form): it grows while successive steps agree and shrinks when they
  oscillate or turn to noise. Here the adaptation is a learned function of that cosine
  and the tensor's context, so no learning rate or schedule is left to set;
- per-tensor context (the step count on several timescales, the tensor's parameter
  and update scales, its current rate) that enters the first layer as a bias, as in
  VeLO's tensor-level inputs (Metz et al. 2022, arXiv 2211.09760) at a fraction of its
  cost.

A tensor's log rate offset ``ℓ`` moves by ``0.1 tanh(c · (b + a · f))`` per step, where
``c`` is the cosine, ``f`` the other tensor features and ``a``, ``b`` learned, within
``[log 0.01, log 300]`` of ``exp(log_lr)``. A coordinate's update is
``-exp(log_lr + ℓ + tanh(s)) · (u + sign(u) tanh(d))`` where ``u`` is Adam's direction
and ``(d, s)`` the per-parameter network's two outputs on features multiplied by
``sign(u)``: bounded in magnitude for any θ, which keeps long runs finite, and odd in
the gradient history, so noise does not make parameters drift. With fresh
meta-parameters the network's output is zero and the optimizer is Adam whose per-tensor
rate follows multiplicative hypergradient descent with gain ≈ 0.02 (``0.1 tanh(0.2 c)``),
starting at ``init_lr``. A gradient entry that is not finite freezes its own coordinate
and nothing else.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta
from metaopt.optimizers.leafwise import accumulate, map_leaves, zero_moments

BETAS = (0.9, 0.99)
SECOND_MOMENT_DECAY = 0.999
# Timescales of the step-count features; none longer than the meta-training horizons, so
# a long run saturates them instead of leaving the range they were trained on.
TIMESCALES = (1.0, 10.0, 100.0, 1e3)
NUM_FEATURES = len(BETAS) + 1  # m̂_k / √v̂ for each decay, and g / √v̂
# step embedding, log rms(p), rms(u), log size, the hypergradient cosine, the rate offset
NUM_TENSOR_FEATURES = len(TIMESCALES) + 5
COSINE = len(TIMESCALES) + 3  # index of the cosine among the tensor features
MAX_LOG_SCALE = 1.0  # the network scales a coordinate's step by at most e^±1
MAX_RATE_CHANGE = 0.1  # largest change of a tensor's log rate in one step
RATE_GAIN = 0.02  # fresh θ: d log(rate) ≈ RATE_GAIN · cosine
LOG_RATE_RANGE = (math.log(1e-2), math.log(3e2))  # ℓ, relative to exp(log_lr)
EPS = 1e-8


class VersatileState(NamedTuple):
    """Per-parameter accumulators, per-tensor rates and the step count.

    Attributes:
      momenta: one tree per decay in ``BETAS``, each shaped like the params (float32).
      second_moment: running mean of g², shaped like the params (float32).
      log_rate: one float32 scalar per parameter tensor, the tensor's log rate offset ℓ.
      count: number of updates so far (int32).
    """

    momenta: tuple[PyTree, ...]
    second_moment: PyTree
    log_rate: PyTree
    count: jax.Array


def _inverse_rms(v: jax.Array, t: jax.Array) -> jax.Array:
    """Adam's ``1 / (√v̂ + ε)`` after ``t ≥ 1`` steps."""
    # The floor keeps √'s derivative finite where v = 0 (see optimizers/mlp.py).
    return 1.0 / (jnp.sqrt(v / (1 - SECOND_MOMENT_DECAY**t) + 1e-30) + EPS)


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """cos(a, b) over a whole tensor; 0 where either is zero or not finite."""
    # Each is divided by its largest entry first, so huge gradients do not overflow.
    a = a / (jnp.max(jnp.abs(a)) + 1e-30)
    b = b / (jnp.max(jnp.abs(b)) + 1e-30)
    c = jnp.sum(a * b) / jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b) + 1e-30)
    return jnp.where(jnp.isfinite(c), jnp.clip(c, -1.0, 1.0), 0.0)


def _finite_or_zero(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _tensor_features(
    embed: jax.Array, p: jax.Array, u: jax.Array, cosine: jax.Array, log_rate: jax.Array
) -> jax.Array:
    mean_square = jnp.mean(p * p)
    # Params beyond ~1e19 overflow the mean square; they read as the largest float.
    mean_square = jnp.where(jnp.isfinite(mean_square), mean_square, jnp.finfo(jnp.float32).max)
    rms_p = jnp.sqrt(mean_square)
    rms_u = jnp.sqrt(jnp.mean(u * u))
    size = jnp.log(float(max(p.size, 1))) / 10.0
    log_p = jnp.log(rms_p + 1e-3) / 3.0
    scalars = jnp.stack([log_p, rms_u, jnp.asarray(size), cosine, log_rate / 3.0])
    return jnp.concatenate([embed, scalars])


def _leaf_update(theta, g, p, momenta, v, log_rate, count, embed):
    """One step for every coordinate of one leaf: Adam's direction, rate and correction."""
    g32 = g.astype(jnp.float32)
    t = count.astype(jnp.float32)
    # Adam's previous direction, from the state before this step (zero at t = 1).
    t_prev = jnp.maximum(t - 1.0, 1.0)
    previous = momenta[0] / (1 - BETAS[0] ** t_prev) * _inverse_rms(v, t_prev)
    momenta, v = accumulate(g32, momenta, v, BETAS, SECOND_MOMENT_DECAY)
    # A coordinate whose g² overflowed or was not finite reads as zero in every
    # feature, so it cannot spoil its tensor; it stays where it is, as does one that
    # has never had a gradient (an unused parameter, a masked unit).
    finite = jnp.isfinite(v)
    cosine = _cosine(jnp.where(finite, g32, 0.0), _finite_or_zero(previous))
    scale = _inverse_rms(v, t)
    directions = [
        jnp.where(finite, m / (1 - b**t) * scale, 0.0) for b, m in zip(BETAS, momenta, strict=True)
    ]
    u = directions[0]
    tensor = _tensor_features(embed, p.astype(jnp.float32), u, cosine, log_rate)
    # Odd in the cosine: with no evidence either way the rate stays where it is, so
    # it cannot drift to what suited the meta-training tasks. (The cosine's own entry
    # of rate_w is unused: an even term c² would allow that drift.)
    gain = tensor.at[COSINE].set(0.0) @ theta["rate_w"] + theta["rate_b"]
    change = _finite_or_zero(MAX_RATE_CHANGE * jnp.tanh(cosine * gain))
    log_rate = jnp.clip(log_rate + change, *LOG_RATE_RANGE)
    # Features in the frame of Adam's direction: multiplied by sign(u), the network's
    # direction output multiplied back. The correction is then an odd function of the
    # gradient history, so gradient noise symmetric about zero moves no parameter on
    # average, and a coordinate with u = 0 gets no correction.
    sign = jnp.sign(u).reshape(-1, 1)
    g_scaled = jnp.where(finite, g32 * scale, 0.0)
    x = jnp.stack([d.reshape(-1) for d in (*directions, g_scaled)], axis=-1) * sign
    bias = theta["b1"] + tensor @ theta["tensor_w"]
    h = jax.nn.relu(x @ theta["w1"] + bias)
    out = h @ theta["w2"] + theta["b2"]
    correction = (sign[:, 0] * jnp.tanh(out[:, 0])).reshape(u.shape)
    log_scale = MAX_LOG_SCALE * jnp.tanh(out[:, 1] / MAX_LOG_SCALE).reshape(u.shape)
    step = -jnp.exp(theta["log_lr"] + log_rate + log_scale) * (u + correction)
    step = jnp.where((v > 0) & finite, step, 0.0)
    return step.astype(g.dtype), momenta, v, log_rate


def versatile_optimizer(hidden_size: int = 16, init_lr: float = 1e-3) -> LearnedOptimizer:
    """Builds the versatile learned optimizer (Adam's direction, corrected by a small MLP).

    Args:
      hidden_size: width of the per-parameter network's hidden layer.
      init_lr: the rate every tensor starts from.

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
            # Zero output weights: the per-parameter network starts silent.
            "w2": jnp.zeros((hidden_size, 2)),
            "b2": jnp.zeros((2,)),
            # The rate's gain on the cosine: a constant, plus a learned function of context.
            "rate_w": jnp.zeros((NUM_TENSOR_FEATURES,)),
            "rate_b": jnp.asarray(RATE_GAIN / MAX_RATE_CHANGE),
            "log_lr": jnp.log(jnp.asarray(init_lr, jnp.float32)),
        }

    def init_state(theta: Theta, params: Params) -> VersatileState:
        del theta
        momenta, second = zero_moments(params, len(BETAS))
        log_rate = jax.tree.map(lambda _: jnp.zeros((), jnp.float32), params)
        return VersatileState(
            momenta=momenta,
            second_moment=second,
            log_rate=log_rate,
            count=jnp.zeros((), jnp.int32),
        )

    def update(
        theta: Theta, grads: PyTree, state: VersatileState, params: Params | None = None
    ) -> tuple[PyTree, VersatileState]:
        count = state.count + 1
        embed = jnp.tanh(count.astype(jnp.float32) / timescales)
        updates, momenta, second, log_rate = map_leaves(
            lambda g, p, ms, v, lr: _leaf_update(theta, g, p, ms, v, lr, count, embed),
            grads,
            params,
            state.momenta,
            state.second_moment,
            state.log_rate,
            who="versatile",
        )
        new_state = VersatileState(
            momenta=momenta, second_moment=second, log_rate=log_rate, count=count
        )
        return updates, new_state

    return LearnedOptimizer(
        name="versatile", config=config, init=init, init_state=init_state, update=update
    )


ENTRY = Entry(
    "versatile",
    versatile_optimizer,
    None,
    "Adam's direction at per-tensor hypergradient rates, corrected by a per-parameter MLP",
)
