"""Type checks for the config dataclasses (``TrainConfig``, ...): one message naming the key, the value and the
type it must have, for settings that come from a ``--config`` file or from Python rather than from typed flags."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ...errors import UserError

__all__ = ["check_field_types", "type_problem", "require_positive_ints"]


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is dict:
        return f"a table of {_describe(args[0])} -> {_describe(args[1])}" if args else "a table"
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null (none)",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict) and (
            not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        )
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    return True  # a type this checker does not know: the dataclass's own checks decide


def type_problem(cls, key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the setting ``key`` of dataclass ``cls`` (None when it can)."""
    hint = typing.get_type_hints(cls)[key]
    if _matches(value, hint):
        return None
    return f"setting {key!r} is {value!r} ({type(value).__name__}); it must be {_describe(hint)}"


def check_field_types(obj) -> None:
    """Raise ValueError for the first field of the dataclass instance ``obj`` whose value has the wrong type."""
    for f in dataclasses.fields(obj):
        problem = type_problem(type(obj), f.name, getattr(obj, f.name))
        if problem:
            raise UserError(problem)


def require_positive_ints(cfg, names: tuple[str, ...]) -> None:
    """ValueError naming the flag when a setting of ``cfg`` is not an integer >= 1."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= 1; got {value!r}")
