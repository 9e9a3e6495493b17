"""Saving and loading learned optimizers: damaged, missing and refused files.

That every registered optimizer's save/load round trip gives bit-identical updates is
checked by ``tests/conformance/test_registered_optimizers.py``.
"""

import re
import struct

import jax
import jax.numpy as jnp
import pytest

import metaopt as mo
from metaopt.io import serialization
from metaopt.io.serialization import OptimizerFileError


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
