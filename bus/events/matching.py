"""The subscription matching language: event types, type patterns, payload filters.

``docs/matching.md`` is the specification; this module is that specification in
code and owns the grammar of event type names. In short:

* An event type is lowercase dot-separated segments of ``[a-z0-9_-]``
  (``user.signed_up``).
* A pattern is dot-separated segments, anchored, no regex. ``*`` as the last
  segment matches one or more remaining segments (``user.*`` matches
  ``user.signed_up`` and ``user.email.changed``, not ``user``); ``*`` elsewhere
  matches exactly one segment; ``*`` alone matches every type; any other
  segment matches itself only.
* A filter (``where``) maps field paths (``"user.plan"``) to conditions, all of
  which must hold: a scalar (equality), a list (one of), or a table of
  operators ``eq``, ``ne``, ``in``, ``not_in``, ``exists``. Equality is JSON
  equality (``true`` never equals ``1``; ``1`` equals ``1.0``). ``ne`` and
  ``not_in`` are the exact negations of ``eq`` and ``in``, so a missing field
  passes them; it fails ``eq``, ``in`` and ``exists = true``.

Patterns and filters are compiled once (:func:`compile_pattern`,
:func:`compile_filter`); matching allocates little and never raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.errors import BusError

__all__ = [
    "MAX_EVENT_TYPE_LENGTH",
    "OPERATORS",
    "Filter",
    "FilterError",
    "Pattern",
    "PatternError",
    "compile_filter",
    "compile_pattern",
    "is_event_type",
    "json_equal",
]

MAX_EVENT_TYPE_LENGTH = 200
OPERATORS = ("eq", "ne", "in", "not_in", "exists")

_SEGMENT = r"[a-z0-9_-]+"
_SEGMENT_RE = re.compile(_SEGMENT)
_EVENT_TYPE_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")


class PatternError(BusError):
    """An event type pattern is not valid."""


class FilterError(BusError):
    """A payload filter (``where``) is not valid.

    Attributes:
        path: The field path whose condition is wrong (``None`` when the
            filter as a whole is wrong).
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def is_event_type(text: str) -> bool:
    """Return True if ``text`` is a valid event type name.

    Args:
        text: Candidate name: lowercase dot-separated segments of
            ``[a-z0-9_-]``, at most :data:`MAX_EVENT_TYPE_LENGTH` characters.
    """
    return (
        isinstance(text, str)
        and len(text) <= MAX_EVENT_TYPE_LENGTH
        and _EVENT_TYPE_RE.fullmatch(text) is not None
    )


# -- event type patterns -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled event type pattern; build it with :func:`compile_pattern`.

    Attributes:
        text: The pattern as written.
        segments: Its dot-separated segments.
    """

    text: str
    segments: tuple[str, ...]
    _match: Callable[[str], bool] = field(repr=False, compare=False)

    def matches(self, event_type: str) -> bool:
        """Return True if ``event_type`` (a valid type name) matches this pattern."""
        return self._match(event_type)


def compile_pattern(text: str) -> Pattern:
    """Compile an event type pattern.

    Args:
        text: Dot-separated segments, each ``*`` or ``[a-z0-9_-]+``.

    Returns:
        The compiled pattern.

    Raises:
        PatternError: Not a string, empty segments, ``**``, or ``*`` mixed with
            other characters in a segment (``user*``).
    """
    if not isinstance(text, str) or not text:
        raise PatternError(f"invalid event pattern {text!r}: it must be a non-empty string")
    segments = tuple(text.split("."))
    for segment in segments:
        if segment != "*" and _SEGMENT_RE.fullmatch(segment) is None:
            raise PatternError(
                f"invalid event pattern {text!r}: segment {segment!r} must be '*' or "
                "lowercase letters, digits, '_' and '-' (no empty segments, no '**', "
                "no partial wildcards such as 'user*')"
            )
    return Pattern(text, segments, _matcher(segments))


def _matcher(segments: tuple[str, ...]) -> Callable[[str], bool]:
    """Pick the cheapest test that implements the pattern's rule."""
    inner, last = segments[:-1], segments[-1]
    if "*" not in segments:
        exact = ".".join(segments)
        return lambda event_type: event_type == exact
    if last == "*" and "*" not in inner:
        if not inner:
            return lambda event_type: True
        prefix = ".".join(inner) + "."
        return lambda event_type: event_type.startswith(prefix)
    tail = last == "*"
    fixed = inner if tail else segments

    def general(event_type: str) -> bool:
        parts = event_type.split(".")
        long_enough = len(parts) >= len(segments) if tail else len(parts) == len(segments)
        return long_enough and all(s == "*" or s == p for s, p in zip(fixed, parts, strict=False))

    return general


# -- payload filters ---------------------------------------------------------------------------

_MISSING: Any = object()

Check = Callable[[Any], bool]


def json_equal(a: Any, b: Any) -> bool:
    """Compare two JSON values the way JSON means them.

    Booleans equal only booleans (``True`` never equals ``1``); numbers compare
    by value (``1 == 1.0``); strings exactly; arrays (lists or tuples) element
    by element and objects key by key, with this same rule.

    Args:
        a: A JSON value.
        b: A JSON value.

    Returns:
        True if the values are equal as JSON.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _equals(value: Any) -> Check:
    if isinstance(value, str):  # the common case: one type check, one comparison
        return lambda v: isinstance(v, str) and v == value
    return lambda v: v is not _MISSING and json_equal(v, value)


def _one_of(options: list[Any]) -> Check:
    strings = frozenset(o for o in options if isinstance(o, str))
    others = [o for o in options if not isinstance(o, str)]

    def check(v: Any) -> bool:
        if isinstance(v, str):
            return v in strings
        return v is not _MISSING and any(json_equal(v, o) for o in others)

    return check


def _negate(check: Check) -> Check:
    return lambda v: not check(v)


def _exists(expected: bool) -> Check:
    return lambda v: (v is not _MISSING) is expected


def _json_value(path: str, value: Any, where: str) -> None:
    """Raise unless ``value`` is something a JSON payload can hold."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"filter on {path!r}: {where} {value!r} is not a JSON number", path)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _json_value(path, item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FilterError(f"filter on {path!r}: {where} has a non-string key {key!r}", path)
            _json_value(path, item, where)
        return
    raise FilterError(
        f"filter on {path!r}: {where} {value!r} is a {type(value).__name__}, which no JSON "
        "payload holds (compare dates and times as strings)",
        path,
    )


def _options(path: str, op: str, value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise FilterError(f"filter on {path!r}: {op!r} takes a list, got {value!r}", path)
    if not value:
        raise FilterError(
            f"filter on {path!r}: {op!r} needs at least one value (an empty list "
            f"{'never' if op == 'in' else 'always'} matches)",
            path,
        )
    _json_value(path, value, f"{op!r} value")
    return list(value)


def _condition(path: str, spec: Any) -> Check:
    """Compile the condition of one path."""
    if isinstance(spec, list | tuple):
        return _one_of(_options(path, "in", spec))
    if not isinstance(spec, Mapping):
        _json_value(path, spec, "value")
        return _equals(spec)
    if not spec:
        raise FilterError(f"filter on {path!r}: an empty table has no condition", path)
    unknown = [str(op) for op in spec if op not in OPERATORS]
    if unknown:
        raise FilterError(
            f"filter on {path!r}: unknown operator {unknown[0]!r} (operators: "
            f"{', '.join(OPERATORS)}). To filter on a nested field, quote the whole path: "
            f'"{path}.{unknown[0]}" = ...; to compare with an object, use eq = {{ ... }}',
            path,
        )
    checks: list[Check] = []
    if "exists" in spec:
        exists = spec["exists"]
        if not isinstance(exists, bool):
            raise FilterError(
                f"filter on {path!r}: 'exists' takes true or false, got {exists!r}", path
            )
        if not exists and ("eq" in spec or "in" in spec):
            raise FilterError(
                f"filter on {path!r}: exists = false with eq or in can never match", path
            )
        checks.append(_exists(exists))
    for op in ("eq", "ne"):
        if op in spec:
            _json_value(path, spec[op], f"{op!r} value")
            equals = _equals(spec[op])
            checks.append(equals if op == "eq" else _negate(equals))
    for op in ("in", "not_in"):
        if op in spec:
            one_of = _one_of(_options(path, op, spec[op]))
            checks.append(one_of if op == "in" else _negate(one_of))
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def _lookup(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return _MISSING
        data = data.get(key, _MISSING)
        if data is _MISSING:
            return _MISSING
    return data


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled payload filter; build it with :func:`compile_filter`.

    Attributes:
        spec: The filter as written (field path -> condition).
    """

    spec: Mapping[str, Any]
    _checks: tuple[tuple[tuple[str, ...], Check], ...] = field(repr=False, compare=False)

    def matches(self, payload: Any) -> bool:
        """Return True if every condition holds for ``payload`` (a decoded JSON value)."""
        return all(check(_lookup(payload, keys)) for keys, check in self._checks)


def compile_filter(where: Mapping[str, Any]) -> Filter:
    """Compile a ``where`` table.

    Args:
        where: Field path (dot-separated keys into nested objects) -> condition.
            An empty table matches every payload.

    Returns:
        The compiled filter.

    Raises:
        FilterError: A path or condition is not valid; the error names the path.
    """
    if not isinstance(where, Mapping):
        raise FilterError(f"a filter must be a table of field = condition, got {where!r}")
    checks: list[tuple[tuple[str, ...], Check]] = []
    for path, spec in where.items():
        if not isinstance(path, str):
            raise FilterError(f"invalid filter path {path!r}: it must be a string")
        keys = tuple(path.split("."))
        if not all(keys):
            raise FilterError(
                f"invalid filter path {path!r}: use dot-separated field names, "
                "none of them empty (e.g. 'user.plan')",
                path,
            )
        checks.append((keys, _condition(path, spec)))
    return Filter(dict(where), tuple(checks))
