"""Every registered estimator passes the same checks, derived from the registry.

A new estimator gets these checks by registering itself: no recompilation on the second
meta-step, a checkpointed run that resumes bit-identically, and options that reject bad
values with an error naming the option. Each runs on the smallest problem its traits
allow (a query set for MAML, a learned initialization for Reptile, an episodic learner
for the episodic estimator).
"""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.estimators.options import RunSpec
from metaopt.estimators.registry import ESTIMATORS
from metaopt.io.checkpoint import restore_latest, save_checkpoint
from metaopt.train.loop import init_meta_train_state, meta_train


def tiny(name: str):
    """The estimator ``name`` on a tiny problem its traits accept, with its default options."""
    entry = ESTIMATORS[name]
    if "episodic" in entry.traits:
        from metaopt.learners.registry import LEARNERS
        from metaopt.tasks.datasets import digits

        family = mo.fewshot_family(digits(), classes=range(5), ways=2, shots=1, query_shots=2)
        learner = LEARNERS[LEARNERS.names("episodic")[0]].build(None, family, None)
    elif "query" in entry.traits or "initialization" in entry.traits:
        family = mo.sinusoid_family(shots=2, hidden_sizes=(4,))
        learner = mo.learned_initialization(family, optax.sgd(0.01))
    else:
        family = mo.quadratic_family(dim=3)
        learner = mo.learned_optimizer(mo.mlp_optimizer(hidden_size=4))
    options = entry.make_options({"truncation": 2} if "truncated" in entry.traits else {})
    return entry.build(learner, family, RunSpec(num_tasks=2, horizon=4), options)


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_the_second_meta_step_does_not_recompile(name, count_compiles):
    est = tiny(name)
    meta_opt = optax.adam(1e-3)
    theta = est.learner.init(jax.random.key(0))
    step = jax.jit(mo.make_meta_step(est, meta_opt))
    state = mo.MetaState(theta, meta_opt.init(theta), est.init(theta, jax.random.key(1)))
    state, _ = step(state, jax.random.key(2))
    with count_compiles() as compiles:
        state, metrics = step(state, jax.random.key(3))
        jax.block_until_ready(state)
    assert compiles[0] == 0
    assert np.isfinite(float(metrics["meta_loss"]))


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_a_checkpointed_run_resumes_bit_identically(name, tmp_path):
    est = tiny(name)
    key = jax.random.key(4)
    meta_opt = optax.adam(1e-2)
    straight = meta_train(est, key, num_steps=4, meta_optimizer=meta_opt, progress=False)
    half = meta_train(est, key, num_steps=2, meta_optimizer=meta_opt, progress=False)
    save_checkpoint(tmp_path, half.state)
    template = init_meta_train_state(est, key, meta_optimizer=meta_opt)
    restored, _, _ = restore_latest(tmp_path, template)
    resumed = meta_train(
        est, key, num_steps=4, meta_optimizer=meta_opt, state=restored, progress=False
    )
    for a, b in zip(
        jax.tree.leaves(straight.state.theta), jax.tree.leaves(resumed.state.theta), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def bad_values(field: dataclasses.Field) -> list:
    """Values the field's declared check or choices must refuse."""
    if field.metadata.get("choices"):
        return ["no_such_choice"]
    if isinstance(field.default, bool):
        return ["yes"]
    if field.metadata.get("check") is not None:
        return [-1, float("nan")] if isinstance(field.default, float) else [-1, 0]
    return []


CASES = [
    (entry.name, f.name, value)
    for entry in ESTIMATORS.values()
    for f in entry.option_fields()
    for value in bad_values(f)
]


@pytest.mark.parametrize("name, option, value", CASES)
def test_bad_option_values_are_errors_naming_the_option(name, option, value):
    with pytest.raises((TypeError, ValueError), match=option):
        ESTIMATORS[name].make_options({option: value})
