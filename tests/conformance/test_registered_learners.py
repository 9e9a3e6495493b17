"""Every registered learner passes the same checks, derived from the registry.

Each is built from its small recipe (``recipes.py``) for the small family of the first
registered estimator that can train it (``recipes.estimator_for``: an episodic learner,
the episodic estimator on N-way K-shot episodes; a learned initialization, MAML on
sines; a learned optimizer, the first estimator, on quadratics). θ must be a
pytree of float32 arrays that the learner's pieces accept, and one jitted meta-step of
that estimator must be finite, reach θ and not recompile when called again (the run is
shared with the estimator checks where the pair is the same).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt.core.types import EpisodicLearner, MetaLearner
from metaopt.learners.registry import LEARNERS
from tests.conformance import recipes

NAMES = LEARNERS.names()


def run_of(name, count_compiles) -> recipes.MetaStepRun:
    return recipes.meta_step_run(recipes.estimator_for(name), name, count_compiles)


@pytest.mark.parametrize("name", NAMES)
def test_init_gives_a_pytree_of_float32_arrays_its_pieces_accept(name):
    estimator = recipes.estimator_for(name)
    family = recipes.family(recipes.family_trait(estimator))
    learner = recipes.build_estimator(estimator, name).learner
    theta = learner.init(jax.random.key(0))
    leaves = jax.tree.leaves(theta)
    assert leaves and all(isinstance(x, jax.Array) and x.dtype == jnp.float32 for x in leaves)
    # The same key gives the same θ: it is a function of the key alone.
    again = learner.init(jax.random.key(0))
    for a, b in zip(leaves, jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    cfg = family.sample(jax.random.key(1))
    if isinstance(learner, EpisodicLearner):
        logits = learner.predict(theta, cfg, jax.random.key(2))
        ways = int(np.max(np.asarray(cfg.y_support))) + 1
        assert logits.shape == (len(cfg.y_query), ways)
        assert bool(jnp.all(jnp.isfinite(logits)))
        return
    assert isinstance(learner, MetaLearner)
    # Inner training starts from params shaped like the family's, and θ's rule steps them.
    params = learner.init_params(theta, family, cfg, jax.random.key(2))
    like = family.init(cfg, jax.random.key(2))
    assert jax.tree.structure(params) == jax.tree.structure(like)
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(like), strict=True):
        assert p.shape == q.shape and p.dtype == q.dtype
    tx = learner.tx(theta)
    grads = jax.grad(family.loss, argnums=1)(cfg, params, jax.random.key(3))
    updates, _ = tx.update(grads, tx.init(params), params)
    moved = optax.apply_updates(params, updates)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(moved))


@pytest.mark.parametrize("name", NAMES)
def test_one_meta_step_is_finite_reaches_theta_and_does_not_recompile(name, count_compiles):
    run = run_of(name, count_compiles)
    assert run.second_compiles == 0
    for metrics in (run.first_metrics, run.second_metrics):
        assert np.isfinite(float(metrics["meta_loss"])) and int(metrics["skipped"]) == 0
    grads = jax.tree.leaves(recipes.meta_gradient(run.first))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    assert any(bool(jnp.any(g != 0)) for g in grads)
    # θ moved, and kept its structure and types.
    start, after = run.start.theta, run.second.theta
    assert jax.tree.structure(after) == jax.tree.structure(start)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(start), strict=True)
    )
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(start), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
