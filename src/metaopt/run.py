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

from metaopt.checkpoint import checkpoint_steps, restore_latest, save_checkpoint
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
    ckpt_dir = prepare_dir(ckpt_dir, "out/checkpoints")
    atomic_write(out / "config.toml", lambda f: f.write(to_toml(config).encode()))

    lopt, family, val_family, meta_optimizer = _components(config)
    key = jax.random.key(config.seed)
    state = initial_state(config)
    config_record = dataclasses.asdict(config)
    if resume:
        state, _, path = restore_latest(ckpt_dir, state)
        print(f"resuming from {path} (meta-step {state.step})", file=sys.stderr)
    metrics_path = out / "metrics.jsonl"
    kept = _read_metrics(metrics_path, state.step)
    atomic_write(metrics_path, lambda f: f.write(kept))

    latest: list[MetaTrainState] = [state]
    best_so_far = [state.best_validation_loss if state.step else float("nan")]

    def checkpoint(s: MetaTrainState, *, best: bool = False) -> None:
        save_checkpoint(
            ckpt_dir,
            s,
            metadata={
                "config": config_record,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            best=best,
            keep=config.keep_checkpoints,
        )

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
            periodic = s.step % config.checkpoint_every == 0 and not record["skipped"]
            if improved or periodic:
                checkpoint(s, best=improved)

        status, message = "completed", ""
        try:
            result = meta_train(
                lopt,
                family,
                key,
                num_epochs=config.epochs,
                num_tasks=config.tasks,
                truncation=config.truncation,
                horizon=config.horizon,
                meta_optimizer=meta_optimizer,
                validate_every=config.validate_every,
                num_validation_tasks=config.validation_tasks,
                validation_family=val_family,
                state=state,
                max_consecutive_skips=config.max_consecutive_skips,
                progress=config.progress,
                on_step=on_step,
                should_stop=lambda: bool(received),
            )
            final = result.state
            if result.stopped:
                status = "stopped"
        except MetaTrainingDiverged as e:
            final, status, message = latest[0], "diverged", str(e)

    written = any(step == final.step for step, _, _ in checkpoint_steps(ckpt_dir))
    if status != "diverged" and not written:
        checkpoint(final)
    if np.isfinite(final.best_validation_loss):
        save(out / "optimizer.mopt", lopt, final.best_theta)
    sig = received[0] if received else None
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
            "message": message,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return RunOutcome(status, final.step, final.best_validation_loss, message, sig)
