"""The MAML family against closed forms, finite differences and hand-written loops.

Every problem here is built from the public protocols alone: a ``TaskFamily`` whose
``sample`` returns one fixed task (so the tasks of a meta-batch are identical and the
meta-gradient is that task's), with a support loss (``loss``) and a query loss
(``eval_loss``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from tests.conformance.references import reference_for

RNG = np.random.default_rng(0)
XS, YS = RNG.normal(size=(6, 3)), RNG.normal(size=6)
XQ, YQ = RNG.normal(size=(8, 3)), RNG.normal(size=8)
ALPHA = 0.1


def linear_family():
    """Linear regression: support ``(XS, YS)``, query ``(XQ, YQ)``, MSE."""

    def mse(x, y, w):
        return jnp.mean((x @ w - y) ** 2)

    return mo.TaskFamily(
        name="linear",
        sample=lambda key: {"xs": XS, "ys": YS, "xq": XQ, "yq": YQ},
        init=lambda cfg, key: jnp.zeros(3),
        loss=lambda cfg, w, key: mse(cfg["xs"], cfg["ys"], w),
        eval_loss=lambda cfg, w, key: mse(cfg["xq"], cfg["yq"], w),
    )


def mse_grad(x, y, w):
    return 2 * x.T @ (x @ w - y) / len(y)


def mse_hessian(x):
    return 2 * x.T @ x / len(x)


THETA = np.array([0.3, -0.2, 0.5])


def linear_estimate(estimator_fn, learner):
    est = estimator_fn(learner, linear_family(), num_tasks=3)
    theta = jnp.asarray(THETA, jnp.float32)
    grad, _, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(0))
    return np.asarray(grad), float(metrics["meta_loss"])


@reference_for("maml")
def test_maml_one_step_equals_closed_form():
    learner = mo.learned_initialization(lambda k: jnp.zeros(3), optax.sgd(ALPHA))
    grad, meta_loss = linear_estimate(mo.maml, learner)
    phi = THETA - ALPHA * mse_grad(XS, YS, THETA)
    expected = (np.eye(3) - ALPHA * mse_hessian(XS)) @ mse_grad(XQ, YQ, phi)
    # float32 against float64 on O(1) values: rounding ~1e-7 relative.
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(meta_loss, np.mean((XQ @ phi - YQ) ** 2), rtol=1e-5)


@reference_for("fomaml")
def test_fomaml_is_maml_without_the_inner_hessian():
    learner = mo.learned_initialization(lambda k: jnp.zeros(3), optax.sgd(ALPHA))
    grad, _ = linear_estimate(mo.fomaml, learner)
    phi = THETA - ALPHA * mse_grad(XS, YS, THETA)
    np.testing.assert_allclose(grad, mse_grad(XQ, YQ, phi), rtol=1e-5, atol=1e-6)
    maml_grad, _ = linear_estimate(mo.maml, learner)
    assert np.linalg.norm(grad - maml_grad) > 1e-2 * np.linalg.norm(grad)


@reference_for("maml")
def test_meta_sgd_rates_get_their_closed_form_gradient():
    # Separable quadratics: support ½ Σ a (φ - b)², query ½ Σ c (φ - d)².
    a, b, c, d = (jnp.asarray(RNG.uniform(0.5, 2.0, 4), jnp.float32) for _ in range(4))
    family = mo.TaskFamily(
        name="separable",
        sample=lambda key: jnp.zeros(()),
        init=lambda cfg, key: jnp.zeros(4),
        loss=lambda cfg, p, key: 0.5 * jnp.sum(a * (p - b) ** 2),
        eval_loss=lambda cfg, p, key: 0.5 * jnp.sum(c * (p - d) ** 2),
    )
    learner = mo.meta_sgd(lambda k: jnp.zeros(4), learning_rate=0.1)
    est = mo.maml(learner, family, num_tasks=2)
    theta = {"init": jnp.array([0.1, -0.3, 0.7, 1.5]), "rule": jnp.array([0.05, 0.1, 0.2, 0.3])}
    grad, _, _ = est.estimate(theta, est.init(theta, None), jax.random.key(0))
    init, rate = theta["init"], theta["rule"]
    phi = init - rate * a * (init - b)
    query_grad = c * (phi - d)
    np.testing.assert_allclose(grad["rule"], query_grad * -a * (init - b), rtol=1e-5)
    np.testing.assert_allclose(grad["init"], query_grad * (1 - rate * a), rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Several inner steps of a small tanh network, in float64 against finite differences.

STEPS = 3


def tanh_family():
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    xq = jnp.linspace(-0.9, 0.9, 7)[:, None]

    def forward(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    def mse(p, x):
        return jnp.mean((forward(p, x) - jnp.sin(2 * x)) ** 2)

    def init(cfg, key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (1, 4)),
            "b1": jnp.zeros(4),
            "w2": jax.random.normal(k2, (4, 1)) * 0.5,
        }

    family = mo.TaskFamily(
        name="tanh",
        sample=lambda key: jnp.zeros(()),
        init=init,
        loss=lambda cfg, p, key: mse(p, x),
        eval_loss=lambda cfg, p, key: mse(p, xq),
    )
    return family


def loop_query_loss(family, theta, lr, first_order_at=None):
    """Hand-written inner SGD loop; with ``first_order_at``, its recorded gradients."""
    params, grads_seen = theta, []
    for i in range(STEPS):
        grads = jax.grad(family.loss, argnums=1)(None, params, None)
        grads_seen.append(grads)
        fed = grads if first_order_at is None else first_order_at[i]
        params = jax.tree.map(lambda p, g: p - lr * g, params, fed)
    return family.eval_loss(None, params, None), grads_seen


@reference_for("maml", "fomaml")
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_several_steps_matches_finite_differences(first_order):
    with jax.enable_x64(True):
        family = tanh_family()
        theta = family.init(None, jax.random.key(0))
        theta = jax.tree.map(lambda x: x.astype(jnp.float64), theta)
        lr = 0.3
        learner = mo.learned_initialization(lambda k: theta, optax.sgd(lr))
        est = mo.maml(learner, family, num_tasks=2, inner_steps=STEPS, first_order=first_order)
        grad, _, metrics = est.estimate(theta, est.init(theta, None), jax.random.key(1))
        loss0, recorded = loop_query_loss(family, theta, lr)
        np.testing.assert_allclose(metrics["meta_loss"], loss0, rtol=1e-10)
        replay = recorded if first_order else None

        def meta_loss(th):
            return loop_query_loss(family, th, lr, replay)[0]

        leaves, treedef = jax.tree.flatten(theta)
        eps = 1e-5
        for seed in range(2):
            keys = jax.random.split(jax.random.key(10 + seed), len(leaves))
            direction = treedef.unflatten(
                [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            )
            analytic = sum(
                jnp.vdot(g, v)
                for g, v in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
            )
            plus = jax.tree.map(lambda t, v: t + eps * v, theta, direction)
            minus = jax.tree.map(lambda t, v: t - eps * v, theta, direction)
            numeric = (meta_loss(plus) - meta_loss(minus)) / (2 * eps)
            # Central differences in float64 with eps=1e-5: truncation ~eps², rounding
            # ~1e-16/eps, both far below 1e-6 of the derivative.
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


@reference_for("reptile")
def test_reptile_update_equals_the_hand_computed_step():
    family = tanh_family()
    theta = family.init(None, jax.random.key(0))
    lr, epsilon = 0.3, 0.25
    learner = mo.learned_initialization(lambda k: theta, optax.sgd(lr))
    est = mo.reptile(learner, family, num_tasks=3, inner_steps=STEPS)
    phi = theta
    for _ in range(STEPS):
        grads = jax.grad(family.loss, argnums=1)(None, phi, None)
        phi = jax.tree.map(lambda p, g: p - lr * g, phi, grads)
    result = mo.meta_train(
        est, jax.random.key(2), num_steps=1, meta_optimizer=optax.sgd(epsilon), progress=False
    )
    expected = jax.tree.map(lambda t, p: t + epsilon * (p - t), theta, phi)
    for got, want in zip(jax.tree.leaves(result.theta), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reptile_moves_only_the_initialization_of_a_combined_learner():
    family = tanh_family()
    learner = mo.combine(
        mo.learned_initialization(family), mo.learned_optimizer(mo.mlp_optimizer())
    )
    est = mo.reptile(learner, family, num_tasks=2, inner_steps=2)
    theta = learner.init(jax.random.key(0))
    grad, _, _ = est.estimate(theta, est.init(theta, None), jax.random.key(1))
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad["rule"]))
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grad["init"]))


def test_combined_learner_gradient_matches_each_part_alone():
    # θ = {init, rule}: its rule gradient is the learned optimizer's gradient from that
    # same start, and its init gradient is the learned initialization's under that rule.
    family = tanh_family()
    lopt = mo.mlp_optimizer()
    combined = mo.combine(mo.learned_initialization(family), mo.learned_optimizer(lopt))
    theta = combined.init(jax.random.key(0))
    start = theta["init"]
    fixed_start = family._replace(init=lambda cfg, key: start)
    key = jax.random.key(1)

    def grad_of(learner, th, fam):
        est = mo.maml(learner, fam, num_tasks=2, inner_steps=STEPS)
        return est.estimate(th, est.init(th, None), key)[0]

    both = grad_of(combined, theta, family)
    rule_alone = grad_of(mo.learned_optimizer(lopt), theta["rule"], fixed_start)
    init_alone = grad_of(
        mo.learned_initialization(family, mo.as_optax(lopt, theta["rule"])), start, family
    )
    for got, want in zip(jax.tree.leaves(both["rule"]), jax.tree.leaves(rule_alone), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(both["init"]), jax.tree.leaves(init_alone), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_second_order_maml_through_the_mlp_optimizer_is_finite_with_dead_relus():
    # The sinusoid network's He initialization leaves many ReLUs dead, so some params
    # see a zero gradient at every step and the MLP optimizer's second moment stays
    # exactly zero there; its features must still have finite derivatives, or the
    # whole second-order meta-gradient is NaN.
    family = mo.sinusoid_family(shots=5, query_shots=5)
    learner = mo.learned_optimizer(mo.mlp_optimizer())
    est = mo.maml(learner, family, num_tasks=2, inner_steps=2, remat="none")
    theta = learner.init(jax.random.key(0))
    grad, _, _ = est.estimate(theta, est.init(theta, None), jax.random.key(1))
    leaves = jax.tree.leaves(grad)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


@reference_for("pretraining")
def test_pretraining_gradient_is_the_mean_loss_gradient_at_the_start():
    learner = mo.learned_initialization(lambda k: jnp.zeros(3))
    grad, loss = linear_estimate(
        lambda lr, fam, num_tasks: mo.pretraining(lr, fam, num_tasks=3), learner
    )
    np.testing.assert_allclose(grad, mse_grad(XS, YS, THETA), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, np.mean((XS @ THETA - YS) ** 2), rtol=1e-5)


def test_adapt_equals_a_hand_written_optax_loop():
    family = tanh_family()
    theta = family.init(None, jax.random.key(0))
    tx = optax.adam(0.05)
    learner = mo.learned_initialization(lambda k: theta, tx)
    batch = jnp.linspace(-1.0, 1.0, 9)[:, None]

    def loss_fn(p, x):
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - jnp.cos(x)) ** 2)

    adapted = jax.jit(lambda th, b: mo.adapt(learner, th, loss_fn, b, steps=4))(theta, batch)
    params, state = theta, tx.init(theta)
    for _ in range(4):
        updates, state = tx.update(jax.grad(loss_fn)(params, batch), state, params)
        params = optax.apply_updates(params, updates)
    for got, want in zip(jax.tree.leaves(adapted), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# The task families.


def test_sinusoid_support_and_query_lie_on_one_sine():
    fam = mo.sinusoid_family(shots=5, query_shots=7)
    task = jax.jit(fam.sample)(jax.random.key(3))
    a, p = float(task.amplitude), float(task.phase)
    assert 0.1 <= a <= 5.0 and 0.0 <= p <= np.pi
    for x, y in ((task.x_support, task.y_support), (task.x_query, task.y_query)):
        assert np.all(np.abs(np.asarray(x)) <= 5.0)
        np.testing.assert_allclose(y, a * np.sin(np.asarray(x) - p), rtol=1e-5, atol=1e-5)
    params = fam.init(task, jax.random.key(4))
    assert [q["w"].shape for q in params] == [(1, 40), (40, 40), (40, 1)]
    pred = mo.tasks.regression.mlp_forward(params, task.x_query)
    np.testing.assert_allclose(
        fam.eval_loss(task, params, None), np.mean((pred - task.y_query) ** 2), rtol=1e-5
    )


def test_fewshot_episodes_label_classes_consistently():
    from metaopt.tasks.datasets import digits
    from metaopt.tasks.fewshot import grouped_by_class

    ds = digits()
    classes = [5, 6, 7, 8, 9]
    fam = mo.fewshot_family(ds, classes=classes, ways=3, shots=2, query_shots=4)
    grouped = grouped_by_class(ds, classes)
    ep = jax.jit(fam.sample)(jax.random.key(0))

    def class_of(row):
        hits = np.where(np.all(np.isclose(grouped, np.asarray(row)), axis=-1))
        return set(hits[0].tolist())

    seen = {}
    for x, y in zip(
        np.concatenate([ep.x_support, ep.x_query]),
        np.concatenate([ep.y_support, ep.y_query]),
        strict=True,
    ):
        seen.setdefault(int(y), set()).update(class_of(x))
    assert sorted(seen) == [0, 1, 2]
    owners = [s for s in seen.values()]
    # Each label's examples come from classes that no other label's examples come from.
    assert all(owners[i].isdisjoint(owners[j]) for i in range(3) for j in range(i + 1, 3))
    assert np.bincount(np.asarray(ep.y_support)).tolist() == [2, 2, 2]
    # No example is both a support and a query example.
    support = {tuple(np.asarray(r)) for r in ep.x_support}
    assert not support & {tuple(np.asarray(r)) for r in ep.x_query}


# ---------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_names_the_argument():
    from metaopt.tasks.datasets import digits

    fam = mo.sinusoid_family()
    with pytest.raises(ValueError, match="learner must hold a learned initialization"):
        mo.reptile(mo.learned_optimizer(mo.mlp_optimizer()), fam, num_tasks=2)
    with pytest.raises(ValueError, match="eval_loss"):
        mo.maml(mo.learned_initialization(fam), mo.quadratic_family(), num_tasks=2)
    with pytest.raises(ValueError, match="inner_steps"):
        mo.reptile(mo.learned_initialization(fam), fam, num_tasks=2, inner_steps=0)
    with pytest.raises(ValueError, match="shots"):
        mo.sinusoid_family(shots=0)
    with pytest.raises(ValueError, match="ways=6"):
        mo.fewshot_family(digits(), classes=range(5), ways=6)
    with pytest.raises(ValueError, match="classes must lie"):
        mo.fewshot_family(digits(), classes=[3, 12])
    with pytest.raises(ValueError, match="shots \\+ query_shots"):
        mo.fewshot_family(digits(), classes=range(5), shots=100, query_shots=100)
    with pytest.raises(ValueError, match="steps"):
        mo.adapt(mo.learned_initialization(fam), None, lambda p, b: 0.0, None, steps=-1)
    with pytest.raises(ValueError, match="learned initialization"):
        mo.adapt(mo.learned_optimizer(mo.mlp_optimizer()), None, lambda p, b: 0.0, None, steps=1)
    with pytest.raises(TypeError, match="rule must be a MetaLearner"):
        mo.combine(mo.learned_initialization(fam), mo.mlp_optimizer())
    with pytest.raises(TypeError, match="init must be"):
        mo.learned_initialization(3)
