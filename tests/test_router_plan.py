"""Tests of routing's per-registry plan: the same routes and records as the slow path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bus.core.task import TaskRecord
from bus.events.registry import CompiledSubscription, Registry, SubscriptionSpec
from bus.events.router import RoutedEvent, route_calls, task_id_for

NOW = 1_700_000_000_000

SPECS = (
    SubscriptionSpec(app="billing", name="on_signed_up", events=("user.signed_up",)),
    SubscriptionSpec(
        app="email",
        name="welcome",
        events=("user.*",),
        queue="mail",
        max_attempts=9,
        timeout_s=7,
        backoff={"base_s": 2.0, "max_s": 60.0},
        delay_s=1.5,
    ),
    SubscriptionSpec(app="analytics", name="count", events=("*.*",), scope="all"),
    SubscriptionSpec(app="crm", name="pro_only", events=("user.signed_up",), where={"plan": "pro"}),
)


def _registry(version: str = "3") -> Registry:
    return Registry(
        version=version,
        subscriptions=tuple(CompiledSubscription.compile(s) for s in SPECS),
        apps=tuple(sorted({s.app for s in SPECS})),
    )


def _event(key: str, event_type: str, data: Any) -> RoutedEvent:
    envelope = orjson.dumps({"buskey": key, "type": event_type, "data": data})
    return RoutedEvent(key, event_type, data, envelope)


def _expected_record(spec: SubscriptionSpec, event: RoutedEvent) -> bytes:
    return TaskRecord(
        id=task_id_for(event.key, spec.name),
        app=spec.app,
        name=spec.name,
        queue=spec.queue,
        payload=orjson.Fragment(event.envelope),
        kind="event",
        max_attempts=spec.max_attempts,
        timeout_s=spec.timeout_s,
        backoff=spec.backoff,
        scope=spec.scope,
        created_ms=NOW,
        run_at_ms=NOW + int(spec.delay_s * 1000) if spec.delay_s > 0 else 0,
    ).encode()


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("user.signed_up", {"plan": "pro"}),
        ("user.signed_up", {"plan": "free"}),
        ("user.deleted", {}),
        ("order.placed", {"plan": "pro"}),
    ],
)
def test_routes_and_records_match_the_registry_and_task_record(
    event_type: str, data: dict[str, Any]
) -> None:
    """Each event goes where Registry.route says, with the bytes TaskRecord.encode writes."""
    registry = _registry()
    events = [_event(f"01EVENT{i}", event_type, data) for i in range(3)]
    routing = route_calls("bus", registry, events, NOW)
    calls, count = routing.calls, routing.count
    expected = {
        task_id_for(e.key, spec.name): _expected_record(spec, e)
        for e in events
        for spec in registry.route(e.type, e.data)
    }
    got = {}
    for _, _, args in calls:
        for i in range(2, len(args), 4):
            got[args[i]] = args[i + 1]
            assert TaskRecord.decode(args[i + 1]).id == args[i]
    assert count == len(expected)
    assert got == expected


def test_a_new_registry_snapshot_is_planned_afresh() -> None:
    """Routing with another snapshot uses that snapshot's subscriptions."""
    event = _event("01EVENT", "user.signed_up", {"plan": "pro"})
    assert route_calls("bus", _registry(), [event], NOW).count == 4
    empty = route_calls("bus", Registry(version="4"), [event], NOW)
    assert (empty.calls, empty.count, empty.tasks()) == ([], 0, {event.key: []})
