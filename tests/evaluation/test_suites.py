"""The selection and report suites: held-out losses recomputed independently, kept apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from metaopt.evaluation import report_suite, selection
from metaopt.tasks.datasets import digits


def test_logistic_regression_heldout_loss_is_the_test_rows_log_loss():
    prob = report_suite.logistic_regression()
    params = {"w": jax.random.normal(jax.random.key(0), (30,)), "b": jnp.float32(0.3)}
    table = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(table.target))
    x, y = table.data[order], table.target[order]
    x = (x - x[:400].mean(0)) / x[:400].std(0)  # standardized by the training rows only
    z = x[400:] @ np.asarray(params["w"], np.float64) + 0.3
    want = np.mean(np.logaddexp(0, z) - y[400:] * z)
    # float32 features against float64: ~1e-6 relative.
    assert float(prob.heldout_loss(params, ())) == pytest.approx(want, rel=1e-4)


def test_digits_mlp_heldout_loss_is_the_validation_cross_entropy():
    prob = selection.digits_mlp(10)
    params, _ = prob.init(jax.random.key(1))
    x, y = digits().split("val")
    h = x.reshape(len(x), -1).astype(np.float64)
    p = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]
    for layer in p[:-1]:
        z = h @ layer["w"] + layer["b"]
        h = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    logits = h @ p[-1]["w"] + p[-1]["b"]
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    want = np.mean(logz - logits[np.arange(len(y)), y])
    assert float(prob.heldout_loss(params, ())) == pytest.approx(want, rel=1e-4)


def test_coordinate_mlp_has_about_a_million_parameters():
    prob = report_suite.coordinate_mlp(10)
    params, _ = jax.eval_shape(prob.init, jax.random.key(0))
    by_hand = (128 * 768 + 768) + (768 * 768 + 768) + (768 * 512 + 512) + (512 * 3 + 3)
    assert sum(x.size for x in jax.tree.leaves(params)) == by_hand == 1_084_931


def test_convnet_trains_running_averages_and_tests_with_them():
    prob = report_suite.shapes_convnet(10)
    params, state = prob.init(jax.random.key(0))
    _, trained = jax.jit(prob.loss)(params, state, jax.random.key(1))
    moved = [
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(trained), strict=True)
    ]
    assert any(moved)  # batch norm's running averages moved in training mode
    heldout = jax.jit(prob.heldout_loss)
    a, b = float(heldout(params, trained)), float(heldout(params, trained))
    assert a == b  # evaluation mode: no dropout
    assert a != float(heldout(params, state))  # and it reads the running averages


def test_suites_share_no_architecture_and_dataset_pair():
    report = report_suite.report_problems(0.001)
    held_in = selection.selection_problems(0.001)
    report_data = {p.pair[1] for p in report}
    assert not {p.pair for p in report} & {p.pair for p in held_in}
    # Stronger: no report dataset is read by the selection suite or a meta-training family.
    assert not report_data & ({p.pair[1] for p in held_in} | {"digits", "pydoc_topics"})
    assert len({p.name for p in report + held_in}) == len(report) + len(held_in)
    assert max(p.steps for p in report_suite.report_problems()) == 20_000


def test_shapes_are_balanced():
    x, y = report_suite.shapes(60, seed=3)
    assert np.bincount(y).tolist() == [10] * 6
    assert x.shape == (60, 16, 16, 1) and np.isfinite(x).all()


def test_bad_scale_is_named():
    with pytest.raises(ValueError, match="scale"):
        report_suite.report_problems(0.0)
    with pytest.raises(ValueError, match="scale"):
        selection.selection_problems(-1.0)
