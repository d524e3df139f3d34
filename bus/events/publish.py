"""Publishing: validate, wrap in an envelope, record durably, route inline.

Nothing is written unless every event of a call is valid: unknown type,
schema violations, payloads that are too large or not JSON-serialisable all
raise before the first byte goes to Redis.

The flow is written once, as a generator of I/O steps (``_flow``), and driven
by a synchronous or an asynchronous executor, so ``publish`` and ``apublish``
cannot drift apart. What a publish reports and the error of a failed record
are in ``bus.events.publish_results``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bus.core import clock
from bus.core.ids import new_id
from bus.events.envelope import build_envelope, validate_event_id, validate_source
from bus.events.payload import encode_payload
from bus.events.publish_results import EventNotRecorded, PublishReport
from bus.events.registry import Registry, load_registry, load_registry_sync
from bus.events.router import (
    RoutedEvent,
    Routing,
    RoutingIncomplete,
    confirmed_apps,
    route_calls,
    route_outcome,
    routing_calls,
)
from bus.events.schemas import SchemaError, SchemaRegistry
from bus.store import reads, scripts, transport
from bus.store.keys import BusKeys
from bus.store.types import AsyncClient, SyncClient

__all__ = ["EventSpec", "Publisher"]

# Exit status of a publisher stopped by the crash test hook.
CRASH_EXIT_CODE = 86


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event for :meth:`Publisher.publish_many`."""

    type: str
    payload: Any
    id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: RoutedEvent
    dedup: str  # '' when the publisher gave no id


class _LoadRegistry:
    """I/O step: load the subscription registry."""


@dataclass(frozen=True, slots=True)
class _RunCalls:
    """I/O step: run script calls in one round trip."""

    calls: list[scripts.Call]


@dataclass(frozen=True, slots=True)
class _ReadEnvelopes:
    """I/O step: read recorded envelopes and their confirmed apps (two HMGETs)."""

    keys: list[str]


_Step = _LoadRegistry | _RunCalls | _ReadEnvelopes


@dataclass(frozen=True, slots=True)
class _Done:
    """What a flow did: the keys to return, and what a report needs."""

    keys: list[str]
    new: set[str] | None  # None: every event was new (no dedup ids)
    routing: Routing | None  # the last routing sent; None if nothing was routed
    damaged: tuple[str, ...] = ()  # of the registry it was routed with


class Publisher:
    """Validates and publishes events; holds the cached registry snapshot.

    Args:
        schemas: The schema registry payloads are validated against.
        prefix: The key prefix.
        source: The default ``source`` of published events.
        max_payload_bytes: The largest encoded payload accepted.
        dedup_window_s: How long a ``source`` + ``id`` pair is remembered.
        event_retention_s: How long routed events are kept for inspection.
        crash_after_record: Test hook: exit the process right after the record
            step, before routing (reproduces a publisher killed mid-fan-out).
    """

    def __init__(
        self,
        schemas: SchemaRegistry,
        *,
        prefix: str = "bus",
        source: str | None = None,
        max_payload_bytes: int = 262_144,
        dedup_window_s: float = 86_400,
        event_retention_s: float = 86_400,
        crash_after_record: bool = False,
    ) -> None:
        self.schemas = schemas
        self.prefix = prefix
        self.keys = BusKeys(prefix)
        self.source = validate_source(source or f"{os.uname().nodename}")
        self.max_payload_bytes = max_payload_bytes
        self.dedup_window_ms = int(dedup_window_s * 1000)
        self.event_retention_ms = int(event_retention_s * 1000)
        self.crash_after_record = crash_after_record
        self._registry: Registry | None = None

    # -- validation (no I/O) -------------------------------------------------

    def prepare(
        self,
        event_type: str,
        payload: Any,
        *,
        now_ms: int,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> _Prepared:
        """Validate one event and build its envelope; raises on any bad input."""
        # Serialisability first: a NaN is "not JSON", whatever the schema says.
        data = encode_payload(payload, self.max_payload_bytes)
        info = self.schemas.validate(event_type, payload)
        src = validate_source(source) if source is not None else self.source
        if id is not None:
            validate_event_id(id)
        if correlation_id is not None:
            validate_event_id(correlation_id, "correlation_id")
        key = new_id(now_ms)
        envelope = build_envelope(
            key=key,
            event_type=event_type,
            source=src,
            time_ms=now_ms,
            data_json=data,
            schema_id=info.schema_id,
            schema_version=info.version,
            event_id=id,
            correlation_id=correlation_id,
        )
        dedup = f"{src}\x1f{id}" if id is not None else ""
        return _Prepared(RoutedEvent(key, event_type, payload, envelope), dedup)

    # -- the flow ---------------------------------------------------------------

    def _record_call(self, batch: Sequence[_Prepared], now_ms: int) -> scripts.Call:
        k = self.keys
        args: list[Any] = [now_ms, self.dedup_window_ms, self.event_retention_ms]
        for p in batch:
            args += (p.event.key, p.event.envelope, p.dedup)
        return (
            scripts.RECORD,
            (k.events, k.events_t, k.pending, k.dedup, k.dedup_t, k.subs_version),
            args,
        )

    def _route(
        self,
        registry: Registry,
        events: Sequence[RoutedEvent],
        now_ms: int,
        skip: Mapping[str, frozenset[str]] | None = None,
    ) -> tuple[Routing, list[scripts.Call]]:
        """The enqueue calls for ``events``, then the call that marks them routed."""
        routing = route_calls(self.prefix, registry, events, now_ms, skip)
        return routing, routing_calls(self.keys, registry, routing)

    def _flow(self, batch: Sequence[_Prepared], now_ms: int) -> Generator[_Step, Any, _Done]:
        registry = self._registry
        if registry is None:
            registry = yield _LoadRegistry()
        record = self._record_call(batch, now_ms)
        events = [p.event for p in batch]
        skip: dict[str, frozenset[str]] | None = None
        split = self.crash_after_record or any(p.dedup for p in batch)
        if split:
            # The dedup answer decides which events to route, so it must come
            # back before any routing is sent.
            results = yield _RunCalls([record])
            if self.crash_after_record:
                os._exit(CRASH_EXIT_CODE)
            reply = _raise_error(results[0])
            new = {_text(reply[i]) for i in range(1, len(reply), 2) if int(reply[i + 1]) == 1}
            events = [e for e in events if e.key in new]
            keys_out = [_text(reply[i]) for i in range(1, len(reply), 2)]
            # Duplicates of an event still pending: its routing failed (or
            # is under way). Routing it again is idempotent, and a caller that
            # retries after RoutingIncomplete must not be told all is well.
            stuck = list(
                dict.fromkeys(
                    k
                    for i in range(1, len(reply), 2)
                    if int(reply[i + 1]) == 2 and (k := _text(reply[i])) not in new
                )
            )
            if stuck:
                # Their envelopes, and the apps already confirmed to have
                # their task (not routed to again: it may have run and been
                # pruned since).
                envelopes, confirmed = yield _ReadEnvelopes(stuck)
                events += _routable(stuck, envelopes)
                skip = confirmed_apps(stuck, confirmed)
            if not events:
                return _Done(keys_out, new, None)
            routing, calls = self._route(registry, events, now_ms, skip)
            replies = yield _RunCalls(calls)
        else:
            routing, calls = self._route(registry, events, now_ms)
            results = yield _RunCalls([record, *calls])
            if isinstance(results[0], BaseException):
                # The enqueues ran anyway (one pipeline): say what they left.
                raise EventNotRecorded(
                    [e.key for e in events], _apps_given_tasks(routing, results[1:-1])
                ) from results[0]
            replies = results[1:]
            keys_out = [e.key for e in events]
            new = None
        outcome = route_outcome(routing, registry, replies)
        while not outcome.current:
            # The registry changed since our snapshot: route again with the
            # new one (idempotent) before the events may leave ``pending``.
            registry = yield _LoadRegistry()
            routing, calls = self._route(registry, events, now_ms, skip)
            replies = yield _RunCalls(calls)
            outcome = route_outcome(routing, registry, replies)
        self._registry = registry
        if outcome.failed:
            # Only the events with a task in a failed app are concerned; the
            # enqueue calls of the other apps worked.
            hit = [
                key
                for key, tasks in routing.tasks().items()
                if any(app in outcome.failed for app, _ in tasks)
            ]
            raise RoutingIncomplete(hit, outcome.failed) from next(iter(outcome.failed.values()))
        return _Done(keys_out, new, routing, registry.damaged)

    # -- executors --------------------------------------------------------------

    async def _run_async(
        self, client: AsyncClient, batch: Sequence[_Prepared], now_ms: int
    ) -> _Done:
        flow = self._flow(batch, now_ms)
        reply: Any = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, _LoadRegistry):
                    reply = await load_registry(client, self.keys)
                elif isinstance(step, _ReadEnvelopes):
                    reply = await reads.event_envelopes(client, self.keys, step.keys)
                else:
                    reply = await transport.run_calls(client, step.calls, raise_on_error=False)
        except StopIteration as done:
            result: _Done = done.value
            return result

    def _run_sync(self, client: SyncClient, batch: Sequence[_Prepared], now_ms: int) -> _Done:
        flow = self._flow(batch, now_ms)
        reply: Any = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, _LoadRegistry):
                    reply = load_registry_sync(client, self.keys)
                elif isinstance(step, _ReadEnvelopes):
                    reply = reads.event_envelopes_sync(client, self.keys, step.keys)
                else:
                    reply = transport.run_calls_sync(client, step.calls, raise_on_error=False)
        except StopIteration as done:
            result: _Done = done.value
            return result

    # -- public API ---------------------------------------------------------------

    async def apublish(
        self,
        client: AsyncClient,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Validate, record and route one event; return its key (see ``publish``)."""
        now = clock.now_ms()
        prepared = self.prepare(
            event_type, payload, now_ms=now, id=id, source=source, correlation_id=correlation_id
        )
        return (await self._run_async(client, [prepared], now)).keys[0]

    def publish(
        self,
        client: SyncClient,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Validate, record and route one event, from synchronous code.

        Returns:
            The event key. For a duplicate ``source`` + ``id`` within the dedup
            window, the first event's key (nothing new is routed).
        """
        done = self._publish_one_sync(client, event_type, payload, id, source, correlation_id)
        return done.keys[0]

    def _publish_one_sync(
        self,
        client: SyncClient,
        event_type: str,
        payload: Any,
        id: str | None,
        source: str | None,
        correlation_id: str | None,
    ) -> _Done:
        """Prepare and run one event from sync code: what publish and publish_report share."""
        now = clock.now_ms()
        prepared = self.prepare(
            event_type, payload, now_ms=now, id=id, source=source, correlation_id=correlation_id
        )
        return self._run_sync(client, [prepared], now)

    def _prepare_many(self, events: Sequence[EventSpec], now_ms: int) -> list[_Prepared]:
        prepared = []
        for index, e in enumerate(events):
            try:
                prepared.append(
                    self.prepare(
                        e.type, e.payload, now_ms=now_ms, id=e.id, correlation_id=e.correlation_id
                    )
                )
            except SchemaError as exc:
                # The message says what is wrong; the note says which event of the batch.
                exc.add_note(f"in event #{index} of a batch of {len(events)}; none was published")
                raise
        return prepared

    async def apublish_many(self, client: AsyncClient, events: Sequence[EventSpec]) -> list[str]:
        """Publish a batch in one pipelined round trip; all are validated first."""
        now = clock.now_ms()
        if not events:
            return []
        return (await self._run_async(client, self._prepare_many(events, now), now)).keys

    def publish_many(self, client: SyncClient, events: Sequence[EventSpec]) -> list[str]:
        """Like :meth:`apublish_many`, from synchronous code."""
        now = clock.now_ms()
        if not events:
            return []
        return self._run_sync(client, self._prepare_many(events, now), now).keys

    def publish_report(
        self,
        client: SyncClient,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> PublishReport:
        """Like :meth:`publish`, and say whether it was a duplicate and where it went."""
        done = self._publish_one_sync(client, event_type, payload, id, source, correlation_id)
        key = done.keys[0]
        duplicate = done.new is not None and key not in done.new
        apps: tuple[str, ...] = ()
        if done.routing is not None:
            # For a duplicate whose first event was still pending: the apps it
            # was routed to again now.
            tasks = done.routing.tasks().get(key, [])
            apps = tuple(sorted({app for app, _ in tasks}))
        return PublishReport(key, duplicate, apps, done.damaged if done.routing else ())

    def forget_registry(self) -> None:
        """Drop the cached registry snapshot (it is reloaded on the next publish)."""
        self._registry = None


def _apps_given_tasks(routing: Routing, replies: Sequence[Any]) -> list[str]:
    """The apps whose enqueue call added at least one task."""
    return sorted(
        {
            app
            for app, reply in zip(routing.apps, replies, strict=True)
            if isinstance(reply, list) and any(int(n) == 1 for n in reply)
        }
    )


def _routable(keys: Sequence[str], envelopes: Sequence[bytes | None]) -> list[RoutedEvent]:
    """The events of recorded envelopes; a missing or damaged one is left to the sweep."""
    events = []
    for key, raw in zip(keys, envelopes, strict=True):
        if raw is None:
            continue
        try:
            doc = orjson.loads(raw)
            events.append(RoutedEvent(key, str(doc["type"]), doc.get("data"), raw))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # the sweep logs it (event_unroutable)
    return events


def _raise_error(reply: Any) -> Any:
    """Return a call's reply, or raise it if it is an error."""
    if isinstance(reply, BaseException):
        raise reply
    return reply


def _text(raw: bytes | str | int) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
