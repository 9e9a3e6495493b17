"""Every registered learned optimizer keeps the protocol's contract, derived from the registry.

Each runs from its small recipe (``recipes.py``) on a pytree with a 4-D convolution
kernel, a matrix and two vectors, with perturbed meta-parameters so that every leaf of θ
matters. ``update`` is compared with itself: compiled once and called again without
recompiling, and after a save/load round trip (the same float32 operations on the same
bits, so bitwise equal). Bad configuration values must be errors that name the option.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt as mo
from metaopt.optimizers.registry import OPTIMIZERS
from tests.conformance import recipes

NAMES = OPTIMIZERS.names()


def make_params(seed: int = 1) -> dict:
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    return {
        "conv": {"w": jax.random.normal(k1, (2, 2, 1, 3)), "b": jax.random.normal(k2, (3,))},
        "dense": {"w": jax.random.normal(k3, (4, 3)), "b": jax.random.normal(k4, (3,))},
    }


def grads_like(params, seed: int):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


def compiled(name: str):
    """``(lopt, perturbed θ, jitted update, trace counter)`` for ``name``, built once."""
    lopt, theta, traces = recipes.jitted_lopt(name)
    return lopt, theta, lopt.update, traces


def run(update, theta, state, params, seeds):
    """The updates of ``update`` for the gradients of ``seeds``, params moving along."""
    out = []
    for seed in seeds:
        updates, state = update(theta, grads_like(params, seed), state, params)
        params = jax.tree.map(jnp.add, params, updates)
        out.append(updates)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_init_and_update_give_finite_updates_shaped_like_the_params(name):
    lopt, theta, update, _ = compiled(name)
    fresh = lopt.init(jax.random.key(0))
    assert jax.tree.leaves(fresh) and all(
        isinstance(x, jax.Array) and x.dtype == jnp.float32 for x in jax.tree.leaves(fresh)
    )
    params = make_params()
    state = lopt.init_state(theta, params)
    (updates,) = run(update, theta, state, params, [0])
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert u.shape == p.shape and u.dtype == p.dtype
        assert bool(jnp.all(jnp.isfinite(u))) and bool(jnp.any(u != 0))


@pytest.mark.parametrize("name", NAMES)
def test_update_is_compiled_once(name, count_compiles):
    lopt, theta, update, traces = compiled(name)
    params = make_params()
    updates, state = update(theta, grads_like(params, 0), lopt.init_state(theta, params), params)
    params = jax.tree.map(jnp.add, params, updates)
    traced = traces[0]
    with count_compiles() as compiles:
        updates, state = update(theta, grads_like(params, 1), state, params)
        jax.block_until_ready(updates)
    assert compiles[0] == 0 and traces[0] == traced
    # The counter is live: a program not compiled before is counted.
    with count_compiles() as compiles:
        jax.jit(lambda x: x * 3)(updates["dense"]["b"])
    assert compiles[0] == 1


@pytest.mark.parametrize("name", NAMES)
def test_a_saved_and_loaded_optimizer_gives_bit_identical_updates(name, tmp_path, count_compiles):
    lopt, theta, update, _ = compiled(name)
    loaded, loaded_theta = mo.load(mo.save(tmp_path / "opt.mopt", lopt, theta))
    assert loaded.name == lopt.name and loaded.config == lopt.config
    params = make_params()
    want = run(update, theta, lopt.init_state(theta, params), params, range(3))
    # The loaded θ has the original's types: the compiled update takes it as it is.
    state = lopt.init_state(loaded_theta, params)
    grads = grads_like(params, 0)
    with count_compiles() as compiles:
        same_theta = [update(loaded_theta, grads, state, params)[0]]
    assert compiles[0] == 0
    rebuilt = jax.jit(loaded.update)
    got = run(rebuilt, loaded_theta, loaded.init_state(loaded_theta, params), params, range(3))
    pairs = zip(jax.tree.leaves([want, same_theta]), jax.tree.leaves([got, got[:1]]), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)
    # θ matters: the unperturbed θ gives other updates, so a lost θ would be caught.
    fresh = lopt.init(jax.random.key(0))
    other = run(update, fresh, lopt.init_state(fresh, params), params, [0])
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(want[0]), strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_give_finite_updates(name):
    lopt, theta, update, _ = compiled(name)
    params = make_params()
    state = lopt.init_state(theta, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):  # also from a state that has seen only zeros
        updates, state = update(theta, zeros, state, params)
        for u in jax.tree.leaves(updates):
            assert bool(jnp.all(jnp.isfinite(u))), (name, u)


def bad_values(value) -> list:
    """Values a positive number option must refuse (None: an unset number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | None):
        return []
    return [-1.0, float("nan")] if isinstance(value, float) else [-1, 0]


def config_cases(name: str) -> list[tuple[str, str, object]]:
    """``(name, key, bad value)`` for every number the factory takes: the recipe's, the
    entry's options and the built optimizer's top-level configuration."""
    entry = OPTIMIZERS[name]
    values = dict(OPTIMIZERS[name].build(**recipes.OPTIMIZER_RECIPES[name]).config)
    values |= {f.name: f.default for f in entry.option_fields()}
    values |= recipes.OPTIMIZER_RECIPES[name]
    return [(name, key, bad) for key, value in values.items() for bad in bad_values(value)]


@pytest.mark.parametrize("name, key, value", [c for n in NAMES for c in config_cases(n)])
def test_bad_config_values_are_errors_naming_the_option(name, key, value):
    recipe = recipes.OPTIMIZER_RECIPES[name]
    with pytest.raises((TypeError, ValueError), match=key):
        OPTIMIZERS[name].build(**(recipe | {key: value}))


@pytest.mark.parametrize("name", NAMES)
def test_every_option_the_command_line_offers_is_a_factory_argument(name):
    # metaopt train passes an entry's options to its factory by name (train/build.py).
    recipe = recipes.OPTIMIZER_RECIPES[name]
    for f in OPTIMIZERS[name].option_fields():
        lopt = OPTIMIZERS[name].build(**(recipe | {f.name: OPTIMIZERS[name].default(f)}))
        assert isinstance(lopt, mo.LearnedOptimizer)
