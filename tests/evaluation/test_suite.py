"""The held-out suite: its scan-based training loop against a plain Python loop."""

import jax
import numpy as np
import optax
import pytest

from metaopt.evaluation.suite import ADAM_GRID, heldout_problems, train_curve


def python_loop_curve(problem, tx, key, points):
    """The same schedule of keys as ``train_curve``, one step at a time on the host."""
    k_init, k_run = jax.random.split(key)
    params = problem.init(k_init)
    state = tx.init(params)
    per_chunk, rest = divmod(problem.steps, points)
    keys = list(jax.random.split(jax.random.fold_in(k_run, 1), rest))
    for k in jax.random.split(k_run, points):
        keys += [None, *jax.random.split(k, per_chunk)]
    grad = jax.jit(jax.value_and_grad(problem.loss))
    # A None marks the start of a chunk: the full-data loss is recorded at each chunk's end.
    curve, i = [], 0
    for k in keys:
        if k is None:
            if i:
                curve.append(float(problem.eval_loss(params)))
            i += 1
            continue
        _, grads = grad(params, k)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    curve.append(float(problem.eval_loss(params)))
    return np.asarray(curve)


@pytest.mark.parametrize("index", [0, 1, 5])
def test_train_curve_equals_python_loop(index):
    problem = heldout_problems(scale=0.004)[index]
    points = 3
    got = np.asarray(train_curve(problem, optax.adam(3e-3), jax.random.key(7), points=points))
    want = python_loop_curve(problem, optax.adam(3e-3), jax.random.key(7), points)
    # The scan and the eager loop run the same float32 operations, fused differently by
    # XLA; a few ulps per step compound over at most 40 steps.
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_every_problem_trains_with_adam():
    for problem in heldout_problems(scale=0.01):
        curve = np.asarray(train_curve(problem, optax.adam(1e-2), jax.random.key(0), points=2))
        assert np.isfinite(curve).all(), problem.name
        start = float(problem.eval_loss(problem.init(jax.random.split(jax.random.key(0))[0])))
        assert curve[-1] < start, problem.name


def test_suite_is_ordinary_and_long():
    problems = heldout_problems()
    assert len({p.name for p in problems}) == len(problems)
    assert max(p.steps for p in problems) == 10_000
    assert ADAM_GRID[0] == pytest.approx(1e-4) and ADAM_GRID[-1] == pytest.approx(10**-0.5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scale"):
        heldout_problems(scale=0.0)
    problem = heldout_problems(scale=0.001)[1]
    with pytest.raises(ValueError, match="points"):
        train_curve(problem, optax.adam(1e-3), jax.random.key(0), points=0)
    with pytest.raises((TypeError, ValueError), match="key"):
        train_curve(problem, optax.adam(1e-3), 0)
