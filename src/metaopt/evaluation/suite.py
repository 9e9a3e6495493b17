"""A held-out suite: ordinary small training problems that no metaopt task family covers.

Each problem is what a user would write: a model, a loss on minibatches and a full-data
loss to report, trained for a fixed number of steps (up to 10,000). An optimizer is
judged by its final full-data loss against Adam at its default rate (1e-3) and Adam at
the rate tuned per problem on a separate seed. No problem here is in the meta-training
distribution of :mod:`metaopt.train.versatile`: their architectures (GELU, deeper nets,
conv nets, an autoencoder, a binary classifier), losses and data differ.
"""

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.types import Params
from metaopt.evaluation.evaluate import log_grid
from metaopt.tasks.conv import conv_forward
from metaopt.tasks.datasets import digits

# Half-decades from 1e-4 to 10^-0.5 ≈ 0.32.
ADAM_GRID = tuple(float(x) for x in log_grid(1e-4, 10**-0.5, 8))


class TrainingProblem(NamedTuple):
    """One training problem.

    Attributes:
      name: identifier.
      description: one line for reports.
      init: ``init(key) -> params``.
      loss: ``loss(params, key) -> scalar`` on a minibatch drawn from ``key``.
      eval_loss: ``eval_loss(params) -> scalar`` on the whole training data, reported.
      steps: training steps.
    """

    name: str
    description: str
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, jax.Array], jax.Array]
    eval_loss: Callable[[Params], jax.Array]
    steps: int


def _dense(key: jax.Array, sizes: Sequence[int], gain: float = 2.0) -> list[dict]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) * math.sqrt(gain / a), "b": jnp.zeros((b,))}
        for k, (a, b) in zip(keys, itertools.pairwise(sizes), strict=True)
    ]


def _apply(params: list[dict], x: jax.Array, act: Callable) -> jax.Array:
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _minibatch(x: jax.Array, y: jax.Array, key: jax.Array, size: int):
    idx = jax.random.randint(key, (size,), 0, x.shape[0])
    return x[idx], y[idx]


def _digits_mlp(steps: int) -> TrainingProblem:
    x, y = digits().split("train")
    x = jnp.asarray(x.reshape(len(x), -1))
    y = jnp.asarray(y)
    sizes = (64, 128, 128, 10)

    def ce(params, xb, yb):
        logits = _apply(params, xb, jax.nn.gelu)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    return TrainingProblem(
        name="digits_mlp_gelu",
        description="GELU MLP 64-128-128-10 classifying the digits, batch 64",
        init=lambda key: _dense(key, sizes),
        loss=lambda p, key: ce(p, *_minibatch(x, y, key, 64)),
        eval_loss=lambda p: ce(p, x, y),
        steps=steps,
    )


def _sine_fit(steps: int) -> TrainingProblem:
    x = jnp.linspace(-2.0, 2.0, 256)[:, None]
    y = jnp.sin(3.0 * x) + 0.3 * x

    def mse(params):
        return jnp.mean((_apply(params, x, jax.nn.relu) - y) ** 2)

    return TrainingProblem(
        name="sine_relu_mlp",
        description="ReLU MLP 1-64-64-1 fitting sin(3x) + 0.3x on 256 points, full batch",
        init=lambda key: _dense(key, (1, 64, 64, 1)),
        loss=lambda p, key: mse(p),
        eval_loss=mse,
        steps=steps,
    )


def _deep_gelu_regression(steps: int) -> TrainingProblem:
    k_x, k_t, k_n = jax.random.split(jax.random.key(1234), 3)
    x = jax.random.normal(k_x, (512, 16))
    teacher = _dense(k_t, (16, 32, 32, 1), gain=1.0)
    y = _apply(teacher, x, jnp.sin) + 0.05 * jax.random.normal(k_n, (512, 1))

    def mse(params, xb, yb):
        return jnp.mean((_apply(params, xb, jax.nn.gelu) - yb) ** 2)

    return TrainingProblem(
        name="deep_gelu_regression",
        description="GELU MLP 16-64-64-64-64-1 regressing a sine teacher, 512 points, batch 32",
        init=lambda key: _dense(key, (16, 64, 64, 64, 64, 1)),
        loss=lambda p, key: mse(p, *_minibatch(x, y, key, 32)),
        eval_loss=lambda p: mse(p, x, y),
        steps=steps,
    )


def _conv_digits(steps: int) -> TrainingProblem:
    x, y = digits().split("train")
    x, y = jnp.asarray(x), jnp.asarray(y)
    channels = (16, 16)

    def init(key):
        keys = jax.random.split(key, len(channels) + 2)
        conv, c_in = [], 1
        for k, c in zip(keys, channels, strict=False):
            w = jax.random.normal(k, (3, 3, c_in, c)) / math.sqrt(9 * c_in)
            conv.append({"w": w, "scale": jnp.ones((c,)), "offset": jnp.zeros((c,))})
            c_in = c
        flat = 2 * 2 * channels[-1]
        hidden, out = _dense(keys[-1], (flat, 32, 10))
        return {"conv": conv, "hidden": hidden, "out": out}

    def ce(params, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(conv_forward(params, xb), yb).mean()

    return TrainingProblem(
        name="conv_digits",
        description="conv net (2 × 16 channels 3×3, batch norm, pooling) on the digits, batch 64",
        init=init,
        loss=lambda p, key: ce(p, *_minibatch(x, y, key, 64)),
        # Batch norm normalizes by the statistics of its batch, so the reported loss is
        # the mean over batches of 128 (the first 1,152 examples, nine whole batches).
        eval_loss=lambda p: jnp.mean(jax.vmap(lambda i: ce(p, x[i], y[i]))(_chunks(len(x)))),
        steps=steps,
    )


def _chunks(n: int, size: int = 128) -> jax.Array:
    count = n // size
    return jnp.arange(count * size).reshape(count, size)


def _autoencoder(steps: int) -> TrainingProblem:
    x, _ = digits().split("train")
    x = jnp.asarray(x.reshape(len(x), -1))
    sizes = (64, 32, 8, 32, 64)

    def mse(params, xb):
        return jnp.mean((_apply(params, xb, jnp.tanh) - xb) ** 2)

    return TrainingProblem(
        name="digits_autoencoder",
        description="tanh autoencoder 64-32-8-32-64 reconstructing the digits, batch 64",
        init=lambda key: _dense(key, sizes, gain=1.0),
        loss=lambda p, key: mse(p, x[jax.random.randint(key, (64,), 0, x.shape[0])]),
        eval_loss=lambda p: mse(p, x),
        steps=steps,
    )


def _spirals(steps: int) -> TrainingProblem:
    t = jnp.linspace(0.25, 3.0, 200) * jnp.pi
    arm = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) / (3 * jnp.pi)
    x = jnp.concatenate([arm, -arm])
    y = jnp.concatenate([jnp.zeros(200), jnp.ones(200)])

    def bce(params):
        logits = _apply(params, x, jnp.tanh)[:, 0]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    return TrainingProblem(
        name="two_spirals",
        description="tanh MLP 2-32-32-1 separating two spirals, logistic loss, full batch",
        init=lambda key: _dense(key, (2, 32, 32, 1), gain=1.0),
        loss=lambda p, key: bce(p),
        eval_loss=bce,
        steps=steps,
    )


def heldout_problems(scale: float = 1.0) -> list[TrainingProblem]:
    """The held-out suite; ``scale`` multiplies every step count (for quick checks).

    Example:
      >>> [p.steps for p in heldout_problems()]
      [2000, 3000, 10000, 2000, 10000, 5000]
    """
    scale = checks.positive_float("scale", scale)
    makers = [
        (_digits_mlp, 2000),
        (_sine_fit, 3000),
        (_deep_gelu_regression, 10000),
        (_conv_digits, 2000),
        (_autoencoder, 10000),
        (_spirals, 5000),
    ]
    return [make(max(1, int(steps * scale))) for make, steps in makers]


def train_curve(
    problem: TrainingProblem, tx: optax.GradientTransformation, key: jax.Array, *, points: int = 50
) -> jax.Array:
    """Full-data losses at ``points`` evenly spaced steps of training with ``tx``.

    The last point is after the final step. The run is one ``lax.scan``: nothing leaves
    the device until the end.

    Example:
      >>> import jax, optax
      >>> p = heldout_problems(scale=0.01)[1]
      >>> curve = train_curve(p, optax.adam(1e-3), jax.random.key(0), points=5)
      >>> curve.shape, bool(curve[-1] < curve[0])
      ((5,), True)
    """
    key = checks.prng_key("key", key)
    points = checks.positive_int("points", points)
    points = min(points, problem.steps)
    tx = optax.with_extra_args_support(tx)
    k_init, k_run = jax.random.split(key)
    params = problem.init(k_init)
    state = tx.init(params)

    def step(carry, k):
        params, state = carry
        value, grads = jax.value_and_grad(problem.loss)(params, k)
        updates, state = tx.update(grads, state, params, value=value)
        return (optax.apply_updates(params, updates), state), None

    # ``points`` chunks of equal length; the remainder runs first.
    per_chunk, rest = divmod(problem.steps, points)
    first = jax.random.split(jax.random.fold_in(k_run, 1), rest)
    carry, _ = jax.lax.scan(step, (params, state), first)

    def chunk(carry, k):
        carry, _ = jax.lax.scan(step, carry, jax.random.split(k, per_chunk))
        return carry, problem.eval_loss(carry[0])

    _, curve = jax.lax.scan(chunk, carry, jax.random.split(k_run, points))
    return curve


def __getattr__(name: str):
    # ``Problem`` shared its name with metaopt.diagnostics.Problem, an unrelated idea.
    if name == "Problem":
        warnings.warn(
            "metaopt.evaluation.suite.Problem is now TrainingProblem",
            DeprecationWarning,
            stacklevel=2,
        )
        return TrainingProblem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
