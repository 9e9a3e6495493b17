"""The configuration of a meta-training run: defaults, a TOML file, flag overrides.

A run is a task family, a learned optimizer, a learner and an estimator, each named from
its registry, plus the run's size and machinery (the fields of :class:`TrainConfig`).
Each named entry brings its own typed options (an estimator's perturbation scale, the
LSTM's output scale): they travel flat, in ``TrainConfig.options``, filled with the
entries' defaults, so ``config.toml`` records exactly what the run used.

Precedence is defaults < TOML file < command-line flags. Every value is checked here,
whatever its source, by the check its field declares, and an error names the key.
"""

import dataclasses
import difflib
import json
import os
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from metaopt.core import checks
from metaopt.core.registry import Entry, Registry, check_value, option, value_text
from metaopt.estimators.registry import ESTIMATORS
from metaopt.learners.registry import LEARNERS
from metaopt.optimizers.registry import OPTIMIZERS
from metaopt.tasks.registry import TASKS

# Keys that change how a run is watched or saved, not what it computes; a resumed run
# may change them. ``devices`` is one of them: a run's result does not depend on the
# device count beyond float rounding, and checkpoints do not record it.
OPERATIONAL = frozenset(
    {"checkpoint_every", "keep_checkpoints", "max_consecutive_skips", "progress", "devices"}
)


def _registered(registry: Registry):
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        value = registry.canonical(value)
        if value not in registry:
            close = difflib.get_close_matches(value, list(registry), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{name} must be one of {list(registry)}, got {value!r}{hint}")
        return value

    return check


def _seed(name: str, value: Any) -> int:
    return checks.non_negative_int(name, value)


class _EstimatorDefault:
    """The default of a run field that each estimator may set (``Entry.defaults``)."""

    def __repr__(self) -> str:
        return "ESTIMATOR_DEFAULT"


ESTIMATOR_DEFAULT: Any = _EstimatorDefault()

# A run field's value when it is not given and the estimator sets no default for it.
FALLBACKS: dict[str, Any] = {
    "meta_steps": 500,
    "tasks": 32,
    "meta_lr": 1e-3,
    "clip": None,
    "validate_every": 50,
    "validation_tasks": 64,
}


def _from_epochs(config: "TrainConfig") -> None:
    """Reads the deprecated ``epochs`` as a meta-step budget, with a warning."""
    steps = config.epochs * steps_per_epoch(config)
    warnings.warn(
        f"epochs is deprecated and goes away in the next release: use meta_steps "
        f"(epochs = {config.epochs} is meta_steps = {steps} here)",
        DeprecationWarning,
        stacklevel=4,
    )
    object.__setattr__(config, "meta_steps", steps)
    object.__setattr__(config, "epochs", None)


def default_text(field: dataclasses.Field) -> str:
    """How ``--help`` shows a run field's default: per estimator where they differ.

    Example:
      >>> fields = {f.name: f for f in run_fields()}
      >>> default_text(fields["horizon"])
      '100'
      >>> "pes, nres: 0.01" in default_text(fields["meta_lr"])
      True
    """
    if field.default is not ESTIMATOR_DEFAULT:
        return value_text(field.default)
    groups: dict[str, list[str]] = {}
    for entry in ESTIMATORS.values():
        value = value_text(entry.defaults.get(field.name, FALLBACKS[field.name]))
        groups.setdefault(value, []).append(entry.name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(who)}: {value}" for value, who in groups.items())


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a ``metaopt train`` run.

    The fields below are the run's own; ``options`` holds the options of the named
    task, learned optimizer, learner and estimator (see their registries, or
    ``metaopt train --help``), flat, with every option the run uses filled in.

    Example:
      >>> TrainConfig(meta_steps=5).meta_steps
      5
      >>> TrainConfig(estimator="pes", options={"std": 0.05}).options["std"]
      0.05
      >>> hash(TrainConfig()) == hash(TrainConfig(options={"truncation": 20}))
      True
      >>> TrainConfig(meta_steps=0)
      Traceback (most recent call last):
      ...
      ValueError: meta_steps must be a positive integer, got 0
    """

    task: str = option("quadratic", "task family", check=_registered(TASKS))
    lopt: str = option("lstm", "learned optimizer", check=_registered(OPTIMIZERS))
    learner: str = option(
        "learned_optimizer",
        "what is meta-learned: the optimizer's weights, an initialization, Meta-SGD, or "
        "an initialization and the optimizer jointly",
        check=_registered(LEARNERS),
    )
    estimator: str = option("tbptt", "meta-gradient estimator", check=_registered(ESTIMATORS))
    seed: int = option(0, "PRNG seed", check=_seed)
    meta_steps: int = option(
        ESTIMATOR_DEFAULT,
        "how long to meta-train, in meta-steps (meta-updates of θ); a truncated "
        "estimator's meta-step runs one truncation, the others' a whole horizon",
        check=checks.positive_int,
    )
    tasks: int = option(ESTIMATOR_DEFAULT, "tasks per meta-batch", check=checks.positive_int)
    horizon: int = option(100, "inner steps per task", check=checks.positive_int)
    meta_lr: float = option(
        ESTIMATOR_DEFAULT, "meta-optimizer (Adam) rate", check=checks.positive_float
    )
    clip: float | None = option(
        ESTIMATOR_DEFAULT,
        "clip the meta-gradient's global norm",
        check=checks.positive_float,
        optional=True,
    )
    validate_every: int = option(
        ESTIMATOR_DEFAULT, "meta-steps between validations", check=checks.positive_int
    )
    validation_tasks: int = option(ESTIMATOR_DEFAULT, "validation tasks", check=checks.positive_int)
    checkpoint_every: int = option(50, "meta-steps between checkpoints", check=checks.positive_int)
    keep_checkpoints: int = option(3, "recent checkpoints kept", check=checks.positive_int)
    max_consecutive_skips: int = option(
        20, "stop after this many non-finite meta-updates in a row", check=checks.positive_int
    )
    progress: bool = option(True, "show a progress bar")
    devices: int | None = option(
        None,
        "devices to split the task batch over, from all processes (unset: all visible); "
        "on a CPU, JAX presents the cores as this many devices",
        check=checks.positive_int,
    )
    epochs: int | None = option(
        None,
        "deprecated: use meta_steps; sets meta_steps to epochs × ceil(horizon / truncation) "
        "for truncated estimators, epochs for the others",
        check=checks.positive_int,
    )
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        fields = run_fields()
        for f in fields:
            if getattr(self, f.name) is not ESTIMATOR_DEFAULT:
                object.__setattr__(self, f.name, check_value(f, getattr(self, f.name)))
        chosen = ESTIMATORS[self.estimator].defaults
        for f in fields:
            if getattr(self, f.name) is ESTIMATOR_DEFAULT:
                value = chosen.get(f.name, FALLBACKS[f.name])
                object.__setattr__(self, f.name, check_value(f, value))
        object.__setattr__(self, "options", _resolve_options(self, dict(self.options)))
        _check_combination(self)
        if self.epochs is not None:
            _from_epochs(self)

    def __hash__(self) -> int:
        run = tuple(getattr(self, f.name) for f in run_fields())
        return hash((run, tuple(sorted(self.options.items()))))

    def entries(self) -> Iterator[tuple[str, Entry]]:
        """``(key, entry)`` for each named entry whose options the run uses."""
        yield "task", TASKS[self.task]
        if "optimizer" in LEARNERS[self.learner].traits:
            yield "lopt", OPTIMIZERS[self.lopt]
        yield "learner", LEARNERS[self.learner]
        yield "estimator", ESTIMATORS[self.estimator]

    def entry_options(self, key: str) -> Any:
        """The options dataclass of the entry named by field ``key``, from ``options``."""
        registry = {"task": TASKS, "lopt": OPTIMIZERS, "learner": LEARNERS}.get(key, ESTIMATORS)
        return registry[getattr(self, key)].make_options(self.options)


def run_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`TrainConfig` that are the run's own (all but ``options``)."""
    return tuple(f for f in dataclasses.fields(TrainConfig) if f.name != "options")


def option_fields() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Every registered entry's option field by name, with the entries that declare it."""
    found: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for registry in (TASKS, OPTIMIZERS, LEARNERS, ESTIMATORS):
        for entry in registry.values():
            for f in entry.option_fields():
                found.setdefault(f.name, (f, []))[1].append(entry.name)
    return found


def _resolve_options(config: TrainConfig, given: dict[str, Any]) -> dict[str, Any]:
    """The options the run uses: ``given`` checked, the rest filled from the entries."""
    used: dict[str, Any] = {}
    for _, entry in config.entries():
        if entry.options is None:
            continue
        fields = {f.name: f for f in entry.option_fields()}
        # The entry's own run defaults (Entry.defaults) under what was given.
        values = {k: v for k, v in entry.defaults.items() if k in fields} | given
        if "truncation" in fields and "truncation" not in given:
            # A default truncation never asks for more steps than the horizon has.
            values = values | {
                "truncation": min(entry.default(fields["truncation"]), config.horizon)
            }
        used |= dataclasses.asdict(entry.make_options(values))
    known = option_fields()
    for key, value in given.items():
        if key in used:
            continue
        if key not in known:
            _unknown(key, "options")
        field, owners = known[key]
        if value != field.default:
            raise ValueError(
                f"{key} is an option of {', '.join(owners)}, which this run does not use "
                f"(estimator {config.estimator!r}, learner {config.learner!r}, lopt "
                f"{config.lopt!r})"
            )
    return used


def _check_episodic(config: TrainConfig) -> None:
    """An episodic learner goes with the episodic estimator, on a family of episodes."""
    estimator = "episodic" in ESTIMATORS[config.estimator].traits
    learner = "episodic" in LEARNERS[config.learner].traits
    if estimator and not learner:
        names = ", ".join(repr(n) for n in LEARNERS.names("episodic"))
        raise ValueError(
            f"estimator {config.estimator!r} trains an episodic learner: set learner to one "
            f"of {names}"
        )
    if learner and not estimator:
        names = ", ".join(repr(n) for n in ESTIMATORS.names("episodic"))
        raise ValueError(
            f"learner {config.learner!r} has no inner steps to unroll: set estimator to {names}"
        )
    if estimator and "episodes" not in TASKS[config.task].traits:
        raise ValueError(
            f"estimator {config.estimator!r} reads N-way K-shot episodes: task must be one "
            f"of {list(TASKS.names('episodes'))}, got {config.task!r}"
        )


def _check_combination(config: TrainConfig) -> None:
    """Raises for entries that do not go together, or truncations longer than a task."""
    estimator = ESTIMATORS[config.estimator]
    if (
        "initialization" in estimator.traits
        and "initialization" not in LEARNERS[config.learner].traits
    ):
        names = ", ".join(repr(n) for n in LEARNERS.names("initialization"))
        raise ValueError(
            f"estimator {config.estimator!r} needs a learned initialization: set learner "
            f"to one of {names}"
        )
    _check_episodic(config)
    if "query" in estimator.traits and "query" not in TASKS[config.task].traits:
        raise ValueError(
            f"estimator {config.estimator!r} measures a query set: task must be one of "
            f"{list(TASKS.names('query'))}, got {config.task!r}"
        )
    opts = config.options
    if "truncation" not in opts:
        return
    log_uniform = opts.get("schedule") == "log_uniform"
    if log_uniform and opts.get("min_horizon") is None:
        raise ValueError("schedule 'log_uniform' needs min_horizon")
    if opts.get("min_horizon") is not None and opts["min_horizon"] > config.horizon:
        raise ValueError(
            f"min_horizon ({opts['min_horizon']}) must not exceed horizon ({config.horizon})"
        )
    shortest = opts["min_horizon"] if log_uniform else config.horizon
    if opts["truncation"] > shortest:
        what = "min_horizon" if log_uniform else "horizon"
        raise ValueError(f"truncation ({opts['truncation']}) must not exceed {what} ({shortest})")


def steps_per_epoch(config: TrainConfig) -> int:
    """Meta-steps in one epoch: ``ceil(horizon / truncation)``, or 1 for whole horizons.

    Example:
      >>> steps_per_epoch(TrainConfig(horizon=100, options={"truncation": 30}))
      4
    """
    if "truncation" not in config.options:
        return 1
    return -(-config.horizon // config.options["truncation"])


def _unknown(key: str, source: str) -> None:
    names = [f.name for f in run_fields()] + list(option_fields())
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
    raise ValueError(f"{source}: unknown key {key!r}{hint}")


def check_key(key: str, value: Any, source: str) -> Any:
    """``value`` checked as key ``key`` (a run field or any entry's option)."""
    fields = {f.name: f for f in run_fields()}
    if key in fields:
        return check_value(fields[key], value)
    known = option_fields()
    if key not in known:
        _unknown(key, source)
    return check_value(known[key][0], value)


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    r"""Reads a run configuration file; errors name the file, and the key where one is wrong.

    Example:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
      >>> _ = p.write_text('meta_steps = 3\nmeta_lr = 0.01\n')
      >>> read_toml(p)
      {'meta_steps': 3, 'meta_lr': 0.01}
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
    source = f"config file {str(path)!r}"
    for key, value in values.items():
        known = key in option_fields() or key in {f.name for f in run_fields()}
        if isinstance(value, dict) and known:
            raise TypeError(f"{source}: key {key!r} must be a value, not a table")
        try:
            check_key(key, value, source)
        except (TypeError, ValueError) as e:
            message = str(e) if str(e).startswith(source) else f"{source}: {e}"
            raise type(e)(message) from None
    return values


def flatten(config: TrainConfig) -> dict[str, Any]:
    """The run's settings as one flat mapping: its fields, then its options.

    Example:
      >>> flatten(TrainConfig(estimator="pes"))["std"]
      0.1
    """
    values = {f.name: getattr(config, f.name) for f in run_fields()}
    return values | dict(config.options)


def from_flat(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from flat settings (a TOML file's keys and the flags)."""
    names = {f.name for f in run_fields()}
    run = {k: v for k, v in values.items() if k in names}
    return TrainConfig(**run, options={k: v for k, v in values.items() if k not in names})


def resolve(
    given: Mapping[str, Any], saved: TrainConfig | None = None, *, source: str = "config"
) -> TrainConfig:
    """The configuration of a run from explicitly given flat values.

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
      >>> resolve({"meta_steps": 3}).meta_steps
      3
      >>> resolve({"meta_steps": 4}, saved=TrainConfig(meta_steps=3))
      Traceback (most recent call last):
      ...
      ValueError: the run was started with a different configuration: meta_steps = 4 here, 3 in the saved run; start a new run in another directory, or resume without changing these keys
    """  # noqa: E501
    for key, value in given.items():
        check_key(key, value, source)
    if saved is None:
        return from_flat(given)
    before = flatten(saved)
    differ = [k for k, v in given.items() if k not in OPERATIONAL and v != before.get(k)]
    if differ:
        detail = ", ".join(
            f"{k} = {json.dumps(given[k])} here, {json.dumps(before.get(k))} in the saved run"
            for k in differ
        )
        raise ValueError(
            f"the run was started with a different configuration: {detail}; start a new "
            "run in another directory, or resume without changing these keys"
        )
    return from_flat(before | dict(given))


def to_toml(config: TrainConfig) -> str:
    """The configuration as TOML text that :func:`read_toml` reads back.

    Only what the run uses is written: its fields and its entries' options.

    Example:
      >>> print(to_toml(TrainConfig()).splitlines()[0])
      task = "quadratic"
    """
    lines = []
    by_estimator = {f.name for f in run_fields() if f.default is ESTIMATOR_DEFAULT}
    for key, value in flatten(config).items():
        if value is None and key in by_estimator:
            value = "none"  # unset on purpose, not left to the estimator's default
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
