"""Checkpoint files: round trips, pruning, damage, and falling back to a good one."""

import jax
import numpy as np
import pytest

import metaopt as mo
from metaopt.io.checkpoint import (
    CheckpointError,
    checkpoint_steps,
    read_checkpoint,
    read_theta,
    restore_latest,
    save_checkpoint,
)
from metaopt.train import hooks
from metaopt.train.loop import init_meta_train_state


def estimator(dim=3):
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=4))
    return mo.tbptt(learner, mo.quadratic_family(dim=dim), num_tasks=2, truncation=5, horizon=10)


def validate(theta):
    return float(sum(np.sum(np.abs(x)) for x in jax.tree.leaves(theta)))


def assert_states_equal(a, b):
    assert a.step == b.step and a.skipped == b.skipped
    assert a.consecutive_skipped == b.consecutive_skipped
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))
    for name in ("theta", "meta_opt_state", "estimator_state", "best_theta"):
        x, y = getattr(a, name), getattr(b, name)
        assert jax.tree.structure(x) == jax.tree.structure(y)
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
            assert u.dtype == v.dtype
            np.testing.assert_array_equal(u, v)


@pytest.fixture(scope="module")
def run():
    est = estimator()
    result = mo.meta_train(
        est, jax.random.key(3), num_steps=4, validate=validate, validate_every=2, progress=False
    )
    template = init_meta_train_state(est, jax.random.key(3))
    return result.state, template


def test_round_trip_restores_every_array_and_counter_exactly(tmp_path, run):
    state, template = run
    path = save_checkpoint(tmp_path, state, metadata={"note": "x", "none": None})
    restored, metadata = read_checkpoint(path, template)
    assert_states_equal(restored, state)
    assert restored.best_validation_loss == state.best_validation_loss
    assert restored.seconds == state.seconds
    assert metadata == {"note": "x", "none": None}


def test_read_theta_reads_only_theta_against_a_theta_template(tmp_path, run):
    state, template = run
    path = save_checkpoint(tmp_path, state, metadata={})
    theta = read_theta(path, template.theta)
    for got, want in zip(jax.tree.leaves(theta), jax.tree.leaves(state.theta), strict=True):
        np.testing.assert_array_equal(got, want)
    other = mo.lstm_optimizer(hidden_size=6).init(jax.random.key(0))
    with pytest.raises(CheckpointError, match="theta"):
        read_theta(path, other)


@pytest.mark.parametrize("name", ["tbptt", "es", "pes", "nres", "full"])
def test_resuming_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path, name):
    learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=4))
    family = mo.quadratic_family(dim=3)
    if name == "full":
        est = mo.full_bptt(learner, family, num_tasks=2, horizon=5)
    else:
        factory = {"tbptt": mo.tbptt, "es": mo.es, "pes": mo.pes, "nres": mo.nres}[name]
        est = factory(learner, family, num_tasks=2, truncation=5, horizon=10, desync=True)
    kw = dict(num_steps=6, validate=validate, validate_every=2, progress=False)

    def keep_step_3(state, record):
        if state.step == 3:  # mid-horizon: the tasks are half-trained
            save_checkpoint(tmp_path, state)

    full = mo.meta_train(est, jax.random.key(3), hooks=[hooks.callback(keep_step_3)], **kw)
    template = init_meta_train_state(est, jax.random.key(3))
    state, _, path = restore_latest(tmp_path, template)
    assert state.step == 3 and path.name == "ckpt-00000003.ckpt"
    resumed = mo.meta_train(est, jax.random.key(3), state=state, **kw)
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    assert_states_equal(resumed.state, full.state)


def test_pruning_keeps_the_newest_and_the_newest_best(tmp_path, run):
    state, _ = run
    for step in range(1, 7):
        save_checkpoint(tmp_path, state._replace(step=step), best=step in (2, 3), keep=2)
    names = [p.name for _, _, p in checkpoint_steps(tmp_path)]
    assert names == ["ckpt-00000003-best.ckpt", "ckpt-00000005.ckpt", "ckpt-00000006.ckpt"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # torn
        lambda b: b[:-10] + bytes(10),  # payload bytes changed
        lambda b: b"garbage",
        lambda b: b[:8] + (7).to_bytes(4, "little") + b[12:],  # another format version
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, run, damage):
    state, template = run
    save_checkpoint(tmp_path, state._replace(step=1))
    newest = save_checkpoint(tmp_path, state._replace(step=2))
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.warns(RuntimeWarning, match=r"ckpt-00000002\.ckpt"):
        restored, _, path = restore_latest(tmp_path, template)
    assert restored.step == 1 and path.name == "ckpt-00000001.ckpt"


def test_no_readable_checkpoint_is_an_error_never_a_fresh_start(tmp_path, run):
    state, template = run
    with pytest.raises(CheckpointError, match="no checkpoint"):
        restore_latest(tmp_path, template)
    path = save_checkpoint(tmp_path, state)
    path.write_bytes(path.read_bytes()[:100])
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(CheckpointError, match="none of the 1 checkpoints"),
    ):
        restore_latest(tmp_path, template)


def test_a_checkpoint_of_another_run_shape_is_rejected(tmp_path, run):
    state, _ = run
    path = save_checkpoint(tmp_path, state)
    other = init_meta_train_state(estimator(dim=5), jax.random.key(3))
    with pytest.raises(CheckpointError, match="estimator_state"):
        read_checkpoint(path, other)


def test_a_checkpoint_from_before_the_meta_opt_state_rename_restores(tmp_path, run):
    from flax import serialization

    from metaopt.core import files
    from metaopt.io.checkpoint import MAGIC, VERSION

    state, template = run
    path = save_checkpoint(tmp_path, state)
    payload = files.unframe(
        path.read_bytes(), MAGIC, VERSION, path=path, what="x", error=CheckpointError
    )
    record = serialization.msgpack_restore(payload)
    record["meta_state"] = record.pop("meta_opt_state")  # as 0.2 wrote it
    old = files.frame(MAGIC, VERSION, serialization.msgpack_serialize(record))
    path.write_bytes(old)
    restored, _ = read_checkpoint(path, template)
    assert_states_equal(restored, state)
    with pytest.warns(DeprecationWarning, match="meta_opt_state"):
        old_name = restored.meta_state
    assert old_name is restored.meta_opt_state
