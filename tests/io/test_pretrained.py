"""The learned optimizers that ship with the package."""

import json
from importlib import resources

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(32)(x))
        x = nn.tanh(nn.Dense(32)(x))
        return nn.Dense(1)(x)


def train_curve(tx, steps):
    # A 1-D regression none of the pretrained optimizers was meta-trained on.
    x = jnp.linspace(-2.0, 2.0, 256)[:, None]
    y = jnp.sin(2.0 * x) + 0.3 * x
    model = MLP()
    params = model.init(jax.random.key(0), x)["params"]

    def loss(p):
        return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    def step(carry, _):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    (params, _), losses = jax.jit(
        lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    )(params)
    return np.append(np.asarray(losses), float(loss(params)))


def test_required_optimizers_ship():
    assert {"lstm_quadratic", "mlp_regression", "versatile"} <= set(mo.pretrained_names())


@pytest.mark.parametrize("name", mo.pretrained_names())
def test_pretrained_trains_an_unseen_flax_regression_for_1000_steps(name):
    tx = optax.chain(optax.clip_by_global_norm(1.0), mo.pretrained(name))
    losses = train_curve(tx, 1000)
    assert np.all(np.isfinite(losses))
    # Lowers the loss: the last 100 steps are well below the start.
    assert losses[-100:].max() < 0.5 * losses[0]


@pytest.mark.parametrize("name", mo.pretrained_names())
def test_pretrained_has_a_record_of_how_it_was_made(name):
    record = json.loads((resources.files("metaopt") / "pretrained" / f"{name}.json").read_text())
    assert record["command"].startswith(("metaopt ", "python scripts/make_pretrained.py"))
    assert isinstance(record["seed"], int)
    assert record["meta_train"]["function_steps_per_second"] > 0
    evaluation = record["evaluation"]
    if evaluation.get("suite") == "heldout":
        # Judged on the held-out suite: the record holds every problem's final losses,
        # and the shipping rule of scripts/make_pretrained.py holds for them.
        problems = evaluation["problems"]
        ratios = [p[name]["over_tuned_adam"] for p in problems.values()]
        better = sum(
            p[name]["final_loss_mean"] < p["adam_default"]["final_loss_mean"]
            for p in problems.values()
        )
        geomean = float(np.exp(np.mean(np.log(ratios))))
        np.testing.assert_allclose(
            geomean, evaluation["summary"][name]["geomean_over_tuned_adam"], rtol=1e-6
        )
        assert geomean <= 1.0 and 2 * better > len(problems)
        assert evaluation["summary"][name]["all_finite"]
    elif evaluation.get("suite") == "selection":
        # Chosen on the held-in selection suite by held-out loss: the chosen checkpoint's
        # geometric mean over tuned AdamW, recomputed from its per-problem ratios, is at
        # most its untrained θ's (the shipping rule), and every run stayed finite.
        chosen = f"{name}_step{record['chosen_checkpoint']}"
        problems = evaluation["problems"].values()

        def geomean(opt):
            ratios = [p["optimizers"][opt]["over_tuned_adamw"] for p in problems]
            return float(np.exp(np.mean(np.log(ratios))))

        summary = evaluation["summary"]
        np.testing.assert_allclose(
            geomean(chosen), summary[chosen]["geomean_over_tuned_adamw"], rtol=1e-6
        )
        assert geomean(chosen) <= geomean(f"{name}_untrained")
        assert all(p["optimizers"][chosen]["finite"] for p in problems)
    else:
        assert evaluation["learned"]["final_loss_mean"] > 0
        assert evaluation["adam"]["learning_rate"] > 0
    lopt, _ = mo.load(name)
    assert lopt.name == record["lopt"]


def test_scale_and_weight_decay_options_match_the_base_update_by_hand():
    base = mo.pretrained("versatile")
    tx = mo.pretrained("versatile", scale=0.3, weight_decay=1e-3)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
    s_base, s_tx = base.init(params), tx.init(params)
    for k in range(3):
        grads = jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)), params)
        want, s_base = base.update(grads, s_base, params)
        got, s_tx = tx.update(grads, s_tx, params, value=jnp.float32(1.0))
        for name in params:
            # (u − 1e-3 p) · 0.3 by hand, against optax's chain: float32 rounding.
            expected = 0.3 * (np.asarray(want[name]) - 1e-3 * np.asarray(params[name]))
            np.testing.assert_allclose(got[name], expected, rtol=1e-6, atol=1e-9)
        params = optax.apply_updates(params, got)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scale": 0.0}, ValueError, "scale"),
        ({"scale": float("nan")}, ValueError, "scale"),
        ({"scale": "1"}, TypeError, "scale"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay"),
        ({"weight_decay": float("inf")}, ValueError, "weight_decay"),
        ({"weight_decay": None}, TypeError, "weight_decay"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        mo.pretrained("versatile", **kwargs)
