"""A meta-training run in a directory: checkpoints, metrics, resume, signals.

:func:`checkpointed_meta_train` is :func:`~metaopt.train.loop.meta_train` in a run
directory, with the hooks that make a run safe to stop: ``metrics.jsonl`` (one JSON
record per meta-step), ``checkpoints/`` (every ``checkpoint_every`` meta-steps, when
validation improves, and at exit), and SIGINT/SIGTERM handling that finishes the current
meta-step and writes a checkpoint. Resuming continues from the newest readable
checkpoint and ends bit-identical to a run that was never stopped. Every estimator and
learner runs through it: ``metaopt train``, the paper experiments and the scripts.
"""

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jax
import optax
from jax.sharding import Mesh

from metaopt.core.files import atomic_write, prepare_dir
from metaopt.core.sharding import any_process, is_main_process
from metaopt.core.types import Estimator, Theta
from metaopt.io.checkpoint import (
    CheckpointError,
    checkpoint_steps,
    read_metadata,
    restore_latest,
    save_checkpoint,
)
from metaopt.train import hooks
from metaopt.train.loop import (
    MetaTrainingDiverged,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
)


@contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Turns SIGINT and SIGTERM into a request to stop after the current meta-step."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        del frame
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now; checkpoints on disk stay
        if not received:
            print(
                f"\n{signal.Signals(signum).name}: stopping after this meta-step and "
                "writing a checkpoint",
                file=sys.stderr,
            )
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _read_metrics(path: Path, up_to_step: int) -> bytes:
    """The lines of ``path`` for meta-steps ``<= up_to_step``; a torn last line is dropped."""
    if not path.exists():
        return b""
    kept = []
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= up_to_step:
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(kept)


class RunStopped(Exception):
    """A signal stopped a checkpointed run; it can be resumed."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signal = signum


class MetaTrainRun(NamedTuple):
    """What :func:`checkpointed_meta_train` returns.

    Attributes:
      state: the final state (the best meta-parameters are ``state.best_theta``).
      status: ``"completed"``, ``"stopped"`` or ``"diverged"``.
      message: why a diverged run stopped.
      signal: the signal that stopped the run, if any.
      compile_seconds: compilation time of this process's meta-steps.

    """

    state: MetaTrainState
    status: str
    message: str
    signal: int | None
    compile_seconds: float


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists), for comparing configs."""
    return json.loads(json.dumps(value))


def _check_same_run(ckpt_dir: Path, config: dict[str, Any], may_change: frozenset[str]) -> None:
    """Raises if the newest checkpoint with readable metadata is of another configuration."""
    for _, _, path in reversed(checkpoint_steps(ckpt_dir)):
        try:
            before = read_metadata(path).get("config", {})
        except (CheckpointError, OSError):
            continue  # restore_latest reports it
        differ = [
            k
            for k in sorted(set(before) & set(config))
            if k not in may_change and _plain(before[k]) != _plain(config[k])
        ]
        if differ:
            detail = ", ".join(
                f"{k} = {json.dumps(config.get(k))} here, {json.dumps(before.get(k))} in the run"
                for k in differ
            )
            raise ValueError(
                f"the checkpoints in {str(ckpt_dir)!r} are of a run with a different "
                f"configuration: {detail}; start a new run instead of resuming"
            )
        return


def _start_or_resume(
    state: MetaTrainState,
    ckpt_dir: Path,
    metrics_path: Path,
    resume: bool,
    config: dict[str, Any],
    may_change: frozenset[str],
    main: bool,
) -> MetaTrainState:
    """The state a run starts from: ``state``, or the newest checkpoint when resuming.

    A fresh run drops old checkpoints and metrics; a resumed one keeps the metrics
    records up to the meta-step it resumes from. Only the main process writes.
    """
    if resume:
        _check_same_run(ckpt_dir, config, may_change)
        state, _, path = restore_latest(ckpt_dir, state)
    if not main:
        return state
    if resume:
        print(f"resuming from {path} (meta-step {state.step})", file=sys.stderr)
    else:
        for _, _, old in checkpoint_steps(ckpt_dir):
            old.unlink()
    kept = _read_metrics(metrics_path, state.step) if resume else b""
    atomic_write(metrics_path, lambda f: f.write(kept))
    return state


def checkpointed_meta_train(
    out: str | Path,
    estimator: Estimator,
    key: jax.Array,
    *,
    num_steps: int,
    meta_optimizer: optax.GradientTransformation,
    config: dict[str, Any],
    resume: bool = False,
    checkpoint_every: int = 50,
    keep_checkpoints: int = 3,
    max_consecutive_skips: int | None = None,
    may_change: frozenset[str] = frozenset(),
    validate: Callable[[Theta], float] | None = None,
    validate_every: int = 50,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> MetaTrainRun:
    """:func:`~metaopt.train.loop.meta_train` in directory ``out``, checkpointed and resumable.

    Writes ``out/metrics.jsonl`` (one record per meta-step) and ``out/checkpoints/``:
    every ``checkpoint_every`` meta-steps, when validation improves, and at the end or
    on SIGINT/SIGTERM, which stop the run after the current meta-step.

    Args:
      out: the directory (it must exist).
      estimator: the meta-gradient estimator (its learner is what is meta-learned).
      key: the run's key.
      num_steps: meta-steps in the whole run.
      meta_optimizer: the optax meta-optimizer.
      config: plain values that define the run, stored in every checkpoint; a resumed
        run must match them except for the keys in ``may_change``.
      resume: continue from the newest readable checkpoint in ``out/checkpoints``;
        otherwise old checkpoints there are removed and the run starts afresh.
      checkpoint_every: meta-steps between checkpoints.
      keep_checkpoints: how many recent checkpoints to keep (the best is kept too).
      max_consecutive_skips: see :func:`~metaopt.train.loop.meta_train`.
      may_change: keys of ``config`` a resumed run may change.
      validate: ``validate(theta) -> loss``; the best θ is kept.
      validate_every: meta-steps between validations.
      progress: show a progress bar.
      mesh: split the task batch over this mesh's devices. In a multi-process run
        every process calls this function with the same arguments; all of them read
        ``out`` (a directory they share) and only process 0 writes there.

    Returns:
      A :class:`MetaTrainRun`.

    Example:
      >>> import tempfile, jax, optax, metaopt as mo
      >>> family = mo.quadratic_family(dim=2)
      >>> learner = mo.learned_optimizer(mo.lstm_optimizer(hidden_size=2))
      >>> est = mo.tbptt(learner, family, num_tasks=2, truncation=2, horizon=4)
      >>> out = tempfile.mkdtemp()
      >>> run = checkpointed_meta_train(out, est, jax.random.key(0), num_steps=2,
      ...     meta_optimizer=optax.adam(1e-3), config={"seed": 0}, progress=False)
      >>> run.status, run.state.step
      ('completed', 2)
      >>> again = checkpointed_meta_train(out, est, jax.random.key(0), num_steps=4,
      ...     meta_optimizer=optax.adam(1e-3), config={"seed": 0}, resume=True,
      ...     progress=False)
      >>> again.state.step
      4
    """
    out = Path(out)
    main = is_main_process()
    ckpt_dir = prepare_dir(out / "checkpoints", "out/checkpoints") if main else out / "checkpoints"
    state = init_meta_train_state(estimator, key, meta_optimizer=meta_optimizer, mesh=mesh)
    metrics_path = out / "metrics.jsonl"
    state = _start_or_resume(state, ckpt_dir, metrics_path, resume, config, may_change, main)
    if state.step == num_steps:  # a finished run, resumed: nothing to compile or run
        return MetaTrainRun(state, "completed", "", None, 0.0)

    latest: list[MetaTrainState] = [state]
    best_so_far = [state.best_validation_loss if state.step else float("nan")]
    written = [state.step if resume else -1]

    def checkpoint(s: MetaTrainState, *, best: bool = False) -> None:
        metadata = {"config": config, "date": datetime.now(UTC).isoformat(timespec="seconds")}
        save_checkpoint(ckpt_dir, s, metadata=metadata, best=best, keep=keep_checkpoints)
        written[0] = s.step

    sink = metrics_path.open("a") if main else open(os.devnull, "w")
    with sink as metrics, _stop_on_signals() as received:

        def stop_requested() -> bool:
            # Every process stops at the same meta-step if any one got a signal.
            return any_process(bool(received))

        def on_step(s: MetaTrainState, record: dict[str, Any]) -> None:
            metrics.write(json.dumps({k: v for k, v in record.items() if k != "stop"}) + "\n")
            metrics.flush()
            latest[0] = s
            improved = "validation_loss" in record and not (
                s.best_validation_loss >= best_so_far[0]
            )
            if improved:
                best_so_far[0] = s.best_validation_loss
            periodic = s.step % checkpoint_every == 0 and not record["skipped"]
            if improved or periodic:
                checkpoint(s, best=improved)

        try:
            result = meta_train(
                estimator,
                key,
                num_steps=num_steps,
                meta_optimizer=meta_optimizer,
                state=state,
                validate=validate,
                validate_every=validate_every,
                hooks=[hooks.callback(on_step), hooks.stop_when(stop_requested)],
                progress=progress,
                max_consecutive_skips=max_consecutive_skips,
                mesh=mesh,
            )
        except MetaTrainingDiverged as e:
            return MetaTrainRun(latest[0], "diverged", str(e), None, 0.0)
    final = result.state
    if written[0] != final.step:
        checkpoint(final)
    status = "stopped" if result.stopped else "completed"
    signum = received[0] if received else None
    return MetaTrainRun(final, status, "", signum, result.compile_seconds)


def require_completed(run: MetaTrainRun) -> MetaTrainRun:
    """``run`` if it completed; raises if a signal stopped it or it diverged.

    Raises:
      RunStopped: a signal stopped the run; its message says how to resume.
      MetaTrainingDiverged: too many meta-updates in a row were not finite.

    Example:
      >>> run = MetaTrainRun(None, "completed", "", None, 0.0)
      >>> require_completed(run) is run
      True
    """
    if run.status == "stopped":
        name = signal.Signals(run.signal).name
        raise RunStopped(
            run.signal,
            f"stopped at meta-step {run.state.step} by {name}; checkpoint written; "
            f"continue with the same command and --resume",
        )
    if run.status == "diverged":
        raise MetaTrainingDiverged(run.message)
    return run
