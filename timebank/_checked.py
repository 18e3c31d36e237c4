"""The public methods' arguments checked against their annotations, at the boundary.

Station software passes through what its users typed, and a Python caller can pass anything:
a string where an id belongs, ``True`` for minutes, ``None`` for a policy, an integer too large
for any database, a lone surrogate no database can store. :func:`checked` wraps each public
method of a class so that such a value is refused with InvalidInputError naming the
parameter, before any work: it never reaches the database as a driver's OverflowError or a
TypeError from deep inside. Values of the right type are then judged by the method's own
rules (ranges, codes, states)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections import abc
from datetime import date, datetime
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel

from timebank import errors

C = TypeVar("C", bound=type)
Check = typing.Callable[[Any], bool]

#: The range of a 64-bit signed integer: every id and amount column holds one.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False  # a lone surrogate: no database can store it
    return "\x00" not in value


def _int(value: Any) -> bool:
    return type(value) is int and INT_MIN <= value <= INT_MAX


def _day(value: Any) -> bool:
    return type(value) is date


def _collection(value: Any) -> bool:
    return isinstance(value, abc.Iterable) and not isinstance(value, str | bytes | abc.Mapping)


_SIMPLE: dict[Any, Check] = {
    str: _text,
    int: _int,
    bool: lambda v: type(v) is bool,
    date: _day,
    # Every time the bank keeps is an instant: a naive datetime names none.
    datetime: lambda v: isinstance(v, datetime) and v.utcoffset() is not None,
    bytes: lambda v: isinstance(v, bytes),
    type(None): lambda v: v is None,
}
_COLLECTIONS = (abc.Sequence, abc.Iterable, list, tuple, abc.Set, set, frozenset)


def _check_for(hint: Any) -> Check | None:
    """A predicate for values of ``hint``; None when the hint is not checked here."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _any_of([_check_for(a) for a in args])
    if origin is Literal:
        return _one_of(args)
    if origin in (abc.Mapping, dict):
        return _instance(abc.Mapping)  # the method judges the contents (metadata: JSON)
    if origin in _COLLECTIONS:
        return _items(_check_for(args[0]) if args else None)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return _instance(hint)
    return _SIMPLE.get(hint)


def _any_of(parts: list[Check | None]) -> Check | None:
    if any(part is None for part in parts):
        return None  # a member of the union is not checked here: neither is the union
    checks = [part for part in parts if part is not None]
    return lambda value: any(check(value) for check in checks)


def _one_of(allowed: tuple[Any, ...]) -> Check:
    return lambda value: any(type(value) is type(a) and value == a for a in allowed)


def _instance(cls: type) -> Check:
    return lambda value: isinstance(value, cls)


def _items(each: Check | None) -> Check:
    def check(value: Any) -> bool:
        if not _collection(value):
            return False
        if each is None or not isinstance(value, list | tuple | set | frozenset):
            return True  # a generator: the method judges what it yields
        return all(each(item) for item in value)

    return check


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("datetime.", "")
    return text.replace("collections.abc.", "").replace("<class '", "").replace("'>", "")


def _wrap(function: Any) -> Any:
    signature = inspect.signature(function)
    checks: dict[str, tuple[Check, str]] = {}
    resolved: list[bool] = []

    def resolve() -> None:
        # On the first call, not at import: annotations may name classes defined later.
        hints = typing.get_type_hints(function)
        for name in signature.parameters:
            check = _check_for(hints[name]) if name in hints else None
            if check is not None:
                checks[name] = (check, _describe(hints[name]))
        resolved.append(True)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not resolved:
            resolve()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise errors.InvalidInputError(f"{function.__name__}: {error}") from None
        for name, value in bound.arguments.items():
            found = checks.get(name)
            if found is not None and not found[0](value):
                if isinstance(value, datetime) and value.utcoffset() is None:
                    raise errors.InvalidInputError(f"{name} must be a timezone-aware datetime")
                refusal = (
                    errors.InvalidAmountError  # minutes: the library's one amount error
                    if name == "minutes" or name.endswith("_minutes")
                    else errors.InvalidInputError
                )
                raise refusal(f"{name}: expected {found[1]}, got {_shown(value)}")
        try:
            return function(*args, **kwargs)
        except OverflowError:
            raise errors.InvalidInputError(
                f"{function.__name__}: a date or number out of the range the bank keeps"
            ) from None

    return wrapper


def _shown(value: Any) -> str:
    """The value's type and, for short plain values, the value (never long user text)."""
    kind = type(value).__name__
    if isinstance(value, bool | int | float) and len(repr(value)) <= 24:
        return f"{kind} {value!r}"
    return kind


def checked(cls: C) -> C:
    """Wrap every public method ``cls`` defines or inherits (from its own package's bases)."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, staticmethod | classmethod | property):
            continue
        if inspect.isfunction(attribute) and attribute.__module__.startswith("timebank"):
            setattr(cls, name, _wrap(attribute))
    return cls
