"""The report suite: problems written as users write them, run only to report.

No design decision, hyperparameter or checkpoint of a learned optimizer may be chosen on
these problems: choices are made on :mod:`metaopt.evaluation.selection`. Each problem is
plain JAX or flax nnx (:mod:`metaopt.evaluation.report_models`), not a metaopt task
family, and is scored by its loss on a test split no step ever trains on.

- ``char_transformer``: an nnx causal transformer (2 blocks of 48 units, 4 heads,
  context 64, batch 8) on the source code of standard-library modules
  (:func:`~metaopt.tasks.text.python_source`), 800 steps;
- ``coordinate_mlp``: a plain-JAX ReLU MLP of 1.06M parameters from Fourier features of
  pixel coordinates to colour, on scikit-learn's ``china.jpg``, 1,000 steps;
- ``shapes_convnet``: an nnx conv net with batch norm (running averages at test) and
  dropout, on 16×16 noisy synthetic shapes of six classes, 800 steps;
- ``logistic_regression``: L2-regularized logistic regression (convex) on scikit-learn's
  breast-cancer table, 20,000 steps.

None of these architecture-and-dataset pairs is in the selection suite or in a
meta-training family: their datasets appear in neither. The meta-training families
(:mod:`metaopt.tasks.transformer_lm`, ``batchnorm_conv``, ``wide_mlp``, and those of
:mod:`metaopt.train.versatile`) read the ``pydoc`` help text, the digits and random
teacher networks; the selection suite the digits, a sine, teacher networks and spirals.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from metaopt.core import checks
from metaopt.evaluation.report_models import (
    CharTransformer,
    ConvNet,
    causal_lm_loss,
    nnx_functions,
)
from metaopt.evaluation.scoring import ScoredProblem, stateless
from metaopt.tasks.text import python_source


def _windows(tokens: jax.Array, starts: jax.Array, length: int) -> jax.Array:
    return jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (length + 1,)))(starts)


def char_transformer(steps: int = 800) -> ScoredProblem:
    """A causal transformer LM on Python source characters, batch 8 of 64."""
    data = python_source()
    train, test = jnp.asarray(data.split("train")), jnp.asarray(data.split("test"))
    seq, batch = 64, 8
    init, apply = nnx_functions(
        lambda rngs: CharTransformer(data.vocab_size, 48, 2, 4, seq, rngs=rngs)
    )
    rng = np.random.default_rng(0)
    fixed_train = _windows(train, jnp.asarray(rng.integers(0, len(train) - seq - 1, 32)), seq)
    fixed_test = _windows(test, jnp.asarray(np.arange(0, len(test) - seq - 1, seq)[:128]), seq)

    def nll(params, state, windows):
        logits, state = apply(params, state, True, windows[:, :-1])
        return causal_lm_loss(logits, windows[:, 1:]), state

    def loss(params, state, key):
        starts = jax.random.randint(key, (batch,), 0, len(train) - seq - 1)
        return nll(params, state, _windows(train, starts, seq))

    return ScoredProblem(
        name="char_transformer",
        description="nnx causal transformer 2×48, 4 heads, context 64, on Python source characters",
        init=init,
        loss=loss,
        train_loss=lambda p, s: nll(p, s, fixed_train)[0],
        heldout_loss=lambda p, s: nll(p, s, fixed_test)[0],
        steps=steps,
        pair=("causal_transformer", "python_source"),
        schedule=True,
    )


def _fourier_features(coords: np.ndarray, num: int) -> np.ndarray:
    freqs = np.random.default_rng(1).normal(scale=10.0, size=(2, num))
    angles = 2 * math.pi * coords @ freqs
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def coordinate_mlp(steps: int = 1000) -> ScoredProblem:
    """A ~1M-parameter MLP from pixel coordinates to colour; one pixel in five is held out."""
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")[::4, ::4].astype(np.float32) / 255.0
    h, w, _ = image.shape
    ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    feats = _fourier_features(np.stack([ys.ravel(), xs.ravel()], axis=1), 64)
    colours = image.reshape(-1, 3)
    order = np.random.default_rng(0).permutation(len(feats))
    n_test = len(feats) // 5
    test = order[:n_test][:2048]  # a fixed sample of the held-out pixels, to keep it cheap
    x_test, y_test = jnp.asarray(feats[test]), jnp.asarray(colours[test])
    x, y = jnp.asarray(feats[order[n_test:]]), jnp.asarray(colours[order[n_test:]])
    sizes = (128, 768, 768, 512, 3)

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        params = [
            {"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]
        return params, ()

    def mse(params, xb, yb):
        for layer in params[:-1]:
            xb = jax.nn.relu(xb @ layer["w"] + layer["b"])
        return jnp.mean((xb @ params[-1]["w"] + params[-1]["b"] - yb) ** 2)

    def loss(params, key):
        idx = jax.random.randint(key, (32,), 0, x.shape[0])
        return mse(params, x[idx], y[idx])

    return ScoredProblem(
        name="coordinate_mlp",
        description="ReLU MLP 128-768-768-512-3 (1.06M params), pixel colour from position",
        init=init,
        loss=stateless(loss),
        train_loss=lambda p, s: mse(p, x[:512], y[:512]),
        heldout_loss=lambda p, s: mse(p, x_test, y_test),
        steps=steps,
        pair=("coordinate_mlp", "china_jpg"),
    )


def shapes(num: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``num`` noisy ``size``² images of six shapes (disk, square, triangle, cross, ring, bar).

    Each shape has a random centre, radius and rotation; Gaussian noise of standard
    deviation 0.4 is added. Labels are the shape's index.

    Example:
      >>> x, y = shapes(12, 0)
      >>> x.shape, sorted(set(y.tolist())) == list(range(6))
      ((12, 16, 16, 1), True)
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num) % 6
    grid = np.arange(size) + 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((num, size, size, 1), np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(3.0, 6.0)
        cy, cx = rng.uniform(r, size - r, 2)
        t = rng.uniform(0, 2 * math.pi)
        u = np.cos(t) * (gx - cx) + np.sin(t) * (gy - cy)
        v = -np.sin(t) * (gx - cx) + np.cos(t) * (gy - cy)
        dist = np.hypot(u, v)
        masks = [
            dist <= r,
            (abs(u) <= 0.8 * r) & (abs(v) <= 0.8 * r),
            (v >= -r / 2) & (v <= r - math.sqrt(3) * abs(u)),
            ((abs(u) <= r / 4) | (abs(v) <= r / 4)) & (abs(u) <= r) & (abs(v) <= r),
            (dist <= r) & (dist >= r / 2),
            (abs(u) <= r) & (abs(v) <= r / 4),
        ]
        images[i, ..., 0] = masks[label] + rng.normal(scale=0.4, size=(size, size))
    return images, labels.astype(np.int32)


def shapes_convnet(steps: int = 800) -> ScoredProblem:
    """An nnx conv net with batch norm and dropout classifying noisy shapes, batch 32."""
    x, y = (jnp.asarray(a) for a in shapes(2400, seed=0))
    x_test, y_test = (jnp.asarray(a) for a in shapes(480, seed=1))
    init, apply = nnx_functions(lambda rngs: ConvNet((8, 16, 32), 6, 16, rngs=rngs))

    def ce(params, state, xb, yb, train, key=None):
        rngs = None if key is None else nnx.Rngs(dropout=key)
        logits, state = apply(params, state, train, xb, rngs=rngs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), state

    def loss(params, state, key):
        k_batch, k_drop = jax.random.split(key)
        idx = jax.random.randint(k_batch, (32,), 0, x.shape[0])
        return ce(params, state, x[idx], y[idx], True, k_drop)

    return ScoredProblem(
        name="shapes_convnet",
        description="nnx conv net 8-16-32, batch norm, dropout 0.3, 16×16 shapes, batch 32",
        init=init,
        loss=loss,
        train_loss=lambda p, s: ce(p, s, x[:300], y[:300], False)[0],
        heldout_loss=lambda p, s: ce(p, s, x_test, y_test, False)[0],
        steps=steps,
        pair=("batchnorm_dropout_convnet", "synthetic_shapes"),
    )


def logistic_regression(steps: int = 20_000) -> ScoredProblem:
    """L2-regularized logistic regression on the breast-cancer table, batch 32: convex."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(table.target))
    feats, target = table.data[order].astype(np.float32), table.target[order].astype(np.float32)
    n_train = 400
    mean, std = feats[:n_train].mean(0), feats[:n_train].std(0)
    feats = (feats - mean) / std
    x, y = jnp.asarray(feats[:n_train]), jnp.asarray(target[:n_train])
    x_test, y_test = jnp.asarray(feats[n_train:]), jnp.asarray(target[n_train:])

    def log_loss(params, xb, yb):
        logits = xb @ params["w"] + params["b"]
        return optax.sigmoid_binary_cross_entropy(logits, yb).mean()

    def loss(params, key):
        idx = jax.random.randint(key, (32,), 0, n_train)
        return log_loss(params, x[idx], y[idx]) + 1e-3 * jnp.sum(params["w"] ** 2)

    return ScoredProblem(
        name="logistic_regression",
        description="logistic regression, L2 1e-3, on 400 breast-cancer rows (169 held out)",
        init=lambda key: ({"w": jnp.zeros(30), "b": jnp.zeros(())}, ()),
        loss=stateless(loss),
        train_loss=lambda p, s: log_loss(p, x, y),
        heldout_loss=lambda p, s: log_loss(p, x_test, y_test),
        steps=steps,
        pair=("logistic_regression", "breast_cancer"),
        muon=False,
        rates=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    )


def report_problems(scale: float = 1.0) -> list[ScoredProblem]:
    """The report suite; ``scale`` multiplies every step count (``--quick`` runs).

    Example:
      >>> [p.steps for p in report_problems(0.01)]
      [8, 10, 8, 200]
    """
    scale = checks.positive_float("scale", scale)
    makers = [
        (char_transformer, 800),
        (coordinate_mlp, 1000),
        (shapes_convnet, 800),
        (logistic_regression, 20_000),
    ]
    return [make(max(1, int(steps * scale))) for make, steps in makers]
