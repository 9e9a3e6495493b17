"""The task batch split over devices: the same numbers as on one device.

The device count is fixed when JAX starts, so the comparisons run in one child process
started with four virtual CPU devices (``jax_num_cpu_devices``); it reports what it
measured as JSON and each test checks one behaviour. Every registered estimator's
meta-step on two devices, and the all-reduce inside it, are checked by
``tests/conformance/test_two_devices.py``; here the loop, checkpoints and evaluation.
The tolerances are float32 rounding: a sum over tasks reduced across devices adds the
same terms in another order, a relative change of about 1e-7 per term, so
meta-parameters and losses are compared at 1e-5 relative to their size.
"""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt as mo
from metaopt.core import sharding

# Runs in a child process with four CPU devices; prints one JSON record.
WORKER = textwrap.dedent(
    """
    import json, tempfile, time
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import numpy as np, optax
    import metaopt as mo
    from metaopt.io.checkpoint import restore_latest, save_checkpoint
    from metaopt.train import hooks
    from metaopt.train.loop import init_meta_train_state

    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=4, num_layers=1))
    fam = mo.quadratic_family(dim=3)
    out = {"seconds": {}}
    t0 = time.perf_counter()

    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

    mesh4 = mo.task_mesh(4)

    # meta_train on 1, 2 and 4 devices; the 4-device run writes a checkpoint at step 2.
    est = mo.tbptt(learner, fam, num_tasks=8, truncation=3, horizon=6)
    d = tempfile.mkdtemp()
    save_at_2 = hooks.callback(lambda s, r: save_checkpoint(d, s) if s.step == 2 else None)
    results = {}
    for n in (None, 1, 2, 4):
        mesh = None if n is None else mo.task_mesh(n)
        results[str(n)] = mo.meta_train(
            est, jax.random.key(2), num_steps=4, progress=False, mesh=mesh,
            hooks=[save_at_2] if n == 4 else [])
    thetas = {k: flat(r.theta) for k, r in results.items()}
    out["meta_train_rel"] = {k: rel(v, thetas["None"]) for k, v in thetas.items()}
    out["one_device_mesh_bit_identical"] = bool(np.array_equal(thetas["1"], thetas["None"]))
    out["seconds"]["meta_train"] = time.perf_counter() - t0

    # The checkpoint of the sharded state is restored split, and resuming from it ends
    # bit-identical to the run that never stopped.
    template = init_meta_train_state(est, jax.random.key(2), mesh=mesh4)
    restored, _, _ = restore_latest(d, template)
    out["restored_specs"] = sorted(
        {str(x.sharding.spec) for x in jax.tree.leaves(restored.estimator_state)})
    resumed = mo.meta_train(est, jax.random.key(2), num_steps=4, progress=False,
                            state=restored, mesh=mesh4)
    out["resume_bit_identical"] = all(
        np.array_equal(flat(getattr(results["4"].state, k)), flat(getattr(resumed.state, k)))
        for k in ("theta", "meta_opt_state", "estimator_state"))

    try:
        mo.meta_train(mo.tbptt(learner, fam, num_tasks=6, truncation=3, horizon=6),
                      jax.random.key(0), num_steps=1, progress=False, mesh=mesh4)
        out["indivisible"] = "no error"
    except ValueError as e:
        out["indivisible"] = str(e)
    out["seconds"]["resume"] = time.perf_counter() - t0

    # Evaluation and tuning split their tasks the same way.
    theta = learner.init(jax.random.key(0))
    c1 = mo.evaluate(optax.adam(0.1), fam, jax.random.key(4), 8, 5)
    c4 = mo.evaluate(optax.adam(0.1), fam, jax.random.key(4), 8, 5, mesh=mesh4)
    validation_loss = mo.evaluation.validation_loss
    v1 = validation_loss(learner, fam, jax.random.key(5), num_tasks=8, num_steps=5)(theta)
    v4 = validation_loss(learner, fam, jax.random.key(5), num_tasks=8, num_steps=5,
                         mesh=mesh4)(theta)
    r1 = mo.evaluation.tune_learning_rate(optax.sgd, fam, jax.random.key(6), [1e-2, 1e-1], 8, 5)
    r4 = mo.evaluation.tune_learning_rate(optax.sgd, fam, jax.random.key(6), [1e-2, 1e-1], 8, 5,
                               mesh=mesh4)
    out["evaluate_rel"] = rel(c4, c1)
    out["validation_rel"] = rel(np.array(v4), np.array(v1))
    out["tune_rel"] = rel(r4.final_loss_mean, r1.final_loss_mean)
    out["seconds"]["evaluation"] = time.perf_counter() - t0
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    proc = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_meta_training_gives_the_same_meta_parameters_on_1_2_and_4_devices(four_devices):
    for devices, rel in four_devices["meta_train_rel"].items():
        assert rel < 1e-5, (devices, rel)


def test_a_one_device_mesh_is_bit_identical_to_no_mesh(four_devices):
    assert four_devices["one_device_mesh_bit_identical"]


def test_a_task_batch_that_does_not_split_evenly_is_an_error_naming_num_tasks(four_devices):
    message = four_devices["indivisible"]
    assert "num_tasks (6)" in message and "number of devices (4)" in message


def test_a_sharded_checkpoint_restores_split_and_resumes_bit_identical(four_devices):
    assert four_devices["restored_specs"] == ["P('tasks',)"]
    assert four_devices["resume_bit_identical"]


@pytest.mark.parametrize("what", ["evaluate_rel", "validation_rel", "tune_rel"])
def test_evaluation_and_tuning_on_four_devices_equal_one_device(four_devices, what):
    assert four_devices[what] < 1e-5


def test_constrain_tasks_leaves_values_alone_without_a_mesh():
    x = {"a": jnp.arange(6.0).reshape(3, 2), "b": jnp.float32(1.0)}
    got = jax.jit(sharding.constrain_tasks)(x)
    np.testing.assert_array_equal(got["a"], x["a"])


def test_more_devices_than_visible_is_an_error_naming_devices():
    with pytest.raises(ValueError, match=r"devices \(99\) exceeds"):
        mo.task_mesh(99)


def test_a_mesh_without_a_tasks_axis_is_rejected():
    mesh = jax.make_mesh((1,), ("batch",), (jax.sharding.AxisType.Auto,))
    est = mo.tbptt(
        mo.learned_optimizer(mo.mlp_optimizer()),
        mo.quadratic_family(),
        num_tasks=2,
        truncation=2,
        horizon=4,
    )
    with pytest.raises(ValueError, match="mesh must have a 'tasks' axis"):
        mo.meta_train(est, jax.random.key(0), num_steps=1, progress=False, mesh=mesh)
