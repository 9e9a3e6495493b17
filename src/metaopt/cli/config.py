"""The configuration of a ``metaopt train`` run: defaults, a TOML file, flag overrides.

Precedence is defaults < TOML file < command-line flags. Every value is checked here,
whatever its source, and an error names the key. A run saves its configuration as
``config.toml`` in its directory; ``metaopt train --config RUN/config.toml`` repeats
it.
"""

import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TASKS = (
    "quadratic",
    "mlp_regression",
    "mlp_digits",
    "conv_digits",
    "sinusoid",
    "fewshot_digits",
)
LEARNED_OPTIMIZERS = ("lstm", "mlp", "conv_and_rest")
LEARNERS = ("learned_optimizer", "learned_init", "metasgd", "learned_init+optimizer")
ESTIMATORS = ("tbptt", "full", "es", "pes", "maml", "fomaml", "reptile")
# Estimators that run every task for its whole horizon in one meta-step (no truncation).
WHOLE_HORIZON = ("full", "maml", "fomaml", "reptile")
# Tasks with a query set (``eval_loss``).
QUERY_TASKS = ("sinusoid", "fewshot_digits")
SCHEDULES = ("constant", "log_uniform")
OBJECTIVES = ("mean", "final", "eval_mean", "eval_final")
REMAT = ("none", "step", "dots", "nested")
# Keys that change how a run is watched or saved, not what it computes; a resumed run
# may change them.
# ``devices`` is one of them: a run's result does not depend on the device count beyond
# float rounding, and checkpoints do not record it.
OPERATIONAL = frozenset(
    {"checkpoint_every", "keep_checkpoints", "max_consecutive_skips", "progress", "devices"}
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a ``metaopt train`` run.

    Attributes:
      task: the task family: one of ``TASKS``.
      lopt: the learned optimizer: ``"lstm"``, ``"mlp"``, or ``"conv_and_rest"`` (two
        LSTMs, one for convolution kernels and one for the other params).
      learner: what is meta-learned: ``"learned_optimizer"`` (``lopt``'s weights),
        ``"learned_init"`` (the initialization, inner SGD at ``inner_lr``),
        ``"metasgd"`` (initialization and per-parameter rates) or
        ``"learned_init+optimizer"`` (an initialization and ``lopt`` jointly).
      inner_lr: learned_init and metasgd: the inner SGD learning rate (its initial
        value for metasgd).
      estimator: the meta-gradient estimator: ``"tbptt"`` (truncated backprop),
        ``"full"`` (full-horizon backprop, one meta-step per epoch), ``"es"``
        (antithetic truncated evolution strategies), ``"pes"`` (persistent ES), or,
        with ``horizon`` inner steps and one meta-step per epoch, ``"maml"``,
        ``"fomaml"`` (query loss after the last step; tasks with a query set) and
        ``"reptile"`` (learners with a learned initialization).
      std: ES and PES: standard deviation of the perturbations of θ.
      perturbations: ES and PES: antithetic pairs per task.
      remat: tbptt and full: rematerialization of the unroll, ``"none"``, ``"step"``,
        ``"dots"`` (``"step"`` that keeps the matrix products) or ``"nested"`` (about
        √horizon carries); None picks ``"step"`` for tbptt and ``"nested"`` for full.
      schedule: how long each task trains: ``"constant"`` (``horizon`` steps) or
        ``"log_uniform"`` (between ``min_horizon`` and ``horizon``).
      min_horizon: the shortest horizon of the log-uniform schedule.
      desync: start the tasks at random step offsets, so one meta-batch mixes early
        and late training.
      objective: the meta-objective: ``"mean"`` (trajectory mean of the training
        loss), ``"final"`` (loss at the end of each task), ``"eval_mean"`` or
        ``"eval_final"`` (the family's held-out loss).
      second_order: tbptt and full: keep second derivatives of the inner loss.
      clip: clip the meta-gradient's global norm to this value; None for no clipping.
      seed: the run's PRNG seed (a non-negative integer).
      epochs: how long to meta-train, in horizons: each epoch is
        ``ceil(horizon / truncation)`` meta-steps (one for ``full``).
      tasks: tasks per meta-batch.
      truncation: inner steps per meta-gradient.
      horizon: inner steps per task.
      meta_lr: Adam's learning rate on the meta-parameters.
      validate_every: validate every this many epochs (and after the last).
      validation_tasks: fixed validation tasks.
      log_and_sign_p: LSTMs only: LogAndSign preprocessing with this ``p``; None for
        none.
      output_scale: LSTMs only: scale of the proposed update.
      checkpoint_every: write a checkpoint every this many meta-steps.
      keep_checkpoints: how many recent checkpoints to keep (the best is kept too).
      max_consecutive_skips: stop after this many non-finite meta-updates in a row.
      progress: show a progress bar.
      devices: how many devices the task batch is split over (a multiple of the
        number of processes; ``tasks`` must be a multiple of it); None for all
        visible devices. On a CPU, ``metaopt train --devices N`` makes JAX present
        the cores as N devices.

    Example:
      >>> TrainConfig(epochs=5).epochs
      5
      >>> TrainConfig(epochs=0)
      Traceback (most recent call last):
      ...
      ValueError: epochs must be a positive integer, got 0

    """

    task: str = "quadratic"
    lopt: str = "lstm"
    learner: str = "learned_optimizer"
    inner_lr: float = 0.01
    estimator: str = "tbptt"
    seed: int = 0
    epochs: int = 100
    tasks: int = 32
    truncation: int = 20
    horizon: int = 100
    meta_lr: float = 1e-3
    validate_every: int = 10
    validation_tasks: int = 64
    log_and_sign_p: float | None = None
    output_scale: float = 0.1
    std: float = 0.01
    perturbations: int = 1
    remat: str | None = None
    schedule: str = "constant"
    min_horizon: int | None = None
    desync: bool = False
    objective: str = "mean"
    second_order: bool = False
    clip: float | None = None
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    max_consecutive_skips: int = 20
    progress: bool = True
    devices: int | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f.name, getattr(self, f.name))
            if f.name in _POSITIVE_FLOATS and getattr(self, f.name) is not None:
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        shortest = self.min_horizon if self.schedule == "log_uniform" else self.horizon
        if self.schedule == "log_uniform" and self.min_horizon is None:
            raise ValueError("schedule 'log_uniform' needs min_horizon")
        if self.min_horizon is not None and self.min_horizon > self.horizon:
            raise ValueError(
                f"min_horizon ({self.min_horizon}) must not exceed horizon ({self.horizon})"
            )
        if self.estimator == "reptile" and self.learner == "learned_optimizer":
            raise ValueError(
                "estimator 'reptile' needs a learned initialization: set learner to "
                "'learned_init', 'metasgd' or 'learned_init+optimizer'"
            )
        if self.estimator in ("maml", "fomaml") and self.task not in QUERY_TASKS:
            raise ValueError(
                f"estimator {self.estimator!r} measures a query set: task must be one of "
                f"{list(QUERY_TASKS)}, got {self.task!r}"
            )
        if self.truncation > shortest and self.estimator not in WHOLE_HORIZON:
            what = "min_horizon" if self.schedule == "log_uniform" else "horizon"
            raise ValueError(f"truncation ({self.truncation}) must not exceed {what} ({shortest})")


_CHOICES = {
    "task": TASKS,
    "lopt": LEARNED_OPTIMIZERS,
    "learner": LEARNERS,
    "estimator": ESTIMATORS,
    "schedule": SCHEDULES,
    "objective": OBJECTIVES,
    "remat": REMAT,
}
_OPTIONAL = {"remat", "min_horizon", "clip", "log_and_sign_p", "devices"}
_BOOLS = {"progress", "desync", "second_order"}
_POSITIVE_INTS = {
    "epochs",
    "tasks",
    "truncation",
    "horizon",
    "validate_every",
    "validation_tasks",
    "checkpoint_every",
    "keep_checkpoints",
    "max_consecutive_skips",
    "perturbations",
    "min_horizon",
    "devices",
}
_POSITIVE_FLOATS = {"meta_lr", "output_scale", "log_and_sign_p", "std", "clip", "inner_lr"}


def _check(key: str, value: Any) -> None:
    """Raises TypeError/ValueError naming ``key`` if ``value`` is not allowed for it."""
    if value is None and key in _OPTIONAL:
        return
    if key in _CHOICES:
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a string, got {value!r}")
        if value not in _CHOICES[key]:
            raise ValueError(f"{key} must be one of {list(_CHOICES[key])}, got {value!r}")
    elif key == "seed":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"seed must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"seed must be a non-negative integer, got {value}")
    elif key in _POSITIVE_INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be a positive integer, got {value!r}")
        if value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value}")
    elif key in _POSITIVE_FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{key} must be a positive number, got {value!r}")
        if not 0 < value < float("inf"):
            raise ValueError(f"{key} must be a finite positive number, got {value}")
    elif key in _BOOLS:
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false, got {value!r}")


def _known_key(key: str, source: str) -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
        raise ValueError(f"{source}: unknown key {key!r}{hint}")


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    r"""Reads a run configuration file; errors name the file, and the key where one is wrong.

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
      >>> _ = p.write_text('epochs = 3\nmeta_lr = 0.01\n')
      >>> read_toml(p)
      {'epochs': 3, 'meta_lr': 0.01}

    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"config file {str(path)!r} is a directory") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    for key, value in values.items():
        _known_key(key, f"config file {str(path)!r}")
        if isinstance(value, dict):
            raise TypeError(f"config file {str(path)!r}: key {key!r} must be a value, not a table")
        try:
            _check(key, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"config file {str(path)!r}: {e}") from None
    return values


def resolve(
    given: Mapping[str, Any], saved: TrainConfig | None = None, *, source: str = "config"
) -> TrainConfig:
    """The configuration of a run from explicitly given values.

    Args:
      given: values from the TOML file and the flags, flags winning.
      saved: the configuration of the run being resumed, if any. Values in ``given``
        must then agree with it, except for the operational keys
        (``checkpoint_every``, ``keep_checkpoints``, ``max_consecutive_skips``,
        ``progress``, ``devices``).
      source: names the values in error messages.

    Raises:
      ValueError: an unknown key, a bad value, or a resumed run's key that differs.

    Example:
      >>> resolve({"epochs": 3}).epochs
      3
      >>> resolve({"epochs": 4}, saved=TrainConfig(epochs=3))
      Traceback (most recent call last):
      ...
      ValueError: the run was started with a different configuration: epochs = 4 here, 3 in the saved run; start a new run in another directory, or resume without changing these keys

    """  # noqa: E501
    for key in given:
        _known_key(key, source)
    if saved is None:
        return TrainConfig(**given)
    differ = [k for k, v in given.items() if k not in OPERATIONAL and v != getattr(saved, k)]
    if differ:
        detail = ", ".join(
            f"{k} = {json.dumps(given[k])} here, {json.dumps(getattr(saved, k))} in the saved run"
            for k in differ
        )
        raise ValueError(
            f"the run was started with a different configuration: {detail}; start a new "
            "run in another directory, or resume without changing these keys"
        )
    return dataclasses.replace(saved, **given)


def to_toml(config: TrainConfig) -> str:
    """The configuration as TOML text that :func:`read_toml` reads back.

    Example:
      >>> print(to_toml(TrainConfig()).splitlines()[0])
      task = "quadratic"

    """
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{f.name} = {text}")
    return "\n".join(lines) + "\n"
