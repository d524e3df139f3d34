"""Event schemas: one JSON Schema (draft 2020-12) per event type, in ``schemas/``.

The file is named after the type (``schemas/user.signed_up.json``), has an
``$id`` and an integer ``version`` (a taskbus keyword; JSON Schema ignores
unknown keywords, so standard tools still read the file). Every schema is
checked and compiled once when the registry loads; any problem is reported
with the file name. Formats that can be checked without extra packages are
checked (``email``, ``ipv4``, ``ipv6``, ``date``, ``uuid``, ``regex``); others
are annotations only.

Validation never touches Redis: :class:`PayloadInvalid`, :class:`UnknownEventType`,
:class:`PayloadTooLarge` and :class:`PayloadNotSerializable` are raised before a
publish writes anything.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError

from bus.errors import BusError

__all__ = [
    "PayloadInvalid",
    "PayloadNotSerializable",
    "PayloadTooLarge",
    "SchemaError",
    "SchemaInfo",
    "SchemaLoadError",
    "SchemaRegistry",
    "UnknownEventType",
    "encode_payload",
    "validate_event_type",
]

_TYPE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


class SchemaError(BusError):
    """Base class of schema and payload errors."""


class SchemaLoadError(SchemaError):
    """A schema file cannot be used (bad JSON, invalid schema, missing $id or version)."""


class UnknownEventType(SchemaError):
    """No schema exists for the event type."""


class PayloadInvalid(SchemaError):
    """The payload violates its schema; ``violations`` lists every one."""

    def __init__(self, event_type: str, violations: list[str]) -> None:
        listing = "\n".join(f"  - {v}" for v in violations)
        super().__init__(
            f"payload of {event_type!r} violates its schema ({len(violations)} "
            f"problem{'s' if len(violations) != 1 else ''}):\n{listing}"
        )
        self.event_type = event_type
        self.violations = violations


class PayloadTooLarge(SchemaError):
    """The encoded payload is over the size limit."""


class PayloadNotSerializable(SchemaError):
    """The payload cannot be encoded as JSON."""


def validate_event_type(name: str) -> str:
    """Return ``name`` if it is a valid event type, else raise ``ValueError``.

    Event types are lowercase dot-separated segments of ``[a-z0-9_-]``, e.g.
    ``user.signed_up``.
    """
    if not isinstance(name, str) or len(name) > 200 or not _TYPE_RE.match(name):
        raise ValueError(
            f"invalid event type {name!r}: use lowercase dot-separated segments of a-z, 0-9, "
            "'_' and '-', e.g. 'user.signed_up'"
        )
    return name


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What a payload was validated with: the schema's ``$id`` and version."""

    event_type: str
    schema_id: str
    version: int
    path: Path


def _path_of(parts: Iterator[Any] | Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class SchemaRegistry:
    """The compiled schemas of every event type, loaded once per process."""

    def __init__(self, directory: Path, schemas: dict[str, tuple[SchemaInfo, Any]]) -> None:
        self.directory = directory
        self._schemas = schemas

    @classmethod
    def load(cls, directory: Path) -> SchemaRegistry:
        """Load and compile every ``*.json`` schema in ``directory``.

        Raises:
            SchemaLoadError: The directory is missing, or a file is not a usable
                schema (the message names the file and the problem).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise SchemaLoadError(
                f"schema directory {directory} does not exist (set BUS_SCHEMAS_DIR)"
            )
        schemas: dict[str, tuple[SchemaInfo, Any]] = {}
        ids: dict[str, Path] = {}
        for path in sorted(directory.glob("*.json")):
            event_type = path.name[: -len(".json")]
            try:
                validate_event_type(event_type)
            except ValueError as exc:
                raise SchemaLoadError(f"{path}: the file name is not an event type: {exc}") from exc
            try:
                doc = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise SchemaLoadError(f"{path}: not valid JSON: {exc}") from exc
            if not isinstance(doc, dict):
                raise SchemaLoadError(f"{path}: a schema must be a JSON object")
            schema_id = doc.get("$id")
            if not isinstance(schema_id, str) or not schema_id:
                raise SchemaLoadError(f'{path}: the schema needs an "$id" string')
            version = doc.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise SchemaLoadError(f'{path}: the schema needs an integer "version" >= 1')
            if schema_id in ids:
                raise SchemaLoadError(f"{path}: $id {schema_id!r} is also used by {ids[schema_id]}")
            ids[schema_id] = path
            try:
                Draft202012Validator.check_schema(doc)
            except JsonSchemaError as exc:
                raise SchemaLoadError(
                    f"{path}: not a valid draft 2020-12 schema at {_path_of(exc.absolute_path)}: "
                    f"{exc.message}"
                ) from exc
            validator = Draft202012Validator(
                doc, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            schemas[event_type] = (SchemaInfo(event_type, schema_id, version, path), validator)
        return cls(directory, schemas)

    @property
    def types(self) -> list[str]:
        """The known event types, sorted."""
        return sorted(self._schemas)

    def info(self, event_type: str) -> SchemaInfo:
        """Return the schema info of a type.

        Raises:
            UnknownEventType: No schema for the type.
        """
        entry = self._schemas.get(event_type)
        if entry is None:
            close = difflib.get_close_matches(event_type, self._schemas, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownEventType(
                f"unknown event type {event_type!r}: no schema {event_type}.json in "
                f"{self.directory}.{hint}"
            )
        return entry[0]

    def validate(self, event_type: str, payload: Any) -> SchemaInfo:
        """Validate a payload against its type's schema.

        Raises:
            UnknownEventType: No schema for the type.
            PayloadInvalid: Every violation, with its JSON path.
        """
        info = self.info(event_type)
        validator = self._schemas[event_type][1]
        errors = sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.path)))
        if errors:
            raise PayloadInvalid(
                event_type, [f"{_path_of(e.absolute_path)}: {e.message}" for e in errors]
            )
        return info


def _find_bad_value(value: Any, path: str = "$") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value!r} (JSON has no NaN or infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            found = _find_bad_value(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_bad_value(item, f"{path}[{index}]")
            if found:
                return found
    elif value is not None and not isinstance(value, str | int | float | bool):
        return f"{path} is a {type(value).__name__}"
    return None


def encode_payload(payload: Any, max_bytes: int) -> bytes:
    """Encode a payload as JSON, refusing what JSON cannot carry faithfully.

    Raises:
        PayloadNotSerializable: A value is not JSON (with its path): NaN,
            infinity, non-string keys, sets, objects, ...
        PayloadTooLarge: The encoding is over ``max_bytes``.
    """
    bad = _find_bad_value(payload)
    if bad is not None:
        raise PayloadNotSerializable(f"the payload is not JSON-serialisable: {bad}")
    try:
        data = orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise PayloadNotSerializable(f"the payload is not JSON-serialisable: {exc}") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the payload is {len(data)} bytes encoded, over the limit of {max_bytes} "
            "(BUS_MAX_PAYLOAD_BYTES); store large data elsewhere and publish a reference"
        )
    return data
