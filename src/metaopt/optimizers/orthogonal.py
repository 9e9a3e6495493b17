"""A learned optimizer on an orthogonalized (Muon-like) direction for matrices, Adam's for the rest.

What it follows:

- Celo2 (Moudgil et al., ICLR 2026, arXiv 2602.19142): a tiny per-element MLP acting on a
  *nominal* direction that is, for matrix parameters, the momentum orthogonalized by a
  Newton–Schulz iteration (Muon: Jordan et al. 2024, "Muon: an optimizer for hidden
  layers"; Bernstein & Newhouse 2024, "Old optimizer, new norm", arXiv 2409.20325), and
  Adam's for every other parameter. The quintic iteration and its coefficients
  (3.4445, −4.7750, 2.0315) are Jordan's; this module's implementation is its own.
- μLO (Thérien et al., ICLR 2026) and the spectral condition for feature learning (Yang,
  Simon & Bernstein 2023, arXiv 2310.17813): a matrix's step has spectral norm
  ``η · sqrt(max(1, fan_out / fan_in))``, independent of the width, so one set of
  meta-parameters serves narrow and wide layers, and no feature of the network reads a
  tensor's size (only its aspect ratio, which does not change when a model is widened).
- Harrison, Metz & Sohl-Dickstein 2022 ("A closer look at learned optimization"): the
  network corrects the nominal step within bounds instead of replacing it, so every
  update is bounded for any θ; features are taken in the frame of the nominal
  direction's sign, which makes the correction odd in the gradient history.
- VeLO (Metz et al. 2022, arXiv 2211.09760): per-tensor context (the step count on
  several timescales, the parameter scale, the tensor's kind) enters the network as a
  bias of its hidden layer.
- Hypergradient descent in its multiplicative form (Baydin et al. 2018), as in
  ``optimizers/versatile.py``: each tensor's log rate ``ℓ`` moves by
  ``0.1 tanh(c · gain)`` per step, ``c`` the cosine between the gradient and the
  previous momentum, ``gain`` a learned function of the context, within ``[1/100, 10]``.
- AdamW (Loshchilov & Hutter 2019): a decoupled weight decay, here a learned fraction of
  the parameter per step (at most 1%).

The step of one tensor with momentum ``m`` (decay 0.9, Nesterov form ``n``), second
moment ``v`` and nominal direction ``d``:

- a matrix (2-D, or a kernel read as ``(prod(shape[:-1]), shape[-1])``) whose sides are
  at least 2 and at most ``max_orthogonal_dim``: ``d = NS(n)``;
- a larger matrix: Adam's direction ``u = n / (√v̂ + ε)`` scaled to the Frobenius norm
  ``sqrt(min(fan_in, fan_out))`` an orthogonal matrix would have (Newton–Schulz costs
  ``O(fan_in · fan_out · min)`` per step, more than a small-batch training step);
- anything else (biases, gains, scalars, vectors): ``d = u``.

``step = -σ exp(ℓ + tanh(s)) (d + sign(d) rms(d) tanh(c)) − ρ p``, where ``(c, s)`` is the
per-element network's output, ``σ = η_M sqrt(max(1, fan_out / fan_in))`` for matrices
and ``η_A`` otherwise, and ``ρ`` the learned decay. A matrix's ``fan_in`` and ``fan_out``
count only the rows and columns that ever had a gradient, and the tensor-wide root mean
squares only its entries that did, so a masked or dead part of a layer leaves the step
of the rest unchanged. With fresh meta-parameters the
network is silent (``c = s = 0``), ``η_M = 0.01``, ``η_A = 3·10⁻³`` and ``ρ = 10⁻⁵``
(none on vectors): Muon with Nesterov momentum on matrices and NAdam elsewhere, with
slowly adapting per-tensor rates. A gradient entry that is not finite freezes its own
coordinate; a parameter that has never had a gradient is not moved.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.core.registry import Entry
from metaopt.core.types import LearnedOptimizer, Params, PyTree, Theta
from metaopt.optimizers.leafwise import accumulate, map_leaves, zero_moments

MOMENTUM = 0.9
SECOND_MOMENT_DECAY = 0.999
EPS = 1e-8
# Jordan's quintic: a steep slope at zero, singular values driven into about [0.7, 1.2].
QUINTIC = (3.4445, -4.7750, 2.0315)
# Timescales of the step-count features: all saturate within the meta-training horizons,
# so longer runs read as the late part of the runs meta-training saw.
TIMESCALES = (10.0, 100.0, 1000.0)
# step embedding; orthogonalized; vector; aspect ratio; log rms(p); cosine; rate offset
NUM_TENSOR_FEATURES = len(TIMESCALES) + 6
ORTHO, VECTOR = len(TIMESCALES), len(TIMESCALES) + 1
COSINE = len(TIMESCALES) + 4
NUM_FEATURES = 3  # |d| / rms(d), and g / √v̂ and m̂ / √v̂ in the frame of sign(d)
MAX_RATE_CHANGE = 0.1
RATE_GAIN = 0.02  # fresh θ: d log(rate) ≈ RATE_GAIN · cosine
LOG_RATE_RANGE = (math.log(1e-2), math.log(10.0))
MAX_LOG_DECAY = math.log(1e-2)  # at most 1% of a parameter removed per step
# η_M (matrices, spectral) and η_A (Adam's direction) of fresh θ, chosen on the selection
# suite (metaopt.evaluation.selection) among (0.02, 1e-3), (0.02, 3e-3), (0.01, 3e-3),
# (0.005, 3e-3) and (0.01, 1e-2).
INIT_LRS = (0.01, 3e-3)
INIT_DECAY = 1e-5


class OrthogonalState(NamedTuple):
    """Per-parameter momentum and second moment, per-tensor rates, the step count.

    Attributes:
      momentum: running mean of g (decay ``MOMENTUM``), shaped like the params (float32).
      second_moment: running mean of g², shaped like the params (float32).
      log_rate: one float32 scalar per parameter tensor, the tensor's log rate offset ℓ.
      count: number of updates so far (int32).
    """

    momentum: PyTree
    second_moment: PyTree
    log_rate: PyTree
    count: jax.Array


def newton_schulz(
    x: jax.Array, steps: int = 5, coefficients: tuple[float, float, float] = QUINTIC
) -> jax.Array:
    """Approximately orthogonalizes a matrix: ``U V^T`` of ``x = U S V^T``, by an odd polynomial.

    ``x`` is scaled to unit Frobenius norm, so its singular values lie in ``[0, 1]``;
    each step then maps every singular value ``σ`` to ``aσ + bσ³ + cσ⁵`` and leaves the
    singular vectors alone. ``(1.5, -0.5, 0)`` converges to exactly 1 (slowly for
    small ``σ``); the default quintic reaches about ``[0.7, 1.2]`` in five steps.

    Args:
      x: a matrix ``(m, n)``; a zero matrix stays zero.
      steps: iterations.
      coefficients: ``(a, b, c)``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[3.0, 0.0], [0.0, 0.5]])
      >>> y = newton_schulz(x, steps=30, coefficients=(1.5, -0.5, 0.0))
      >>> [round(float(v), 4) for v in jnp.diag(y)]
      [1.0, 1.0]
    """
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must be a matrix, got shape {jnp.shape(x)}")
    a, b, c = coefficients
    # Dividing by the largest entry first keeps the squared norm finite.
    x = x / (jnp.max(jnp.abs(x)) + 1e-30)
    x = x / (jnp.sqrt(jnp.sum(x * x)) + 1e-30)
    # Each step multiplies x by P = aI + bG + cG² of its Gram matrix G on the smaller
    # side. P is a polynomial in G, so the next Gram matrix is P G P: the steps run on
    # the small Gram matrix alone, and x is touched twice (G = x xᵀ, then Q x with Q
    # the product of the P's) instead of twice per step. A handful of steps: unrolled.
    tall = x.shape[0] > x.shape[1]
    gram = x.T @ x if tall else x @ x.T
    eye = jnp.eye(gram.shape[0], dtype=x.dtype)
    q = eye
    for _ in range(steps):
        poly = a * eye + b * gram + c * (gram @ gram)
        q = poly @ q
        gram = poly @ gram @ poly
    return x @ q.T if tall else q @ x


def matrix_sides(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(fan_in, fan_out)`` of a tensor read as a matrix, or None for vectors and scalars.

    Example:
      >>> matrix_sides((3, 3, 16, 32)), matrix_sides((5,))
      ((144, 32), None)
    """
    if len(shape) < 2:
        return None
    return math.prod(shape[:-1]), shape[-1]


def _rms(x: jax.Array, count: jax.Array) -> jax.Array:
    """The root mean square over ``count`` entries (those that ever had a gradient)."""
    return jnp.sqrt(jnp.sum(x * x) / count)


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """cos(a, b) over a whole tensor; 0 where either is zero or not finite."""
    a = a / (jnp.max(jnp.abs(a)) + 1e-30)
    b = b / (jnp.max(jnp.abs(b)) + 1e-30)
    c = jnp.sum(a * b) / jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b) + 1e-30)
    return jnp.where(jnp.isfinite(c), jnp.clip(c, -1.0, 1.0), 0.0)


def _network(theta: Theta, xs: list[jax.Array], bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The per-element MLP, written unit by unit so XLA fuses it into one elementwise loop."""
    w1, w2, b2 = theta["w1"], theta["w2"], theta["b2"]
    c = jnp.zeros_like(xs[0]) + b2[0]
    s = jnp.zeros_like(xs[0]) + b2[1]
    for j in range(w1.shape[1]):
        pre = bias[j] + sum(x * w1[i, j] for i, x in enumerate(xs))
        h = jnp.maximum(pre, 0.0)
        c = c + h * w2[j, 0]
        s = s + h * w2[j, 1]
    return c, s


def _nominal(n: jax.Array, u: jax.Array, live: jax.Array, max_dim: int, ns_steps: int):
    """The nominal direction of one tensor, its kind (orthogonal, vector) and aspect ratio.

    A matrix's sides count only the rows and columns that ever had a gradient, so a
    masked (or dead) part of a layer does not change the step of the rest.
    """
    sides = matrix_sides(n.shape)
    if sides is None or min(sides) < 2:
        return u, 0.0, 1.0, jnp.asarray(1.0)
    grid = live.reshape(sides)
    fan_in = jnp.maximum(jnp.sum(jnp.any(grid, axis=1)), 1)
    fan_out = jnp.maximum(jnp.sum(jnp.any(grid, axis=0)), 1)
    ratio = fan_out / fan_in
    if min(sides) <= max_dim:
        d = newton_schulz(n.reshape(sides), ns_steps).reshape(n.shape)
        return d, 1.0, 0.0, ratio
    # Too large to orthogonalize cheaply: Adam's direction at an orthogonal matrix's norm.
    d = u * (jnp.sqrt(jnp.minimum(fan_in, fan_out)) / (jnp.sqrt(jnp.sum(u * u)) + 1e-30))
    return d, 0.0, 0.0, ratio


def _leaf_update(theta, g, p, momenta, v, log_rate, count, embed, max_dim, ns_steps):
    """One step of one tensor."""
    g32 = jnp.where(jnp.isfinite(g), g.astype(jnp.float32), 0.0)
    t = count.astype(jnp.float32)
    previous = momenta[0]
    (m,), v = accumulate(g32, momenta, v, (MOMENTUM,), SECOND_MOMENT_DECAY)
    # g² may overflow: such a coordinate reads as zero everywhere and does not move.
    live = jnp.isfinite(v) & (v > 0)
    ok = live & jnp.isfinite(g)
    count_live = jnp.maximum(jnp.sum(live), 1).astype(jnp.float32)
    cosine = _cosine(jnp.where(ok, g32, 0.0), previous)
    r = jnp.where(ok, 1.0 / (jnp.sqrt(v / (1 - SECOND_MOMENT_DECAY**t)) + EPS), 0.0)
    m_hat = jnp.where(ok, m / (1 - MOMENTUM**t), 0.0)
    n = MOMENTUM * m_hat + (1 - MOMENTUM) * jnp.where(ok, g32, 0.0)  # Nesterov
    d, ortho, vector, ratio = _nominal(n, n * r, live, max_dim, ns_steps)
    aspect = jnp.clip(jnp.log(ratio) / 4.0, -2.0, 2.0) * (1.0 - vector)
    p32 = p.astype(jnp.float32)
    rms_p = _rms(jnp.where(live, p32, 0.0), count_live)
    rms_p = jnp.where(jnp.isfinite(rms_p), rms_p, jnp.finfo(jnp.float32).max)
    scalars = [ortho, vector, aspect, jnp.log(rms_p + 1e-3) / 3.0, cosine]
    tensor = jnp.concatenate([embed, jnp.stack([*map(jnp.asarray, scalars), log_rate / 3.0])])
    # Odd in the cosine: with no evidence either way the rate stays where it is.
    gain = tensor.at[COSINE].set(0.0) @ theta["rate_w"] + theta["rate_b"]
    change = MAX_RATE_CHANGE * jnp.tanh(cosine * gain)
    log_rate = jnp.clip(log_rate + jnp.where(jnp.isfinite(change), change, 0.0), *LOG_RATE_RANGE)
    sign = jnp.sign(d)
    rms_d = _rms(d, count_live)
    xs = [jnp.abs(d) / (rms_d + 1e-30), g32 * r * sign, m_hat * r * sign]
    c, s = _network(theta, xs, theta["b1"] + tensor @ theta["tensor_w"])
    lr = theta["log_lr"][1 if vector else 0]
    width = jnp.sqrt(jnp.maximum(1.0, ratio))
    step = -width * jnp.exp(lr + log_rate + jnp.tanh(s)) * (d + sign * rms_d * jnp.tanh(c))
    log_decay = jnp.minimum(tensor @ theta["decay_w"] + theta["decay_b"], MAX_LOG_DECAY)
    step = jnp.where(ok, step - jnp.exp(log_decay) * p32, 0.0)
    return step.astype(g.dtype), (m,), v, log_rate


def orthogonal_optimizer(
    hidden_size: int = 8, max_orthogonal_dim: int = 128, ns_steps: int = 5
) -> LearnedOptimizer:
    """Builds the orthogonal learned optimizer (see the module docstring).

    Args:
      hidden_size: width of the per-element network's hidden layer.
      max_orthogonal_dim: matrices whose smaller side exceeds this take Adam's direction
        instead of Newton–Schulz's, which costs ``O(fan_in · fan_out · min)`` per step.
      ns_steps: Newton–Schulz iterations.

    Returns:
      A :class:`~metaopt.core.types.LearnedOptimizer` named ``"orthogonal"``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lopt = orthogonal_optimizer()
      >>> theta = lopt.init(jax.random.key(0))
      >>> params = {"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)}
      >>> grads = {"w": jnp.eye(4), "b": jnp.ones(4)}
      >>> updates, state = lopt.update(theta, grads, lopt.init_state(theta, params), params)
      >>> sv = jnp.linalg.svd(updates["w"], compute_uv=False)  # Muon's: all alike
      >>> bool(jnp.allclose(sv, sv[0])), round(float(sv[0]), 4)
      (True, 0.0077)
      >>> [round(float(u), 6) for u in updates["b"][:2]]  # Adam's first step
      [-0.003, -0.003]
    """
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    max_dim = checks.positive_int("max_orthogonal_dim", max_orthogonal_dim)
    ns_steps = checks.positive_int("ns_steps", ns_steps)
    config = dict(hidden_size=hidden_size, max_orthogonal_dim=max_dim, ns_steps=ns_steps)
    timescales = jnp.asarray(TIMESCALES)

    def init(key: jax.Array) -> Theta:
        k1, k2 = jax.random.split(key)
        decay_w = jnp.zeros((NUM_TENSOR_FEATURES,)).at[VECTOR].set(-20.0)  # no decay on vectors
        return {
            "w1": jax.random.normal(k1, (NUM_FEATURES, hidden_size)) * jnp.sqrt(2.0 / NUM_FEATURES),
            "b1": jnp.zeros((hidden_size,)),
            "tensor_w": jax.random.normal(k2, (NUM_TENSOR_FEATURES, hidden_size)) * 0.1,
            # Zero output weights: the network starts silent.
            "w2": jnp.zeros((hidden_size, 2)),
            "b2": jnp.zeros((2,)),
            "rate_w": jnp.zeros((NUM_TENSOR_FEATURES,)),
            "rate_b": jnp.asarray(RATE_GAIN / MAX_RATE_CHANGE),
            "log_lr": jnp.log(jnp.asarray(INIT_LRS, jnp.float32)),
            "decay_w": decay_w,
            "decay_b": jnp.log(jnp.asarray(INIT_DECAY, jnp.float32)),
        }

    def init_state(theta: Theta, params: Params) -> OrthogonalState:
        del theta
        (momentum,), second = zero_moments(params, 1)
        log_rate = jax.tree.map(lambda _: jnp.zeros((), jnp.float32), params)
        return OrthogonalState(momentum, second, log_rate, jnp.zeros((), jnp.int32))

    def update(
        theta: Theta, grads: PyTree, state: OrthogonalState, params: Params | None = None
    ) -> tuple[PyTree, OrthogonalState]:
        count = state.count + 1
        embed = jnp.tanh(count.astype(jnp.float32) / timescales)
        updates, (momentum,), second, log_rate = map_leaves(
            lambda g, p, ms, v, lr: _leaf_update(
                theta, g, p, ms, v, lr, count, embed, max_dim, ns_steps
            ),
            grads,
            params,
            (state.momentum,),
            state.second_moment,
            state.log_rate,
            who="orthogonal",
        )
        return updates, OrthogonalState(momentum, second, log_rate, count)

    return LearnedOptimizer(
        name="orthogonal", config=config, init=init, init_state=init_state, update=update
    )


ENTRY = Entry(
    "orthogonal",
    orthogonal_optimizer,
    None,
    "a per-element network correcting a Newton–Schulz (Muon) direction, after Celo2 and μLO",
)
