"""The subscription matching language: event type patterns and payload filters.

Specified once, in ``docs/matching.md``; this module is that spec in code.

Patterns are dot-separated segments, anchored, no regex:

* a segment of letters is matched exactly;
* ``*`` as the *last* segment matches one or more remaining segments
  (``user.*`` matches ``user.signed_up`` and ``user.email.changed``, not ``user``);
* ``*`` elsewhere matches exactly one segment (``*.failed`` matches
  ``payment.failed``, not ``a.b.failed``);
* the pattern ``*`` alone matches every type.

Filters (``where``) map a field path (dot-separated keys into nested objects)
to a condition; every condition must hold:

* a scalar: equality;  a list: one of;
* a table of operators, all of which must hold: ``eq``, ``ne``, ``in``,
  ``not_in``, ``exists`` (true/false).

Equality is JSON equality: ``true`` never equals ``1``; ``1`` equals ``1.0``;
arrays and objects compare element by element with the same rule. A missing
field fails every condition except ``exists = false``, ``ne`` and ``not_in``
(a missing value is not equal to anything).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.errors import BusError

__all__ = [
    "Filter",
    "FilterError",
    "Pattern",
    "PatternError",
    "compile_filter",
    "compile_pattern",
    "json_equal",
]

_SEGMENT_RE = re.compile(r"^[a-z0-9_-]+$")
_MISSING = object()
OPERATORS = ("eq", "ne", "in", "not_in", "exists")


class PatternError(BusError):
    """An event type pattern is not valid."""


class FilterError(BusError):
    """A payload filter (``where``) is not valid."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled event type pattern."""

    text: str
    segments: tuple[str, ...]

    def matches(self, event_type: str) -> bool:
        """True if ``event_type`` matches this pattern."""
        parts = event_type.split(".")
        segs = self.segments
        if segs[-1] == "*":
            if len(parts) < len(segs):
                return False
            head = segs[:-1]
            parts = parts[: len(head)]
        else:
            head = segs
            if len(parts) != len(segs):
                return False
        return all(s == "*" or s == p for s, p in zip(head, parts, strict=True))


def compile_pattern(text: str) -> Pattern:
    """Compile an event type pattern.

    Raises:
        PatternError: Empty segments, ``**``, or a ``*`` mixed with letters.
    """
    if not isinstance(text, str) or not text:
        raise PatternError(f"invalid event pattern {text!r}: it must be a non-empty string")
    segments = tuple(text.split("."))
    for seg in segments:
        if seg == "*":
            continue
        if not _SEGMENT_RE.match(seg):
            raise PatternError(
                f"invalid event pattern {text!r}: segment {seg!r} must be '*' or lowercase "
                "letters, digits, '_' and '-' (no empty segments, no '**', no 'user*')"
            )
    return Pattern(text, segments)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans never equal numbers; 1 == 1.0; deep for arrays/objects."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


Check = Callable[[Any], bool]


def _one_of(options: list[Any]) -> Check:
    return lambda v: v is not _MISSING and any(json_equal(v, o) for o in options)


def _none_of(options: list[Any]) -> Check:
    return lambda v: v is _MISSING or not any(json_equal(v, o) for o in options)


def _equals(value: Any) -> Check:
    return lambda v: v is not _MISSING and json_equal(v, value)


def _differs(value: Any) -> Check:
    return lambda v: v is _MISSING or not json_equal(v, value)


def _exists(expected: bool) -> Check:
    return lambda v: (v is not _MISSING) == expected


def _condition(path: str, spec: Any) -> Check:
    if isinstance(spec, list):
        return _one_of(spec)
    if not isinstance(spec, dict):
        return _equals(spec)
    if not spec:
        raise FilterError(f"filter on {path!r}: an empty table has no condition")
    checks: list[Check] = []
    for op, value in spec.items():
        if op == "eq":
            checks.append(_equals(value))
        elif op == "ne":
            checks.append(_differs(value))
        elif op in ("in", "not_in"):
            if not isinstance(value, list):
                raise FilterError(f"filter on {path!r}: {op!r} takes a list, got {value!r}")
            checks.append(_one_of(value) if op == "in" else _none_of(value))
        elif op == "exists":
            if not isinstance(value, bool):
                raise FilterError(f"filter on {path!r}: 'exists' takes true or false")
            checks.append(_exists(value))
        else:
            raise FilterError(
                f"filter on {path!r}: unknown operator {op!r} (use {', '.join(OPERATORS)}; "
                "to compare with an object, use eq = {...})"
            )
    return lambda v: all(check(v) for check in checks)


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled payload filter."""

    spec: Mapping[str, Any]
    checks: tuple[tuple[tuple[str, ...], Check], ...]

    def matches(self, payload: Any) -> bool:
        """True if every condition holds for ``payload``."""
        return all(check(_lookup(payload, path)) for path, check in self.checks)


def compile_filter(where: Mapping[str, Any]) -> Filter:
    """Compile a ``where`` table.

    Raises:
        FilterError: A path or condition is not valid.
    """
    if not isinstance(where, Mapping):
        raise FilterError(f"a filter must be a table of field = condition, got {where!r}")
    checks = []
    for path, spec in where.items():
        parts = tuple(str(path).split("."))
        if not path or any(not p for p in parts):
            raise FilterError(f"invalid filter path {path!r}: use dot-separated field names")
        checks.append((parts, _condition(str(path), spec)))
    return Filter(dict(where), tuple(checks))
