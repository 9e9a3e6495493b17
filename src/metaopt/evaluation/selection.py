"""The selection suite: held-in problems for every design, hyperparameter and checkpoint choice.

The six small problems of :mod:`metaopt.evaluation.suite`, each now scored by its loss on
data it never trains on: the digits' validation split, fresh points of a regression
teacher, noisy samples between the training points of a curve, held-out points of the
spirals. Fewer steps than the old suite, so that a candidate and its baselines run in a
few minutes on two cores. The report suite (:mod:`metaopt.evaluation.report_suite`)
shares no architecture-and-dataset pair with it.
"""

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.evaluation.scoring import ScoredProblem, stateless
from metaopt.evaluation.suite import _apply, _chunks, _dense, _minibatch
from metaopt.tasks.conv import conv_forward
from metaopt.tasks.datasets import digits


def _flat(split: str) -> tuple[jax.Array, jax.Array]:
    x, y = digits().split(split)
    return jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y)


def digits_mlp(steps: int) -> ScoredProblem:
    """GELU MLP 64-128-128-10 on the digits; scored on the validation split."""
    (x, y), (xv, yv) = _flat("train"), _flat("val")

    def ce(params, xb, yb):
        logits = _apply(params, xb, jax.nn.gelu)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    return ScoredProblem(
        name="digits_mlp_gelu",
        description="GELU MLP 64-128-128-10 classifying the digits, batch 64",
        init=lambda key: (_dense(key, (64, 128, 128, 10)), ()),
        loss=stateless(lambda p, key: ce(p, *_minibatch(x, y, key, 64))),
        train_loss=lambda p, s: ce(p, x, y),
        heldout_loss=lambda p, s: ce(p, xv, yv),
        steps=steps,
        pair=("gelu_mlp", "digits"),
    )


def sine_fit(steps: int) -> ScoredProblem:
    """ReLU MLP fitting 64 noisy samples of sin(3x) + 0.3x; scored on 256 fresh samples."""
    k_x, k_n, k_tx, k_tn = jax.random.split(jax.random.key(4321), 4)

    def samples(kx, kn, n):
        x = jax.random.uniform(kx, (n, 1), minval=-2.0, maxval=2.0)
        return x, jnp.sin(3.0 * x) + 0.3 * x + 0.1 * jax.random.normal(kn, (n, 1))

    (x, y), (xt, yt) = samples(k_x, k_n, 64), samples(k_tx, k_tn, 256)

    def mse(params, xb, yb):
        return jnp.mean((_apply(params, xb, jax.nn.relu) - yb) ** 2)

    return ScoredProblem(
        name="sine_relu_mlp",
        description="ReLU MLP 1-64-64-1 fitting 64 noisy samples of sin(3x) + 0.3x, full batch",
        init=lambda key: (_dense(key, (1, 64, 64, 1)), ()),
        loss=stateless(lambda p, key: mse(p, x, y)),
        train_loss=lambda p, s: mse(p, x, y),
        heldout_loss=lambda p, s: mse(p, xt, yt),
        steps=steps,
        pair=("relu_mlp", "noisy_sine"),
    )


def deep_gelu_regression(steps: int) -> ScoredProblem:
    """Deep GELU MLP regressing a sine teacher from 512 points; scored on 1,024 fresh ones."""
    k_x, k_t, k_n = jax.random.split(jax.random.key(1234), 3)
    teacher = _dense(k_t, (16, 32, 32, 1), gain=1.0)

    def samples(k, n):
        kx, kn = jax.random.split(k)
        x = jax.random.normal(kx, (n, 16))
        return x, _apply(teacher, x, jnp.sin) + 0.05 * jax.random.normal(kn, (n, 1))

    (x, y), (xt, yt) = samples(k_x, 512), samples(k_n, 1024)

    def mse(params, xb, yb):
        return jnp.mean((_apply(params, xb, jax.nn.gelu) - yb) ** 2)

    return ScoredProblem(
        name="deep_gelu_regression",
        description="GELU MLP 16-64-64-64-64-1 regressing a sine teacher, 512 points, batch 32",
        init=lambda key: (_dense(key, (16, 64, 64, 64, 64, 1)), ()),
        loss=stateless(lambda p, key: mse(p, *_minibatch(x, y, key, 32))),
        train_loss=lambda p, s: mse(p, x, y),
        heldout_loss=lambda p, s: mse(p, xt, yt),
        steps=steps,
        pair=("deep_gelu_mlp", "sine_teacher"),
    )


def conv_digits(steps: int) -> ScoredProblem:
    """Conv net with batch norm on the digits; scored on the validation split (one batch)."""
    x, y = (jnp.asarray(a) for a in digits().split("train"))
    xv, yv = (jnp.asarray(a) for a in digits().split("val"))

    def init(key):
        keys = jax.random.split(key, 3)
        conv, c_in = [], 1
        for k in keys[:2]:
            w = jax.random.normal(k, (3, 3, c_in, 16)) / jnp.sqrt(9.0 * c_in)
            conv.append({"w": w, "scale": jnp.ones(16), "offset": jnp.zeros(16)})
            c_in = 16
        hidden, out = _dense(keys[2], (64, 32, 10))
        return {"conv": conv, "hidden": hidden, "out": out}, ()

    def ce(params, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(conv_forward(params, xb), yb).mean()

    return ScoredProblem(
        name="conv_digits",
        description="conv net (2 × 16 channels 3×3, batch norm, pooling) on the digits, batch 64",
        init=init,
        loss=stateless(lambda p, key: ce(p, *_minibatch(x, y, key, 64))),
        # Batch norm normalizes by its batch: the training loss is over batches of 128.
        train_loss=lambda p, s: jnp.mean(jax.vmap(lambda i: ce(p, x[i], y[i]))(_chunks(len(x)))),
        heldout_loss=lambda p, s: ce(p, xv, yv),
        steps=steps,
        pair=("batchnorm_convnet", "digits"),
    )


def autoencoder(steps: int) -> ScoredProblem:
    """Tanh autoencoder 64-32-8-32-64 on the digits; scored on the validation split."""
    (x, _), (xv, _) = _flat("train"), _flat("val")

    def mse(params, xb):
        return jnp.mean((_apply(params, xb, jnp.tanh) - xb) ** 2)

    return ScoredProblem(
        name="digits_autoencoder",
        description="tanh autoencoder 64-32-8-32-64 reconstructing the digits, batch 64",
        init=lambda key: (_dense(key, (64, 32, 8, 32, 64), gain=1.0), ()),
        loss=stateless(lambda p, key: mse(p, x[jax.random.randint(key, (64,), 0, len(x))])),
        train_loss=lambda p, s: mse(p, x),
        heldout_loss=lambda p, s: mse(p, xv),
        steps=steps,
        pair=("tanh_autoencoder", "digits"),
    )


def spirals(steps: int) -> ScoredProblem:
    """Two noisy spirals, 200 training points; scored on 400 points drawn the same way."""

    def samples(key, n):
        k_t, k_n = jax.random.split(key)
        t = jax.random.uniform(k_t, (n,), minval=0.25, maxval=3.0) * jnp.pi
        arm = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) / (3 * jnp.pi)
        x = jnp.concatenate([arm, -arm]) + 0.03 * jax.random.normal(k_n, (2 * n, 2))
        return x, jnp.concatenate([jnp.zeros(n), jnp.ones(n)])

    (x, y), (xt, yt) = samples(jax.random.key(7), 100), samples(jax.random.key(8), 200)

    def bce(params, xb, yb):
        return optax.sigmoid_binary_cross_entropy(_apply(params, xb, jnp.tanh)[:, 0], yb).mean()

    return ScoredProblem(
        name="two_spirals",
        description="tanh MLP 2-32-32-1 separating two noisy spirals, logistic loss, full batch",
        init=lambda key: (_dense(key, (2, 32, 32, 1), gain=1.0), ()),
        loss=stateless(lambda p, key: bce(p, x, y)),
        train_loss=lambda p, s: bce(p, x, y),
        heldout_loss=lambda p, s: bce(p, xt, yt),
        steps=steps,
        pair=("tanh_mlp", "spirals"),
    )


def selection_problems(scale: float = 1.0) -> list[ScoredProblem]:
    """The selection suite; ``scale`` multiplies every step count.

    Example:
      >>> [p.steps for p in selection_problems()]
      [1000, 1000, 2000, 500, 2000, 1000]
    """
    scale = checks.positive_float("scale", scale)
    makers = [
        (digits_mlp, 1000),
        (sine_fit, 1000),
        (deep_gelu_regression, 2000),
        (conv_digits, 500),
        (autoencoder, 2000),
        (spirals, 1000),
    ]
    return [make(max(1, int(steps * scale))) for make, steps in makers]
