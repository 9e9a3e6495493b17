"""Every registered estimator gives on two devices the meta-step it gives on one.

The device count is fixed when JAX starts, so one child process with two virtual CPU
devices (``--xla_force_host_platform_device_count=2``) runs the first meta-step of
every estimator, from its small recipe, with the task batch split over a two-device
mesh as ``meta_train(mesh=...)`` does (``compile_meta_step``), and writes what it got.
Each test compares one estimator with the one-device run of this process
(``recipes.meta_step_run``: the same start, key and meta-optimizer).

θ after the step is not compared: Adam's first step is lr·g/(|g| + ε) per entry, which
turns an entry of the meta-gradient that is zero up to rounding (a prototypical
network's last bias moves every embedding alike and leaves their distances unchanged)
into ±lr on either side. The meta-gradient, which the meta-optimizer's first link keeps,
is compared instead.

Tolerance: float32 reduction order. Split over two devices, a sum over tasks (or
particles) becomes two partial sums added, the same terms in another order: a relative
change of about 1e-7 per term, so the meta-gradient and the meta-loss are compared at
1e-5 relative to their largest entry.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from metaopt.estimators.registry import ESTIMATORS
from tests.conformance import recipes

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    import metaopt as mo
    from metaopt.core.sharding import replicate
    from metaopt.estimators.registry import ESTIMATORS
    from metaopt.train.loop import compile_meta_step, init_meta_train_state
    from tests.conformance import recipes

    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

    assert jax.device_count() == 2, jax.devices()
    mesh = mo.task_mesh(2)
    out = {}
    for name in ESTIMATORS.names():
        est = recipes.build_estimator(name)
        opt = recipes.META_OPTIMIZER
        state = init_meta_train_state(est, recipes.KEY, meta_optimizer=opt, mesh=mesh)
        step = compile_meta_step(est, opt, state, mesh)
        key = replicate(recipes.STEP_KEYS[0], mesh)
        new, metrics = step(est.data, state.theta, state.meta_opt_state,
                            state.estimator_state, key)
        split = [str(x.sharding.spec) for x in jax.tree.leaves(new.estimator_state) if x.ndim]
        out[name] = {
            "grad": flat(recipes.meta_gradient(new)).tolist(),
            "meta_loss": float(metrics["meta_loss"]),
            "specs": sorted(set(split)),
            "all_reduce": "all-reduce" in step.as_text(),
        }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
    """
)


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    path = tmp_path_factory.mktemp("two_devices") / "out.json"
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *sys.path])
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(path.read_text())


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def relative(got, want) -> float:
    """Largest difference relative to the largest entry of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_a_meta_step_on_two_devices_equals_one_device(two_devices, name, count_compiles):
    got = two_devices[name]
    one = recipes.meta_step_run(name, recipes.learner_for(name), count_compiles)
    want_grad = flat(recipes.meta_gradient(one.first))
    assert np.max(np.abs(want_grad)) > 0
    assert relative(got["grad"], want_grad) < 1e-5
    assert relative([got["meta_loss"]], [float(one.first_metrics["meta_loss"])]) < 1e-5


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_the_task_batch_is_split_and_reduced_across_devices_inside_the_step(two_devices, name):
    # A carried task batch is split along its task axis; tasks drawn inside the step
    # are split where they are drawn (constrain_tasks). Either way the mean over tasks
    # needs a cross-device all-reduce inside the compiled program.
    got = two_devices[name]
    assert got["all_reduce"], name
    assert set(got["specs"]) <= {"P('tasks',)"}, got["specs"]
