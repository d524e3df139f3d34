"""An event and every task it became: the event half of the lineage API.

An event's lineage follows its key: the envelope in the event log
(:func:`bus.store.reads.event_entry`), then, for every registered
subscription, the task ``<event key>.<subscription>`` in that app's state hash
(see :func:`bus.events.router.task_id_for`), read with
:func:`bus.inspect.tasks.read_tasks`. The documented entry point is
:mod:`bus.inspect.lineage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bus.errors import BusError
from bus.events.registry import load_registry
from bus.events.router import task_id_for
from bus.inspect.tasks import RAW_RECORD_CHARS, TaskSnapshot, error_to_doc, read_tasks
from bus.store import reads
from bus.store.keys import AppKeys, BusKeys
from bus.store.redis_errors import maps_client_errors
from bus.store.types import AsyncClient

__all__ = [
    "Delivery",
    "EventLineage",
    "EventNotFound",
    "event_lineage",
]


class EventNotFound(BusError):
    """No event of that key is in the event log (unknown, or past its retention)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One registered subscription of an event's lineage, and its task if any.

    Attributes:
        app: The subscribing app.
        subscription: The subscription name.
        task_id: ``<event key>.<subscription>``.
        matches: Whether the subscription as registered now matches the event.
        task: The task, None if there is none (no match, not routed yet, or
            expired after the retention).
    """

    app: str
    subscription: str
    task_id: str
    matches: bool
    task: TaskSnapshot | None

    def to_doc(self) -> dict[str, Any]:
        """Return the delivery as a JSON-ready mapping."""
        task = self.task
        return {
            "app": self.app,
            "subscription": self.subscription,
            "task_id": self.task_id,
            "matches": self.matches,
            "state": task.info.state.value if task else None,
            "attempts": task.info.attempts if task else None,
            "replays": task.info.replays if task else None,
            "dead_reason": task.info.dead_reason if task else None,
            "finished_ms": task.info.finished_ms if task else None,
            "last_error": (
                error_to_doc(task.info.errors[-1]) if task and task.info.errors else None
            ),
        }


@dataclass(frozen=True, slots=True)
class EventLineage:
    """An event and what became of it in every subscribing app.

    Attributes:
        key: The event's bus key.
        envelope: The envelope as recorded; None when it cannot be decoded.
        recorded_ms: When it was recorded, if still in the retention index.
        pending: Not yet routed to every subscriber (a sweep will finish it).
        deliveries: One per registered subscription, by app and name.
        envelope_error: Why the stored envelope cannot be decoded, if it cannot.
        envelope_raw: Its first 2000 characters then (bytes that are not
            UTF-8 shown as U+FFFD).
    """

    key: str
    envelope: dict[str, Any] | None
    recorded_ms: int | None
    pending: bool
    deliveries: list[Delivery]
    envelope_error: str | None = None
    envelope_raw: str | None = None

    def to_doc(self) -> dict[str, Any]:
        """Return the lineage as a JSON-ready mapping (``event show --json``)."""
        return {
            "key": self.key,
            "type": None if self.envelope is None else self.envelope.get("type"),
            "recorded_ms": self.recorded_ms,
            "pending": self.pending,
            "envelope": self.envelope,
            "envelope_error": self.envelope_error,
            "envelope_raw": self.envelope_raw,
            "deliveries": [d.to_doc() for d in self.deliveries],
        }


def _decode_envelope(raw: bytes) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The envelope, or None with why and the raw text: damage is shown, never raised."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = f"the stored envelope is not UTF-8 JSON: {exc}"
    else:
        if isinstance(envelope, dict):
            return envelope, None, None
        error = f"the stored envelope is a JSON {type(envelope).__name__}, not an object"
    return None, error, raw[:RAW_RECORD_CHARS].decode("utf-8", "replace")


@maps_client_errors
async def event_lineage(client: AsyncClient, prefix: str, event_key: str) -> EventLineage:
    """Read an event from the event log and the task of each registered subscription.

    Raises:
        EventNotFound: The event log has no such key.
    """
    keys = BusKeys(prefix)
    raw, recorded, pending = await reads.event_entry(client, keys, event_key)
    if raw is None:
        raise EventNotFound(
            f"no event {event_key!r} in the event log: check the key (the 'buskey' of the "
            "envelope, also the first part of its task ids); events are kept for "
            "BUS_RETENTION_S"
        )
    envelope, envelope_error, envelope_raw = _decode_envelope(raw)
    registry = await load_registry(client, keys)
    by_app: dict[str, list[tuple[str, bool]]] = {}
    for sub in registry.subscriptions:
        # A damaged envelope matches nothing; its tasks, if any, are still shown.
        matches = envelope is not None and sub.matches(
            str(envelope.get("type")), envelope.get("data")
        )
        by_app.setdefault(sub.spec.app, []).append((sub.spec.name, matches))
    deliveries: list[Delivery] = []
    for app, subs in sorted(by_app.items()):
        ids = [task_id_for(event_key, name) for name, _ in subs]
        found = await read_tasks(client, AppKeys(prefix, app), ids)
        for (name, matches), task_id in zip(subs, ids, strict=True):
            deliveries.append(Delivery(app, name, task_id, matches, found.get(task_id)))
    return EventLineage(
        key=event_key,
        envelope=envelope,
        recorded_ms=None if recorded is None else int(recorded),
        pending=pending,
        deliveries=deliveries,
        envelope_error=envelope_error,
        envelope_raw=envelope_raw,
    )
