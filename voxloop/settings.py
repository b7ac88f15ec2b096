"""Command-line plumbing: subcommands with an example, and options built from frozen
settings dataclasses, so defaults live in one place.

Each component has one frozen dataclass of settings. A field's ``metadata``
may carry ``help`` (shown by ``--help``), ``flag`` (the option name, default
``--field-name``) and ``choices``. ``add_settings`` adds one option per field;
``settings_from_args`` builds the dataclass back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def add_command(subparsers, name: str, help_text: str,
                example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and ends with an example.

    ``-v`` works after the subcommand too (``voxloop serve -v``); left out, it keeps
    what ``voxloop -v`` set (SUPPRESS: the subcommand does not reset it to False).
    """
    parser = subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages")
    return parser


def command_group(subparsers, groups: dict, name: str, help_text: str,
                  example: str) -> argparse._SubParsersAction:
    """The nested group ``voxloop NAME ACTION``; made by whichever module asks first.

    ``groups`` (from ``voxloop.cli``) maps group names to their subparsers, so
    several modules can add actions to one group in any order.
    """
    if name not in groups:
        parent = add_command(subparsers, name, help_text, example)
        parent.set_defaults(run=lambda args: parent.print_help() or 2)
        groups[name] = parent.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    return groups[name]


def _flag(field: dataclasses.Field, prefix: str) -> str:
    if prefix:
        return f"--{prefix}-{field.name.replace('_', '-')}"
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def _dest(field: dataclasses.Field, prefix: str) -> str:
    """The namespace attribute: the flag's name, so two settings classes never collide."""
    return _flag(field, prefix).lstrip("-").replace("-", "_")


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other types are returned as they are."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    return next(a for a in typing.get_args(annotation) if a is not type(None))


def add_settings(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--option`` per field of the dataclass ``cls`` to ``parser``."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        if not field.init or field.metadata.get("cli") is False:
            continue
        kind = _base_type(hints[field.name])
        default = field.default
        help_text = field.metadata.get("help", "")
        flag, dest = _flag(field, prefix), _dest(field, prefix)
        if typing.get_origin(kind) is tuple:
            group.add_argument(
                flag, dest=dest, type=typing.get_args(kind)[0], nargs="+", default=default,
                help=f"{help_text} (default: {' '.join(map(str, default))})",
            )
            continue
        if kind is bool:
            group.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=default,
                help=f"{help_text} (default: {default})",
            )
            continue
        group.add_argument(
            flag, dest=dest, type=kind, default=default,
            choices=field.metadata.get("choices"), metavar=field.metadata.get("metavar"),
            help=f"{help_text} (default: {default})",
        )


def settings_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "") -> T:
    """Build ``cls`` from the options that ``add_settings`` added."""
    values = {}
    for field in dataclasses.fields(cls):
        dest = _dest(field, prefix)
        if field.init and hasattr(args, dest):
            value = getattr(args, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)
