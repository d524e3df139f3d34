"""The state of the bus at a glance: per app, its queues, dead letters and workers.

Apps are those registered in the subscription registry plus those that have
keys (found with ``SCAN``, never ``KEYS``). Per queue: ready depth, delayed,
in flight, and the age of the oldest waiting task (the tail of the ready list,
which workers pop next). Per app: the dead count and the workers' status
records; a worker is live while its heartbeat is recent (3 leases: 45 s).
Every read is a function of :mod:`bus.store.reads`; this module judges what
they return.

A registered app with no live worker for longer than ``stale_after_ms`` is
flagged: events keep reaching its queues and nobody works them. "Last seen"
is the newest heartbeat still recorded, or the newest time a task of the app
finished or died if that is later: a worker that stops cleanly removes its
status record, but the tasks it settled remain as evidence it was there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bus.errors import BusError
from bus.store import reads
from bus.store.keys import AppKeys, BusKeys, validate_app_name
from bus.store.redis_errors import maps_client_errors
from bus.store.types import AsyncClient

__all__ = [
    "LIVE_AFTER_MS",
    "PENDING_AFTER_MS",
    "STALE_AFTER_MS",
    "AppStatus",
    "BusStatus",
    "QueueStatus",
    "UnknownApp",
    "WorkerStatus",
    "app_names",
    "bus_status",
    "health_problems",
    "overdue_pending",
    "require_apps",
]

#: A worker is live while its last heartbeat is at most this old (3 x 15 s lease).
LIVE_AFTER_MS = 45_000
#: A registered app with no live worker for longer than this is flagged.
STALE_AFTER_MS = 300_000
#: An event still pending after this long is overdue: the sweep (grace 5 s, run
#: with every heartbeat, every 5 s) should have routed it by then.
PENDING_AFTER_MS = 15_000


class UnknownApp(BusError):
    """An app named on the command line is neither registered nor has any keys."""


def _text(value: bytes | str) -> str:
    # A name or id that is not UTF-8 (damage) is shown escaped, never fatal.
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _created_ms(raw: bytes | str | None) -> int | None:
    try:
        tc = orjson.loads(raw).get("tc") if raw is not None else None
        return None if tc is None else int(tc)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None  # a damaged state: the claim dead-letters it when it gets there


@maps_client_errors
async def app_names(client: AsyncClient, prefix: str) -> tuple[list[str], list[str]]:
    """Return the registered apps and the apps that have queues, each sorted.

    The apps with queues are found with ``SCAN`` (:func:`bus.store.reads.apps_with_queues`).
    """
    registered = sorted(_text(a) for a in await reads.registered_apps(client, BusKeys(prefix)))
    return registered, sorted(await reads.apps_with_queues(client, prefix))


@maps_client_errors
async def require_apps(
    client: AsyncClient,
    prefix: str,
    apps: list[str],
    known: tuple[list[str], list[str]] | None = None,
) -> None:
    """Refuse app names the bus does not know, so a typo is not an empty answer.

    An app is known when it is registered, has queues, or has dead tasks.

    Args:
        client: Redis client.
        prefix: The key prefix.
        apps: The names to check.
        known: :func:`app_names`' answer, if the caller has it already.

    Raises:
        UnknownApp: A name is unknown; the message lists the known apps.
    """
    registered, with_keys = known if known is not None else await app_names(client, prefix)
    names = set(registered) | set(with_keys)
    missing = [a for a in apps if a not in names]
    if missing:
        # Dead letters outlive an app's queues set only if someone deleted it;
        # one EXISTS per unknown name keeps such an app reachable.
        for app in list(missing):
            if await reads.has_dead(client, AppKeys(prefix, app)):
                missing.remove(app)
    if missing:
        listed = ", ".join(sorted(names)) or "none (no app is registered and none has queues)"
        raise UnknownApp(f"no such app: {', '.join(missing)}; known apps: {listed}")


@maps_client_errors
async def overdue_pending(
    client: AsyncClient, prefix: str, *, now_ms: int, older_than_ms: int
) -> tuple[int, int | None]:
    """Count events pending (recorded, not fully routed) for longer than ``older_than_ms``.

    Returns:
        Their number and the age of the oldest (None when there is none).
    """
    count, oldest = await reads.pending_overdue(client, BusKeys(prefix), now_ms - older_than_ms)
    age = now_ms - int(oldest) if count and oldest is not None else None
    return count, age


def health_problems(
    status: BusStatus, pending: tuple[int, int | None], pending_after_ms: int
) -> list[str]:
    """What makes the bus unhealthy for ``status --check``: one sentence each.

    An app is unhealthy when it has dead tasks or no live worker; the bus is
    when events stay pending past ``pending_after_ms`` (nobody sweeps them).
    """
    problems = []
    for app in status.apps:
        if app.dead:
            problems.append(
                f"app {app.app}: {app.dead} dead task{'s' if app.dead != 1 else ''} "
                f"(python -m bus dead list --app {app.app})"
            )
        if not any(w.live for w in app.workers):
            problems.append(f"app {app.app}: no live worker")
    count, oldest_ms = pending
    if count:
        problems.append(
            f"{count} event{'s' if count != 1 else ''} pending for longer than "
            f"{_age_text(pending_after_ms)} (oldest {_age_text(oldest_ms or 0)}): no worker "
            "routes them; start any app's worker, it sweeps pending events"
        )
    return problems


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Depths of one queue and its oldest waiting task."""

    name: str
    ready: int
    delayed: int
    inflight: int
    oldest_id: str | None
    oldest_created_ms: int | None

    def to_doc(self, now_ms: int) -> dict[str, Any]:
        """Return the queue as a JSON-ready mapping."""
        age = None if self.oldest_created_ms is None else now_ms - self.oldest_created_ms
        return {
            "queue": self.name,
            "ready": self.ready,
            "delayed": self.delayed,
            "inflight": self.inflight,
            "oldest_waiting_id": self.oldest_id,
            "oldest_waiting_age_ms": age,
        }


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker's status record and last heartbeat."""

    id: str
    host: str | None
    pid: int | None
    queues: list[str]
    running: int
    processed: int
    failed: int
    beat_ms: int
    live: bool

    def to_doc(self, now_ms: int) -> dict[str, Any]:
        """Return the worker as a JSON-ready mapping."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "running": self.running,
            "processed": self.processed,
            "failed": self.failed,
            "last_beat_age_ms": now_ms - self.beat_ms,
            "live": self.live,
        }


@dataclass(frozen=True, slots=True)
class AppStatus:
    """One app: queues, dead count, workers, and whether it lacks workers."""

    app: str
    registered: bool
    queues: list[QueueStatus]
    dead: int
    workers: list[WorkerStatus]
    last_seen_ms: int | None
    stale: bool
    warning: str | None

    def to_doc(self, now_ms: int) -> dict[str, Any]:
        """Return the app as a JSON-ready mapping."""
        return {
            "app": self.app,
            "registered": self.registered,
            "queues": [q.to_doc(now_ms) for q in self.queues],
            "dead": self.dead,
            "live_workers": sum(1 for w in self.workers if w.live),
            "workers": [w.to_doc(now_ms) for w in self.workers],
            "last_seen_ms": self.last_seen_ms,
            "stale": self.stale,
            "warning": self.warning,
        }


@dataclass(frozen=True, slots=True)
class BusStatus:
    """Every app's status at one moment."""

    now_ms: int
    live_after_ms: int
    stale_after_ms: int
    apps: list[AppStatus]

    def to_doc(self) -> dict[str, Any]:
        """Return the status as a JSON-ready mapping (``status --json``)."""
        return {
            "now_ms": self.now_ms,
            "live_after_ms": self.live_after_ms,
            "stale_after_ms": self.stale_after_ms,
            "apps": [a.to_doc(self.now_ms) for a in self.apps],
        }


def _worker(worker_id: str, raw: bytes | None, beat_ms: int, live: bool) -> WorkerStatus:
    doc: dict[str, Any] = {}
    if raw:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}  # a damaged status record: the worker's heartbeat is still shown
    return WorkerStatus(
        id=worker_id,
        host=doc.get("host"),
        pid=doc.get("pid"),
        queues=list(doc.get("queues") or []),
        running=int(doc.get("running_count", 0)),
        processed=int(doc.get("processed", 0)),
        failed=int(doc.get("failed", 0)),
        beat_ms=beat_ms,
        live=live,
    )


def _newest(*candidates: int | None) -> int | None:
    present = [c for c in candidates if c is not None]
    return max(present) if present else None


def _age_text(ms: int) -> str:
    seconds = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _app_status(
    client: AsyncClient,
    prefix: str,
    app: str,
    registered: bool,
    *,
    now_ms: int,
    live_after_ms: int,
    stale_after_ms: int,
) -> AppStatus:
    keys = AppKeys(prefix, app)
    entries = await reads.app_entries(client, keys)
    names = sorted(_text(m) for m in entries.queues)
    depths = await reads.queue_depths(client, keys, names)
    oldest_ids = [_text(d.next_id) for d in depths if d.next_id]
    created: dict[str, int] = {}
    if oldest_ids:
        for task_id, raw in zip(
            oldest_ids, await reads.task_states(client, keys, oldest_ids), strict=True
        ):
            tc = _created_ms(raw)
            if tc is not None:
                created[task_id] = tc
    queues = []
    for name, (ready, delayed, inflight, tail) in zip(names, depths, strict=True):
        oldest = _text(tail) if tail else None
        queues.append(
            QueueStatus(name, ready, delayed, inflight, oldest, created.get(oldest or ""))
        )
    by_id = {_text(k): v for k, v in entries.workers.items()}
    workers = [
        _worker(_text(w), by_id.get(_text(w)), int(score), now_ms - int(score) <= live_after_ms)
        for w, score in entries.beats
    ]
    workers.sort(key=lambda w: (not w.live, w.id))
    last_seen = _newest(
        max((w.beat_ms for w in workers), default=None),
        entries.last_finished_ms,
        entries.last_dead_ms,
    )
    stale, warning = False, None
    if registered and not any(w.live for w in workers):
        if last_seen is None:
            stale, warning = True, "never seen a worker"
        elif now_ms - last_seen > stale_after_ms:
            stale = True
            warning = f"no live worker for {_age_text(now_ms - last_seen)}"
    return AppStatus(app, registered, queues, entries.dead, workers, last_seen, stale, warning)


@maps_client_errors
async def bus_status(
    client: AsyncClient,
    prefix: str,
    *,
    now_ms: int,
    apps: list[str] | None = None,
    live_after_ms: int = LIVE_AFTER_MS,
    stale_after_ms: int = STALE_AFTER_MS,
) -> BusStatus:
    """Read the status of every app (or of the named ones).

    Args:
        client: Redis client.
        prefix: The key prefix.
        now_ms: The current time (ages are computed against it).
        apps: Only these apps (default: registered apps and apps with queues).
        live_after_ms: A heartbeat older than this means the worker is gone.
        stale_after_ms: Flag a registered app with no live worker for this long.

    Raises:
        ValueError: A named app is not a valid app name.
        UnknownApp: A named app is unknown (see :func:`require_apps`).
    """
    registered, with_keys = await app_names(client, prefix)
    names = sorted(set(registered) | set(with_keys))
    if apps is not None:
        names = [validate_app_name(a) for a in apps]
        await require_apps(client, prefix, names, (registered, with_keys))
    out = [
        await _app_status(
            client,
            prefix,
            app,
            app in registered,
            now_ms=now_ms,
            live_after_ms=live_after_ms,
            stale_after_ms=stale_after_ms,
        )
        for app in names
    ]
    return BusStatus(now_ms, live_after_ms, stale_after_ms, out)
