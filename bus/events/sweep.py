"""The sweep: routes events a publisher left pending (it died between record and route).

Every worker of every app runs :class:`PendingSweep` with its heartbeat; it
loads the stale entries of ``pending`` with their envelopes and the apps
already confirmed, and routes them with ``bus.events.router`` (idempotent, so
any number of workers may sweep at once). The design is in ``bus.events.router``
and ``docs/routing.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from bus.events.registry import Registry, load_registry
from bus.events.router import (
    RoutedEvent,
    RouteOutcome,
    confirmed_apps,
    reason_of,
    route_calls,
    route_outcome,
    routing_calls,
)
from bus.store import reads, transport, writes
from bus.store.keys import BusKeys
from bus.store.types import AsyncClient

# The sweep's events keep the logger name they had in bus.events.router.
log = structlog.get_logger("bus.router")

__all__ = ["PendingSweep", "SweepReport", "sweep_pending"]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did: events fully routed, and events still left pending."""

    routed: int
    left: int


class PendingSweep:
    """Routes events left pending longer than a grace period (a publisher died).

    Safe to run from any number of workers at once: routing is idempotent.
    An event whose routing keeps failing (a damaged key of one app, a damaged
    registry entry) stays pending; the sweep then moves on past it, so one such
    event never holds back the ones recorded after it.

    Args:
        prefix: The key prefix.
        grace_ms: How old a pending event must be before it is swept.
        limit: The most events looked at per sweep.
    """

    def __init__(self, prefix: str, *, grace_ms: int, limit: int = 200) -> None:
        self.prefix = prefix
        self.keys = BusKeys(prefix)
        self.grace_ms = grace_ms
        self.limit = limit
        self._skip = 0  # stale events at the head that failed last time
        self._cause: tuple[Any, ...] | None = None  # of the last error logged

    async def sweep(self, client: AsyncClient, *, now_ms: int) -> SweepReport:
        """Route one page of stale pending events; see the class docstring."""
        keys = self.keys
        stale = await self._page(client, now_ms)
        if not stale and self._skip:
            self._skip = 0  # past the end: wrap round to the head
            stale = await self._page(client, now_ms)
        if not stale:
            return SweepReport(0, 0)
        events, orphans, skip = await _load_pending(client, keys, stale)
        if orphans:
            await writes.drop_pending(client, keys, orphans)
        outcome = None
        for _ in range(5):
            registry = await load_registry(client, keys)
            routing = route_calls(self.prefix, registry, events, now_ms, skip)
            calls = routing_calls(keys, registry, routing)
            replies = await transport.run_calls(client, calls, raise_on_error=False)
            outcome = route_outcome(routing, registry, replies)
            if outcome.current:
                break
        assert outcome is not None
        self._report(outcome, registry)
        # Start past the events that stayed pending, or from the head again
        # once a page is routed whole or the end of the set is reached.
        if outcome.left and len(stale) == self.limit:
            self._skip += outcome.left
        else:
            self._skip = 0
        return SweepReport(len(events) - outcome.left, outcome.left)

    def _report(self, outcome: RouteOutcome, registry: Registry) -> None:
        """Log events left pending: at error level once per cause, then at debug.

        Every worker sweeps every heartbeat; while a key or a registry entry
        stays damaged, the same line would repeat from each of them.
        """
        if not outcome.left:
            self._cause = None
            return
        failed = {app: reason_of(exc) for app, exc in sorted(outcome.failed.items())}
        cause = (tuple(failed.items()), registry.damaged, outcome.current)
        level = log.error if cause != self._cause else log.debug
        self._cause = cause
        level(
            "pending_events_not_routed",
            count=outcome.left,
            failed_apps=failed,
            damaged_apps=list(registry.damaged),
            registry_current=outcome.current,
            reason="their tasks could not all be created, a registry entry is damaged, "
            "or the registry kept changing; they stay pending for the next sweep",
        )

    async def _page(self, client: AsyncClient, now_ms: int) -> list[bytes]:
        return await reads.stale_pending(
            client, self.keys, until_ms=now_ms - self.grace_ms, offset=self._skip, limit=self.limit
        )


async def _load_pending(
    client: AsyncClient, keys: BusKeys, stale: Sequence[bytes]
) -> tuple[list[RoutedEvent], list[bytes], dict[str, frozenset[str]]]:
    """The routable events among ``stale``, the pending entries to drop, and the
    apps already confirmed for each event."""
    envelopes, confirmed = await reads.event_envelopes(client, keys, stale)
    skip = confirmed_apps([k.decode("utf-8", "replace") for k in stale], confirmed)
    events: list[RoutedEvent] = []
    orphans: list[bytes] = []
    for raw_key, raw in zip(stale, envelopes, strict=True):
        try:
            key = raw_key.decode()
        except UnicodeDecodeError:
            # No task id can be built from it; it stays in the event log.
            log.error("event_unroutable", event_key=repr(raw_key), error="key is not UTF-8")
            orphans.append(raw_key)
            continue
        if raw is None:
            orphans.append(raw_key)
            continue
        try:
            doc = orjson.loads(raw)
            events.append(RoutedEvent(key, str(doc["type"]), doc.get("data"), raw))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # One damaged envelope must not hold back every event behind it.
            # It stays in the event log for `python -m bus event show`.
            log.error("event_unroutable", event_key=key, error=f"{type(exc).__name__}: {exc}")
            orphans.append(raw_key)
    return events, orphans, skip


async def sweep_pending(
    client: AsyncClient, prefix: str, *, now_ms: int, grace_ms: int, limit: int = 200
) -> int:
    """Route events left pending longer than ``grace_ms`` once (see :class:`PendingSweep`).

    Returns:
        The number of events routed whole.
    """
    report = await PendingSweep(prefix, grace_ms=grace_ms, limit=limit).sweep(client, now_ms=now_ms)
    return report.routed
