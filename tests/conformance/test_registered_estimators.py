"""Every registered estimator passes the same checks, derived from the registry.

A new estimator gets these checks by registering itself (and adding a small recipe to
``recipes.py``, which ``test_recipes.py`` demands): the second jitted meta-step does not
recompile; a checkpoint of its state restores to the same types and bits, so the run
resumes bit-identically; options reject bad values with an error naming the option; a
differentiating estimator equals ``jax.grad`` of a hand-written unroll; and every
estimator has a test elsewhere that checks it against an independent computation
(``references.py``). Each runs with the learner and the smallest task family its traits
call for (a query set for the MAML family, a learned initialization for Reptile, an
episodic learner for the episodic estimator).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.estimators.registry import ESTIMATORS
from metaopt.io.checkpoint import restore_latest, save_checkpoint
from tests.conformance import recipes
from tests.conformance.references import collected, reference_for


def run_of(name, count_compiles) -> recipes.MetaStepRun:
    return recipes.meta_step_run(name, recipes.learner_for(name), count_compiles)


def host(tree) -> list[np.ndarray]:
    """The leaves of ``tree`` as NumPy arrays, typed PRNG keys as their key data."""
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_the_second_meta_step_does_not_recompile(name, count_compiles):
    run = run_of(name, count_compiles)
    assert run.second_compiles == 0
    for metrics in (run.first_metrics, run.second_metrics):
        assert np.isfinite(float(metrics["meta_loss"])) and int(metrics["skipped"]) == 0
    # The meta-gradient reaches θ: finite, and not zero everywhere.
    grads = host(recipes.meta_gradient(run.first))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert any(np.any(g != 0) for g in grads)


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_a_checkpoint_restores_the_state_and_resumes_bit_identically(
    name, tmp_path, count_compiles
):
    run = run_of(name, count_compiles)
    after_one = run.start._replace(
        step=1,
        theta=run.first.theta,
        meta_opt_state=run.first.meta_opt_state,
        estimator_state=run.first.estimator_state,
    )
    save_checkpoint(tmp_path, after_one)
    restored, _, _ = restore_latest(tmp_path, run.start)
    # The restored state has the types the step was compiled for, and the same bits.
    with count_compiles() as compiles:
        resumed, _ = run.step(recipes.as_meta_state(restored), recipes.STEP_KEYS[1])
        jax.block_until_ready(resumed)
    assert compiles[0] == 0
    for a, b in zip(host(resumed), host(run.second), strict=True):
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


# ---------------------------------------------------------------------------------------
# Differentiating estimators against jax.grad of a hand-written unroll.


def fixed_quadratics() -> mo.TaskFamily:
    """One task whatever the key: ½ Σ a (p − c)² to train on and another quadratic held
    out (a query set). The curvature makes an SGD step of 0.01 move the params by a few
    percent, so second derivatives through the inner steps are not negligible."""
    a, c = jnp.array([20.0, 5.0, 10.0]), jnp.array([0.3, -0.2, 0.1])
    a_q, c_q = jnp.array([10.0, 15.0, 5.0]), jnp.array([0.2, 0.1, -0.3])
    return mo.TaskFamily(
        name="fixed_quadratics",
        sample=lambda key: jnp.zeros(()),
        init=lambda cfg, key: jnp.array([1.0, -1.0, 0.5]),
        loss=lambda cfg, p, key: 0.5 * jnp.sum(a * (p - c) ** 2),
        eval_loss=lambda cfg, p, key: 0.5 * jnp.sum(a_q * (p - c_q) ** 2),
    )


def unrolled_objective(theta, learner, family, horizon, objective, second_order):
    """The meta-objective of one task over ``horizon`` inner steps, as a Python loop:
    the loss (``eval_*``: the held-out loss) after each step, their mean or the last."""
    cfg = family.sample(None)
    params = learner.init_params(theta, family, cfg, jax.random.key(0))
    tx = learner.tx(theta)
    state = tx.init(params)
    measure = family.eval_loss if objective.startswith("eval") else family.loss
    values = []
    for _ in range(horizon):
        grads = jax.grad(family.loss, argnums=1)(cfg, params, None)
        if not second_order:
            grads = jax.lax.stop_gradient(grads)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        values.append(measure(cfg, params, None))
    return values[-1] if objective.endswith("final") else sum(values) / horizon


DIFFERENTIATES = ESTIMATORS.names("differentiates")


@reference_for(*DIFFERENTIATES)
@pytest.mark.parametrize("name", DIFFERENTIATES)
def test_a_differentiating_estimator_is_jax_grad_of_a_hand_written_unroll(name):
    # A truncated estimator runs one truncation of the whole horizon from fresh tasks.
    fields = {f.name for f in ESTIMATORS[name].option_fields()}
    whole = {"truncation": recipes.HORIZON, "desync": False}
    family = fixed_quadratics()
    # Steps of ~0.1 (step_mult), so that on these curvatures second derivatives through
    # the inner gradients change the meta-gradient by ~0.5% of its largest entry.
    lopt = mo.mlp_optimizer(hidden_size=4, num_hidden_layers=1, step_mult=0.1)
    est = recipes.build_estimator(
        name, task=family, lopt=lopt, **{k: v for k, v in whole.items() if k in fields}
    )
    theta = recipes.perturbed(est.learner.init(jax.random.key(0)), jax.random.key(1))
    grad, _, metrics = jax.jit(est.estimate)(
        theta, est.init(theta, jax.random.key(2)), jax.random.key(3)
    )
    config = est.config  # what the estimator says it computes

    def reference(second_order):
        def objective(theta):
            return unrolled_objective(
                theta, est.learner, family, recipes.HORIZON, config["objective"], second_order
            )

        return jax.jit(jax.value_and_grad(objective))(theta)

    value, want = reference(config["second_order"])
    # Every task is the same task, so the mean over tasks is that task's value.
    np.testing.assert_allclose(metrics["meta_loss"], value, rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(want))
    assert scale > 0
    # The same float32 operations composed differently (a scan against a Python loop):
    # errors of a few ulps of the largest entries, so compare relative to the largest.
    for got, ref in zip(jax.tree.leaves(grad), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * scale)
    # The check tells first from second order: the other one lies far outside it.
    _, other = reference(not config["second_order"])
    gap = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(want), strict=True)
    )
    assert gap > 1e-3 * scale, (gap, scale)


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_is_checked_against_an_independent_computation(name):
    references = collected()
    assert references.get(name), (
        f"no test checks the estimator {name!r} against an exact gradient, finite "
        "differences or a closed form: mark one with tests.conformance.references.reference_for"
    )
