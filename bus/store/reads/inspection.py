"""The inspection reads: what :mod:`bus.inspect` (so the CLI and a dashboard) and the demo ask.

The apps and their queues (status), tasks, events, the dead set, the demo's
counts, and the embedded server's ``INFO``; the conventions are those of
:mod:`bus.store.reads`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

from bus.store.keys import AppKeys, BusKeys, validate_app_name
from bus.store.types import STORE_ERRORS, AsyncClient, SyncClient

__all__ = [
    "AppEntries",
    "DeliveryStates",
    "QueueDepth",
    "StoredEvent",
    "StoredTask",
    "app_entries",
    "apps_with_queues",
    "beating_workers",
    "count_dead",
    "dead_page",
    "delivery_states",
    "envelopes",
    "event_entry",
    "glob_escape",
    "has_dead",
    "pending_overdue",
    "queue_depths",
    "registered_apps",
    "server_info_sync",
    "task_states",
    "tasks",
    "worker_records",
]

#: A zset read with scores: (member, score) pairs.
Scored = list[tuple[bytes, float]]

_GLOB_SPECIAL = "*?[]\\"


def glob_escape(text: str) -> str:
    """``text`` as a literal in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


# -- the apps and their queues (bus.inspect.status) ------------------------------------


async def registered_apps(client: AsyncClient, keys: BusKeys) -> list[bytes]:
    """The names of the apps in the subscription registry (``HKEYS``), unsorted."""
    return cast(list[bytes], await client.hkeys(keys.subs))


async def apps_with_queues(client: AsyncClient, prefix: str) -> set[str]:
    """The apps that have a queues set, found with ``SCAN`` (never ``KEYS``).

    The pattern is derived from :class:`AppKeys`, so the layout stays defined
    in :mod:`bus.store.keys` alone; a matching key whose name part is no valid
    app name (a foreign key) is left out.
    """
    head, tail = AppKeys(prefix, "\0").queues.split("\0")
    pattern = glob_escape(head) + "*" + glob_escape(tail)
    found: set[str] = set()
    async for raw in client.scan_iter(match=pattern, count=1000):
        # A key that is not UTF-8 (damage) is escaped; it then fails validation.
        key = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        try:
            found.add(validate_app_name(key[len(head) : len(key) - len(tail)]))
        except ValueError:
            continue
    return found


async def has_dead(client: AsyncClient, keys: AppKeys) -> bool:
    """Whether the app has a dead set (``EXISTS``)."""
    return bool(await client.exists(keys.dead))


async def pending_overdue(
    client: AsyncClient, keys: BusKeys, recorded_before_ms: int
) -> tuple[int, float | None]:
    """How many events pending were recorded at or before a time, and the oldest's time."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.pending, "-inf", recorded_before_ms)
        pipe.zrange(keys.pending, 0, 0, withscores=True)
        count, oldest = await pipe.execute()
    return int(count), float(oldest[0][1]) if oldest else None


@dataclass(frozen=True, slots=True)
class AppEntries:
    """An app's entries that its status is made of, as stored.

    Attributes:
        queues: The names in its queues set.
        dead: The size of its dead set.
        workers: Worker id -> status record (JSON).
        beats: (worker id, last heartbeat ms), oldest beat first.
        last_finished_ms: The newest finish time in the retention index.
        last_dead_ms: The newest dead time.
    """

    queues: list[bytes]
    dead: int
    workers: dict[bytes, bytes]
    beats: Scored
    last_finished_ms: int | None
    last_dead_ms: int | None


async def app_entries(client: AsyncClient, keys: AppKeys) -> AppEntries:
    """Read an app's queues, dead count, workers and latest activity in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.queues)
        pipe.zcard(keys.dead)
        pipe.hgetall(keys.workers)
        pipe.zrange(keys.beats, 0, -1, withscores=True)
        pipe.zrange(keys.finished, -1, -1, withscores=True)
        pipe.zrange(keys.dead, -1, -1, withscores=True)
        members, dead, records, beats, last_finished, last_dead = await pipe.execute()
    return AppEntries(
        queues=list(members),
        dead=int(dead),
        workers=records,
        beats=beats,
        last_finished_ms=int(last_finished[0][1]) if last_finished else None,
        last_dead_ms=int(last_dead[0][1]) if last_dead else None,
    )


class QueueDepth(NamedTuple):
    """One queue's depths, and the id its workers take next (None when empty)."""

    ready: int
    delayed: int
    inflight: int
    next_id: bytes | None


async def queue_depths(
    client: AsyncClient, keys: AppKeys, names: Sequence[str]
) -> list[QueueDepth]:
    """Read the depths of an app's queues in one round trip, in the order of ``names``."""
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            q = keys.queue(name)
            pipe.llen(q.ready)
            pipe.zcard(q.delayed)
            pipe.zcard(q.inflight)
            # Workers RPOP, so the tail of the ready list is the next to run.
            pipe.lindex(q.ready, -1)
        replies = await pipe.execute()
    return [QueueDepth(*replies[i : i + 4]) for i in range(0, len(replies), 4)]


# -- tasks (bus.inspect.tasks, the demo) ----------------------------------------------


class StoredTask(NamedTuple):
    """One task's entries: state JSON, record, attempt errors, dead-set score."""

    state: bytes
    record: bytes | None
    errors: bytes | None
    dead_score: float | None


async def tasks(
    client: AsyncClient, keys: AppKeys, ids: Sequence[str], *, errors: bool = True
) -> list[StoredTask | None]:
    """Read tasks of one app in one round trip; None for an id with no state.

    Args:
        client: The client.
        keys: The app's keys.
        ids: The task ids (at least one).
        errors: Also read the attempt errors (they can be long); else None.
    """
    listed = list(ids)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.state, listed)
        pipe.hmget(keys.tasks, listed)
        if errors:
            pipe.hmget(keys.errors, listed)
        pipe.zmscore(keys.dead, listed)
        replies = await pipe.execute()
    states, records, scores = replies[0], replies[1], replies[-1]
    errs = replies[2] if errors else [None] * len(listed)
    return [
        None if states[i] is None else StoredTask(states[i], records[i], errs[i], scores[i])
        for i in range(len(listed))
    ]


async def task_states(client: AsyncClient, keys: AppKeys, ids: Sequence[str]) -> list[bytes | None]:
    """The state JSON of some tasks of an app (``HMGET``; None for an unknown id)."""
    return cast(list[bytes | None], await client.hmget(keys.state, list(ids)))


# -- events (bus.inspect.events, the demo) ----------------------------------------------


class StoredEvent(NamedTuple):
    """An event's entries: envelope JSON (None if not in the log), when it was
    recorded (None if past the retention index), and whether it is pending."""

    envelope: bytes | None
    recorded_ms: float | None
    pending: bool


async def event_entry(client: AsyncClient, keys: BusKeys, event_key: str) -> StoredEvent:
    """Read one event from the event log, its recorded time and pending mark, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(keys.events, event_key)
        pipe.zscore(keys.events_t, event_key)
        pipe.zscore(keys.pending, event_key)
        raw, recorded, pending = await pipe.execute()
    return StoredEvent(raw, recorded, pending is not None)


async def envelopes(client: AsyncClient, keys: BusKeys) -> AsyncIterator[bytes]:
    """Every envelope in the event log (``HSCAN``, a thousand at a time), in no order."""
    async for _, raw in client.hscan_iter(keys.events, count=1000):
        yield raw


# -- the dead set (bus.inspect.deadset) ------------------------------------------------


async def dead_page(
    client: AsyncClient,
    keys: AppKeys,
    low: int | str,
    high: int | str,
    *,
    offset: int,
    size: int,
    newest_first: bool,
) -> Scored:
    """One page of the dead set by dead time (``low``/``high``: ms, ``-inf``, ``+inf``).

    Returns:
        Up to ``size`` (id, dead_ms) pairs after skipping ``offset``, newest or
        oldest first.
    """
    if newest_first:
        page = await client.zrevrangebyscore(keys.dead, high, low, offset, size, withscores=True)
    else:
        page = await client.zrangebyscore(keys.dead, low, high, offset, size, withscores=True)
    return cast(Scored, page)


async def count_dead(client: AsyncClient, keys: AppKeys, low: int | str, high: int | str) -> int:
    """How many of the app's tasks died between ``low`` and ``high`` (``ZCOUNT``)."""
    return int(await client.zcount(keys.dead, low, high))


# -- workers and the demo's counts (bus.demo) -----------------------------------------


async def beating_workers(client: AsyncClient, keys: AppKeys, since_ms: int) -> list[bytes | None]:
    """The status records of the app's workers that beat at or after ``since_ms``.

    None for a worker with a heartbeat but no record; two round trips, the
    second only when a worker beat.
    """
    ids = cast(list[bytes], await client.zrangebyscore(keys.beats, since_ms, "+inf"))
    if not ids:
        return []
    return cast(list[bytes | None], await client.hmget(keys.workers, ids))


async def worker_records(client: AsyncClient, keys: AppKeys) -> list[bytes]:
    """Every status record of the app's workers (``HVALS``)."""
    return cast(list[bytes], await client.hvals(keys.workers))


class DeliveryStates(NamedTuple):
    """The event log's keys, the pending count, and each app's whole state hash."""

    event_keys: list[bytes]
    pending: int
    states: list[dict[bytes, bytes]]


async def delivery_states(client: AsyncClient, prefix: str, apps: Sequence[str]) -> DeliveryStates:
    """Read the event keys, the pending count and the apps' state hashes in one round trip.

    Whole hashes: for the demo's apps (a few thousand tasks at most), never
    for a queue of production size.
    """
    bus_keys = BusKeys(prefix)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hkeys(bus_keys.events)
        pipe.zcard(bus_keys.pending)
        for app in apps:
            pipe.hgetall(AppKeys(prefix, app).state)
        replies = await pipe.execute()
    return DeliveryStates(replies[0], int(replies[1]), replies[2:])


# -- the embedded server (bus.local) -------------------------------------------------


def server_info_sync(unix_socket: Path, *, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """``INFO server`` of the server on a unix socket; None if it does not answer it."""
    try:
        with SyncClient(unix_socket_path=str(unix_socket), socket_timeout=timeout_s) as client:
            return cast(dict[str, Any], client.info("server"))
    except STORE_ERRORS:
        return None
