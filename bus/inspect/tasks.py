"""One task as stored, and its history reconstructed: the task half of the lineage API.

A task's history is not logged as it happens; it is reconstructed from what the
engine stores (see :mod:`bus.store.keys` and :mod:`bus.core.task`): the created time
``tc``, one error per failed attempt (time, worker, type, message), the start
``ts`` of the latest attempt, the finish ``tf`` and dead reason ``why``, and
for replayed tasks the replay count ``rp`` and the last replays ``rh`` (each:
when it was replayed, when and why it had died; written by ``replay.lua``).

:func:`read_tasks` (on :func:`bus.store.reads.tasks`) is the one read of tasks
that the event lineage (:mod:`bus.inspect.events`) and the dead letters
(:mod:`bus.inspect.deadset`) build on; the documented entry point is
:mod:`bus.inspect.lineage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bus.core.task import AttemptError, TaskInfo, TaskRecord, TaskState
from bus.errors import BusError
from bus.store import reads
from bus.store.keys import AppKeys, validate_app_name
from bus.store.redis_errors import maps_client_errors
from bus.store.types import AsyncClient

__all__ = [
    "HistoryEntry",
    "TaskNotFound",
    "TaskSnapshot",
    "error_to_doc",
    "read_task",
    "read_tasks",
]

RAW_RECORD_CHARS = 2000


class TaskNotFound(BusError):
    """No task of that id exists in the app (unknown, or expired after success)."""


def error_to_doc(error: AttemptError, *, traceback: bool = False) -> dict[str, Any]:
    """Return one attempt's error as a JSON-ready mapping.

    Args:
        error: The stored error.
        traceback: Include the (possibly long) traceback text.
    """
    doc: dict[str, Any] = {
        "attempt": error.attempt,
        "at_ms": error.at_ms,
        "type": error.type,
        "message": error.message,
        "worker": error.worker,
    }
    if traceback:
        doc["traceback"] = error.traceback
    return doc


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One step in a task's life, as far as the stored state tells it.

    Attributes:
        at_ms: When it happened (for ``retry_due`` and ``scheduled``: when it will).
        event: ``created``, ``scheduled``, ``started``, ``attempt_failed``,
            ``dead``, ``replayed``, ``retry_due`` or ``succeeded``.
        detail: What else is known (attempt, worker, error, reason, replay).
    """

    at_ms: int
    event: str
    detail: dict[str, Any]

    def to_doc(self) -> dict[str, Any]:
        """Return the entry as a JSON-ready mapping."""
        return {"at_ms": self.at_ms, "event": self.event, **self.detail}


# Order of entries that share a millisecond: the order they must have happened in.
_RANK = {
    "created": 0,
    "replayed": 1,
    "started": 2,
    "attempt_failed": 3,
    "dead": 4,
    "succeeded": 4,
    "retry_due": 5,
    "scheduled": 5,
}


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """A task as stored now: record, state, errors, and its dead-letter entry.

    Attributes:
        app: The app.
        info: Record, state and errors, decoded.
        state: The raw state JSON (for the replay fields ``tr`` and ``rh``).
        record_error: Why the record could not be decoded, if it could not.
        record_raw: The raw record (first 2000 characters) when undecodable.
        dead_ms: When the task died, if it is in the dead set.
        state_error: Why the stored state cannot be decoded, if it cannot (its
            first bytes included). ``info`` then holds the record and errors,
            no attempts, and the state ``dead`` when the task is in the dead
            set, else ``queued``: placeholders, shown as ``unreadable``.
    """

    app: str
    info: TaskInfo
    state: dict[str, Any]
    record_error: str | None = None
    record_raw: str | None = None
    dead_ms: int | None = None
    state_error: str | None = None

    @classmethod
    def from_raw(
        cls,
        app: str,
        task_id: str,
        state_raw: bytes,
        record_raw: bytes | None,
        errors_raw: bytes | None,
        dead_score: float | None,
    ) -> TaskSnapshot:
        """Build from the stored entries (record, errors and dead score may be missing)."""
        record_error = None
        raw_text = None
        if record_raw is None:
            record_error = "the record is missing"
        else:
            try:
                TaskRecord.decode(record_raw)
            except ValueError as exc:
                record_error = str(exc)
                raw_text = record_raw[:RAW_RECORD_CHARS].decode("utf-8", "replace")
        state_error = None
        try:
            info = TaskInfo.from_raw(task_id, state_raw, record_raw, errors_raw)
            state = orjson.loads(state_raw)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            # Damage costs this task's state only: the listing it is in goes on.
            state_error = f"{type(exc).__name__}: {exc}; stored: {state_raw[:200]!r}"
            info = TaskInfo.unreadable(task_id, dead_score is not None, record_raw, errors_raw)
            state = {}
        return cls(
            app=app,
            info=info,
            state=state,
            record_error=record_error,
            record_raw=raw_text,
            dead_ms=None if dead_score is None else int(dead_score),
            state_error=state_error,
        )

    @property
    def id(self) -> str:
        """The task id."""
        return self.info.id

    @property
    def record(self) -> TaskRecord | None:
        """The decoded record, None if missing or undecodable."""
        return self.info.record

    @property
    def queue(self) -> str | None:
        """The queue in the record."""
        return self.record.queue if self.record else None

    @property
    def type(self) -> str | None:
        """The event type for an event's task, else the task name."""
        record = self.record
        if record is None:
            return None
        if record.kind == "event" and isinstance(record.payload, dict):
            event_type = record.payload.get("type")
            if isinstance(event_type, str):
                return event_type
        return record.name

    @property
    def event_key(self) -> str | None:
        """The bus key of the event this task delivers, for an event's task."""
        record = self.record
        if record is not None and record.kind == "event" and isinstance(record.payload, dict):
            key = record.payload.get("buskey")
            return key if isinstance(key, str) else None
        return None

    def history(self) -> list[HistoryEntry]:
        """Reconstruct the task's life from the stored state, oldest first."""
        info, st = self.info, self.state
        out: list[HistoryEntry] = []
        if info.created_ms is not None:
            out.append(HistoryEntry(info.created_ms, "created", {"queue": self.queue}))
        record = self.record
        created = info.created_ms
        if record is not None and created is not None and record.run_at_ms > created:
            out.append(HistoryEntry(record.run_at_ms, "scheduled", {}))
        for error in info.errors:
            detail = error_to_doc(error)
            del detail["at_ms"]
            out.append(HistoryEntry(error.at_ms, "attempt_failed", detail))
        replays: list[dict[str, Any]] = st.get("rh") or []
        first_listed = info.replays - len(replays) + 1
        for number, replay in enumerate(replays, start=first_listed):
            if replay.get("died") is not None:
                why = {"reason": replay.get("why")}
                out.append(HistoryEntry(int(replay["died"]), "dead", why))
            out.append(HistoryEntry(int(replay["at"]), "replayed", {"replay": number}))
        if info.started_ms is not None:
            detail = {}
            if info.started_ms >= int(st.get("tr", 0)):
                detail = {"attempt": info.attempts, "worker": info.worker}
            out.append(HistoryEntry(info.started_ms, "started", detail))
        if info.finished_ms is not None and info.state is TaskState.SUCCEEDED:
            out.append(HistoryEntry(info.finished_ms, "succeeded", {}))
        if info.finished_ms is not None and info.state is TaskState.DEAD:
            out.append(HistoryEntry(info.finished_ms, "dead", {"reason": info.dead_reason}))
        if info.run_at_ms is not None and info.state is TaskState.RETRYING:
            out.append(HistoryEntry(info.run_at_ms, "retry_due", {}))
        out.sort(key=lambda e: (e.at_ms, _RANK[e.event]))
        return out

    def to_doc(self, *, full: bool = True) -> dict[str, Any]:
        """Return the task as a JSON-ready mapping (the format ``task show --json`` prints).

        Args:
            full: Include payload, every error with its traceback, and the history.
        """
        info = self.info
        record = self.record
        last = info.errors[-1] if info.errors else None
        doc: dict[str, Any] = {
            "app": self.app,
            "id": info.id,
            "kind": record.kind if record else None,
            "name": record.name if record else None,
            "type": self.type,
            "queue": self.queue,
            "event_key": self.event_key,
            "state": "unreadable" if self.state_error else info.state.value,
            "attempts": info.attempts,
            "max_attempts": info.max_attempts,
            "replays": info.replays,
            "worker": info.worker,
            "created_ms": info.created_ms,
            "started_ms": info.started_ms,
            "finished_ms": info.finished_ms,
            "run_at_ms": info.run_at_ms,
            "replayed_ms": self.state.get("tr"),
            "dead_ms": self.dead_ms,
            "dead_reason": info.dead_reason,
            "last_error": error_to_doc(last) if last else None,
            "record_error": self.record_error,
            "state_error": self.state_error,
        }
        if full:
            doc["record"] = _record_doc(record)
            doc["record_raw"] = self.record_raw
            doc["errors"] = [error_to_doc(e, traceback=True) for e in info.errors]
            doc["history"] = [e.to_doc() for e in self.history()]
        return doc


def _record_doc(record: TaskRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "name": record.name,
        "queue": record.queue,
        "kind": record.kind,
        "max_attempts": record.max_attempts,
        "timeout_s": record.timeout_s,
        "backoff": record.backoff,
        "scope": record.scope,
        "created_ms": record.created_ms,
        "run_at_ms": record.run_at_ms,
        "payload": record.payload,
    }


async def read_tasks(
    client: AsyncClient, keys: AppKeys, ids: Sequence[str], *, errors: bool = True
) -> dict[str, TaskSnapshot]:
    """Read tasks of one app in one round trip (:func:`bus.store.reads.tasks`); unknown
    ids are left out.

    Args:
        client: Redis client.
        keys: The app's keys.
        ids: The task ids.
        errors: Also read the attempt errors (they can be long).
    """
    if not ids:
        return {}
    out: dict[str, TaskSnapshot] = {}
    for task_id, stored in zip(
        ids, await reads.tasks(client, keys, ids, errors=errors), strict=True
    ):
        if stored is not None:
            out[task_id] = TaskSnapshot.from_raw(keys.app, task_id, *stored)
    return out


@maps_client_errors
async def read_task(client: AsyncClient, prefix: str, app: str, task_id: str) -> TaskSnapshot:
    """Read one task with its errors and dead-letter entry.

    Raises:
        ValueError: The app name is invalid.
        TaskNotFound: The app has no task of that id.
    """
    keys = AppKeys(prefix, validate_app_name(app))
    found = (await read_tasks(client, keys, [task_id])).get(task_id)
    if found is None:
        raise TaskNotFound(
            f"app {app!r} has no task {task_id!r}: check the id and --app; a task that "
            "succeeded is deleted after the retention (BUS_RETENTION_S)"
        )
    return found
