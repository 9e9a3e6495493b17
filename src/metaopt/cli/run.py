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
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from metaopt.cli.config import (
    OPERATIONAL,
    TASKS,
    WHOLE_HORIZON,
    TrainConfig,
    read_toml,
    to_toml,
)
from metaopt.core.files import atomic_write, prepare_dir, write_json
from metaopt.core.sharding import (
    any_process,
    barrier,
    check_divisible,
    is_main_process,
    select_devices,
    task_mesh,
)
from metaopt.core.types import Estimator, LearnedOptimizer, MetaLearner, TaskFamily, Theta
from metaopt.estimators.es import es
from metaopt.estimators.full_bptt import full_bptt
from metaopt.estimators.objectives import objective_by_name
from metaopt.estimators.pes import pes
from metaopt.estimators.schedules import constant_schedule, log_uniform_schedule
from metaopt.estimators.tbptt import tbptt
from metaopt.evaluation.evaluate import validation_loss
from metaopt.io.checkpoint import (
    CheckpointError,
    checkpoint_steps,
    read_metadata,
    restore_latest,
    save_checkpoint,
)
from metaopt.io.serialization import save
from metaopt.learners.learned_optimizer import learned_optimizer
from metaopt.train import hooks
from metaopt.train.loop import (
    MetaTrainingDiverged,
    MetaTrainState,
    init_meta_train_state,
    meta_train,
    run_keys,
)


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
        from metaopt.tasks.quadratic import quadratic_family

        return quadratic_family()
    if task == "mlp_regression":
        from metaopt.tasks.regression import mlp_regression_family

        return mlp_regression_family()
    if task == "mlp_digits":
        from metaopt.tasks.classification import mlp_classifier_family
        from metaopt.tasks.datasets import digits

        return mlp_classifier_family(digits(), split=split)
    if task == "conv_digits":
        from metaopt.tasks.conv import conv_classifier_family
        from metaopt.tasks.datasets import digits

        return conv_classifier_family(digits(), split=split)
    if task == "sinusoid":
        from metaopt.tasks.sinusoid import sinusoid_family

        return sinusoid_family()
    if task == "fewshot_digits":
        from metaopt.tasks.datasets import digits
        from metaopt.tasks.fewshot import fewshot_family

        # 5-way 1-shot; meta-training sees digits 0-4 (and their rotations), validation
        # and evaluation the unseen digits 5-9.
        if split == "train":
            return fewshot_family(digits(), classes=range(5), rotations=4)
        return fewshot_family(digits(), classes=range(5, 10))
    raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")


def build_lopt(config: TrainConfig) -> LearnedOptimizer:
    """The learned optimizer ``config.lopt`` names."""
    from metaopt.optimizers.lstm import lstm_optimizer

    lstm = lstm_optimizer(log_and_sign_p=config.log_and_sign_p, output_scale=config.output_scale)
    if config.lopt == "lstm":
        return lstm
    if config.lopt == "conv_and_rest":
        from metaopt.optimizers.split import conv_and_rest_optimizer

        return conv_and_rest_optimizer(lstm, lstm)
    from metaopt.optimizers.mlp import mlp_optimizer

    return mlp_optimizer()


def steps_per_epoch(config: TrainConfig) -> int:
    """Meta-steps in one epoch: ``ceil(horizon / truncation)``, or 1 for whole horizons.

    Example:
      >>> steps_per_epoch(TrainConfig(horizon=100, truncation=30))
      4
    """
    if config.estimator in WHOLE_HORIZON:
        return 1
    return -(-config.horizon // config.truncation)


def build_learner(config: TrainConfig, lopt: LearnedOptimizer, family: TaskFamily) -> MetaLearner:
    """The meta-learner ``config.learner`` names.

    Example:
      >>> from metaopt import lstm_optimizer, sinusoid_family
      >>> build_learner(TrainConfig(learner="metasgd"), lstm_optimizer(), sinusoid_family()).name
      'meta_sgd'
    """
    from metaopt.learners.combine import combine
    from metaopt.learners.initialization import learned_initialization
    from metaopt.learners.learning_rates import meta_sgd

    if config.learner == "learned_optimizer":
        return learned_optimizer(lopt)
    if config.learner == "learned_init":
        return learned_initialization(family, optax.sgd(config.inner_lr))
    if config.learner == "metasgd":
        return meta_sgd(family, config.inner_lr)
    return combine(learned_initialization(family), learned_optimizer(lopt))


def meta_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam at ``config.meta_lr``, after clipping the meta-gradient's norm if ``clip``."""
    adam = optax.adam(config.meta_lr)
    if config.clip is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip), adam)


def build_estimator(config: TrainConfig, lopt: LearnedOptimizer, family: TaskFamily) -> Estimator:
    """The estimator ``config.estimator`` names, over ``family``, meta-learning ``lopt``.

    Example:
      >>> from metaopt import lstm_optimizer, quadratic_family
      >>> est = build_estimator(TrainConfig(estimator="pes"), lstm_optimizer(),
      ...     quadratic_family())
      >>> est.name, est.config["std"]
      ('pes', 0.01)
    """
    from metaopt.estimators.maml import maml
    from metaopt.estimators.reptile import reptile

    learner = build_learner(config, lopt, family)
    if config.estimator in ("maml", "fomaml"):
        return maml(
            learner,
            family,
            num_tasks=config.tasks,
            inner_steps=config.horizon,
            first_order=config.estimator == "fomaml",
            remat=config.remat or "nested",
        )
    if config.estimator == "reptile":
        return reptile(learner, family, num_tasks=config.tasks, inner_steps=config.horizon)
    objective = objective_by_name(config.objective)
    if config.estimator == "full":
        return full_bptt(
            learner,
            family,
            num_tasks=config.tasks,
            horizon=config.horizon,
            objective=objective,
            second_order=config.second_order,
            remat=config.remat or "nested",
        )
    if config.schedule == "log_uniform":
        horizon = log_uniform_schedule(config.min_horizon, config.horizon)
    else:
        horizon = constant_schedule(config.horizon)
    common = dict(
        num_tasks=config.tasks,
        truncation=config.truncation,
        horizon=horizon,
        objective=objective,
        desync=config.desync,
    )
    if config.estimator == "tbptt":
        return tbptt(
            learner,
            family,
            second_order=config.second_order,
            remat=config.remat or "step",
            **common,
        )
    factory = {"es": es, "pes": pes}[config.estimator]
    return factory(
        learner, family, std=config.std, num_perturbations=config.perturbations, **common
    )


def _components(config: TrainConfig):
    lopt = build_lopt(config)
    return (
        lopt,
        build_estimator(config, lopt, build_family(config.task, "train")),
        build_family(config.task, "val"),
        meta_optimizer(config),
    )


def run_mesh(config: TrainConfig) -> Mesh | None:
    """The mesh a run's task batch is split over; None for one device in one process.

    ``config.devices`` devices (all visible ones if None), the same number from every
    process; ``config.tasks`` and ``config.validation_tasks`` must be multiples of it.

    Example:
      >>> run_mesh(TrainConfig(devices=1)) is None
      True
    """
    devices = select_devices(config.devices)
    if len(devices) == 1 and jax.process_count() == 1:
        return None
    mesh = task_mesh(devices)
    check_divisible("tasks", config.tasks, mesh)
    check_divisible("validation_tasks", config.validation_tasks, mesh)
    return mesh


def initial_state(config: TrainConfig) -> MetaTrainState:
    """The state a run of ``config`` starts from; also the template its checkpoints load into.

    Example:
      >>> initial_state(TrainConfig(tasks=4)).estimator_state.inner.params.shape
      (4, 10)

    """
    _, estimator, _, meta_opt = _components(config)
    return init_meta_train_state(estimator, jax.random.key(config.seed), meta_optimizer=meta_opt)


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
    """
    out = Path(out)
    main = is_main_process()
    ckpt_dir = prepare_dir(out / "checkpoints", "out/checkpoints") if main else out / "checkpoints"
    state = init_meta_train_state(estimator, key, meta_optimizer=meta_optimizer, mesh=mesh)
    metrics_path = out / "metrics.jsonl"
    state = _start_or_resume(state, ckpt_dir, metrics_path, resume, config, may_change, main)

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


def _check_run_dir(config: TrainConfig, out: Path, resume: bool) -> None:
    """Raises unless ``out`` holds this run (to resume) or no run at all (to start)."""
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


def _save_best_theta(
    config: TrainConfig, out: Path, lopt: LearnedOptimizer, final: MetaTrainState, *, write: bool
) -> Path:
    """Writes the best θ (if ``write`` and validation ever gave a finite loss); its path.

    A learned optimizer goes to ``optimizer.mopt`` (architecture and θ); any other
    learner's θ to ``theta.msgpack``.
    """
    saved = out / ("optimizer.mopt" if config.learner == "learned_optimizer" else "theta.msgpack")
    if write and np.isfinite(final.best_validation_loss):
        if config.learner == "learned_optimizer":
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
      >>> config = TrainConfig(epochs=1, tasks=2, truncation=5, horizon=10,
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
    lopt, estimator, val_family, meta_opt = _components(config)
    key = jax.random.key(config.seed)
    per_epoch = steps_per_epoch(config)
    run = checkpointed_meta_train(
        out,
        estimator,
        key,
        num_steps=config.epochs * per_epoch,
        meta_optimizer=meta_opt,
        config=dataclasses.asdict(config),
        resume=resume,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        max_consecutive_skips=config.max_consecutive_skips,
        may_change=OPERATIONAL,
        validate=validation_loss(
            estimator.learner,
            val_family,
            run_keys(key)[3],
            num_tasks=config.validation_tasks,
            num_steps=config.horizon,
            mesh=mesh,
        ),
        validate_every=config.validate_every * per_epoch,
        progress=config.progress,
        mesh=mesh,
    )
    final, status, message, sig = run.state, run.status, run.message, run.signal
    saved = _save_best_theta(config, out, lopt, final, write=main)
    if status == "completed":
        message = (
            f"finished {final.step} meta-steps; best validation loss "
            f"{final.best_validation_loss:.4g}; wrote {saved}"
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
