"""Truncated-BPTT meta-gradients against finite differences, in float64.

Each meta-gradient is checked against its own definition, computed by a separate
hand-written Python loop:
- second_order=True: the derivative of the plain meta-loss.
- second_order=False: the derivative that treats every optimizee gradient fed to the
  optimizer as a constant, i.e. of the loop that replays the gradients recorded at
  the unperturbed meta-parameters while params and hidden states follow the
  perturbed ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import learned_optimizer, lstm_optimizer, quadratic_family, tbptt
from metaopt.estimators import trajectory_mean
from tests.conformance.references import reference_for

NUM_STEPS = 3
HORIZON = 8


def estimator(family, lopt, weights=None, second_order=False, truncation=NUM_STEPS):
    return tbptt(
        learned_optimizer(lopt),
        family,
        num_tasks=2,
        truncation=truncation,
        horizon=HORIZON,
        objective=trajectory_mean(weights),
        second_order=second_order,
    )


def setup():
    family = quadratic_family(dim=3, init_scale=0.5)
    lopt = lstm_optimizer(hidden_size=4, num_layers=2, output_scale=0.2)
    theta = lopt.init(jax.random.key(0))
    first = estimator(family, lopt, truncation=2)
    # Start mid-horizon, with non-zero hidden states carried from a first truncation.
    _, batch, _ = first.estimate(theta, first.init(theta, jax.random.key(1)), jax.random.key(2))
    weights = jnp.linspace(0.5, 2.0, HORIZON)
    return family, lopt, theta, batch, weights


def loop_meta_loss(family, lopt, theta, batch, weights, replay=None):
    """Hand-written meta-loss; with ``replay``, the optimizer sees those gradients."""
    total, recorded = 0.0, []
    for task in range(2):
        cfg = jax.tree.map(lambda x, t=task: x[t], batch.cfg)
        inner = jax.tree.map(lambda x, t=task: x[t], batch.inner)
        params, state, t0 = inner.params, inner.opt_state, int(inner.step)
        task_loss, grads_seen = 0.0, []
        for i in range(NUM_STEPS):
            grads = jax.grad(family.loss, argnums=1)(cfg, params, None)
            grads_seen.append(grads)
            fed = grads if replay is None else replay[task][i]
            updates, state = lopt.update(theta, fed, state, params)
            params = params + updates
            task_loss = task_loss + weights[t0 + i] * family.loss(cfg, params, None)
        recorded.append(grads_seen)
        total = total + task_loss / NUM_STEPS
    return total / 2, recorded


def directional_fd(fn, theta, direction, eps=1e-5):
    plus = jax.tree.map(lambda t, d: t + eps * d, theta, direction)
    minus = jax.tree.map(lambda t, d: t - eps * d, theta, direction)
    return (fn(plus) - fn(minus)) / (2 * eps)


@reference_for("tbptt")
@pytest.mark.parametrize("second_order", [False, True])
def test_tbptt_gradient_matches_finite_differences(second_order):
    with jax.enable_x64(True):
        family, lopt, theta, batch, weights = setup()
        theta = jax.tree.map(lambda x: x.astype(jnp.float64), theta)
        batch = jax.tree.map(
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            batch,
        )
        est = estimator(family, lopt, weights, second_order)
        grad, _, metrics = est.estimate(theta, batch, jax.random.key(3))
        loss0, recorded = loop_meta_loss(family, lopt, theta, batch, weights)
        np.testing.assert_allclose(metrics["meta_loss"], loss0, rtol=1e-10)
        replay = None if second_order else recorded

        def meta_loss(th):
            return loop_meta_loss(family, lopt, th, batch, weights, replay)[0]

        for seed in range(3):
            leaves, treedef = jax.tree.flatten(theta)
            keys = jax.random.split(jax.random.key(10 + seed), len(leaves))
            direction = treedef.unflatten(
                [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            )
            analytic = sum(
                jnp.vdot(g, d)
                for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
            )
            numeric = directional_fd(meta_loss, theta, direction)
            # Central differences with eps=1e-5 in float64: truncation error ~eps² and
            # rounding ~1e-16/eps, both far below 1e-6 of the derivative's size.
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_first_and_second_order_gradients_differ():
    family, lopt, theta, batch, _ = setup()
    first, _, _ = estimator(family, lopt).estimate(theta, batch, jax.random.key(3))
    second, _, _ = estimator(family, lopt, second_order=True).estimate(
        theta, batch, jax.random.key(3)
    )
    diff = sum(
        jnp.sum(jnp.abs(a - b))
        for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True)
    )
    assert diff > 1e-4
