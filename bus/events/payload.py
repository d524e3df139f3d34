"""Payload encoding: a payload as JSON, refused unless JSON carries it faithfully.

This module owns :func:`encode_payload` and its errors: the walk that finds the
first value JSON cannot carry (NaN, non-string keys, sets, datetimes, integers
beyond 64 bits, nesting past orjson's limit), and the size limit
(``BUS_MAX_PAYLOAD_BYTES``). Both errors are
:class:`~bus.events.schemas.SchemaError` subclasses, raised before a publish
writes anything.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from bus.events.schemas import SchemaError, json_path

__all__ = [
    "PayloadNotSerializable",
    "PayloadTooLarge",
    "encode_payload",
]

_JSON_INT_MIN, _JSON_INT_MAX = -(2**63), 2**64 - 1  # what orjson can encode
_MAX_DEPTH = 254  # orjson's nesting limit


class PayloadTooLarge(SchemaError):
    """The encoded payload is over the size limit.

    Attributes:
        size: Encoded size in bytes.
        limit: The limit in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the payload is {size} bytes encoded, over the limit of {limit} "
            "(BUS_MAX_PAYLOAD_BYTES); store large data elsewhere and publish a reference"
        )
        self.size = size
        self.limit = limit


class PayloadNotSerializable(SchemaError):
    """The payload cannot be carried faithfully as JSON.

    Attributes:
        path: JSON path of the offending value (``$`` for the payload itself).
        type_name: The offending value's type name.
    """

    def __init__(self, path: str, type_name: str, problem: str) -> None:
        super().__init__(f"the payload is not JSON-serialisable: {path} {problem}")
        self.path = path
        self.type_name = type_name


def _find_unfaithful(payload: Any) -> tuple[str, str, str] | None:
    """Return ``(path, type name, problem)`` of the first value JSON cannot carry."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(payload, ())]
    while stack:
        value, where = stack.pop()
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return json_path(where), "str", "is a string with lone surrogates (not UTF-8)"
            continue
        if isinstance(value, int):
            if not _JSON_INT_MIN <= value <= _JSON_INT_MAX:
                return json_path(where), "int", "is an integer outside the 64-bit range"
            continue
        if type(value) is float:  # subclasses (numpy.float64, ...) are refused below
            if not math.isfinite(value):
                return json_path(where), "float", f"is {value!r} (JSON has no NaN or infinity)"
            continue
        if len(where) >= _MAX_DEPTH:
            problem = f"is nested deeper than {_MAX_DEPTH} levels (or is part of a cycle)"
            return json_path(where), type(value).__name__, problem
        if isinstance(value, dict):
            for key in value:
                if type(key) is not str:  # orjson refuses str subclasses as keys
                    problem = f"has a key {key!r} of type {type(key).__name__}; keys must be str"
                    return json_path(where), type(key).__name__, problem
            # Reversed, so the first bad value in document order is the one reported.
            stack.extend((item, (*where, key)) for key, item in reversed(value.items()))
        elif isinstance(value, list) or type(value) is tuple:  # not namedtuples
            stack.extend((item, (*where, i)) for i, item in reversed(list(enumerate(value))))
        else:
            name = type(value).__name__
            problem = f"is a {name}; use str, int, float, bool, None, list or dict"
            return json_path(where), name, problem
    return None


def encode_payload(payload: Any, max_bytes: int) -> bytes:
    """Encode a payload as JSON, refusing what JSON cannot carry faithfully.

    Only ``dict`` (with ``str`` keys), ``list``/``tuple``, ``str``, ``int``,
    finite ``float``, ``bool`` and ``None`` are accepted, so the payload a
    handler decodes equals the one published (no silent ``NaN`` -> ``null``,
    no datetime or UUID turned into strings behind the schema's back).

    Args:
        payload: The payload.
        max_bytes: Largest accepted encoding (``BUS_MAX_PAYLOAD_BYTES``).

    Returns:
        The JSON encoding.

    Raises:
        PayloadNotSerializable: A value JSON cannot carry, with its path and
            type: NaN, infinity, non-string keys, sets, bytes, datetimes,
            objects, integers beyond 64 bits, nesting past 254 levels.
        PayloadTooLarge: The encoding is over ``max_bytes`` (with both sizes).
    """
    found = _find_unfaithful(payload)
    if found is not None:
        raise PayloadNotSerializable(*found)
    try:
        data = orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:  # a type the walk above let through
        raise PayloadNotSerializable("$", type(payload).__name__, f"holds a value {exc}") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(len(data), max_bytes)
    return data
