"""compare_optimizers and format_table: what was tuned, and which tasks diverged."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.core.types import TaskFamily
from metaopt.evaluation.evaluate import sample_tasks
from metaopt.evaluation.report import compare_optimizers, format_table

STIFF, SOFT = 50.0, 0.5


def _two_curvatures() -> TaskFamily:
    """f(x) = a x² / 2 with a drawn from {0.5, 50}: SGD at rate 1 multiplies x by 1 − a.

    At a = 0.5 that is 0.5 (it converges); at a = 50 it is −49, so x overflows float32
    within about 25 steps: which tasks diverge at rate 1 is known from a alone.
    """

    def sample(key):
        return jnp.where(jax.random.bernoulli(key), STIFF, SOFT)

    return TaskFamily(
        name="two_curvatures",
        sample=sample,
        init=lambda a, key: jax.random.normal(key, ()) + 2.0,
        loss=lambda a, x, key: 0.5 * a * x**2,
    )


def test_a_tuned_baseline_that_diverges_names_its_rate_and_tasks():
    family = _two_curvatures()
    k_tune, k_eval = jax.random.key(0), jax.random.key(1)
    num_eval, steps, rate = 16, 40, 1.0
    # A grid of one rate, so the tuned rate is the one whose divergence we compute.
    results = compare_optimizers(
        {"slow": optax.sgd(0.01)}, family, k_tune, k_eval, num_eval_tasks=num_eval,
        num_tune_tasks=8, num_steps=steps, learning_rates=[rate],
    )  # fmt: skip
    curvature = np.asarray(sample_tasks(family, k_eval, num_eval).cfgs)
    # By hand: x_t = (1 − rate·a)^t x_0 is finite after `steps` steps iff |1 − rate·a| ≤ 1.
    expected = [i for i, a in enumerate(curvature) if abs(1 - rate * a) > 1]
    assert 0 < len(expected) < num_eval  # both kinds of task were drawn
    sgd = results["sgd"]
    assert sgd["learning_rate"] == rate
    assert sgd["diverged_task_indices"] == expected
    assert sgd["diverged_tasks"] == len(expected)
    assert results["slow"]["diverged_task_indices"] == []
    listed = ", ".join(map(str, expected))
    text = format_table(results)
    assert f"sgd diverged at learning rate 1 on held-out tasks {listed} (of {num_eval})" in text
    assert f"diverged on {len(expected)} of {num_eval} tasks" in text


def test_the_table_says_how_many_tasks_scored_and_tuned_over_which_rates():
    family = _two_curvatures()
    results = compare_optimizers(
        {}, family, jax.random.key(0), jax.random.key(1), num_eval_tasks=6,
        num_tune_tasks=5, num_steps=3, learning_rates=[1e-3, 1e-2, 0.03],
    )  # fmt: skip
    for name in ("sgd", "nag", "rmsprop", "adam"):
        assert results[name]["num_tune_tasks"] == 5
        assert results[name]["num_eval_tasks"] == 6
        np.testing.assert_allclose(results[name]["learning_rates"], [1e-3, 1e-2, 0.03])
    assert (
        "scored on 6 held-out tasks; baselines' learning rates tuned on 5 other tasks over "
        "3 rates from 0.001 to 0.03"
    ) in format_table(results)
