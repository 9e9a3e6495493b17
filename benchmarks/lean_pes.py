"""A lean PES written in plain JAX, as a user would write it without metaopt.

The reference for ``estimator_throughput.py``: persistent evolution strategies (Vicol,
Metz and Sohl-Dickstein 2021) meta-training the per-parameter MLP optimizer of
``metaopt.mlp_optimizer`` (the same features, layers and update) on 10-d quadratics,
with antithetic pairs that persist across truncations, the trajectory-mean objective
measured after each update, tasks replaced when they reach their horizon, and Adam on
θ. It knows its problem: every task starts together, so one counter says when all are
replaced; θ is one flat vector; the loss and its gradient are written by hand.
Nothing here is imported from metaopt except the optimizer's constants and θ's
initial value, so the two implementations share only the mathematics.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from metaopt.optimizers.mlp import EPS, MOMENTUM_DECAYS, SECOND_MOMENT_DECAY, TIMESCALES


class LeanState(NamedTuple):
    """Everything the lean PES carries between meta-steps."""

    theta: jax.Array  # flat θ
    opt_state: optax.OptState
    w: jax.Array  # (pairs, dim, dim) each pair's quadratic
    y: jax.Array  # (pairs, dim)
    p: jax.Array  # (2 * pairs, dim): θ+ε trajectories, then θ−ε
    m: jax.Array  # (2 * pairs, momenta, dim)
    v: jax.Array  # (2 * pairs, dim)
    t: jax.Array  # inner steps since the tasks started (all tasks together)
    accum: jax.Array  # (pairs, D) accumulated ε


def mlp_step(layers, step_embed, count, g, p, m, v, exp_mult=1e-3, step_mult=1e-3):
    """The MLP optimizer's update of one trajectory's coordinates."""
    decays = jnp.asarray(MOMENTUM_DECAYS)[:, None]
    m = decays * m + (1 - decays) * g
    v = SECOND_MOMENT_DECAY * v + (1 - SECOND_MOMENT_DECAY) * g * g
    rsqrt = jax.lax.rsqrt(v + EPS)
    x = jnp.concatenate(
        [g[None], p[None], m, m * rsqrt, jnp.sqrt(v + 1e-30)[None], (g * rsqrt)[None]]
    ).T
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=0, keepdims=True) + EPS)
    bias = jnp.tanh(count / jnp.asarray(TIMESCALES)) @ step_embed
    x = jax.nn.relu(x @ layers[0]["w"] + layers[0]["b"] + bias)
    for layer in layers[1:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    out = x @ layers[-1]["w"] + layers[-1]["b"]
    return p + out[:, 0] * jnp.exp(exp_mult * out[:, 1]) * step_mult, m, v


def _tasks(key, pairs, dim):
    """``pairs`` quadratics ‖Wp − y‖² and their initial params, repeated for both signs."""
    kw, ky, kp = jax.random.split(key, 3)
    w = jax.random.normal(kw, (pairs, dim, dim))
    y = jax.random.normal(ky, (pairs, dim))
    p = 0.01 * jax.random.normal(kp, (pairs, dim))
    return w, y, jnp.concatenate([p, p])


def _trajectory(unravel, truncation, unroll):
    """``run(flat θ, w, y, p, m, v, t) -> (p, m, v, mean loss)``: one truncation."""

    def run(theta_flat, w, y, p, m, v, t):
        th = unravel(theta_flat)

        def step(carry, _):
            p, m, v, t = carry
            r = w @ p - y
            p, m, v = mlp_step(th["layers"], th["step_embed"], t + 1.0, 2 * w.T @ r, p, m, v)
            r = w @ p - y
            return (p, m, v, t + 1), r @ r

        (p, m, v, _), measured = jax.lax.scan(
            step, (p, m, v, t), None, length=truncation, unroll=unroll
        )
        return p, m, v, jnp.mean(measured)

    return jax.vmap(run, in_axes=(0, 0, 0, 0, 0, 0, None))


def _fresh(state, key, pairs, dim, horizon):
    """The tasks, trajectories and step count of ``state``, replaced where due."""
    reset = state.t >= horizon
    w, y, p0 = _tasks(key, pairs, dim)
    w, y = jnp.where(reset, w, state.w), jnp.where(reset, y, state.y)
    p = jnp.where(reset, p0, state.p)
    m, v = jnp.where(reset, 0.0, state.m), jnp.where(reset, 0.0, state.v)
    return reset, w, y, p, m, v, jnp.where(reset, 0, state.t)


def lean_pes(theta0, *, pairs=32, dim=10, truncation=20, horizon=100, std=0.01, unroll=2):
    """``(init(key) -> LeanState, meta_step(state, key) -> (state, meta_loss))``."""
    flat0, unravel = ravel_pytree(theta0)
    meta_opt = optax.adam(1e-3)
    run = _trajectory(unravel, truncation, unroll)

    def init(key):
        w, y, p = _tasks(key, pairs, dim)
        zeros = jnp.zeros((2 * pairs, dim))
        m = jnp.zeros((2 * pairs, len(MOMENTUM_DECAYS), dim))
        accum = jnp.zeros((pairs, flat0.size))
        return LeanState(flat0, meta_opt.init(flat0), w, y, p, m, zeros, jnp.zeros((), int), accum)

    def meta_step(s: LeanState, key):
        k_eps, k_new = jax.random.split(key)
        reset, w, y, p, m, v, t = _fresh(s, k_new, pairs, dim, horizon)
        eps = std * jax.random.normal(k_eps, (pairs, flat0.size))
        accum = jnp.where(reset, 0.0, s.accum) + eps
        thetas = jnp.concatenate([s.theta + eps, s.theta - eps])
        ww, yy = jnp.concatenate([w, w]), jnp.concatenate([y, y])
        p, m, v, loss = run(thetas, ww, yy, p, m, v, t)
        grad = (loss[:pairs] - loss[pairs:]) @ accum / (2 * std**2 * pairs)
        updates, opt_state = meta_opt.update(grad, s.opt_state, s.theta)
        theta = optax.apply_updates(s.theta, updates)
        state = LeanState(theta, opt_state, w, y, p, m, v, t + truncation, accum)
        return state, jnp.mean(loss)

    return init, meta_step


def evosax_pes(theta0, *, pairs=32, dim=10, truncation=20, horizon=100, std=0.01, unroll=2):
    """The same meta-step with evosax's ``PersistentES`` holding θ, ξ and Adam.

    Returns ``(init, meta_step)`` as :func:`lean_pes`, or raises ImportError without
    evosax. evosax's ask/tell draws the antithetic population and accumulates ξ; the
    inner problem and its replacement are the user's, as in :func:`lean_pes`.
    """
    from evosax.algorithms import PersistentES

    flat0, unravel = ravel_pytree(theta0)
    strategy = PersistentES(
        2 * pairs,
        theta0,
        optimizer=optax.adam(1e-3),
        std_schedule=optax.constant_schedule(std),
    )
    params = strategy.default_params.replace(T=horizon, K=truncation)
    run = _trajectory(unravel, truncation, unroll)

    def init(key):
        w, y, p = _tasks(key, pairs, dim)
        zeros = jnp.zeros((2 * pairs, dim))
        m = jnp.zeros((2 * pairs, len(MOMENTUM_DECAYS), dim))
        es_state = strategy.init(key, theta0, params)
        return LeanState(flat0, es_state, w, y, p, m, zeros, jnp.zeros((), int), None)

    def meta_step(s: LeanState, key):
        k_ask, k_new, k_tell = jax.random.split(key, 3)
        _, w, y, p, m, v, t = _fresh(s, k_new, pairs, dim, horizon)
        population, es_state = strategy.ask(k_ask, s.opt_state, params)
        flat = jax.vmap(lambda x: ravel_pytree(x)[0])(population)
        ww, yy = jnp.concatenate([w, w]), jnp.concatenate([y, y])
        p, m, v, loss = run(flat, ww, yy, p, m, v, t)
        es_state, _ = strategy.tell(k_tell, population, loss, es_state, params)
        state = LeanState(s.theta, es_state, w, y, p, m, v, t + truncation, None)
        return state, jnp.mean(loss)

    return init, meta_step
