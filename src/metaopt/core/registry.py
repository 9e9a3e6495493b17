"""One place per role for names: registries of estimators, learners, optimizers and tasks.

Each estimator, learner, learned optimizer and task family declares itself once, beside
its code, as an :class:`Entry`: a name, a ``build`` function and a small frozen
dataclass of its own typed options (fields made by :func:`option`, which carry their
help text and their check). A :class:`Registry` per role collects the entries
(``metaopt.estimators.registry.ESTIMATORS`` and its siblings); the command line's
choices, flags and help, the configuration's checks, the diagnostics, serialization and
the conformance tests all read them, so a new estimator is one file plus one line.
"""

import dataclasses
import difflib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

Check = Callable[[str, Any], Any]


def option(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
) -> Any:
    """A dataclass field for a typed option: its default, help text and check.

    Args:
      default: the default value.
      help: one line for ``--help``.
      check: ``check(name, value) -> value`` raising an error that names the option
        (see :mod:`metaopt.core.checks`); None for no check beyond the choices.
      choices: the allowed strings, if the option is a choice.
      optional: None is allowed (and means "not set").

    Example:
      >>> import dataclasses
      >>> from metaopt.core import checks
      >>> @dataclasses.dataclass(frozen=True)
      ... class Opts:
      ...     std: float = option(0.01, "perturbation scale", check=checks.positive_float)
      >>> check_options(Opts(std=0.1)).std
      0.1
    """
    metadata = {"help": help, "check": check, "choices": choices, "optional": optional}
    return dataclasses.field(default=default, metadata=metadata)


def value_text(value: Any) -> str:
    """How ``--help`` and messages show an option's value.

    Example:
      >>> value_text(None), value_text(True), value_text(0.5)
      ('unset', 'on', '0.5')
    """
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def check_value(field: dataclasses.Field, value: Any) -> Any:
    """``value`` checked (and normalized) against ``field``'s metadata; errors name it."""
    meta = field.metadata
    if meta.get("optional") and isinstance(value, str) and value.lower() == "none":
        value = None  # how a TOML file, which has no null, unsets an option
    if value is None and (meta.get("optional") or field.default is None):
        return None
    choices = meta.get("choices")
    if choices is not None:
        if not isinstance(value, str):
            raise TypeError(f"{field.name} must be a string, got {value!r}")
        if value not in choices:
            raise ValueError(f"{field.name} must be one of {list(choices)}, got {value!r}")
        return value
    if isinstance(field.default, bool) and not isinstance(value, bool):
        raise TypeError(f"{field.name} must be true or false, got {value!r}")
    check = meta.get("check")
    return value if check is None else check(field.name, value)


def check_options(options: Any) -> Any:
    """``options`` (a dataclass instance) with every field checked; errors name the field."""
    values = {f.name: check_value(f, getattr(options, f.name)) for f in dataclasses.fields(options)}
    return dataclasses.replace(options, **values)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered estimator, learner, learned optimizer or task family.

    Attributes:
      name: the name users type (``metaopt train --estimator NAME``).
      build: the role's uniform builder (see the role's ``registry`` module).
      options: a frozen dataclass of the entry's own options, fields made by
        :func:`option`; None if it has none.
      summary: one line for ``--help`` and the README.
      traits: plain words the role's code asks about (``"truncated"``, ``"query"``,
        ``"initialization"``, ...).
      defaults: the settings a run with this entry starts from, where they differ from
        the options dataclass's defaults or the run's own (an estimator's meta-learning
        rate, budget and perturbation scale, chosen so that it works from the command
        line). Explicit values always win.
    """

    name: str
    build: Callable[..., Any]
    options: type | None = None
    summary: str = ""
    traits: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def default(self, field: dataclasses.Field) -> Any:
        """The value a run with this entry gives ``field`` when nothing sets it.

        Example:
          >>> from metaopt.estimators.registry import ESTIMATORS
          >>> from metaopt.estimators.options import PerturbedOptions
          >>> import dataclasses
          >>> std = {f.name: f for f in dataclasses.fields(PerturbedOptions)}["std"]
          >>> ESTIMATORS["pes"].default(std)
          0.1
        """
        return self.defaults.get(field.name, field.default)

    def option_fields(self) -> tuple[dataclasses.Field, ...]:
        """The fields of this entry's options dataclass (none if it has none)."""
        return () if self.options is None else dataclasses.fields(self.options)

    def make_options(self, values: Mapping[str, Any] | None = None, **more: Any) -> Any:
        """This entry's options from ``values``, ignoring keys it does not take; checked.

        Example:
          >>> from metaopt.estimators.registry import ESTIMATORS
          >>> ESTIMATORS["pes"].make_options({"std": 0.1, "remat": "step"}).std
          0.1
        """
        if self.options is None:
            return None
        given = dict(values or {}) | more
        names = {f.name for f in self.option_fields()}
        return check_options(self.options(**{k: v for k, v in given.items() if k in names}))


class Registry(Mapping[str, Entry]):
    """The entries of one role, by name.

    Example:
      >>> reg = Registry("widget", [Entry("a", build=lambda: 1)])
      >>> reg["a"].build()
      1
      >>> reg["b"]
      Traceback (most recent call last):
      ...
      ValueError: widget must be one of ['a'], got 'b'
    """

    def __init__(
        self, role: str, entries: Iterable[Entry] = (), aliases: Mapping[str, str] | None = None
    ):
        self.role = role
        self.aliases = dict(aliases or {})
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: Entry) -> Entry:
        """Adds ``entry``; its name must be new. Returns it."""
        if not isinstance(entry, Entry):
            raise TypeError(f"entry must be a metaopt Entry, got {type(entry).__name__}")
        if entry.name in self._entries:
            raise ValueError(f"a {self.role} named {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> Entry:
        """Removes and returns the entry called ``name``."""
        self[name]
        return self._entries.pop(name)

    def canonical(self, name: str) -> str:
        """``name``, or the name an old alias now stands for (with a deprecation warning)."""
        if name in self.aliases and name not in self._entries:
            new = self.aliases[name]
            warnings.warn(
                f"the {self.role} {name!r} is now called {new!r}; the old name goes away in "
                "the next release",
                DeprecationWarning,
                stacklevel=3,
            )
            return new
        return name

    def __getitem__(self, name: str) -> Entry:
        name = self.canonical(name)
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{self.role} must be one of {list(self._entries)}, got {name!r}{hint}"
            )
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: Any = None) -> Any:
        """The entry called ``name`` (an alias too), or ``default``."""
        return self[name] if self.canonical(name) in self._entries else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, trait: str | None = None) -> tuple[str, ...]:
        """The registered names, in order; only those with ``trait`` if given."""
        return tuple(n for n, e in self._entries.items() if trait is None or trait in e.traits)
