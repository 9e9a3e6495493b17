"""A demo's methods, each meta-trained in its own checkpointed run directory.

The demos that compare methods (sinusoids, few-shot and one-shot digits) give every
method a directory under ``out/runs`` and meta-train it there with
:func:`~metaopt.train.run.checkpointed_meta_train`. A signal stops the demo with a
checkpoint; resuming reads a finished method back, continues a stopped one, and starts
one the demo never reached, so the demo ends with the θ of a run never stopped.
"""

from pathlib import Path
from typing import Any

import jax
import optax

from metaopt.core.files import prepare_dir
from metaopt.core.types import Estimator
from metaopt.io.checkpoint import checkpoint_steps
from metaopt.train.plots import read_metrics
from metaopt.train.run import MetaTrainRun, checkpointed_meta_train, require_completed


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds a checkpoint.

    Example:
      >>> import tempfile
      >>> has_checkpoint(tempfile.mkdtemp())
      False
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    return ckpt_dir.is_dir() and bool(checkpoint_steps(ckpt_dir))


def check_resumable(runs: str | Path) -> None:
    """Raises unless some method's run under ``runs`` has a checkpoint to resume from.

    Raises:
      ValueError: no ``runs/.../checkpoints`` holds a checkpoint.

    Example:
      >>> import tempfile
      >>> check_resumable(tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      ValueError: resume: no checkpoint of any method under ...
    """
    runs = Path(runs)
    if not any(has_checkpoint(d.parent) for d in runs.glob("**/checkpoints")):
        raise ValueError(
            f"resume: no checkpoint of any method under {str(runs)!r}; "
            "run the demo without resume first"
        )


def meta_train_method(
    run_dir: str | Path,
    estimator: Estimator,
    key: jax.Array,
    *,
    num_steps: int,
    meta_optimizer: optax.GradientTransformation,
    config: dict[str, Any],
    resume: bool,
    may_change: frozenset[str] = frozenset(),
    progress: bool = True,
) -> MetaTrainRun:
    """One method's meta-training in ``run_dir``; raises if a signal stopped it.

    ``resume`` continues from the newest checkpoint in ``run_dir`` (a finished run is
    read, not re-run); a method with no checkpoint yet (the demo stopped before it
    began) starts afresh. The other arguments are
    :func:`~metaopt.train.run.checkpointed_meta_train`'s.

    Raises:
      RunStopped: a signal stopped the run, with a checkpoint written.
      MetaTrainingDiverged: too many meta-updates in a row were not finite.

    Example:
      >>> import tempfile
      >>> from metaopt.estimators.pretraining import pretraining
      >>> from metaopt.learners.initialization import learned_initialization
      >>> from metaopt.tasks.sinusoid import sinusoid_family
      >>> family = sinusoid_family()
      >>> est = pretraining(learned_initialization(family), family, num_tasks=2)
      >>> run = meta_train_method(tempfile.mkdtemp(), est, jax.random.key(0), num_steps=2,
      ...     meta_optimizer=optax.sgd(1e-3), config={}, resume=False, progress=False)
      >>> run.status, int(run.state.step)
      ('completed', 2)
    """
    run_dir = prepare_dir(run_dir, "out")
    run = checkpointed_meta_train(
        run_dir,
        estimator,
        key,
        num_steps=num_steps,
        meta_optimizer=meta_optimizer,
        config=config,
        resume=resume and has_checkpoint(run_dir),
        may_change=may_change,
        progress=progress,
    )
    return require_completed(run)


def run_summary(run: MetaTrainRun, run_dir: str | Path) -> dict[str, float]:
    """What a demo's results record of a method's meta-training: times and last meta-loss.

    ``final_meta_loss`` is read from ``run_dir/metrics.jsonl``, so a resumed run
    reports the same as one never stopped.

    Example:
      >>> import tempfile
      >>> from metaopt.estimators.pretraining import pretraining
      >>> from metaopt.learners.initialization import learned_initialization
      >>> from metaopt.tasks.sinusoid import sinusoid_family
      >>> family, d = sinusoid_family(), tempfile.mkdtemp()
      >>> est = pretraining(learned_initialization(family), family, num_tasks=2)
      >>> run = meta_train_method(d, est, jax.random.key(0), num_steps=1,
      ...     meta_optimizer=optax.sgd(1e-3), config={}, resume=False, progress=False)
      >>> sorted(run_summary(run, d))
      ['compile_seconds', 'final_meta_loss', 'meta_train_seconds']
    """
    return {
        "meta_train_seconds": run.state.seconds,
        "compile_seconds": run.compile_seconds,
        "final_meta_loss": read_metrics(run_dir)[-1]["meta_loss"],
    }
