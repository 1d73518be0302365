"""`NAME=VALUE` settings from the command line (`--param`, `--finetune-param`), typed against what they set.

Each command knows the settings it takes and their types (a dataclass's fields, or a table of defaults);
`parse_params` checks the names and converts the values, so `--param steps=abc` is a one-line error that names
the setting and its type instead of a traceback deep in training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from transferkit.errors import TransferkitError


class ParamError(TransferkitError):
    """A NAME=VALUE setting that is malformed, unknown or of the wrong type."""


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def split_params(items: Iterable[str], flag: str = "--param") -> dict[str, str]:
    """NAME=VALUE strings -> {name: raw value}; a malformed one is an error naming it."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParamError(f"{flag} {item!r} is not NAME=VALUE: write e.g. {flag} lr=3e-4")
        out[name.strip()] = value.strip()
    return out


def convert(name: str, value: Any, kind: Any, flag: str = "--param") -> Any:
    """`value` (often a string) as `kind`: bool, int, float, str, or an Optional/Union of those."""
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    for k in (o for o in options if o is not type(None)):
        try:
            if k is bool:
                if isinstance(value, bool):
                    return value
                low = str(value).strip().lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                raise ValueError
            if k is int:
                if isinstance(value, bool):
                    raise ValueError
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            if k is float:
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
            if k is str:
                return str(value)
        except (TypeError, ValueError):
            continue
    want = " or ".join({bool: "true/false", int: "a whole number", float: "a number", str: "text",
                        type(None): "none"}.get(o, getattr(o, "__name__", str(o))) for o in options)
    raise ParamError(f"{flag} {name}={value!r} is not {want}: give e.g. {name}={_example(options)}")


def _example(options: tuple) -> str:
    for o in options:
        if o is bool:
            return "true"
        if o is int:
            return "4"
        if o is float:
            return "0.3"
    return "none"


def parse_params(items: Iterable[str] | Mapping[str, Any], schema: Mapping[str, Any], *, flag: str = "--param",
                 what: str = "this command") -> dict[str, Any]:
    """Check and convert settings against `schema` (name -> type); an unknown name lists the known ones."""
    raw = split_params(items, flag) if not isinstance(items, Mapping) else dict(items)
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ParamError(f"{flag} {', '.join(unknown)}: {what} has no such setting; it takes "
                         f"{', '.join(sorted(schema)) or 'none'}")
    return {k: convert(k, v, schema[k], flag) for k, v in raw.items()}


def dataclass_schema(cls: type) -> dict[str, Any]:
    """{field name: its type} of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def defaults_schema(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """{name: type of its default} for a table of defaults (ints also accept floats only when whole)."""
    return {k: (float if isinstance(v, float) else type(v)) if v is not None else str | None
            for k, v in defaults.items()}
