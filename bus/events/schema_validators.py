"""Schema validators: the checked formats, ECMA 262 patterns, and the compiled fast path.

This module owns how one schema becomes validators, as :mod:`bus.events.schemas`
describes them: :data:`CHECKED_FORMATS` (the formats checked without extra
packages; ``date-time`` by RFC 3339 here), a pure-Python draft 2020-12
validator whose ``pattern`` follows ECMA 262 and that takes a tuple as an
array, and the compiled (jsonschema-rs) validator that answers "valid" fast and
must give the same verdicts.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema_rs
import structlog
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

__all__ = [
    "CHECKED_FORMATS",
    "SchemaValidator",
    "fast_validator",
    "format_checker",
]

log = structlog.get_logger("bus.schemas")

# jsonschema checks these without optional dependencies; "date-time" needs
# rfc3339-validator there, so it is checked by _is_date_time below instead.
_BUILTIN_FORMATS = ("date", "email", "idn-email", "ipv4", "ipv6", "regex", "uuid")
CHECKED_FORMATS: tuple[str, ...] = tuple(
    sorted(
        {f for f in _BUILTIN_FORMATS if f in Draft202012Validator.FORMAT_CHECKER.checkers}
        | {"date-time"}
    )
)

_DATE_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _is_date_time(value: object) -> bool:
    """RFC 3339 ``date-time``; formats apply to strings only."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME_RE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    offset_h, offset_m = match.group(7), match.group(8)
    offset_ok = offset_h is None or (int(offset_h) <= 23 and int(offset_m) <= 59)
    return hour <= 23 and minute <= 59 and second <= 60 and offset_ok  # 60: leap second


@functools.lru_cache(maxsize=1024)
def _ecma_search(pattern: str) -> Callable[[str], bool] | None:
    """Return a search for ``pattern`` in ECMA 262 regex semantics, as JSON Schema says.

    Python's ``re`` differs: its ``$`` also matches before a final newline (so
    ``"DE\\n"`` would match ``^[A-Z]{2}$``), its ``\\d`` and ``\\w`` match any
    Unicode digit or letter. The compiled validator follows ECMA 262, and the two
    validators must give one verdict, so the pure-Python one asks it per pattern.
    None when it cannot compile the pattern (``re`` decides then).
    """
    try:
        search: Callable[[str], bool] = jsonschema_rs.validator_for({"pattern": pattern}).is_valid
    except Exception:  # a pattern only Python's re understands
        return None
    return search


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """The ``pattern`` keyword, with ECMA 262 semantics (see :func:`_ecma_search`)."""
    if not validator.is_type(instance, "string"):
        return
    search = _ecma_search(pattern)
    if not (search(instance) if search is not None else re.search(pattern, instance)):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_array(checker: Any, instance: Any) -> bool:
    # encode_payload sends a tuple as an array and the compiled validator takes
    # it as one; a "not of type 'array'" here would be a false violation.
    return isinstance(instance, list) or type(instance) is tuple


# The pure-Python validator: draft 2020-12 with ECMA 262 patterns and tuples as
# arrays. The stubs leave validators.extend untyped.
_extend: Callable[..., type[Validator]] = validators.extend
SchemaValidator = _extend(
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("array", _is_array),
)


def fast_validator(doc: dict[str, Any], docs: list[dict[str, Any]], checker: FormatChecker) -> Any:
    """Compile ``doc`` with jsonschema-rs, checking the same formats the same way.

    Returns None (the pure-Python validator alone is used) if it cannot.
    """
    formats: dict[str, Callable[..., bool]] = {
        name: functools.partial(checker.conforms, format=name) for name in CHECKED_FORMATS
    }
    try:
        registry = jsonschema_rs.Registry([(d["$id"], d) for d in docs])
        return jsonschema_rs.validator_for(
            doc, formats=formats, validate_formats=True, registry=registry
        )
    except Exception as exc:
        log.warning("schema_fast_path_unavailable", schema=doc.get("$id"), error=str(exc))
        return None


def format_checker() -> FormatChecker:
    """Return a checker of exactly :data:`CHECKED_FORMATS`, ``date-time`` by RFC 3339."""
    checker = FormatChecker(formats=())
    builtin = Draft202012Validator.FORMAT_CHECKER.checkers
    for name in CHECKED_FORMATS:
        if name != "date-time":
            checker.checkers[name] = builtin[name]
    checker.checks("date-time")(_is_date_time)
    return checker
