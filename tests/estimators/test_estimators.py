"""Every meta-gradient estimator against an independent computation of what it estimates.

The problem is built from the public protocols alone, as a user would: θ is the log
learning rate of plain SGD (a custom :class:`~metaopt.MetaLearner`), and the tasks are
random diagonal quadratics f(x) = ½ Σ a x² with their starting point x0 in the task's
configuration (a custom :class:`~metaopt.TaskFamily`). SGD on them has a closed form,
so every quantity the estimators target can be computed by hand: here by a
hand-written unroll, differentiated with ``jax.grad``, or evaluated in float64 NumPy and
integrated over Gaussian perturbations by Gauss–Hermite quadrature.

The meta-objective is the trajectory mean: after each update the loss at the new
params, weighted 1/K (K the truncation length), summed over a truncation and averaged
over tasks. Summed over the H/K truncations of a horizon H, a task contributes
(1/K) Σ_{t=1..H} f(x_t).

Stochastic estimators (ES, PES) are compared with their targets within a tolerance
derived from their own measured standard error: the estimator is vmapped over G
independent groups of tasks, each group gives one estimate and its own exact target
over the same tasks, and the G differences give the mean error and its standard error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy.polynomial.hermite_e import hermegauss

import metaopt as mo
from metaopt.estimators.common import perturbations
from metaopt.estimators.objectives import trajectory_mean
from metaopt.estimators.truncation import advance, init_tasks
from tests.conformance.references import reference_for

DIM = 4
LOG_LR = float(np.log(0.02))
HORIZON = 100
TRUNCATION = 10


# ---------------------------------------------------------------------------------------
# The problem, from the public protocols.


def diagonal_quadratics() -> mo.TaskFamily:
    """f(x) = ½ Σ a x², a ~ U(0.5, 2) per coordinate; the start x0 is part of the task."""

    def sample(key):
        k_a, k_x = jax.random.split(key)
        return {
            "a": jax.random.uniform(k_a, (DIM,), minval=0.5, maxval=2.0),
            "x0": jax.random.normal(k_x, (DIM,)),
        }

    def init(cfg, key):
        del key
        return cfg["x0"]

    def loss(cfg, params, key):
        del key
        return 0.5 * jnp.sum(cfg["a"] * params**2)

    return mo.TaskFamily(name="diagonal_quadratics", sample=sample, init=init, loss=loss)


def sgd_log_lr(log_lr: float = LOG_LR) -> mo.MetaLearner:
    """θ = {"log_lr": scalar}; the inner optimizer is SGD with learning rate exp(log_lr)."""

    def init(key):
        del key
        return {"log_lr": jnp.asarray(log_lr, jnp.float32)}

    def init_params(theta, family, cfg, key):
        del theta
        return family.init(cfg, key)

    def tx(theta):
        return optax.scale(-jnp.exp(theta["log_lr"]))

    return mo.MetaLearner(name="sgd_log_lr", config={}, init=init, init_params=init_params, tx=tx)


FAMILY = diagonal_quadratics()
LEARNER = sgd_log_lr()
THETA = LEARNER.init(jax.random.key(0))


# ---------------------------------------------------------------------------------------
# Hand-written references.


def unroll_objective(log_lrs, a, x, length, *, stop_start=False, second_order=True):
    """(1/K) Σ_t f(x_t) of SGD on ½ Σ a x², one truncation of ``length`` steps per entry
    of ``log_lrs`` (truncation i uses lr exp(log_lrs[i])), written out by hand.

    ``stop_start`` holds the state at the start of every truncation constant (what
    truncated BPTT differentiates); without ``second_order`` the gradient a·x fed to
    SGD is a constant for differentiation.
    """

    def truncation(x, log_lr):
        lr = jnp.exp(log_lr)
        if stop_start:
            x = jax.lax.stop_gradient(x)

        def step(x, _):
            g = a * x
            if not second_order:
                g = jax.lax.stop_gradient(g)
            x = x - lr * g
            return x, 0.5 * jnp.sum(a * x**2)

        x, losses = jax.lax.scan(step, x, None, length=length)
        return x, jnp.sum(losses) / length

    _, per_truncation = jax.lax.scan(truncation, x, jnp.asarray(log_lrs))
    return jnp.sum(per_truncation)


def per_task_gradient(cfg, horizon=HORIZON, length=TRUNCATION, **kwargs):
    """d/dlog_lr at θ of every task's objective over the whole horizon (``cfg`` with any
    leading task axes), truncation by truncation as :func:`unroll_objective` says."""
    n = horizon // length

    def one(log_lr, a, x0):
        return unroll_objective(jnp.full(n, log_lr), a, x0, length, **kwargs)

    grad = jax.grad(one)
    for _ in range(cfg["a"].ndim - 1):
        grad = jax.vmap(grad, in_axes=(None, 0, 0))
    return grad(THETA["log_lr"], cfg["a"], cfg["x0"])


exact_gradient = jax.jit(
    per_task_gradient, static_argnames=("horizon", "length", "stop_start", "second_order")
)


def np_objective(log_lrs, a, x, length):
    """Float64 NumPy version of :func:`unroll_objective`, broadcasting: ``log_lrs`` is a
    list of arrays of shape (M, 1, 1) (M perturbations), ``a`` and ``x`` are (N, DIM);
    returns (M, N)."""
    a = np.asarray(a, np.float64)
    x = np.broadcast_to(
        np.asarray(x, np.float64), np.broadcast_shapes(np.shape(log_lrs[0]), a.shape)
    )
    total = 0.0
    for log_lr in log_lrs:
        lr = np.exp(log_lr)
        acc = 0.0
        for _ in range(length):
            x = x - lr * a * x
            acc = acc + 0.5 * np.sum(a * x**2, axis=-1)
        total = total + acc / length
    return total


def group_error(estimates, targets):
    """Mean and standard error of estimate − target over independent groups."""
    d = np.asarray(estimates, np.float64) - np.asarray(targets, np.float64)
    return d.mean(), d.std(ddof=1) / np.sqrt(d.size)


def to_numpy(cfg):
    return {k: np.asarray(v, np.float64) for k, v in cfg.items()}


def horizon_sum(est, theta, num_truncations, cfg_of):
    """``run(key) -> (Σ of the per-truncation estimates of d/dlog_lr, task configs)``,
    from a fresh state, θ held fixed."""

    def run(key):
        k_init, k_run = jax.random.split(key)
        fresh = est.init(theta, k_init)

        def body(state, k):
            grad, state, _ = est.estimate(theta, state, k)
            return state, grad["log_lr"]

        _, grads = jax.lax.scan(body, fresh, jax.random.split(k_run, num_truncations))
        return grads.sum(), cfg_of(fresh)

    return run


def grouped(run, key, num_groups):
    """``run`` on ``num_groups`` independent keys (vmapped, one compilation)."""
    return jax.jit(jax.vmap(run))(jax.random.split(key, num_groups))


# ---------------------------------------------------------------------------------------
# 1. PES is unbiased for the full-horizon gradient.


@reference_for("pes")
def test_pes_summed_over_a_horizon_is_unbiased_for_the_full_horizon_gradient():
    groups, tasks, std = 64, 64, 0.01
    est = mo.pes(LEARNER, FAMILY, num_tasks=tasks, truncation=TRUNCATION, horizon=HORIZON, std=std)
    run = horizon_sum(est, THETA, HORIZON // TRUNCATION, lambda s: s.pos.cfg)
    pes_sum, cfg = grouped(run, jax.random.key(1), groups)
    exact = np.asarray(exact_gradient(cfg), np.float64)  # (groups, tasks)
    true = exact.mean()
    err, stderr = group_error(pes_sum, exact.mean(axis=1))
    # The test has power: the standard error is a few % of the gradient (truncated
    # BPTT's bias on this problem is ~70%, see the next test).
    assert stderr < 0.05 * abs(true)
    # 4 standard errors: a false failure has probability ~1e-4 under the normal
    # approximation, which 64 groups of 64 independent particles justify.
    assert abs(err) < 4 * stderr, (err, stderr, true)

    # Gaussian smoothing with independent per-truncation perturbations biases the
    # gradient by ≈ σ²/2 · d/dθ Σ_k ∂²J/∂θ_k² (θ_k the log lr of truncation k). With
    # σ = 0.01 that is negligible against the tolerance; estimate it by finite
    # differences of the float64 objective and check.
    c = to_numpy(cfg)
    a, x0 = c["a"].reshape(-1, DIM), c["x0"].reshape(-1, DIM)
    n, h = HORIZON // TRUNCATION, 1e-2

    def laplacian(theta):
        base = np.full(n, theta)
        total = -2 * n * np_objective(list(base), a, x0, TRUNCATION).mean()
        for k in range(n):
            for sign in (1, -1):
                v = base.copy()
                v[k] += sign * h
                total += np_objective(list(v), a, x0, TRUNCATION).mean()
        return total / h**2

    bias = std**2 / 2 * (laplacian(LOG_LR + h) - laplacian(LOG_LR - h)) / (2 * h)
    assert abs(bias) < 0.1 * stderr, (bias, stderr)


# ---------------------------------------------------------------------------------------
# 2. Truncated BPTT is biased: it ignores how θ shaped each truncation's starting state.


@reference_for("tbptt")
@pytest.mark.parametrize("second_order", [True, False])
def test_tbptt_summed_over_a_horizon_is_the_stop_gradient_reference_and_biased(second_order):
    est = mo.tbptt(
        LEARNER,
        FAMILY,
        num_tasks=64,
        truncation=TRUNCATION,
        horizon=HORIZON,
        second_order=second_order,
    )
    run = horizon_sum(est, THETA, HORIZON // TRUNCATION, lambda s: s.cfg)
    tbptt_sum, cfg = jax.jit(run)(jax.random.key(2))
    reference, exact = jax.jit(
        lambda cfg: [
            per_task_gradient(cfg, stop_start=stop, second_order=second_order).mean()
            for stop in (True, False)
        ]
    )(cfg)
    # Both are float32 sums of ~100 terms of mostly one sign: relative rounding ~1e-6;
    # 1e-4 leaves room for a different order of summation.
    np.testing.assert_allclose(tbptt_sum, reference, rtol=1e-4)

    # On a diagonal quadratic SGD gives x_t = (1 − lr·a)^t x0, so d f(x_t)/dlr carries
    # a factor t; truncated BPTT credits θ only with the j ≤ K steps since the start of
    # the truncation, a factor j/t ≤ 1 that is ≤ 1/2 from the second truncation on.
    # At this learning rate it recovers ~26% of the gradient (second order; ~17% of the
    # first-order one), so "less than half" has a wide margin either way.
    assert np.sign(tbptt_sum) == np.sign(exact)
    assert abs(tbptt_sum) < 0.5 * abs(exact), (tbptt_sum, exact)


# ---------------------------------------------------------------------------------------
# 3. ES and PES estimate the gradient of the Gaussian-smoothed objective.
#
# Smoothing must matter for the check to discriminate: with θ = log lr and a small
# lr, every loss is close to linear in lr = e^θ, and E[e^(θ+ε)] = e^(σ²/2) e^θ, so
# σ = 0.5 makes the smoothed derivative ~13% larger than the plain one. Large σ has a
# catch: SGD diverges once lr·a > 2, where a truncation's loss grows like (lr·a)^(2m)
# (m steps) and E[(lr·a)^(2m)] = (lr₀·a)^(2m) e^(2m²σ²) over the lognormal lr. With
# lr₀·a ≤ 0.002 that is e^(-74) for m = 10 and e^(-48) for m = 20 (two truncations),
# so the smoothed objective is the well-behaved bulk that both ES and the quadrature
# see (divergence needs ε > log(1000) ≈ 14σ).

SMOOTH_LOG_LR = float(np.log(0.001))
SMOOTH_STD = 0.5


def smoothed_derivatives(cfg, num_truncations, nodes=20):
    """Per task: d/dθ of E[L(θ + ε_1, ..., θ + ε_n)] (ε_k iid N(0, σ²), the k-th
    truncation run with θ + ε_k) by Gauss–Hermite quadrature and central differences,
    and the plain dL/dθ; float64."""
    c = to_numpy(cfg)
    shape = c["a"].shape[:-1]
    a, x0 = c["a"].reshape(-1, DIM), c["x0"].reshape(-1, DIM)
    z, w = hermegauss(nodes)
    w = w / w.sum()
    grids = np.meshgrid(*[z] * num_truncations, indexing="ij")
    weights = np.prod(np.meshgrid(*[w] * num_truncations, indexing="ij"), axis=0).ravel()
    zs = [g.reshape(-1, 1, 1) for g in grids]

    def smoothed(theta):
        losses = np_objective([theta + SMOOTH_STD * zk for zk in zs], a, x0, TRUNCATION)
        return weights @ losses

    def plain(theta):
        return np_objective([theta] * num_truncations, a, x0, TRUNCATION)

    # h = 1e-4: the central difference's error is ~h² ≈ 1e-8 relative, far below the
    # 1e-2-relative statistical tolerance, and float64 rounding is ~1e-12 / h.
    h = 1e-4
    d_smooth = (smoothed(SMOOTH_LOG_LR + h) - smoothed(SMOOTH_LOG_LR - h)) / (2 * h)
    d_plain = (plain(SMOOTH_LOG_LR + h) - plain(SMOOTH_LOG_LR - h)) / (2 * h)
    return d_smooth.reshape(shape), d_plain.reshape(shape)


@reference_for("es", "pes")
@pytest.mark.parametrize(
    "estimator, horizon, num_truncations",
    [(mo.es, HORIZON, 1), (mo.pes, 2 * TRUNCATION, 2)],
    ids=["es", "pes"],
)
def test_es_and_pes_match_the_smoothed_objective_derivative(estimator, horizon, num_truncations):
    """ES: one truncation from a fresh state. PES: a whole horizon of two truncations,
    each with its own perturbation, summed."""
    # 64 groups × 16 tasks × 64 antithetic pairs: 65536 pairs make the standard error
    # ~1% of the gradient, against the 13% effect of smoothing.
    groups, tasks, pairs = 64, 16, 64
    est = estimator(
        LEARNER,
        FAMILY,
        num_tasks=tasks,
        truncation=TRUNCATION,
        horizon=horizon,
        std=SMOOTH_STD,
        num_perturbations=pairs,
    )
    theta = {"log_lr": jnp.asarray(SMOOTH_LOG_LR, jnp.float32)}

    def cfg_of(state):  # one config per task: its pairs are task-major copies
        cfg = state.pos.cfg if estimator is mo.pes else state.cfg
        return jax.tree.map(lambda x: x[::pairs], cfg)

    total, cfg = grouped(
        horizon_sum(est, theta, num_truncations, cfg_of), jax.random.key(3), groups
    )
    d_smooth, d_plain = smoothed_derivatives(cfg, num_truncations)
    # The quadrature has converged (checked on one group): more nodes change nothing
    # at the scale of the tolerance (~1e-2 relative).
    d_more, _ = smoothed_derivatives(jax.tree.map(lambda x: x[:1], cfg), num_truncations, nodes=30)
    np.testing.assert_allclose(d_more, d_smooth[:1], rtol=1e-6)

    err, stderr = group_error(total, d_smooth.mean(axis=1))
    # 4 standard errors: see test 1.
    assert abs(err) < 4 * stderr, (err, stderr, d_smooth.mean())
    # The check discriminates: the plain derivative lies far outside the tolerance.
    err_plain, _ = group_error(total, d_plain.mean(axis=1))
    assert abs(d_smooth.mean() - d_plain.mean()) > 8 * stderr
    assert abs(err_plain) > 4 * stderr


# ---------------------------------------------------------------------------------------
# 4. Full BPTT: rematerialization changes memory, not the gradient.


@reference_for("full_bptt")
@pytest.mark.parametrize("second_order", [False, True])
def test_full_bptt_remat_policies_agree_with_each_other_and_the_exact_gradient(second_order):
    num_tasks, key = 8, jax.random.key(4)
    grads = {}
    for remat in ("none", "step", "dots", "nested"):
        est = mo.full_bptt(
            LEARNER,
            FAMILY,
            num_tasks=num_tasks,
            horizon=HORIZON,
            second_order=second_order,
            remat=remat,
        )
        state = jax.jit(est.init)(THETA, jax.random.key(5))
        grad, count, _ = jax.jit(est.estimate)(THETA, state, key)
        assert int(count) == 1
        grads[remat] = float(grad["log_lr"])
    # Recomputing a step repeats the same float32 operations; only XLA's fusion of
    # them may differ, a few ulps.
    for remat in ("step", "dots", "nested"):
        np.testing.assert_allclose(grads[remat], grads["none"], rtol=1e-6)

    # The tasks full BPTT draws from its key (its first half, as full_bptt.py splits
    # it); its objective is the mean over the whole horizon, (1/H) Σ_{t=1..H} f(x_t):
    # one "truncation" of H steps.
    schedule = mo.estimators.constant_schedule(HORIZON)

    @jax.jit
    def exact(key):
        k_tasks = jax.random.split(key)[0]
        cfg = init_tasks(LEARNER, FAMILY, schedule, THETA, k_tasks, num_tasks).cfg
        grads = per_task_gradient(cfg, length=HORIZON, second_order=second_order)
        return jnp.mean(grads)

    # float32 sums of 100 steps, summed in different orders: see test 2.
    np.testing.assert_allclose(grads["none"], exact(key), rtol=1e-4)


# ---------------------------------------------------------------------------------------
# 5. Truncated BPTT on a learned optimizer (an LSTM) against a hand-written unroll.


LSTM_TASKS, LSTM_TRUNCATION = 4, 5


@pytest.fixture(scope="module")
def lstm_problem():
    """An LSTM learned optimizer mid-horizon on quadratics, with non-zero hidden states
    carried in from a first truncation; and the jitted TBPTT estimates."""
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=8))
    family = mo.quadratic_family(dim=3, init_scale=0.5)

    def estimator(second_order, remat="step"):
        return mo.tbptt(
            learner,
            family,
            num_tasks=LSTM_TASKS,
            truncation=LSTM_TRUNCATION,
            horizon=20,
            second_order=second_order,
            remat=remat,
        )

    estimates = {
        (so, remat): jax.jit(estimator(so, remat).estimate)
        for so in (False, True)
        for remat in ("step", "dots")
    }
    theta = jax.jit(learner.init)(jax.random.key(0))
    fresh = jax.jit(estimator(False).init)(theta, jax.random.key(1))
    _, tasks, _ = estimates[False, "step"](theta, fresh, jax.random.key(2))
    return learner, family, theta, tasks, estimates


# "dots" stores the LSTM's matrix products (no batch dimensions under the task vmap)
# instead of recomputing them, so its backward pass differs from "step"'s.
@reference_for("tbptt")
@pytest.mark.parametrize("remat", ["step", "dots"])
@pytest.mark.parametrize("second_order", [False, True])
def test_tbptt_lstm_truncation_gradient_matches_a_hand_written_unroll(
    second_order, remat, lstm_problem
):
    learner, family, theta, tasks, estimates = lstm_problem
    truncation = LSTM_TRUNCATION
    grad, new_tasks, metrics = estimates[second_order, remat](theta, tasks, jax.random.key(3))

    def meta_loss(theta):
        tx = learner.tx(theta)

        def one_task(cfg, inner):
            params, opt_state, total = inner.params, inner.opt_state, 0.0
            for _ in range(truncation):
                # The quadratic family's loss ignores its key.
                g = jax.grad(family.loss, argnums=1)(cfg, params, None)
                if not second_order:
                    g = jax.lax.stop_gradient(g)
                updates, opt_state = tx.update(g, opt_state, params)
                params = params + updates
                total = total + family.loss(cfg, params, None) / truncation
            return total

        return jnp.mean(jax.vmap(one_task)(tasks.cfg, tasks.inner))

    value, reference = jax.jit(jax.value_and_grad(meta_loss))(theta)
    np.testing.assert_allclose(metrics["meta_loss"], value, rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(reference))
    # The same float32 operations in a different order (scan vs. unrolled loop): errors
    # of a few ulps of the largest entries, so compare relative to the largest.
    for got, want in zip(jax.tree.leaves(grad), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    assert scale > 0
    np.testing.assert_array_equal(new_tasks.inner.step, 2 * truncation)


# ---------------------------------------------------------------------------------------
# 6. PES restarts its accumulated perturbation when a task is replaced.


def test_pes_restarts_its_accumulator_when_a_task_is_replaced():
    # σ = 0.1: the formulas below hold for any σ; a larger one makes the float32
    # rounding of the losses (~1e-6) small against their ± differences (~0.1).
    num_tasks, truncation, horizon, std = 8, 5, 10, 0.1
    est = mo.pes(
        LEARNER, FAMILY, num_tasks=num_tasks, truncation=truncation, horizon=horizon, std=std
    )
    estimate = jax.jit(est.estimate)
    # The estimator's own split: k_eps, k_run = split(key).
    eps_of = jax.jit(
        lambda key: perturbations(THETA, jax.random.split(key)[0], num_tasks, std)["log_lr"]
    )
    keys = jax.random.split(jax.random.key(6), 3)
    eps = [np.asarray(eps_of(k), np.float64) for k in keys]
    state0 = jax.jit(est.init)(THETA, jax.random.key(7))
    grads, states = [], [state0]
    for k in keys:
        grad, state, _ = estimate(THETA, states[-1], k)
        grads.append(float(grad["log_lr"]))
        states.append(state)
    s1, s2, s3 = states[1:]

    # Steps 5 and 10 of the first task; the third estimate meets the horizon at its
    # first step, so every step of it belongs to a fresh task.
    for s, steps in ((s1, 5), (s2, 10), (s3, 5)):
        np.testing.assert_array_equal(s.pos.inner.step, steps)
        np.testing.assert_array_equal(s.neg.inner.step, steps)
    np.testing.assert_array_equal(s2.pos.cfg["a"], state0.pos.cfg["a"])
    assert np.all(np.asarray(s3.pos.cfg["a"]) != np.asarray(state0.pos.cfg["a"]))
    np.testing.assert_array_equal(s3.pos.cfg["a"], s3.neg.cfg["a"])
    # ξ accumulates over the task's truncations and restarts at the fresh task's ε.
    np.testing.assert_allclose(s1.accumulated["log_lr"], eps[0], rtol=1e-6)
    np.testing.assert_allclose(s2.accumulated["log_lr"], eps[0] + eps[1], rtol=1e-6)
    np.testing.assert_allclose(s3.accumulated["log_lr"], eps[2], rtol=1e-6)

    # The estimates, by hand in float64: Σ_i (L(θ+·) − L(θ−·)) ξ_i / (2σ² n), with the
    # second truncation's loss the increment of the two-truncation objective.
    def pes_grad(cfg, eps_list, weight):
        c = to_numpy(cfg)
        lr = [e[:, None] for e in eps_list]  # per particle, broadcast over coordinates

        def loss(sign):
            def run(k):
                log_lrs = [LOG_LR + sign * e for e in lr[:k]]
                return np_objective(log_lrs, c["a"], c["x0"], truncation) if k else 0.0

            return run(len(lr)) - run(len(lr) - 1)

        return np.mean((loss(1) - loss(-1)) * weight / (2 * std**2))

    # float32 losses are off by ~1e-6, which ξ/(2σ²) turns into ~1e-5 of the estimate.
    np.testing.assert_allclose(grads[0], pes_grad(state0.pos.cfg, eps[:1], eps[0]), rtol=1e-4)
    np.testing.assert_allclose(
        grads[1], pes_grad(state0.pos.cfg, eps[:2], eps[0] + eps[1]), rtol=1e-4
    )
    np.testing.assert_allclose(grads[2], pes_grad(s3.pos.cfg, eps[2:], eps[2]), rtol=1e-4)


# ---------------------------------------------------------------------------------------
# 7. Desynchronized tasks with log-uniform horizons are replaced at their own horizon.


def test_log_uniform_schedule_draws_log_uniform_horizons_within_its_bounds():
    lo, hi, n = 10, 40, 4096
    schedule = mo.estimators.log_uniform_schedule(lo, hi)
    h = np.asarray(jax.jit(jax.vmap(schedule.sample))(jax.random.split(jax.random.key(8), n)))
    assert h.min() >= lo and h.max() <= hi
    assert h.min() == lo and h.max() == hi  # both ends are drawn (p ≈ 0.07 and 0.02 each)
    # floor(exp(U)), U ~ U(log lo, log(hi + 1)): P(h ≤ k) = log((k + 1)/lo) / log((hi + 1)/lo).
    for k in (12, 19, 30):
        p = np.log((k + 1) / lo) / np.log((hi + 1) / lo)
        # 4 binomial standard errors.
        assert abs(np.mean(h <= k) - p) < 4 * np.sqrt(p * (1 - p) / n), (k, np.mean(h <= k), p)


def test_desynchronized_tasks_are_replaced_at_their_own_horizons():
    lo, hi, num_tasks, truncation = 10, 40, 64, 5
    est = mo.tbptt(
        LEARNER,
        FAMILY,
        num_tasks=num_tasks,
        truncation=truncation,
        horizon=mo.estimators.log_uniform_schedule(lo, hi),
        desync=True,
    )
    state = jax.jit(est.init)(THETA, jax.random.key(9))
    step, horizon = np.asarray(state.inner.step), np.asarray(state.horizon)
    assert np.all((lo <= horizon) & (horizon <= hi))
    assert np.all((0 <= step) & (step < horizon))
    # Desynchronized: 64 uniform offsets in [0, h) with h ≥ 10 take many values.
    assert len(np.unique(step)) >= 8 and len(np.unique(horizon)) >= 8
    np.testing.assert_array_equal(state.inner.params, state.cfg["x0"])

    estimate = jax.jit(est.estimate)
    lr = float(np.exp(LOG_LR))
    replaced_at = []
    for i, key in enumerate(jax.random.split(jax.random.key(10), 8)):
        _, new, _ = estimate(THETA, state, key)
        old_step, old_h = np.asarray(state.inner.step), np.asarray(state.horizon)
        # By hand, step by step: a task that has reached its horizon is replaced by a
        # fresh one (step 0) before the next update. A horizon is ≥ the truncation, so
        # a replacement task cannot reach its own within the same truncation.
        expected, replaced = old_step.copy(), np.zeros(num_tasks, bool)
        for _ in range(truncation):
            done = expected >= old_h
            replaced |= done
            expected = np.where(done, 0, expected) + 1
        np.testing.assert_array_equal(new.inner.step, expected)
        a_old, a_new = np.asarray(state.cfg["a"]), np.asarray(new.cfg["a"])
        np.testing.assert_array_equal(a_new[~replaced], a_old[~replaced])
        np.testing.assert_array_equal(np.asarray(new.horizon)[~replaced], old_h[~replaced])
        assert np.all(a_new[replaced] != a_old[replaced])
        new_h = np.asarray(new.horizon)[replaced]
        assert np.all((lo <= new_h) & (new_h <= hi))
        # SGD on ½ Σ a x²: x_s = (1 − lr·a)^s x_0, counted from the task's own start,
        # so a replaced task has trained exactly its new step count.
        a = np.asarray(new.cfg["a"], np.float64)
        start = np.where(replaced[:, None], np.asarray(new.cfg["x0"]), state.inner.params)
        steps = np.where(replaced, expected, truncation)[:, None]
        # float32 products of ≤ 5 factors: a few ulps.
        np.testing.assert_allclose(
            new.inner.params, start * (1 - lr * a) ** steps, rtol=1e-5, atol=1e-6
        )
        if replaced.any():
            replaced_at.append(i)
        assert not replaced.all()
        state = new
    # Replacements spread over the meta-steps instead of happening all at once.
    assert len(replaced_at) >= 4


# ---------------------------------------------------------------------------------------
# 8. The perturbations and the compiled loop's unrolling.


def test_perturbations_are_independent_gaussians_in_every_leaf():
    # One draw is cut into the leaves, so check what cutting could break: every leaf's
    # shape and dtype, its mean and variance, and no correlation between leaves or
    # between particles.
    theta = {
        "w": jnp.zeros((3, 5)),
        "b": jnp.zeros((5,)),
        "s": jnp.zeros(()),
        "h": jnp.zeros((2,), jnp.bfloat16),
    }
    num, std = 4096, 0.3
    eps = jax.jit(lambda k: perturbations(theta, k, num, std))(jax.random.key(11))
    for name, x in theta.items():
        assert eps[name].shape == (num, *x.shape) and eps[name].dtype == x.dtype, name
    z = (
        np.concatenate(
            [np.asarray(eps[k], np.float64).reshape(num, -1) for k in ("w", "b", "s", "h")], axis=1
        )
        / std
    )
    n, d = z.shape
    # z ~ N(0, 1): the mean's standard error is 1/√n, the variance's √(2/n); 5 of them
    # over d = 23 coordinates. bfloat16 rounding moves the variance by ~1e-3 at most.
    assert np.all(np.abs(z.mean(axis=0)) < 5 / np.sqrt(n))
    assert np.all(np.abs(z.var(axis=0) - 1) < 5 * np.sqrt(2 / n) + 2e-3)
    # Correlations between coordinates (within and across leaves), and between
    # consecutive particles, have standard error 1/√n.
    corr = np.corrcoef(z, rowvar=False)[np.triu_indices(d, 1)]
    assert np.all(np.abs(corr) < 5 / np.sqrt(n)), np.abs(corr).max()
    lag = np.mean(z[1:] * z[:-1], axis=0)
    assert np.all(np.abs(lag) < 5 / np.sqrt(n))
    # Counters i and i + size/2 share one Threefry hash: the first half of the particles
    # against the second half, coordinate by coordinate.
    halves = np.mean(z[: n // 2] * z[n // 2 :], axis=0)
    assert np.all(np.abs(halves) < 5 / np.sqrt(n // 2))
    # Gaussian tails, not just two moments: P(|z| > 2) = 0.0455, standard error
    # √(p(1 - p)/(n d)) ≈ 0.0007; the fourth moment is 3, standard error √(96/(n d)).
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 5 * np.sqrt(0.0455 * 0.9545 / z.size)
    assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / z.size)


@pytest.mark.parametrize("remat", ["none", "step"])
def test_unrolling_the_inner_loop_changes_nothing(remat):
    tasks = init_tasks(
        LEARNER, FAMILY, mo.estimators.constant_schedule(HORIZON), THETA, jax.random.key(12), 1
    )
    task = jax.tree.map(lambda x: x[0], tasks)
    fresh = task._replace(inner=task.inner._replace(params=task.inner.params + 1))
    task = task._replace(inner=task.inner._replace(step=jnp.asarray(HORIZON - 3, jnp.int32)))

    def run(unroll):
        return jax.jit(
            lambda t: advance(
                LEARNER,
                FAMILY,
                trajectory_mean(),
                THETA,
                t,
                fresh,
                jax.random.key(13),
                7,
                remat=remat,
                unroll=unroll,
            )
        )(task)

    # 7 steps, the task replaced after the 3rd: unroll 2 and 3 leave a remainder step.
    reference = run(1)
    for unroll in (2, 3):
        # The same operations in the same order: equal to float32 rounding.
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), run(unroll), reference
        )
    assert bool(reference[1].replaced[3]) and not bool(reference[1].replaced[2])
