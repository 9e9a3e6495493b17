"""Command-line flags made from dataclass fields: their type, choices, default and help.

A field made by :func:`metaopt.core.registry.option` becomes ``--field-name``. Flags
are given with ``default=argparse.SUPPRESS``, so only what the user typed reaches the
configuration, which checks it (the one place for checks) and fills the defaults.
"""

import argparse
import dataclasses
import types
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

from metaopt.core.registry import value_text


def flag_name(name: str) -> str:
    """``"meta_lr"`` -> ``"--meta-lr"``."""
    return "--" + name.replace("_", "-")


def _value_type(field: dataclasses.Field) -> type:
    kind = field.type
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    return kind if kind in (int, float, str, bool) else str


def _or_none(kind: type):
    """A flag type that reads ``none`` as None, for options that may be unset."""

    def parse(text: str):
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def default_text(default: Any) -> str:
    """How ``--help`` shows a default value."""
    return value_text(default)


def add_field(
    group,
    field: dataclasses.Field,
    *,
    defaults: str | None = None,
    choices: Iterable[str] | None = None,
) -> None:
    """Adds ``field`` to ``group`` as a flag.

    Args:
      group: an argparse parser or argument group.
      field: a dataclass field made by :func:`metaopt.core.registry.option`.
      defaults: the text shown for the default, if not the field's own default.
      choices: the allowed values, if not the field's own choices.
    """
    meta = field.metadata
    choices = meta.get("choices") if choices is None else tuple(choices)
    shown = defaults if defaults is not None else default_text(field.default)
    help_text = f"{meta.get('help', '')} (default {shown})"
    kind = _value_type(field)
    if kind is bool:
        group.add_argument(
            flag_name(field.name),
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=help_text,
        )
        return
    if field.metadata.get("optional") and kind is not str:
        kind = _or_none(kind)
        help_text = help_text.replace(" (default", "; 'none' unsets it (default")
    group.add_argument(
        flag_name(field.name),
        type=kind,
        choices=choices,
        default=argparse.SUPPRESS,
        metavar=None if choices else field.name.upper(),
        help=help_text,
    )


def add_fields(group, fields: Iterable[dataclasses.Field]) -> None:
    """Adds each of ``fields`` to ``group`` (see :func:`add_field`)."""
    for field in fields:
        add_field(group, field)
