"""Task records: what a task is, what state it is in, and how both are encoded.

A task is two entries in its app's hashes (see :mod:`bus.store.keys`): an immutable
record written once at enqueue (name, queue, payload, options) and a small
mutable state that the Lua scripts change atomically (state, attempts, claim
token, worker, times). Errors of failed attempts are kept in a third hash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

__all__ = ["AttemptError", "NewTask", "TaskInfo", "TaskRecord", "TaskState", "encode_record"]


class TaskState(StrEnum):
    """The states of a task; every change between them is one atomic script."""

    SCHEDULED = "scheduled"  # waiting for run_at
    QUEUED = "queued"  # ready, waiting for a worker
    RUNNING = "running"  # claimed, under lease
    SUCCEEDED = "succeeded"  # done; expires after the retention
    RETRYING = "retrying"  # failed, waiting for its back-off
    DEAD = "dead"  # out of attempts or failed for good; kept until purged


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The immutable part of a task, written once at enqueue.

    Attributes:
        id: The task id, unique within the app.
        app: The app whose queue holds the task.
        name: The task name, which selects the handler.
        queue: The named queue.
        payload: The JSON-serialisable payload.
        kind: ``"task"`` for a task enqueued by name, ``"event"`` for an event
            routed to a subscription (the payload is then the event envelope).
        max_attempts: Attempts before the task is dead.
        timeout_s: Per-attempt timeout.
        backoff: The back-off spec, as :class:`bus.core.options.Backoff` encodes it.
        scope: ``"any"`` or ``"all"``.
        created_ms: Enqueue time.
        run_at_ms: When the task was first due (0 means at once).
    """

    id: str
    app: str
    name: str
    queue: str
    payload: Any
    kind: str = "task"
    max_attempts: int = 5
    timeout_s: float = 60.0
    backoff: Any = None
    scope: str = "any"
    created_ms: int = 0
    run_at_ms: int = 0

    def encode(self) -> bytes:
        """Return the record as stored in Redis (JSON).

        Fields at their default value (kind ``task``, scope ``any``, no
        back-off spec, due at once) are left out: a queued task's memory is
        mostly this record, and :meth:`decode` restores the defaults.
        """
        return encode_record(
            self.id,
            self.app,
            self.name,
            self.queue,
            self.payload,
            kind=self.kind,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            backoff=self.backoff,
            scope=self.scope,
            created_ms=self.created_ms,
            run_at_ms=self.run_at_ms,
        )

    @classmethod
    def decode(cls, raw: bytes) -> TaskRecord:
        """Parse a stored record and check that its fields have usable types.

        The worker, ``task show``, ``dead list`` and replay all decode here, so
        a record one of them cannot use is flagged by all of them alike.

        Raises:
            ValueError: The bytes are not a task record (corrupt or truncated),
                or a field has a type or value no worker can run (the message
                names the field).
        """
        try:
            doc = orjson.loads(raw)
            record = cls(
                id=doc["id"],
                app=doc["app"],
                name=doc["name"],
                queue=doc["queue"],
                payload=doc["payload"],
                kind=doc.get("kind", "task"),
                max_attempts=int(doc["max"]),
                timeout_s=float(doc["timeout_s"]),
                backoff=doc.get("backoff"),
                scope=doc.get("scope", "any"),
                created_ms=int(doc.get("created_ms", 0)),
                run_at_ms=int(doc.get("run_at_ms", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"undecodable task record: {exc}") from exc
        record._check()
        return record

    def _check(self) -> None:
        """Raise ValueError naming the first field no worker could run."""
        for name in ("id", "app", "name", "queue"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"undecodable task record: field {name!r} is {_shown(value)}, "
                    "expected a non-empty string"
                )
        if self.kind not in ("task", "event"):
            raise ValueError(
                f"undecodable task record: field 'kind' is {_shown(self.kind)}, "
                "expected 'task' or 'event'"
            )
        if self.scope not in ("any", "all"):
            raise ValueError(
                f"undecodable task record: field 'scope' is {_shown(self.scope)}, "
                "expected 'any' or 'all'"
            )
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(
                f"undecodable task record: field 'timeout_s' is {self.timeout_s!r}, "
                "expected a finite number of seconds > 0"
            )
        if self.max_attempts < 1:
            raise ValueError(
                f"undecodable task record: field 'max' is {self.max_attempts!r}, expected >= 1"
            )


def clip(text: str, limit: int) -> str:
    """Return ``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _shown(value: object) -> str:
    return f"{type(value).__name__} {clip(repr(value), 80)}"


def encode_record(
    id: str,
    app: str,
    name: str,
    queue: str,
    payload: Any,
    *,
    kind: str,
    max_attempts: int,
    timeout_s: float,
    backoff: Any,
    scope: str,
    created_ms: int,
    run_at_ms: int,
) -> bytes:
    """Return a task record as stored in Redis, from its fields (see
    :meth:`TaskRecord.encode`; enqueue calls this directly, saving the frozen
    dataclass it would build only to encode it).

    Raises:
        orjson.JSONEncodeError: The payload is not JSON-serialisable.
    """
    doc: dict[str, Any] = {
        "id": id,
        "app": app,
        "name": name,
        "queue": queue,
        "max": max_attempts,
        "timeout_s": timeout_s,
        "created_ms": created_ms,
    }
    if kind != "task":
        doc["kind"] = kind
    if backoff is not None:
        doc["backoff"] = backoff
    if scope != "any":
        doc["scope"] = scope
    if run_at_ms:
        doc["run_at_ms"] = run_at_ms
    doc["payload"] = payload
    return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The error of one failed attempt."""

    attempt: int
    at_ms: int
    type: str
    message: str
    traceback: str = ""
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task as read back by id: record, current state and attempt errors."""

    id: str
    state: TaskState
    attempts: int
    max_attempts: int
    record: TaskRecord | None
    worker: str | None = None
    created_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    run_at_ms: int | None = None
    dead_reason: str | None = None
    replays: int = 0
    errors: list[AttemptError] = field(default_factory=list)

    @classmethod
    def from_raw(
        cls, task_id: str, state_raw: bytes, record_raw: bytes | None, errors_raw: bytes | None
    ) -> TaskInfo:
        """Build from the three stored entries (record and errors may be missing).

        Raises:
            orjson.JSONDecodeError, TypeError, KeyError, ValueError: The state
                is damaged (not JSON, not an object, an unknown state or a
                field of the wrong type); a damaged record or error list is
                not an error (see :meth:`unreadable` for the readers' fallback).
        """
        st = orjson.loads(state_raw)
        record = _record_or_none(record_raw)
        errors = _decode_errors(errors_raw) if errors_raw else []

        if not isinstance(st, dict):
            raise TypeError(f"the state is a JSON {type(st).__name__}, not an object")

        def opt_int(key: str) -> int | None:
            value = st.get(key)
            return None if value is None else int(value)

        return cls(
            id=task_id,
            state=TaskState(st["s"]),
            attempts=int(st.get("a", 0)),
            max_attempts=int(st.get("m", 0)),
            record=record,
            worker=st.get("w"),
            created_ms=opt_int("tc"),
            started_ms=opt_int("ts"),
            finished_ms=opt_int("tf"),
            run_at_ms=opt_int("ra"),
            dead_reason=st.get("why"),
            replays=int(st.get("rp", 0)),
            errors=errors,
        )

    @classmethod
    def unreadable(
        cls, task_id: str, dead: bool, record_raw: bytes | None, errors_raw: bytes | None
    ) -> TaskInfo:
        """A task whose state is damaged: its record and errors, placeholder state.

        The state is ``dead`` for a task in the dead set, else ``queued``, with
        no attempts: readers flag such a task rather than trust these fields.
        """
        return cls(
            id=task_id,
            state=TaskState.DEAD if dead else TaskState.QUEUED,
            attempts=0,
            max_attempts=0,
            record=_record_or_none(record_raw),
            errors=_decode_errors(errors_raw) if errors_raw else [],
        )


def _record_or_none(raw: bytes | None) -> TaskRecord | None:
    try:
        return TaskRecord.decode(raw) if raw is not None else None
    except ValueError:
        return None


def _decode_errors(raw: bytes) -> list[AttemptError]:
    """Decode a stored error list; damage becomes one flagged entry, never an exception.

    Bytes that are not UTF-8 (damaged data copied into a message) are read with
    U+FFFD in their place; a list that still does not decode is shown as one
    ``UnreadableErrors`` entry holding its first bytes, so the task, and every
    listing it is in, can still be shown.
    """
    try:
        try:
            docs = orjson.loads(raw)
        except orjson.JSONDecodeError:
            docs = orjson.loads(raw.decode("utf-8", "replace"))
        return [
            AttemptError(
                attempt=int(e.get("attempt", 0)),
                at_ms=int(e.get("at", 0)),
                type=str(e.get("type", "")),
                message=str(e.get("message", "")),
                traceback=str(e.get("traceback", "")),
                worker=None if e.get("worker") is None else str(e.get("worker")),
            )
            for e in docs
        ]
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        return [
            AttemptError(
                attempt=0,
                at_ms=0,
                type="UnreadableErrors",
                message=(
                    f"the stored error list is not UTF-8 JSON ({exc}); "
                    f"its first bytes: {clip(repr(raw[:500]), 600)}"
                ),
            )
        ]


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to add, as planning hands it to the store: id, record, attempt limit, due time."""

    id: str
    record: bytes
    max_attempts: int
    run_at_ms: int
