"""``metaopt train`` killed, interrupted and resumed: it ends where an uninterrupted run ends.

Every run here is a separate ``metaopt train`` process. Kills at exact moments (right
after a checkpoint, halfway through writing one) come from a small harness that wraps
the checkpoint writer and sends the process SIGKILL from inside; the other kills and
signals come from outside, at whatever moment the run has reached.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import metaopt as mo
from metaopt.io.checkpoint import checkpoint_steps, read_checkpoint
from metaopt.train.train_run import initial_state, saved_config

# 40 meta-steps of one truncation each; a checkpoint every 4, validation every 2.
ARGS = [
    "--meta-steps",
    "40",
    "--tasks",
    "4",
    "--truncation",
    "5",
    "--horizon",
    "10",
    "--validate-every",
    "2",
    "--validation-tasks",
    "4",
    "--checkpoint-every",
    "4",
    "--keep-checkpoints",
    "2",
    "--no-progress",
]
STEPS = 40

# Runs metaopt train, killing itself with SIGKILL at the N-th checkpoint write: "after"
# the file is in place, or "during" the write, with half the bytes in the temporary file.
HARNESS = """
import io, os, signal, sys, tempfile
from pathlib import Path
import metaopt.core.files, metaopt.train.run
from metaopt.cli.main import main

mode, n = sys.argv[1], int(sys.argv[2])
calls = [0]
save = metaopt.train.run.save_checkpoint
write = metaopt.core.files.atomic_write

def save_then_die(*args, **kwargs):
    path = save(*args, **kwargs)
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

def die_while_writing(path, fill):
    if not Path(path).name.startswith("ckpt-"):
        return write(path, fill)
    calls[0] += 1
    if calls[0] < n:
        return write(path, fill)
    buffer = io.BytesIO()
    fill(buffer)
    data = buffer.getvalue()
    fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
    os.write(fd, data[: len(data) // 2])
    os.fsync(fd)
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "after":
    metaopt.train.run.save_checkpoint = save_then_die
else:
    metaopt.core.files.atomic_write = die_while_writing
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Shares compiled programs between this module's runs, so each does not recompile.

    A cached program is the program a fresh compile would give, so this changes
    nothing that the tests compare, only how long the many short runs take.
    """
    # The parent of this worker's directory is shared by all pytest-xdist workers.
    cache = tmp_path_factory.getbasetemp().parent / "jax-cache"
    cache.mkdir(exist_ok=True)
    saved = {k: os.environ.get(k) for k in CACHE_ENV}
    os.environ.update({k: str(cache) if v is None else v for k, v in CACHE_ENV.items()})
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": None,  # the fixture's directory
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def train_cmd(out, *extra):
    return [sys.executable, "-m", "metaopt", "train", "--out", str(out), *ARGS, *extra]


def run_ok(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@functools.cache
def template_of(config):
    return initial_state(config)


def final_state(run_dir):
    template = template_of(saved_config(run_dir))
    _, _, path = checkpoint_steps(run_dir / "checkpoints")[-1]
    return read_checkpoint(path, template)[0]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_all_checkpoints_readable(run_dir):
    template = template_of(saved_config(run_dir))
    found = checkpoint_steps(run_dir / "checkpoints")
    assert found
    for _, _, path in found:
        read_checkpoint(path, template)


def assert_same_run(run_dir, reference):
    got, want = final_state(run_dir), final_state(reference)
    assert got.step == want.step == STEPS
    for name in ("theta", "best_theta", "meta_opt_state"):
        for x, y in zip(
            jax.tree.leaves(getattr(got, name)), jax.tree.leaves(getattr(want, name)), strict=True
        ):
            np.testing.assert_array_equal(x, y)  # bit for bit
    _, theta = mo.load(run_dir / "optimizer.mopt")
    _, theta_ref = mo.load(reference / "optimizer.mopt")
    for x, y in zip(jax.tree.leaves(theta), jax.tree.leaves(theta_ref), strict=True):
        np.testing.assert_array_equal(x, y)
    ours, theirs = metrics(run_dir), metrics(reference)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))
    for a, b in zip(ours, theirs, strict=True):
        assert a["meta_loss"] == b["meta_loss"] and a.get("validation_loss") == b.get(
            "validation_loss"
        )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_ok(train_cmd(out))
    return out


@pytest.mark.parametrize("mode, n", [("after", 3), ("during", 4)])
def test_sigkill_at_a_checkpoint_then_resume_is_bit_identical(tmp_path, reference, mode, n):
    cmd = [sys.executable, "-c", HARNESS, mode, str(n), "train", "--out", str(tmp_path), *ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "summary.json").exists()
    if mode == "during":
        assert list((tmp_path / "checkpoints").glob(".ckpt-*.tmp"))  # the torn write
    assert_all_checkpoints_readable(tmp_path)
    run_ok(train_cmd(tmp_path, "--resume"))
    assert_same_run(tmp_path, reference)
    assert_all_checkpoints_readable(tmp_path)


def wait_for_steps(proc, run_dir, steps):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        path = run_dir / "metrics.jsonl"
        if path.exists() and path.read_bytes().count(b"\n") >= steps:
            return
        time.sleep(0.002)
    raise AssertionError("the run did not reach the meta-step in time")


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path, reference):
    proc = subprocess.Popen(train_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_steps(proc, tmp_path, 6)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_all_checkpoints_readable(tmp_path)
    run_ok(train_cmd(tmp_path, "--resume"))
    assert_same_run(tmp_path, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_with_a_checkpoint_and_resume_finishes(tmp_path, reference, sig):
    proc = subprocess.Popen(train_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_steps(proc, tmp_path, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "--resume" in err.decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] < STEPS
    # The checkpoint written at exit is the step the run stopped at.
    assert checkpoint_steps(tmp_path / "checkpoints")[-1][0] == summary["step"]
    run_ok(train_cmd(tmp_path, "--resume"))
    assert_same_run(tmp_path, reference)


def test_a_corrupted_newest_checkpoint_resumes_from_the_one_before(tmp_path, reference):
    cmd = [sys.executable, "-c", HARNESS, "after", "5", "train", "--out", str(tmp_path), *ARGS]
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == -signal.SIGKILL
    found = checkpoint_steps(tmp_path / "checkpoints")
    older, path = found[-2][0], found[-1][2]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = run_ok(train_cmd(tmp_path, "--resume"))
    assert "skipping unreadable checkpoint" in proc.stderr and path.name in proc.stderr
    assert f"(meta-step {older})" in proc.stderr
    assert_same_run(tmp_path, reference)


def test_resume_with_only_unreadable_checkpoints_stops_with_an_error(tmp_path):
    cmd = [sys.executable, "-c", HARNESS, "after", "1", "train", "--out", str(tmp_path), *ARGS]
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == -signal.SIGKILL
    for _, _, path in checkpoint_steps(tmp_path / "checkpoints"):
        path.write_bytes(b"not a checkpoint")
    proc = subprocess.run(train_cmd(tmp_path, "--resume"), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "can be read" in proc.stderr
    assert not (tmp_path / "summary.json").exists()  # it did not start over


def test_same_seed_and_config_give_identical_runs(tmp_path, reference):
    run_ok(train_cmd(tmp_path))
    assert_same_run(tmp_path, reference)
