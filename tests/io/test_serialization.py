"""Saving and loading learned optimizers."""

import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt as mo
from metaopt.io import serialization
from metaopt.io.serialization import OptimizerFileError

ARCHS = [
    lambda: mo.lstm_optimizer(hidden_size=6, log_and_sign_p=10.0, output_scale=0.05),
    lambda: mo.mlp_optimizer(hidden_size=16),
]


@pytest.mark.parametrize("make", ARCHS)
def test_round_trip_gives_bit_identical_updates(tmp_path, make):
    lopt = make()
    theta = lopt.init(jax.random.key(3))
    path = mo.save(tmp_path / "opt.mopt", lopt, theta)
    lopt2, theta2 = mo.load(path)
    assert lopt2.name == lopt.name and lopt2.config == lopt.config
    params = {"w": jax.random.normal(jax.random.key(4), (5, 3)), "b": jnp.ones(3)}
    tx, tx2 = mo.as_optax(lopt, theta), mo.as_optax(lopt2, theta2)
    s, s2 = tx.init(params), tx2.init(params)
    for k in range(3):
        grads = jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)), params)
        u, s = tx.update(grads, s, params)
        u2, s2 = tx2.update(grads, s2, params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u2), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.fixture
def saved(tmp_path):
    lopt = mo.lstm_optimizer(hidden_size=4)
    return mo.save(tmp_path / "opt.mopt", lopt, lopt.init(jax.random.key(0)))


@pytest.mark.parametrize("keep", [0, 5, 20, 60, -1])
def test_truncated_file_is_a_clear_error_naming_it(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(OptimizerFileError, match=re.escape(str(saved))):
        mo.load(saved)


def test_corrupted_byte_is_detected(saved):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(OptimizerFileError, match="checksum"):
        mo.load(saved)


def test_other_version_is_a_clear_error(saved):
    data = bytearray(saved.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    saved.write_bytes(bytes(data))
    with pytest.raises(OptimizerFileError, match="version 99"):
        mo.load(saved)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.mopt"):
        mo.load(tmp_path / "nowhere.mopt")
    with pytest.raises(FileNotFoundError, match="not_a_name"):
        mo.load("not_a_name")


def test_crash_mid_write_leaves_the_old_file_intact(saved, monkeypatch):
    before = saved.read_bytes()
    lopt = mo.lstm_optimizer(hidden_size=4)

    def crash(path, write):
        class Boom(Exception):
            pass

        def partial(f):
            f.write(b"METAOPT\x00 partial")
            raise Boom

        try:
            return original(path, partial)
        except Boom:
            raise KeyboardInterrupt from None

    original = serialization.atomic_write
    monkeypatch.setattr(serialization, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        mo.save(saved, lopt, lopt.init(jax.random.key(1)))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    mo.load(saved)


def test_nonfinite_theta_is_not_saved(tmp_path):
    lopt = mo.lstm_optimizer(hidden_size=4)
    theta = lopt.init(jax.random.key(0))
    theta["out"]["b"] = theta["out"]["b"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        mo.save(tmp_path / "x.mopt", lopt, theta)
    assert not (tmp_path / "x.mopt").exists()


def test_theta_of_another_architecture_is_rejected(tmp_path):
    lstm, mlp = mo.lstm_optimizer(), mo.mlp_optimizer()
    with pytest.raises(ValueError, match="theta"):
        mo.save(tmp_path / "x.mopt", lstm, mlp.init(jax.random.key(0)))
