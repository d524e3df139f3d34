"""Routing: every (event, matching subscription) pair becomes exactly one task.

Design (failure analysis in ``docs/routing.md``):

1. **Record.** ``record.lua`` writes the envelope to the event log and adds
   the event to the ``pending`` set, in the bus-wide slot ``{.bus}``. Once its
   reply is back the event is durable (to the server's fsync policy).
2. **Route.** For each matching subscription, ``enqueue.lua`` adds a task with
   the deterministic id ``<event key>.<subscription>`` to the subscriber's
   queue, in that app's slot. Routing twice is therefore a no-op, and routing
   an event to N apps is N idempotent atomic steps (Redis Cluster-safe).
   ``enqueue.lua`` writes its tasks whole or not at all.
3. **Mark routed.** ``routed.lua`` removes the event from ``pending``, but only
   if the registry version the routes were computed from is still current
   and every task of the event exists. It never trusts the enqueue replies it
   follows in the pipeline: one app's failed enqueue (a damaged key, NOPERM,
   OOM) leaves the event pending, the caller gets :class:`RoutingIncomplete`
   naming the app, and the sweep delivers it once the cause is fixed.

The publisher does all three inline, pipelined in one round trip (two when it
gave its own id, because the dedup answer must be known before routing). A
publisher that dies between 1 and 3 leaves the event pending; the sweep,
which every worker of every app runs with its heartbeat, routes pending events
older than a grace period (``bus.events.sweep``). There is no router process to run or to lose.

A subscription with scope ``all`` also gets exactly one task per event: a
broadcast, which the worker that claims it copies to the queue of every live
node of the app (``<task id>@<node>``, see ``bus.nodes``). The nodes are taken
when the task is due, not when it is routed, so routing never reads the node
registries of other apps, and a routing repeated by the sweep is still a no-op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bus.core.task import TaskRecord
from bus.errors import BusError
from bus.events.registry import Registry, SubscriptionSpec
from bus.store import engine, scripts
from bus.store.keys import BusKeys, app_keys

__all__ = [
    "RouteOutcome",
    "RoutedEvent",
    "Routing",
    "RoutingIncomplete",
    "confirmed_apps",
    "route_calls",
    "route_outcome",
    "routed_call",
    "task_id_for",
]


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


@dataclass(slots=True)
class Routing:
    """The enqueue calls that route some events, and what each event must get.

    Attributes:
        calls: One ``enqueue.lua`` call per (app, queue) with tasks.
        apps: The app of each call, in the same order.
        count: The number of tasks the calls add (or find already there).
        event_keys: The events routed, in order.
        checks: Per app (in the order :func:`routed_call` passes their state
            hashes), the pairs (index of the event from 1, task id) that
            ``routed.lua`` checks, flat, built while routing.
    """

    calls: list[scripts.Call]
    apps: list[str]
    count: int
    event_keys: list[str]
    checks: dict[str, list[Any]]

    def events(self) -> int:
        """The number of events routed."""
        return len(self.event_keys)

    def tasks(self) -> dict[str, list[tuple[str, str]]]:
        """Per event key, the (app, task id) of every task it must have."""
        out: dict[str, list[tuple[str, str]]] = {key: [] for key in self.event_keys}
        for app, pairs in self.checks.items():
            for j in range(0, len(pairs), 2):
                out[self.event_keys[pairs[j] - 1]].append((app, pairs[j + 1]))
        return out

    def failures(self, replies: Sequence[Any]) -> dict[str, BaseException]:
        """The apps whose enqueue call failed, given the replies (the calls' first, in order)."""
        failed: dict[str, BaseException] = {}
        for app, reply in zip(self.apps, replies, strict=False):
            if isinstance(reply, BaseException):
                failed.setdefault(app, reply)
        return failed


def route_calls(
    prefix: str,
    registry: Registry,
    events: Sequence[RoutedEvent],
    now_ms: int,
    skip: Mapping[str, frozenset[str]] | None = None,
) -> Routing:
    """Return the enqueue calls that route ``events``, and the tasks each must get.

    Tasks of one app and queue are batched into one call.

    Args:
        prefix: The key prefix.
        registry: The registry snapshot to route with.
        events: The events.
        now_ms: The time the tasks are created at.
        skip: Per event key, apps already confirmed to have their tasks (a
            re-route of a pending event, see ``routed.lua``): not routed to
            again, since their tasks may have run and been pruned since.
    """
    plan = _plan(registry)
    groups: defaultdict[tuple[str, str], list[engine.NewTask]] = defaultdict(list)
    checks: defaultdict[str, list[Any]] = defaultdict(list)
    task_of = plan.task
    created = b"%d" % now_ms
    for index, event in enumerate(events, 1):
        done = skip.get(event.key, frozenset()) if skip else frozenset()
        for spec in plan.route(event.type, event.data):
            if spec.app in done:
                continue
            task = task_of(spec, event, now_ms, created)
            groups[(spec.app, spec.queue)].append(task)
            checks[spec.app] += (index, task.id)
    calls = []
    apps = []
    count = 0
    for (app, queue), group in groups.items():
        calls.append(engine.enqueue_call(app_keys(prefix, app), queue, now_ms, group))
        apps.append(app)
        count += len(group)
    return Routing(calls, apps, count, [e.key for e in events], checks)


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
    ) -> engine.NewTask:
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
        return engine.NewTask(task_id, record, spec.max_attempts, run_at)


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


def routed_call(
    keys: BusKeys, version: str, routing: Routing, *, mark: bool = True
) -> scripts.Call:
    """Return the call that marks the routed events routed under registry ``version``.

    ``routed.lua`` checks that every task of an event exists before it lets
    the event leave ``pending``, so it may ride in the same pipeline as the
    enqueue calls it follows.

    Args:
        keys: The bus-wide keys.
        version: The registry version the routes were computed from.
        routing: What :func:`route_calls` returned.
        mark: False to mark nothing, only check and record which apps have
            their tasks, and learn the current version (the registry has a
            damaged entry: nothing may leave pending, but the publisher must
            still see the registry change once it is repaired).
    """
    call_keys = [keys.pending, keys.subs_version, keys.confirmed]
    args: list[Any] = [version, 1 if mark else 0, len(routing.event_keys), *routing.event_keys]
    for app, pairs in routing.checks.items():
        call_keys.append(app_keys(keys.prefix, app).state)
        args += (app, len(pairs) >> 1)
        args += pairs
    return (scripts.ROUTED, call_keys, args)


def routing_calls(keys: BusKeys, registry: Registry, routing: Routing) -> list[scripts.Call]:
    """The enqueue calls of ``routing``, then its :func:`routed_call`.

    While an app's registry entry is damaged nothing may leave ``pending``
    (that app may subscribe), so the routed call then marks nothing.
    """
    calls = list(routing.calls)
    calls.append(routed_call(keys, registry.version, routing, mark=not registry.holds_events))
    return calls


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What one routing pass of some events achieved.

    Attributes:
        current: True if the registry version was still the one the routes
            were computed from (else the events must be routed again).
        failed: The apps whose enqueue failed, with the error.
        left: The events left pending because one of their tasks is missing.
    """

    current: bool
    failed: dict[str, BaseException]
    left: int


def route_outcome(routing: Routing, registry: Registry, replies: Sequence[Any]) -> RouteOutcome:
    """Read the replies of the calls :func:`routing_calls` made for ``routing``."""
    version = registry.version
    failed = routing.failures(replies)
    reply = replies[-1]
    if isinstance(reply, BaseException):
        if not failed:
            raise reply
        # Refused with the enqueues (NOPERM for a key of a failed app, say):
        # nothing was marked, so every event stays pending.
        return RouteOutcome(True, failed, routing.events())
    current = _version(reply[0])
    if current != version:
        return RouteOutcome(False, failed, routing.events())
    # A damaged version never matches byte for byte in routed.lua (which then
    # checked nothing); Python decodes both alike, so say so here.
    left = routing.events() if not registry.version.isdigit() else int(reply[1])
    return RouteOutcome(True, failed, left)


class RoutingIncomplete(BusError):
    """Some subscribers' tasks could not be created; the events stay pending.

    The events are recorded, and the apps whose enqueue worked have their
    tasks. The others get theirs from the sweep (every worker runs it) once
    the cause is fixed; publishing again with the same ``id`` makes no second
    task for the apps that already have one.

    Attributes:
        event_keys: The keys of the events concerned.
        apps: The apps whose tasks could not be created, with the error of each.
    """

    def __init__(self, event_keys: Sequence[str], apps: dict[str, BaseException]) -> None:
        self.event_keys = list(event_keys)
        self.apps = dict(apps)
        what = (
            f"event {self.event_keys[0]}"
            if len(self.event_keys) == 1
            else f"{len(self.event_keys)} events ({self.event_keys[0]}, ...)"
        )
        causes = "; ".join(f"{app}: {reason_of(exc)}" for app, exc in sorted(self.apps.items()))
        super().__init__(
            f"{what} recorded, but the tasks of app(s) {', '.join(sorted(self.apps))} "
            f"could not be created ({causes}). The event stays pending and the sweep "
            "delivers it once the cause is fixed; publishing again with the same id "
            "makes no duplicate for the apps that have their task."
        )


def reason_of(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def confirmed_apps(keys: Sequence[str], raw: Sequence[bytes | None]) -> dict[str, frozenset[str]]:
    """Parse ``HMGET confirmed`` for ``keys``: the apps to skip per event."""
    out: dict[str, frozenset[str]] = {}
    for key, value in zip(keys, raw, strict=True):
        if value:
            out[key] = frozenset(value.decode("utf-8", "replace").split())
    return out


def _version(raw: bytes | str | int) -> str:
    # Decoded as Registry.parse decodes it, so a damaged version compares equal
    # to itself (Registry.holds_events keeps such events pending).
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
