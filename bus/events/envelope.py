"""Events: the envelope every published payload travels in.

Field names follow CloudEvents 1.0 (``specversion``, ``id``, ``source``,
``type``, ``time``, ``dataschema``, ``datacontenttype``, ``data``), so an event
can be exported as one. taskbus adds three extension attributes:

* ``buskey``: the bus's own key of the event (a time-sortable id). It names the
  event in Redis, in task ids (``<buskey>.<subscription>``) and in
  ``python -m bus event show``. When the publisher gives no id, ``id`` equals it.
* ``schemaversion``: the version of the schema the payload was validated with.
* ``correlationid``: optional; follow-up events published from a handler carry
  the triggering event's correlation id (or its key).

``source`` + ``id`` is the idempotency key: the same pair published twice within
the dedup window is routed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from bus.events.schemas import SchemaError

__all__ = [
    "Event",
    "InvalidEventAttribute",
    "build_envelope",
    "validate_event_id",
    "validate_source",
]

_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class InvalidEventAttribute(SchemaError, ValueError):
    """A caller-given ``id``, ``correlation_id`` or ``source`` is not valid.

    A :class:`~bus.events.schemas.SchemaError` like every other bad input of a
    publish (nothing is written), and a ``ValueError`` as before.

    Attributes:
        attribute: Which one: ``"id"``, ``"correlation_id"`` or ``"source"``.
    """

    def __init__(self, attribute: str, message: str) -> None:
        super().__init__(message)
        self.attribute = attribute


def validate_event_id(value: str, attribute: str = "id") -> str:
    """Return a caller-given event id if valid.

    Args:
        value: 1-128 characters of letters, digits and ``._:@/+=-``.
        attribute: What the value is, for the message: ``"id"`` or
            ``"correlation_id"`` (both follow the same rules).

    Raises:
        InvalidEventAttribute: ``value`` breaks those rules.
    """
    # fullmatch, not match with '$': '$' also matches before a final newline.
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        what = "correlation id" if attribute == "correlation_id" else "event id"
        raise InvalidEventAttribute(
            attribute,
            f"invalid {what} {value!r}: use 1-128 characters of letters, digits and ._:@/+=-",
        )
    return value


def validate_source(value: str) -> str:
    """Return an event source if valid (non-empty, printable, <= 256 characters).

    Raises:
        InvalidEventAttribute: It is not.
    """
    if not isinstance(value, str) or not value or len(value) > 256 or not value.isprintable():
        raise InvalidEventAttribute(
            "source", f"invalid event source {value!r}: use 1-256 printable characters"
        )
    return value


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def build_envelope(
    *,
    key: str,
    event_type: str,
    source: str,
    time_ms: int,
    data_json: bytes,
    schema_id: str,
    schema_version: int | str,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> bytes:
    """Encode an event envelope, embedding the already-encoded payload as is.

    Args:
        key: The bus key of the event.
        event_type: The event type.
        source: Who published it.
        time_ms: When it was published.
        data_json: The payload, JSON-encoded (it is not re-encoded).
        schema_id: The ``$id`` of the schema it was validated with.
        schema_version: That schema's version.
        event_id: The publisher's id, if it gave one.
        correlation_id: Optional correlation id.
    """
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or key,
        "source": source,
        "type": event_type,
        "time": _iso(time_ms),
        "datacontenttype": "application/json",
        "dataschema": schema_id,
        "schemaversion": schema_version,
        "buskey": key,
    }
    if correlation_id is not None:
        doc["correlationid"] = correlation_id
    doc["data"] = orjson.Fragment(data_json)
    return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class Event:
    """A received event, as a subscription handler gets it.

    Attributes:
        key: The bus key (``buskey``).
        id: The CloudEvents id (the publisher's, or the key).
        type: The event type.
        source: Who published it.
        time: Publication time, RFC 3339.
        data: The validated payload.
        schema: The schema ``$id`` it was validated with.
        schema_version: That schema's version.
        correlation_id: The correlation id, if any.
    """

    key: str
    id: str
    type: str
    source: str
    time: str
    data: Any
    schema: str | None = None
    schema_version: int | str | None = None
    correlation_id: str | None = None

    @classmethod
    def from_envelope(cls, doc: dict[str, Any]) -> Event:
        """Build from a decoded envelope.

        Raises:
            ValueError: A required attribute is missing.
        """
        try:
            return cls(
                key=doc["buskey"],
                id=doc["id"],
                type=doc["type"],
                source=doc["source"],
                time=doc["time"],
                data=doc.get("data"),
                schema=doc.get("dataschema"),
                schema_version=doc.get("schemaversion"),
                correlation_id=doc.get("correlationid"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an event envelope: missing {exc}") from exc

    def to_cloudevent(self) -> dict[str, Any]:
        """Return the event as a CloudEvents 1.0 JSON-format mapping."""
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": "application/json",
            "buskey": self.key,
            "data": self.data,
        }
        if self.schema is not None:
            doc["dataschema"] = self.schema
        if self.schema_version is not None:
            doc["schemaversion"] = self.schema_version
        if self.correlation_id is not None:
            doc["correlationid"] = self.correlation_id
        return doc
