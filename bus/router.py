"""Routing: every (event, matching subscription) pair becomes exactly one task.

Design (failure analysis in ``docs/routing.md``):

1. **Record.** ``record.lua`` writes the envelope to the event log and adds
   the event to the ``pending`` set, in the bus-wide slot ``{.bus}``. Once its
   reply is back the event is durable (to the server's fsync policy).
2. **Route.** For each matching subscription, ``enqueue.lua`` adds a task with
   the deterministic id ``<event key>.<subscription>`` to the subscriber's
   queue, in that app's slot. Routing twice is therefore a no-op, and routing
   an event to N apps is N idempotent atomic steps (Redis Cluster-safe).
3. **Mark routed.** ``routed.lua`` removes the event from ``pending``, but only
   if the registry version the routes were computed from is still current.

The publisher does all three inline, pipelined in one round trip (two when it
gave its own id, because the dedup answer must be known before routing). A
publisher that dies between 1 and 3 leaves the event pending; the sweep,
which every worker of every app runs with its heartbeat, routes pending events
older than a grace period. There is no router process to run or to lose.

A subscription with scope ``all`` also gets exactly one task per event: a
broadcast, which the worker that claims it copies to the queue of every live
node of the app (``<task id>@<node>``, see ``bus.nodes``). The nodes are taken
when the task is due, not when it is routed, so routing never reads the node
registries of other apps, and a routing repeated by the sweep is still a no-op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from redis.asyncio import Redis

from bus import scripts
from bus.keys import BusKeys, app_keys
from bus.registry import Registry, SubscriptionSpec, load_registry
from bus.task import TaskRecord

log = structlog.get_logger("bus.router")

__all__ = ["RoutedEvent", "route_calls", "routed_call", "sweep_pending", "task_id_for"]


def task_id_for(event_key: str, subscription: str) -> str:
    """The deterministic id of the task an event becomes for a subscription."""
    return f"{event_key}.{subscription}"


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """What routing needs of an event: key, type, data and encoded envelope."""

    key: str
    type: str
    data: Any
    envelope: bytes


def route_calls(
    prefix: str, registry: Registry, events: Sequence[RoutedEvent], now_ms: int
) -> tuple[list[scripts.Call], int]:
    """Return the enqueue calls that route ``events``, and how many tasks they add.

    Tasks of one app and queue are batched into one call.
    """
    plan = _plan(registry)
    groups: dict[tuple[str, str], list[scripts.NewTask]] = defaultdict(list)
    count = 0
    created = b"%d" % now_ms
    for event in events:
        for spec in plan.route(event.type, event.data):
            groups[(spec.app, spec.queue)].append(plan.task(spec, event, now_ms, created))
            count += 1
    calls = [
        scripts.enqueue_call(app_keys(prefix, app), queue, now_ms, tasks)
        for (app, queue), tasks in groups.items()
    ]
    return calls, count


class _Plan:
    """What routing repeats for every event, worked out once per registry snapshot.

    A snapshot never changes (a new version is a new :class:`Registry`), so the
    subscriptions an event type goes to (when none of them filters on the
    payload) and the constant parts of each subscription's task record are
    kept here: matching and building a record per route cost more than the
    rest of routing (docs/benchmarks.md).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._by_type: dict[str, tuple[tuple[Any, ...], bool]] = {}
        self._records: dict[int, tuple[SubscriptionSpec, bytes, bytes]] = {}

    def route(self, event_type: str, data: Any) -> list[SubscriptionSpec]:
        found = self._by_type.get(event_type)
        if found is None:
            subs = tuple(
                s
                for s in self.registry.subscriptions
                if any(p.matches(event_type) for p in s.patterns)
            )
            found = (subs, any(s.filter is not None for s in subs))
            if len(self._by_type) < _PLAN_TYPES:
                self._by_type[event_type] = found
        subs, filtered = found
        if not filtered:
            return [s.spec for s in subs]
        return [s.spec for s in subs if s.filter is None or s.filter.matches(data)]

    def task(
        self, spec: SubscriptionSpec, event: RoutedEvent, now_ms: int, created: bytes
    ) -> scripts.NewTask:
        """The task of ``event`` for ``spec``: the bytes ``TaskRecord.encode`` gives."""
        parts = self._records.get(id(spec))
        if parts is None or parts[0] is not spec:
            parts = (spec, *_record_parts(spec))
            self._records[id(spec)] = parts
        _, head, tail = parts
        run_at = now_ms + int(spec.delay_s * 1000) if spec.delay_s > 0 else 0
        task_id = task_id_for(event.key, spec.name)
        record = b"".join(
            (
                b'{"id":',
                orjson.dumps(task_id),
                head,
                created,
                tail,
                b',"run_at_ms":%d' % run_at if run_at else b"",
                b',"payload":',
                event.envelope,
                b"}",
            )
        )
        return scripts.NewTask(task_id, record, spec.max_attempts, run_at)


# Event types remembered per plan (a flood of distinct types is routed unplanned).
_PLAN_TYPES = 1024
_last_plan: _Plan | None = None


def _plan(registry: Registry) -> _Plan:
    global _last_plan
    plan = _last_plan
    if plan is None or plan.registry is not registry:
        plan = _last_plan = _Plan(registry)
    return plan


def _record_parts(spec: SubscriptionSpec) -> tuple[bytes, bytes]:
    """The record of a routed task around its id, ``created_ms`` and the rest.

    Written from a :class:`TaskRecord` with marker values, so the field order
    and the defaults left out stay those of ``TaskRecord.encode``.
    """
    record = TaskRecord(
        id="",
        app=spec.app,
        name=spec.name,
        queue=spec.queue,
        payload=None,
        kind="event",
        max_attempts=spec.max_attempts,
        timeout_s=spec.timeout_s,
        backoff=spec.backoff,
        scope=spec.scope,
        created_ms=_MARK_MS,
        run_at_ms=0,
    ).encode()
    head, tail = record[len(b'{"id":""') : -len(b',"payload":null}')].split(b"%d" % _MARK_MS)
    return head, tail


_MARK_MS = 987_654_321_987_654_321


def routed_call(keys: BusKeys, version: str, event_keys: Sequence[str]) -> scripts.Call:
    """Return the call that marks events routed under registry ``version``."""
    return (scripts.ROUTED, (keys.pending, keys.subs_version), [version, *event_keys])


async def sweep_pending(
    client: Redis, prefix: str, *, now_ms: int, grace_ms: int, limit: int = 200
) -> int:
    """Route events left pending longer than ``grace_ms`` (a publisher died).

    Safe to run from any number of workers at once: routing is idempotent.

    Returns:
        The number of events routed.
    """
    keys = BusKeys(prefix)
    stale = cast(
        "list[bytes]", await client.zrangebyscore(keys.pending, "-inf", now_ms - grace_ms, 0, limit)
    )
    if not stale:
        return 0
    envelopes = cast("list[bytes | None]", await client.hmget(keys.events, stale))
    events: list[RoutedEvent] = []
    orphans: list[str] = []
    for raw_key, raw in zip(stale, envelopes, strict=True):
        key = raw_key.decode()
        if raw is None:
            orphans.append(key)
            continue
        try:
            doc = orjson.loads(raw)
            events.append(RoutedEvent(key, str(doc["type"]), doc.get("data"), raw))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # One damaged envelope must not hold back every event behind it.
            # It stays in the event log for `python -m bus event show`.
            log.error("event_unroutable", event_key=key, error=f"{type(exc).__name__}: {exc}")
            orphans.append(key)
    if orphans:
        await client.zrem(keys.pending, *orphans)
    for _ in range(5):
        registry = await load_registry(client, keys)
        calls, _ = route_calls(prefix, registry, events, now_ms)
        calls.append(routed_call(keys, registry.version, [e.key for e in events]))
        results = await scripts.run_calls(client, calls)
        if _version(results[-1]) == registry.version:
            break
    return len(events)


def _version(raw: bytes | str | int) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
