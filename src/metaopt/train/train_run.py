"""``metaopt train`` as a function: a configured run in a directory, checkpointed.

``train_run(config, out)`` meta-trains as a :class:`~metaopt.train.config.TrainConfig`
says. The directory holds:

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

import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import flax.serialization
import jax
import numpy as np

from metaopt.core.files import atomic_write, prepare_dir, write_json
from metaopt.core.sharding import barrier, is_main_process
from metaopt.core.types import LearnedOptimizer
from metaopt.evaluation.evaluate import validation_loss
from metaopt.io.serialization import save
from metaopt.learners.registry import LEARNERS
from metaopt.train.build import components, run_mesh
from metaopt.train.config import (
    OPERATIONAL,
    TrainConfig,
    flatten,
    from_flat,
    read_toml,
    to_toml,
)
from metaopt.train.loop import MetaTrainState, init_meta_train_state, run_keys
from metaopt.train.plots import read_metrics
from metaopt.train.run import checkpointed_meta_train


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


def initial_state(config: TrainConfig) -> MetaTrainState:
    """The state a run of ``config`` starts from; also the template its checkpoints load into.

    Example:
      >>> initial_state(TrainConfig(tasks=4)).estimator_state.inner.params.shape
      (4, 10)

    """
    parts = components(config)
    return init_meta_train_state(
        parts.estimator, jax.random.key(config.seed), meta_optimizer=parts.meta_optimizer
    )


def saved_config(out: str | Path) -> TrainConfig:
    """The configuration a run in ``out`` was started with."""
    path = Path(out) / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no run to resume in {str(out)!r}: {str(path)!r} is missing")
    return from_flat(read_toml(path))


def best_step(out: Path, last: int) -> int | None:
    """The meta-step whose validation gave the run's best loss (the first such), if any."""
    best, at = float("inf"), None
    try:
        records = read_metrics(out)
    except (OSError, ValueError):
        return None
    for record in records:
        value = record.get("validation_loss")
        if value is not None and value < best and record.get("step", 0) <= last:
            best, at = value, record["step"]
    return at


def against_start(start: float, best: float, at: int | None) -> str:
    """One line: the best validation loss against the starting θ's, and when it came.

    Example:
      >>> against_start(0.5, 0.25, 300)
      'best validation loss 0.25 at meta-step 300, 2× lower than the starting θ (0.5)'
      >>> against_start(0.5, 0.5, None)
      'validation never improved on the starting θ (loss 0.5): what was saved is the starting θ; see metrics.jsonl and try another meta-learning rate or more meta-steps'
    """  # noqa: E501
    if at is None or not best < start:
        return (
            f"validation never improved on the starting θ (loss {start:.4g}): what was saved "
            "is the starting θ; see metrics.jsonl and try another meta-learning "
            "rate or more meta-steps"
        )
    return (
        f"best validation loss {best:.4g} at meta-step {at}, {start / best:.3g}× lower than "
        f"the starting θ ({start:.4g})"
    )


def _check_run_dir(config: TrainConfig, out: Path, resume: bool) -> None:
    """Raises unless ``out`` holds this run (to resume) or no run at all (to start)."""
    ckpt_dir = out / "checkpoints"
    if resume:
        saved = saved_config(out)
        now, before = flatten(config), flatten(saved)
        differ = [
            k
            for k in sorted(set(now) | set(before))
            if k not in OPERATIONAL and now.get(k) != before.get(k)
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


def _save_best_theta(
    config: TrainConfig, out: Path, lopt: LearnedOptimizer, final: MetaTrainState, *, write: bool
) -> Path:
    """Writes the best θ (if ``write`` and validation ever gave a finite loss); its path.

    A learned optimizer goes to ``optimizer.mopt`` (architecture and θ); any other
    learner's θ to ``theta.msgpack``.
    """
    is_optimizer = LEARNERS[config.learner].traits == frozenset({"optimizer"})
    saved = out / ("optimizer.mopt" if is_optimizer else "theta.msgpack")
    if write and np.isfinite(final.best_validation_loss):
        if is_optimizer:
            save(saved, lopt, final.best_theta)
        else:
            data = flax.serialization.to_bytes(jax.device_get(final.best_theta))
            atomic_write(saved, lambda f: f.write(data))
    return saved


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
      >>> config = TrainConfig(meta_steps=2, tasks=2, horizon=10, options={"truncation": 5},
      ...     validation_tasks=2, progress=False)
      >>> train_run(config, tempfile.mkdtemp()).status
      'completed'

    """
    main = is_main_process()
    out = prepare_dir(out, "out") if main else Path(out)
    ckpt_dir = out / "checkpoints"
    _check_run_dir(config, out, resume)
    barrier("metaopt: run directory checked")  # before process 0 writes there
    if main:
        atomic_write(out / "config.toml", lambda f: f.write(to_toml(config).encode()))

    mesh = run_mesh(config)
    lopt, estimator, val_family, meta_opt = components(config)
    key = jax.random.key(config.seed)
    validate = validation_loss(
        estimator.learner,
        val_family,
        run_keys(key)[3],
        num_tasks=config.validation_tasks,
        num_steps=config.horizon,
        mesh=mesh,
    )
    run = checkpointed_meta_train(
        out,
        estimator,
        key,
        num_steps=config.meta_steps,
        meta_optimizer=meta_opt,
        config=flatten(config),
        resume=resume,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        max_consecutive_skips=config.max_consecutive_skips,
        may_change=OPERATIONAL,
        validate=validate,
        validate_every=config.validate_every,
        progress=config.progress,
        mesh=mesh,
    )
    final, status, message, sig = run.state, run.status, run.message, run.signal
    saved = _save_best_theta(config, out, lopt, final, write=main)
    if status == "completed":
        start = float(validate(init_meta_train_state(estimator, key, mesh=mesh).theta))
        message = f"finished {final.step} meta-steps; wrote {saved}\n" + against_start(
            start, final.best_validation_loss, best_step(out, final.step)
        )
    elif status == "stopped":
        message = (
            f"stopped at meta-step {final.step} by {signal.Signals(sig).name}; checkpoint "
            f"written; continue with: metaopt train --out {out} --resume"
        )
    else:
        message += f" The last good checkpoints are in {ckpt_dir}."
    outcome = RunOutcome(status, final.step, final.best_validation_loss, message, sig)
    if not main:
        barrier("metaopt: run written")
        return outcome
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
    barrier("metaopt: run written")
    return outcome
