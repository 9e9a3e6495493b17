"""Classifier task families against NumPy, and datasets passed into jit as arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.core.types import with_data
from metaopt.tasks.classification import (
    logistic_regression_family,
    mixed_mlp_classifier_family,
    mlp_classifier_family,
)
from metaopt.tasks.datasets import from_arrays


@pytest.fixture
def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 2)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(int) + 2 * (x[:, 1, 1] > 0).astype(int)
    return from_arrays(x, y, num_classes=4)


def numpy_loss(params, x, y, act):
    h = x.reshape(len(x), -1).astype(np.float64)
    for layer in params[:-1]:
        h = act(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]))
    logits = h @ np.asarray(params[-1]["w"]) + np.asarray(params[-1]["b"])
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


@pytest.mark.parametrize(
    ("hidden", "activation", "act"),
    [
        ((5,), "sigmoid", lambda z: 1 / (1 + np.exp(-z))),
        ((4, 3), "relu", lambda z: np.maximum(z, 0)),
    ],
)
def test_loss_matches_numpy_on_the_same_minibatch(dataset, hidden, activation, act):
    fam = mlp_classifier_family(
        dataset,
        split="val",
        hidden_sizes=hidden,
        activation=activation,
        batch_size=16,
        init_std=0.5,
    )
    params = fam.init(fam.sample(jax.random.key(0)), jax.random.key(1))
    key = jax.random.key(2)
    idx = np.asarray(jax.random.randint(key, (16,), 0, len(dataset.split("val")[1])))
    x, y = dataset.split("val")
    expected = numpy_loss(params, x[idx], y[idx], act)
    np.testing.assert_allclose(fam.loss(None, params, key), expected, rtol=1e-5)


def test_paper_initialization_has_the_stated_scale(dataset):
    fam = mlp_classifier_family(dataset, hidden_sizes=(200,))
    params = fam.init(None, jax.random.key(0))
    # 1,200 weights from N(0, 0.01²): the sample std is within 10% of 0.01.
    assert abs(float(jnp.std(params[0]["w"])) - 0.01) < 1e-3


def test_logistic_regression_has_no_hidden_layer(dataset):
    params = logistic_regression_family(dataset).init(None, jax.random.key(0))
    assert [p["w"].shape for p in params] == [(6, 4)]


def test_bad_arguments_name_themselves(dataset):
    with pytest.raises(ValueError, match="activation"):
        mlp_classifier_family(dataset, activation="gelu")
    with pytest.raises(ValueError, match="split"):
        mlp_classifier_family(dataset, split="training")
    with pytest.raises(ValueError, match="batch_size"):
        mlp_classifier_family(dataset, batch_size=0)


def test_bound_family_reads_the_data_it_is_given(dataset):
    fam = mlp_classifier_family(dataset, split="train", batch_size=8)
    params = fam.init(None, jax.random.key(0))
    xs, ys = fam.data
    other = (xs * 0.0, ys)
    key = jax.random.key(1)
    zeros_loss = jax.jit(lambda d: with_data(fam, d).loss(None, params, key))(other)
    direct = with_data(fam, other).loss(None, params, key)
    np.testing.assert_allclose(zeros_loss, direct, rtol=1e-6)
    assert not np.isclose(float(zeros_loss), float(fam.loss(None, params, key)))


def test_evaluation_and_meta_training_on_a_dataset_family(dataset):
    train = mlp_classifier_family(dataset, split="train", hidden_sizes=(4,), batch_size=32)
    val = mlp_classifier_family(dataset, split="val", hidden_sizes=(4,), batch_size=32)
    curves = mo.evaluate(optax.adam(0.05), train, jax.random.key(0), num_tasks=4, num_steps=60)
    # The labels are a function of two input coordinates: Adam learns them quickly.
    assert curves[:, -10:].mean() < 0.7 * curves[:, 0].mean()
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=4, log_and_sign_p=10.0))
    est = mo.tbptt(learner, train, num_tasks=2, truncation=5, horizon=10)
    result = mo.meta_train(
        est,
        jax.random.key(1),
        num_steps=4,
        validate=mo.evaluation.validation_loss(
            learner, val, jax.random.key(2), num_tasks=2, num_steps=10
        ),
        validate_every=2,
        progress=False,
    )
    validated = [h["validation_loss"] for h in result.history if "validation_loss" in h]
    assert len(validated) == 2 and np.all(np.isfinite(validated))


NUMPY_ACTIVATIONS = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
}


def test_mixed_family_tasks_are_the_narrow_networks_they_drew(dataset):
    fam = mixed_mlp_classifier_family(dataset, widths=(2, 5), num_layers=2, batch_size=16)
    xs, ys = fam.data
    cfgs = jax.vmap(fam.sample)(jax.random.split(jax.random.key(0), 64))
    # The architecture is data in cfg, so one compiled program serves all of them.
    init, loss = jax.jit(fam.init), jax.jit(fam.loss)
    grad = jax.jit(jax.grad(fam.loss, argnums=1))
    seen = set()
    for i in range(64):
        cfg = jax.tree.map(lambda a, i=i: a[i], cfgs)
        widths = [int(w) for w in cfg["widths"]]
        act = ("sigmoid", "relu", "tanh")[int(cfg["activation"])]
        if (tuple(widths), act) in seen:
            continue
        seen.add((tuple(widths), act))
        params = init(cfg, jax.random.key(i))
        key = jax.random.key(100 + i)
        # The same minibatch by hand, through the narrow network cut out of the wide one.
        idx = np.asarray(jax.random.randint(key, (16,), 0, xs.shape[0]))
        w_in = [xs.shape[1], *widths]
        w_out = [*widths, 4]
        narrow = [
            {"w": np.asarray(p["w"])[:a, :b], "b": np.asarray(p["b"])[:b]}
            for p, a, b in zip(params, w_in, w_out, strict=True)
        ]
        x_batch, y_batch = np.asarray(xs)[idx], np.asarray(ys)[idx]
        expected = numpy_loss(narrow, x_batch, y_batch, NUMPY_ACTIVATIONS[act])
        # float32 against float64 on logits of order 1: 1e-5 relative is a few ulps.
        np.testing.assert_allclose(loss(cfg, params, key), expected, rtol=1e-5)
        grads = grad(cfg, params, key)
        for g, a, b in zip(grads, w_in, w_out, strict=True):
            g_w = np.asarray(g["w"]).copy()
            g_w[:a, :b] = 0
            assert not g_w.any()  # units past the drawn width get exactly zero gradient
    # 64 draws over 2 × 2 widths and 3 activations: all 12 architectures appear.
    assert len(seen) == 12


def test_meta_training_on_a_batch_of_mixed_architectures(dataset):
    fam = mixed_mlp_classifier_family(dataset, widths=(2, 6), batch_size=16)
    learner = mo.learned_optimizer(
        mo.lstm_optimizer(hidden_size=4, num_layers=1, log_and_sign_p=10.0)
    )
    est = mo.tbptt(learner, fam, num_tasks=6, truncation=5, horizon=10)
    result = mo.meta_train(est, jax.random.key(0), num_steps=4, progress=False)
    assert all(np.isfinite(h["meta_loss"]) and h["skipped"] == 0 for h in result.history)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"widths": ()}, "widths"),
        ({"widths": (0, 4)}, "widths"),
        ({"activations": ("swish",)}, "activations"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_mixed_family_rejects_bad_arguments(dataset, kwargs, name):
    with pytest.raises(ValueError, match=name):
        mixed_mlp_classifier_family(dataset, **kwargs)
