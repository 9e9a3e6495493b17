"""Two processes joined with jax.distributed train as one process does.

Each process of a ``metaopt train`` job is a separate Python process with one CPU
device, joined through a coordinator on localhost (CPU collectives over gloo). An audit
hook in each records every file it opens for writing in the run directory. The
two-process run must end with the meta-parameters of the one-process run (float
tolerance: the mean over tasks is reduced across the two processes in another order),
and a resumed two-process run must end bit-identical to the uninterrupted one.
"""

import json
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from metaopt.cli.main import main
from metaopt.io.checkpoint import checkpoint_steps, read_checkpoint
from metaopt.train.config import TrainConfig
from metaopt.train.train_run import initial_state

ARGS = [
    "--tasks", "4", "--truncation", "3", "--horizon", "6", "--meta-steps", "4",
    "--validate-every", "100", "--validation-tasks", "4", "--checkpoint-every", "2",
    "--keep-checkpoints", "5", "--lopt", "mlp", "--no-progress",
]  # fmt: skip
CONFIG = TrainConfig(
    tasks=4,
    horizon=6,
    meta_steps=4,
    validation_tasks=4,
    lopt="mlp",
    validate_every=100,
    options={"truncation": 3},
)

# One process of the job: argv = process id, port, then metaopt's arguments.
PROCESS = textwrap.dedent(
    """
    import json, os, sys
    pid, port, out = int(sys.argv[1]), sys.argv[2], os.path.abspath(sys.argv[3])
    written = set()

    def audit(event, args):
        if event == "open" and isinstance(args[0], str | bytes) and args[0]:
            path = os.path.abspath(os.fsdecode(args[0]))
            mode, flags = args[1] or "", args[2] or 0
            writes = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)
            if writes and path.startswith(out):
                written.add(os.path.relpath(path, out))
        elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir"):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(out):
                written.add(event)

    sys.addaudithook(audit)
    from metaopt.cli.main import main
    status = main(["train", "--out", out, *sys.argv[4:], "--coordinator-address",
                   f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid),
                   "--devices", "2"])
    print(json.dumps({"status": status, "written": sorted(written)}))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(out, *extra):
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(i), str(port), str(out), *ARGS, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    reports = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=180)
            assert p.returncode == 0, stderr[-4000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return reports


def final_state(out):
    _, _, path = checkpoint_steps(out / "checkpoints")[-1]
    return read_checkpoint(path, initial_state(CONFIG))[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one = tmp_path_factory.mktemp("one")
    assert main(["train", "--out", str(one), *ARGS]) == 0
    two = tmp_path_factory.mktemp("two") / "run"
    reports = two_processes(two)
    return one, two, reports


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_two_processes_end_with_the_meta_parameters_of_one(runs):
    one, two, reports = runs
    assert [r["status"] for r in reports] == [0, 0]
    a, b = final_state(one), final_state(two)
    assert a.step == b.step == 4
    np.testing.assert_allclose(flat(b.theta), flat(a.theta), rtol=0, atol=1e-6)


def test_only_process_0_writes_files(runs):
    _, two, reports = runs
    assert reports[1]["written"] == []
    assert {"config.toml", "metrics.jsonl", "summary.json", "optimizer.mopt"} <= {
        p.name for p in two.iterdir()
    }
    assert any(name.startswith("checkpoints/") for name in reports[0]["written"])


def test_a_two_process_checkpoint_resumes_bit_identical(runs, tmp_path):
    _, two, _ = runs
    resumed = tmp_path / "run"
    subprocess.run(["cp", "-r", str(two), str(resumed)], check=True)
    for step, _, path in checkpoint_steps(resumed / "checkpoints"):
        if step > 2:
            path.unlink()
    reports = two_processes(resumed, "--resume")
    assert [r["status"] for r in reports] == [0, 0]
    a, b = final_state(two), final_state(resumed)
    assert b.step == 4
    for name in ("theta", "meta_opt_state", "estimator_state"):
        np.testing.assert_array_equal(flat(getattr(b, name)), flat(getattr(a, name)))
