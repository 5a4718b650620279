"""Command-line options generated from config dataclasses, and the dataclasses built back from parsed options.

A field becomes ``--kebab-name``: its type from the annotation (``int``, ``float``, ``str``, ``X | None``, ``bool`` as
``--x/--no-x``, ``tuple[T, ...]`` as comma-separated values), its default from the field, its help and choices from
``field(metadata={"help": ..., "choices": ...})``. Each dataclass's options form an argument group; a field whose
type is itself a dataclass (``ModelConfig.apg``) contributes its own fields, in a group of their own.

    add_config_arguments(parser, ModelConfig, flags={"condition": "apg"})   # APGConfig.condition is --apg
    cfg = config_from_args(ModelConfig, parser.parse_args(argv))
    config_argv(cfg, flags={"condition": "apg"})                            # the options that rebuild cfg
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    flags: dict[str, str] | None = None,
    only: tuple[str, ...] | None = None,
    overrides: dict[str, dict] | None = None,
    title: str | None = None,
) -> None:
    """One option per field of `cls` (recursing into dataclass fields). `flags` renames a field's option
    (field name → option name without dashes), `only` keeps those fields, `overrides` adds argparse keywords."""
    flags, overrides = flags or {}, overrides or {}
    group = parser.add_argument_group(title or cls.__name__)
    for f, kind in _fields(cls):
        if dataclasses.is_dataclass(kind):
            add_config_arguments(parser, kind, flags, only, overrides, f"{kind.__name__} ({cls.__name__}.{f.name})")
        elif only is None or f.name in only:
            option = "--" + flags.get(f.name, f.name).replace("_", "-")
            group.add_argument(option, dest=f.name, **_argparse_keywords(f, kind), **overrides.get(f.name, {}))


def config_from_args(cls: type, args: argparse.Namespace, only: tuple[str, ...] | None = None) -> Any:
    """`cls` from the parsed options of add_config_arguments (fields left out by `only` keep their defaults)."""
    values = {}
    for f, kind in _fields(cls):
        if dataclasses.is_dataclass(kind):
            values[f.name] = config_from_args(kind, args, only)
        elif only is None or f.name in only:
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def config_argv(cfg: Any, flags: dict[str, str] | None = None) -> list[str]:
    """The options that make add_config_arguments' parser rebuild `cfg` (fields at their default are left out)."""
    flags, argv = flags or {}, []
    for f, kind in _fields(type(cfg)):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(kind):
            argv += config_argv(value, flags)
            continue
        if value == _default(f):
            continue
        option = "--" + flags.get(f.name, f.name).replace("_", "-")
        if kind is bool:
            argv.append(option if value else "--no-" + option[2:])
        elif value is not None:
            argv += [option, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved annotation) of a dataclass, `X | None` reduced to X."""
    hints = typing.get_type_hints(cls)
    return [(f, _optional_of(hints[f.name])) for f in dataclasses.fields(cls)]


def _optional_of(kind: Any) -> Any:
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"only X | None unions become options, got {kind}")
        return rest[0]
    return kind


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default: it cannot be an optional option")


def _argparse_keywords(f: dataclasses.Field, kind: Any) -> dict:
    default = _default(f)
    keywords: dict[str, Any] = {"help": f.metadata.get("help", "")}
    if "choices" in f.metadata:
        keywords["choices"] = tuple(f.metadata["choices"])
    if kind is bool:
        return {**keywords, "action": argparse.BooleanOptionalAction, "default": default}
    if typing.get_origin(kind) is tuple:
        (item, ellipsis) = typing.get_args(kind)
        if ellipsis is not Ellipsis:
            raise TypeError(f"field {f.name}: only tuple[T, ...] becomes an option, got {kind}")
        keywords["metavar"] = f"{item.__name__.upper()},..."
        # a string default goes through `type` too (argparse does that), so the help shows "256,128"
        return {**keywords, "type": _comma_separated(item), "default": ",".join(map(str, default))}
    if kind not in (int, float, str):
        raise TypeError(f"field {f.name}: no option for type {kind}")
    return {**keywords, "type": kind, "default": default}


def _comma_separated(item: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None

    parse.__name__ = f"comma-separated {item.__name__}"
    return parse
