"""A meta-training run in a directory: checkpoints, metrics, resume, signals.

``train_run(config, out)`` is what ``metaopt train`` does. The directory holds:

- ``config.toml``: the run's configuration (``metaopt train --config`` reads it);
- ``checkpoints/``: ``ckpt-<step>.ckpt`` every ``checkpoint_every`` meta-steps and at
  exit, ``ckpt-<step>-best.ckpt`` when the validation loss improves;
- ``metrics.jsonl``: one JSON record per meta-step;
- ``optimizer.mopt``: the best meta-parameters, for :func:`metaopt.load`;
- ``summary.json``: how the run ended.

A run stopped by SIGINT or SIGTERM finishes its meta-step, writes a checkpoint and
exits; ``train_run(config, out, resume=True)`` continues it and ends bit-identical to
the run that was never stopped.
"""

import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from metaopt.checkpoint import (
    CheckpointError,
    checkpoint_steps,
    read_metadata,
    restore_latest,
    save_checkpoint,
)
from metaopt.files import atomic_write, prepare_dir, write_json
from metaopt.meta_train import (
    MetaTrainingDiverged,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
)
from metaopt.run_config import OPERATIONAL, TASKS, TrainConfig, read_toml, to_toml
from metaopt.serialization import save
from metaopt.types import LearnedOptimizer, TaskFamily


class RunOutcome(NamedTuple):
    """How :func:`train_run` ended.

    Attributes:
      status: ``"completed"``, ``"stopped"`` (by a signal; resume to continue) or
        ``"diverged"`` (too many skipped meta-updates in a row).
      step: meta-steps done.
      best_validation_loss: the best validation loss seen.
      message: one line for the user.
      signal: the signal that stopped the run, if any.

    """

    status: str
    step: int
    best_validation_loss: float
    message: str
    signal: int | None = None


def build_family(task: str, split: str = "train") -> TaskFamily:
    """The family a task name stands for; ``split`` picks a dataset's split.

    Example:
      >>> build_family("quadratic").name
      'quadratic'

    """
    if task == "quadratic":
        from metaopt.quadratic import quadratic_family

        return quadratic_family()
    if task == "mlp_regression":
        from metaopt.regression import mlp_regression_family

        return mlp_regression_family()
    if task == "mlp_digits":
        from metaopt.classification import mlp_classifier_family
        from metaopt.datasets import digits

        return mlp_classifier_family(digits(), split=split)
    if task == "conv_digits":
        from metaopt.conv import conv_classifier_family
        from metaopt.datasets import digits

        return conv_classifier_family(digits(), split=split)
    raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")


def build_lopt(config: TrainConfig) -> LearnedOptimizer:
    """The learned optimizer ``config.lopt`` names."""
    from metaopt.lstm import lstm_optimizer

    lstm = lstm_optimizer(log_and_sign_p=config.log_and_sign_p, output_scale=config.output_scale)
    if config.lopt == "lstm":
        return lstm
    if config.lopt == "conv_and_rest":
        from metaopt.split_lopt import conv_and_rest_optimizer

        return conv_and_rest_optimizer(lstm, lstm)
    from metaopt.mlp_lopt import mlp_optimizer

    return mlp_optimizer()


def _components(config: TrainConfig):
    return (
        build_lopt(config),
        build_family(config.task, "train"),
        build_family(config.task, "val"),
        optax.adam(config.meta_lr),
    )


def initial_state(config: TrainConfig) -> MetaTrainState:
    """The state a run of ``config`` starts from; also the template its checkpoints load into.

    Example:
      >>> initial_state(TrainConfig(tasks=4)).batch.inner.params.shape
      (4, 10)

    """
    lopt, family, _, meta_optimizer = _components(config)
    key = jax.random.key(config.seed)
    return init_meta_train_state(
        lopt, family, key, num_tasks=config.tasks, meta_optimizer=meta_optimizer
    )


def saved_config(out: str | Path) -> TrainConfig:
    """The configuration a run in ``out`` was started with."""
    path = Path(out) / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no run to resume in {str(out)!r}: {str(path)!r} is missing")
    return TrainConfig(**read_toml(path))


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
            for k in sorted(set(before) | set(config))
            if k not in may_change and _plain(before.get(k)) != _plain(config.get(k))
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


def checkpointed_meta_train(
    out: str | Path,
    lopt: LearnedOptimizer,
    family: TaskFamily,
    key: jax.Array,
    *,
    num_tasks: int,
    meta_optimizer: optax.GradientTransformation,
    config: dict[str, Any],
    resume: bool = False,
    checkpoint_every: int = 50,
    keep_checkpoints: int = 3,
    max_consecutive_skips: int | None = None,
    may_change: frozenset[str] = frozenset(),
    **meta_train_kwargs: Any,
) -> MetaTrainRun:
    """:func:`~metaopt.meta_train.meta_train` in directory ``out``, checkpointed and resumable.

    Writes ``out/metrics.jsonl`` (one record per meta-step) and ``out/checkpoints/``:
    every ``checkpoint_every`` meta-steps, when validation improves, and at the end or
    on SIGINT/SIGTERM, which stop the run after the current meta-step.

    Args:
      out: the directory (it must exist).
      lopt: the learned optimizer.
      family: the task family.
      key: the run's key.
      num_tasks: tasks per meta-batch.
      meta_optimizer: the optax meta-optimizer.
      config: plain values that define the run, stored in every checkpoint; a resumed
        run must match them except for the keys in ``may_change``.
      resume: continue from the newest readable checkpoint in ``out/checkpoints``;
        otherwise old checkpoints there are removed and the run starts afresh.
      checkpoint_every: meta-steps between checkpoints.
      keep_checkpoints: how many recent checkpoints to keep (the best is kept too).
      max_consecutive_skips: see :func:`~metaopt.meta_train.meta_train`.
      may_change: keys of ``config`` a resumed run may change.
      **meta_train_kwargs: the other arguments of ``meta_train``.

    Returns:
      A :class:`MetaTrainRun`.

    """
    out = Path(out)
    ckpt_dir = prepare_dir(out / "checkpoints", "out/checkpoints")
    state = init_meta_train_state(
        lopt, family, key, num_tasks=num_tasks, meta_optimizer=meta_optimizer
    )
    if resume:
        _check_same_run(ckpt_dir, config, may_change)
        state, _, path = restore_latest(ckpt_dir, state)
        print(f"resuming from {path} (meta-step {state.step})", file=sys.stderr)
    else:
        for _, _, old in checkpoint_steps(ckpt_dir):
            old.unlink()
    metrics_path = out / "metrics.jsonl"
    kept = _read_metrics(metrics_path, state.step) if resume else b""
    atomic_write(metrics_path, lambda f: f.write(kept))

    latest: list[MetaTrainState] = [state]
    best_so_far = [state.best_validation_loss if state.step else float("nan")]

    def checkpoint(s: MetaTrainState, *, best: bool = False) -> None:
        metadata = {"config": config, "date": datetime.now(UTC).isoformat(timespec="seconds")}
        save_checkpoint(ckpt_dir, s, metadata=metadata, best=best, keep=keep_checkpoints)

    with metrics_path.open("a") as metrics, _stop_on_signals() as received:

        def on_step(s: MetaTrainState, record: dict[str, Any]) -> None:
            metrics.write(json.dumps(record) + "\n")
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
                lopt,
                family,
                key,
                num_tasks=num_tasks,
                meta_optimizer=meta_optimizer,
                state=state,
                max_consecutive_skips=max_consecutive_skips,
                on_step=on_step,
                should_stop=lambda: bool(received),
                **meta_train_kwargs,
            )
        except MetaTrainingDiverged as e:
            return MetaTrainRun(latest[0], "diverged", str(e), None, 0.0)
    final = result.state
    if not any(step == final.step for step, _, _ in checkpoint_steps(ckpt_dir)):
        checkpoint(final)
    status = "stopped" if result.stopped else "completed"
    signum = received[0] if received else None
    return MetaTrainRun(final, status, "", signum, result.compile_seconds)


def train_run(config: TrainConfig, out: str | Path, *, resume: bool = False) -> RunOutcome:
    """Meta-trains as ``config`` says, in directory ``out``, checkpointing as it goes.

    Args:
      config: the run's configuration.
      out: the run directory (created if needed). A new run refuses a directory that
        already holds one.
      resume: continue the run in ``out`` from its newest readable checkpoint;
        ``config`` must match the saved one except for operational keys.

    Returns:
      A :class:`RunOutcome`.

    Example:
      >>> import tempfile
      >>> config = TrainConfig(epochs=1, tasks=2, truncation=5, horizon=10,
      ...     validation_tasks=2, progress=False)
      >>> train_run(config, tempfile.mkdtemp()).status
      'completed'

    """
    out = prepare_dir(out, "out")
    ckpt_dir = out / "checkpoints"
    if resume:
        saved = saved_config(out)
        differ = [
            f.name
            for f in dataclasses.fields(config)
            if f.name not in OPERATIONAL and getattr(config, f.name) != getattr(saved, f.name)
        ]
        if differ:
            raise ValueError(
                f"config differs from the run saved in {str(out)!r} in: {', '.join(differ)}"
            )
    elif (out / "config.toml").exists() or (ckpt_dir.exists() and any(ckpt_dir.iterdir())):
        raise FileExistsError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, or choose "
            "another --out"
        )
    atomic_write(out / "config.toml", lambda f: f.write(to_toml(config).encode()))

    lopt, family, val_family, meta_optimizer = _components(config)
    run = checkpointed_meta_train(
        out,
        lopt,
        family,
        jax.random.key(config.seed),
        num_tasks=config.tasks,
        meta_optimizer=meta_optimizer,
        config=dataclasses.asdict(config),
        resume=resume,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        max_consecutive_skips=config.max_consecutive_skips,
        may_change=OPERATIONAL,
        num_epochs=config.epochs,
        truncation=config.truncation,
        horizon=config.horizon,
        validate_every=config.validate_every,
        num_validation_tasks=config.validation_tasks,
        validation_family=val_family,
        progress=config.progress,
    )
    final, status, message, sig = run.state, run.status, run.message, run.signal
    if np.isfinite(final.best_validation_loss):
        save(out / "optimizer.mopt", lopt, final.best_theta)
    if status == "completed":
        message = (
            f"finished {final.step} meta-steps; best validation loss "
            f"{final.best_validation_loss:.4g}; wrote {out / 'optimizer.mopt'}"
        )
    elif status == "stopped":
        message = (
            f"stopped at meta-step {final.step} by {signal.Signals(sig).name}; checkpoint "
            f"written; continue with: metaopt train --out {out} --resume"
        )
    else:
        message += f" The last good checkpoints are in {ckpt_dir}."
    write_json(
        out / "summary.json",
        {
            "status": status,
            "step": final.step,
            "best_validation_loss": final.best_validation_loss,
            "skipped": final.skipped,
            "seconds": final.seconds,
            "wall_seconds": final.wall_seconds,
            "compile_seconds": run.compile_seconds,
            "message": message,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return RunOutcome(status, final.step, final.best_validation_loss, message, sig)
