"""Bad input gets a clear error of a fitting type that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.core.unroll import init_inner


@pytest.fixture
def lstm():
    lopt = mo.lstm_optimizer(hidden_size=4)
    return lopt, lopt.init(jax.random.key(0))


@pytest.mark.parametrize(
    "params",
    [jnp.arange(3), {"a": jnp.ones(2), "b": jnp.ones(2, jnp.int32)}, jnp.ones(2, jnp.complex64)],
)
def test_integer_or_complex_params_are_rejected(lstm, params):
    lopt, theta = lstm
    with pytest.raises(TypeError, match="params"):
        mo.as_optax(lopt, theta).init(params)


def test_integer_grads_are_rejected(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init(jnp.ones(3))
    with pytest.raises(TypeError, match="grads"):
        tx.update(jnp.ones(3, jnp.int32), state)


def test_grads_with_other_tree_structure_are_rejected(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init({"w": jnp.ones(3), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match="grads has tree structure"):
        tx.update({"w": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="grads leaf of shape"):
        tx.update({"w": jnp.ones(4), "b": jnp.ones(2)}, state)


def test_structure_error_is_raised_under_jit_too(lstm):
    lopt, theta = lstm
    tx = mo.as_optax(lopt, theta)
    state = tx.init([jnp.ones(3)])
    with pytest.raises(ValueError, match="grads"):
        jax.jit(tx.update)([jnp.ones(3), jnp.ones(3)], state)


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (mo.lstm_optimizer, {"hidden_size": 0}, "hidden_size"),
        (mo.lstm_optimizer, {"num_layers": -1}, "num_layers"),
        (mo.lstm_optimizer, {"output_scale": 0.0}, "output_scale"),
        (mo.lstm_optimizer, {"log_and_sign_p": -2.0}, "log_and_sign_p"),
        (mo.quadratic_family, {"dim": 0}, "dim"),
        (mo.quadratic_family, {"dim": -3}, "dim"),
        (mo.quadratic_family, {"init_scale": float("nan")}, "init_scale"),
        (mo.estimators.constant_schedule, {"horizon": 0}, "horizon"),
        (mo.estimators.log_uniform_schedule, {"min_horizon": 0, "max_horizon": 5}, "min_horizon"),
        (mo.estimators.log_uniform_schedule, {"min_horizon": 10, "max_horizon": 5}, "min_horizon"),
        (mo.evaluation.log_grid, {"low": 0.0, "high": 1.0, "num": 3}, "low"),
    ],
)
def test_nonpositive_sizes_are_rejected(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


def test_non_integer_size_is_a_type_error():
    with pytest.raises(TypeError, match="hidden_size"):
        mo.lstm_optimizer(hidden_size=2.5)
    with pytest.raises(TypeError, match="dim"):
        mo.quadratic_family(dim="10")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_tasks": -1}, "num_tasks"),
        ({"truncation": 0}, "truncation"),
        ({"horizon": -10}, "horizon"),
        ({"horizon": 10, "truncation": 20}, "truncation"),
        ({"objective": mo.estimators.trajectory_mean(jnp.ones(3))}, "weights"),
    ],
)
def test_estimators_reject_bad_sizes(lstm, kwargs, name):
    lopt, _ = lstm
    args = dict(num_tasks=2, truncation=5, horizon=10) | kwargs
    for factory in (mo.tbptt, mo.es, mo.pes, mo.nres):
        with pytest.raises(ValueError, match=name):
            factory(mo.learned_optimizer(lopt), mo.quadratic_family(), **args)


def test_meta_train_rejects_bad_sizes(lstm):
    lopt, _ = lstm
    est = mo.tbptt(mo.learned_optimizer(lopt), mo.quadratic_family(), num_tasks=2, truncation=5)
    with pytest.raises(ValueError, match="num_steps"):
        mo.meta_train(est, jax.random.key(0), num_steps=0, progress=False)
    with pytest.raises(ValueError, match="validate_every"):
        mo.meta_train(
            est,
            jax.random.key(0),
            num_steps=2,
            validate=lambda th: 0.0,
            validate_every=0,
            progress=False,
        )


def test_evaluation_rejects_bad_sizes_and_grids():
    fam = mo.quadratic_family()
    with pytest.raises(ValueError, match="num_tasks"):
        mo.evaluate(optax.sgd(0.1), fam, jax.random.key(0), num_tasks=0)
    with pytest.raises(ValueError, match="num_steps"):
        mo.evaluate(optax.sgd(0.1), fam, jax.random.key(0), num_steps=-1)
    with pytest.raises(ValueError, match="learning_rates"):
        mo.evaluation.tune_learning_rate(optax.sgd, fam, jax.random.key(0), [])
    with pytest.raises(ValueError, match="learning_rates"):
        mo.evaluation.tune_learning_rate(optax.sgd, fam, jax.random.key(0), [0.1, -1.0])


def test_a_horizon_that_is_not_a_multiple_of_the_truncation_replaces_tasks_mid_truncation(lstm):
    lopt, _ = lstm
    est = mo.tbptt(
        mo.learned_optimizer(lopt), mo.quadratic_family(dim=2), num_tasks=2, truncation=3, horizon=7
    )
    result = mo.meta_train(est, jax.random.key(0), num_steps=6, progress=False)
    # 18 inner steps per task: one horizon of 7, a second of 7, and 4 steps of a third.
    assert np.asarray(result.state.estimator_state.inner.step).tolist() == [4, 4]
    assert all(np.isfinite(h["meta_loss"]) for h in result.history)
    assert result.function_steps_per_second == pytest.approx(6 * 3 * 2 / result.seconds)


def small_estimator_args():
    learner = mo.learned_optimizer(mo.mlp_optimizer())
    return learner, mo.quadratic_family(dim=3)


@pytest.mark.parametrize("factory", [mo.es, mo.pes, mo.nres])
@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"num_perturbations": 0}, ValueError, "num_perturbations"),
        ({"std": -0.1}, ValueError, "std"),
        ({"std": 0.0}, ValueError, "std"),
        ({"std": float("nan")}, ValueError, "std"),
        ({"std": "big"}, TypeError, "std"),
    ],
)
def test_evolution_strategies_reject_bad_settings(factory, kwargs, error, name):
    learner, family = small_estimator_args()
    with pytest.raises(error, match=name):
        factory(learner, family, num_tasks=2, truncation=5, horizon=10, **kwargs)


def test_a_truncation_longer_than_the_shortest_horizon_of_the_schedule_is_rejected():
    learner, family = small_estimator_args()
    schedule = mo.estimators.log_uniform_schedule(10, 1000)
    for factory in (mo.tbptt, mo.es, mo.pes, mo.nres):
        with pytest.raises(ValueError, match=r"truncation \(20\).*shortest horizon \(10\)"):
            factory(learner, family, num_tasks=2, truncation=20, horizon=schedule)


def test_an_unknown_remat_policy_or_estimator_is_named():
    learner, family = small_estimator_args()
    with pytest.raises(ValueError, match="remat"):
        mo.full_bptt(learner, family, num_tasks=2, horizon=10, remat="sometimes")
    with pytest.raises(ValueError, match="remat"):
        mo.tbptt(learner, family, num_tasks=2, truncation=5, remat="sometimes")
    from metaopt.train.config import TrainConfig

    with pytest.raises(ValueError, match="estimator must be one of"):
        TrainConfig(estimator="reinforce")


def test_a_lopt_where_a_learner_belongs_is_named():
    lopt = mo.mlp_optimizer()
    with pytest.raises(TypeError, match="learner must be a MetaLearner"):
        mo.pes(lopt, mo.quadratic_family(), num_tasks=2, truncation=5)


def test_a_held_out_objective_needs_eval_loss():
    learner, family = small_estimator_args()
    with pytest.raises(ValueError, match="eval_loss"):
        mo.pes(learner, family, num_tasks=2, truncation=5, objective=mo.estimators.held_out())


def test_negative_num_steps_is_rejected_before_tracing():
    fam = mo.quadratic_family(dim=2)
    state = init_inner(fam, optax.sgd(0.1), fam.sample(jax.random.key(0)), jax.random.key(1))
    cfg = fam.sample(jax.random.key(0))
    with pytest.raises(ValueError, match="num_steps must be a non-negative integer, got -1"):
        mo.unroll(fam, optax.sgd(0.1), cfg, state, jax.random.key(2), num_steps=-1)
    with pytest.raises(TypeError, match="num_steps"):
        mo.unroll(fam, optax.sgd(0.1), cfg, state, jax.random.key(2), num_steps=2.5)


@pytest.mark.parametrize(
    "key", [0, "seed", np.zeros(3, np.uint32), jax.random.split(jax.random.key(0))]
)
def test_a_key_that_is_not_a_prng_key_is_named(key):
    learner, family = small_estimator_args()
    est = mo.tbptt(learner, family, num_tasks=2, truncation=5, horizon=10)
    with pytest.raises(TypeError, match="key must be a"):
        mo.meta_train(est, key, num_steps=2, progress=False)


def test_a_raw_uint32_key_is_accepted_like_a_typed_one():
    learner, family = small_estimator_args()
    est = mo.tbptt(learner, family, num_tasks=2, truncation=5, horizon=10)
    raw = mo.meta_train(est, jax.random.PRNGKey(3), num_steps=1, progress=False)
    typed = mo.meta_train(est, jax.random.key(3), num_steps=1, progress=False)
    for a, b in zip(
        jax.tree.leaves(raw.last_theta), jax.tree.leaves(typed.last_theta), strict=True
    ):
        np.testing.assert_array_equal(a, b)
