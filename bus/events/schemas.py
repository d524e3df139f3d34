"""Event schemas: one JSON Schema (draft 2020-12) per event type, in ``schemas/``.

This module owns the schema registry (loading, checking and compiling the files
once per process), payload validation, and the schema errors. The validators it
compiles each schema into (checked formats, ECMA 262 patterns, the compiled
fast path) are built by :mod:`bus.events.schema_validators`; the payload's JSON
encoding is :mod:`bus.events.payload`.

Schema files:

* are named after the event type: ``schemas/user.signed_up.json`` (other files
  and subdirectories are ignored);
* have an ``$id`` (unique across the directory) and a ``version``: a top-level
  integer >= 1. ``version`` is a taskbus keyword; JSON Schema treats unknown
  keywords as annotations, so standard tools still read the file, and this
  module checks its type itself. Bump it on every change of the schema;
  published events carry ``$id`` and ``version``;
* may ``$ref`` into themselves or into another schema of the directory by its
  ``$id``; nothing is ever fetched over the network, and a ``$ref`` that does
  not resolve is a load error, not a validation-time surprise.

Formats are *checked*, not just annotations, but only those that work without
extra packages: ``date``, ``date-time`` (RFC 3339, checked by taskbus), ``email`` and
``idn-email`` (an ``@`` is present), ``ipv4``, ``ipv6``, ``regex``, ``uuid``
(:data:`~bus.events.schema_validators.CHECKED_FORMATS`). A schema that uses any
other format is a load error, so no author believes a format is checked when it
is not.

``pattern`` is matched with ECMA 262 semantics, as JSON Schema specifies (``$``
is the end of the string, ``\\d`` is ``[0-9]``), by both validators. The keys of
``patternProperties`` are not: the pure-Python validator matches them with ``re``.

Validation never touches Redis: :class:`PayloadInvalid`,
:class:`UnknownEventType`, :class:`~bus.events.payload.PayloadTooLarge` and
:class:`~bus.events.payload.PayloadNotSerializable` are raised before a
publish writes anything.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urljoin

import orjson
import referencing.exceptions
import referencing.jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from bus.errors import BusError
from bus.events.matching import MAX_EVENT_TYPE_LENGTH, is_event_type
from bus.events.schema_validators import (
    CHECKED_FORMATS,
    SchemaValidator,
    fast_validator,
    format_checker,
)

__all__ = [
    "DRAFT_2020_12",
    "InvalidEventType",
    "PayloadInvalid",
    "SchemaError",
    "SchemaInfo",
    "SchemaLoadError",
    "SchemaRegistry",
    "UnknownEventType",
    "json_path",
    "validate_event_type",
]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose values are instance data, not subschemas (never walked), and
# keywords that map arbitrary names to subschemas (names are not keywords).
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_NAMED_SCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


class SchemaError(BusError):
    """Base class of schema and payload errors."""


class InvalidEventType(SchemaError, ValueError):
    """A string is not a valid event type name."""


class SchemaLoadError(SchemaError):
    """A schema file cannot be used; the message names the file and the problem.

    Attributes:
        path: The offending file or directory.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class UnknownEventType(SchemaError):
    """No schema exists for the event type.

    Attributes:
        event_type: The type asked for.
        directory: The directory that was searched.
        close_matches: Known types with similar names.
    """

    def __init__(self, event_type: str, directory: Path, close_matches: list[str]) -> None:
        hint = f" Did you mean: {', '.join(close_matches)}?" if close_matches else ""
        if not isinstance(event_type, str):
            message = (
                f"unknown event type {event_type!r}: an event type is a str such as "
                f"'user.signed_up', not a {type(event_type).__name__}.{hint}"
            )
        else:
            valid = "" if is_event_type(event_type) else " (nor is it a valid event type name)"
            message = (
                f"unknown event type {event_type!r}: there is no schema {event_type}.json in "
                f"{directory}{valid}.{hint}"
            )
        super().__init__(message)
        self.event_type = event_type
        self.directory = directory
        self.close_matches = close_matches


class PayloadInvalid(SchemaError):
    """The payload violates its schema.

    Attributes:
        event_type: The event type.
        violations: Every violation as ``"<json path>: <message>"``, sorted by path.
    """

    def __init__(self, event_type: str, violations: list[str]) -> None:
        listing = "\n".join(f"  - {v}" for v in violations)
        count = f"{len(violations)} problem{'s' if len(violations) != 1 else ''}"
        super().__init__(f"payload of {event_type!r} violates its schema ({count}):\n{listing}")
        self.event_type = event_type
        self.violations = violations


def validate_event_type(name: str) -> str:
    """Return ``name`` if it is a valid event type name.

    Args:
        name: Lowercase dot-separated segments of ``[a-z0-9_-]``, e.g.
            ``user.signed_up``; at most 200 characters.

    Returns:
        ``name`` unchanged.

    Raises:
        InvalidEventType: The name breaks those rules.
    """
    if not is_event_type(name):
        raise InvalidEventType(
            f"invalid event type {name!r}: use lowercase dot-separated segments of a-z, 0-9, "
            f"'_' and '-', at most {MAX_EVENT_TYPE_LENGTH} characters, e.g. 'user.signed_up'"
        )
    return name


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """Which schema a payload was validated with.

    Attributes:
        event_type: The event type.
        schema_id: The schema's ``$id``.
        version: The schema's ``version``.
        path: The schema file.
    """

    event_type: str
    schema_id: str
    version: int
    path: Path


def json_path(parts: Iterator[Any] | Any) -> str:
    """Format a sequence of keys and indexes as a JSON path: ``$.items[0].sku``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def _subschemas(node: Any, base: str, where: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield ``(base URI, location, schema)`` for every schema object in ``node``."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _subschemas(item, base, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$id"), str):
        base = urljoin(base, node["$id"])
    yield base, where, node
    for key, value in node.items():
        if key in _DATA_KEYWORDS:
            continue
        if key in _NAMED_SCHEMAS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _subschemas(sub, base, f"{where}.{key}[{name!r}]")
        else:
            yield from _subschemas(value, base, f"{where}.{key}")


@dataclass(frozen=True, slots=True)
class _Entry:
    info: SchemaInfo
    validator: Validator
    # The compiled (Rust) validator: a yes/no answer in well under a
    # microsecond. None when the schema could not be compiled by it.
    fast: Any = None


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """Read one schema file and check what can be checked alone."""
    event_type = path.name.removesuffix(".json")
    if not is_event_type(event_type):
        raise SchemaLoadError(
            path,
            f"the file name must be an event type plus .json (lowercase dot-separated "
            f"segments of a-z, 0-9, '_', '-'), and {event_type!r} is not",
        )
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SchemaLoadError(path, f"not valid JSON: {exc}") from exc
    except OSError as exc:
        raise SchemaLoadError(path, f"cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise SchemaLoadError(path, "a schema must be a JSON object")
    declared = doc.get("$schema", DRAFT_2020_12)
    if not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12:
        raise SchemaLoadError(
            path, f"$schema is {declared!r}; taskbus validates with {DRAFT_2020_12!r} only"
        )
    schema_id = doc.get("$id")
    if not isinstance(schema_id, str) or not schema_id:
        raise SchemaLoadError(path, 'the schema needs an "$id" (a non-empty string)')
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaLoadError(
            path, f'the schema needs a top-level integer "version" >= 1, got {version!r}'
        )
    try:
        Draft202012Validator.check_schema(doc)
    except JsonSchemaError as exc:
        raise SchemaLoadError(
            path,
            f"not a valid draft 2020-12 schema at {json_path(exc.absolute_path)}: {exc.message}",
        ) from exc
    return event_type, doc


def _check_references(path: Path, doc: dict[str, Any], registry: Registry[Any]) -> None:
    """Check formats and ``$ref`` targets now, so validation cannot fail on them later."""
    for base, where, node in _subschemas(doc, doc["$id"], "$"):
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt not in CHECKED_FORMATS:
            raise SchemaLoadError(
                path,
                f"format {fmt!r} at {where} is not checked by taskbus (checked: "
                f"{', '.join(CHECKED_FORMATS)}); use a pattern, or drop the format",
            )
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                registry.resolver(base_uri=base).lookup(ref)
            except referencing.exceptions.Unresolvable as exc:
                raise SchemaLoadError(
                    path,
                    f"$ref {ref!r} at {where} does not resolve ({exc}); a $ref may point "
                    "into this file or to another schema of the directory by its $id",
                ) from exc


def _violation_order(error: Any) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort violations by path (indexes numerically), then by message."""
    parts = tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path)
    return parts, str(error.message)


class SchemaRegistry:
    """The compiled schemas of every event type; load it once per process.

    Attributes:
        directory: The directory the schemas came from.
    """

    def __init__(self, directory: Path, entries: Mapping[str, _Entry]) -> None:
        """Hold compiled schemas; use :meth:`load` to build one from a directory."""
        self.directory = directory
        self._entries = dict(entries)

    @classmethod
    def load(cls, directory: Path) -> SchemaRegistry:
        """Load, check and compile every ``*.json`` schema in ``directory``.

        Args:
            directory: The schema directory (``BUS_SCHEMAS_DIR``).

        Returns:
            The registry.

        Raises:
            SchemaLoadError: The directory is missing, or a file is not a usable
                schema: bad JSON, not draft 2020-12, invalid schema, missing
                ``$id`` or ``version``, a file name that is not an event type,
                an ``$id`` used twice, an unchecked format or an unresolvable
                ``$ref``. The message names the file and the problem.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise SchemaLoadError(directory, "no such schema directory (set BUS_SCHEMAS_DIR)")
        docs: dict[str, tuple[Path, dict[str, Any]]] = {}
        owners: dict[str, Path] = {}
        for path in sorted(p for p in directory.glob("*.json") if p.is_file()):
            event_type, doc = _read(path)
            if doc["$id"] in owners:
                raise SchemaLoadError(
                    path, f"$id {doc['$id']!r} is also the $id of {owners[doc['$id']]}"
                )
            owners[doc["$id"]] = path
            docs[event_type] = (path, doc)
        spec = referencing.jsonschema.DRAFT202012
        # referencing's default Registry never retrieves anything: no network.
        registry: Registry[Any] = (
            Registry()
            .with_resources(
                (doc["$id"], Resource.from_contents(doc, default_specification=spec))
                for _, doc in docs.values()
            )
            .crawl()
        )
        checker = format_checker()
        entries: dict[str, _Entry] = {}
        for event_type, (path, doc) in docs.items():
            _check_references(path, doc, registry)
            validator = SchemaValidator(doc, registry=registry, format_checker=checker)
            fast = fast_validator(doc, [d for _, d in docs.values()], checker)
            entries[event_type] = _Entry(
                SchemaInfo(event_type, doc["$id"], doc["version"], path), validator, fast
            )
        return cls(directory, entries)

    @property
    def types(self) -> list[str]:
        """The known event types, sorted."""
        return sorted(self._entries)

    def info(self, event_type: str) -> SchemaInfo:
        """Return which schema validates ``event_type``.

        Args:
            event_type: The event type.

        Returns:
            The schema's ``$id``, version and file.

        Raises:
            UnknownEventType: No schema for the type (with close matches).
        """
        entry = self._entries.get(event_type) if isinstance(event_type, str) else None
        if entry is None:
            self._unknown(event_type)
        return entry.info

    def validate(self, event_type: str, payload: Any) -> SchemaInfo:
        """Validate a payload against its type's schema.

        Args:
            event_type: The event type.
            payload: The decoded payload (JSON types).

        Returns:
            The schema the payload conforms to.

        Raises:
            UnknownEventType: No schema for the type.
            PayloadInvalid: Every violation, with its JSON path, sorted by path.
        """
        # Not a str (a list is not even hashable): unknown, like any other bad name.
        entry = self._entries.get(event_type) if isinstance(event_type, str) else None
        if entry is None:
            self._unknown(event_type)
        # The compiled validator answers "valid" about 100 times faster; the
        # pure-Python one has the final word on rejections and writes the
        # messages (tests hold the two to the same verdicts).
        if entry.fast is not None and entry.fast.is_valid(payload):
            return entry.info
        errors = list(entry.validator.iter_errors(payload))
        if errors:
            errors.sort(key=_violation_order)
            raise PayloadInvalid(
                event_type, [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]
            )
        return entry.info

    def _unknown(self, event_type: str) -> NoReturn:
        close = difflib.get_close_matches(str(event_type), self._entries, n=3)
        raise UnknownEventType(event_type, self.directory, close)
