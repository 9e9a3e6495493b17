"""The per-parameter MLP optimizer against a NumPy loop over its definition."""

import jax
import jax.numpy as jnp
import numpy as np

import metaopt as mo
from metaopt.optimizers.mlp import EPS, MOMENTUM_DECAYS, SECOND_MOMENT_DECAY, TIMESCALES


def numpy_update(theta, g, p, momenta, v, count, step_mult=1e-3, exp_mult=1e-3):
    """One tensor's update, written from the module docstring with NumPy in float64."""
    momenta = [b * m + (1 - b) * g for b, m in zip(MOMENTUM_DECAYS, momenta, strict=True)]
    v = SECOND_MOMENT_DECAY * v + (1 - SECOND_MOMENT_DECAY) * g * g
    r = 1 / np.sqrt(v + EPS)
    feats = [g, p, *momenta, *(m * r for m in momenta), np.sqrt(v + 1e-30), g * r]
    x = np.stack([f.ravel() for f in feats], axis=1)  # (coordinates, features)
    x = x / np.sqrt(np.mean(x * x, axis=0) + EPS)
    layers = [{k: np.asarray(a, np.float64) for k, a in lay.items()} for lay in theta["layers"]]
    bias = np.tanh(count / np.asarray(TIMESCALES)) @ np.asarray(theta["step_embed"], np.float64)
    h = np.maximum(x @ layers[0]["w"] + layers[0]["b"] + bias, 0)
    for layer in layers[1:-1]:
        h = np.maximum(h @ layer["w"] + layer["b"], 0)
    out = h @ layers[-1]["w"] + layers[-1]["b"]
    step = out[:, 0] * np.exp(exp_mult * out[:, 1]) * step_mult
    return step.reshape(g.shape), momenta, v


def test_three_updates_match_numpy_on_every_tensor():
    lopt = mo.mlp_optimizer()
    theta = lopt.init(jax.random.key(0))
    # Larger output weights than at initialization, so the update is far from zero and
    # the comparison tests the whole network.
    theta["layers"][-1]["w"] = theta["layers"][-1]["w"] * 50
    shapes = {"w": (4, 3), "b": (3,), "s": ()}
    keys = jax.random.split(jax.random.key(1), 4)
    params = {k: jax.random.normal(keys[i], s) for i, (k, s) in enumerate(shapes.items())}
    state = lopt.init_state(theta, params)
    ref = {k: ([np.zeros(s)] * 3, np.zeros(s)) for k, s in shapes.items()}
    for t in range(3):
        grads = {
            k: jax.random.normal(jax.random.fold_in(keys[3], 10 * t + i), s)
            for i, (k, s) in enumerate(shapes.items())
        }
        updates, state = jax.jit(lopt.update)(theta, grads, state, params)
        for k in shapes:
            g, p = np.asarray(grads[k], np.float64), np.asarray(params[k], np.float64)
            step, momenta, v = numpy_update(theta, g, p, *ref[k], t + 1)
            ref[k] = (momenta, v)
            # float32 against float64 through three layers of 32 units: relative error
            # of a few 1e-6; 1e-4 leaves room and still catches a wrong feature or order.
            np.testing.assert_allclose(updates[k], step, rtol=1e-4, atol=1e-9)
            for got, want in zip(state.momenta, momenta, strict=True):
                np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(state.second_moment[k], v, rtol=1e-5, atol=1e-12)
        params = jax.tree.map(jnp.add, params, updates)
    assert int(state.count) == 3
