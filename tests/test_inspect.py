"""Inspection: bus status, a task's reconstructed history, an event's lineage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bus.client import Bus
from bus.core.task import TaskRecord
from bus.core.verdict import error_doc
from bus.events.registry import SubscriptionSpec
from bus.events.registry_sync import sync_subscriptions
from bus.events.schemas import SchemaRegistry
from bus.inspect.lineage import EventNotFound, TaskNotFound, event_lineage, read_task
from bus.inspect.status import app_names, bus_status
from bus.store import engine, features
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import REPO_ROOT

T0 = 1_800_000_000_000  # a fixed "now" for every script call here
SHOP = AppKeys("bus", "shop")


def new_task(task_id: str, *, queue: str = "default", max_attempts: int = 5) -> engine.NewTask:
    record = TaskRecord(id=task_id, app="shop", name="job", queue=queue, payload={"n": task_id})
    return engine.NewTask(task_id, record.encode(), max_attempts, 0)


def failure(message: str, *, attempt: int, at_ms: int, worker: str) -> bytes:
    return error_doc(ValueError(message), kind=None, attempt=attempt, at_ms=at_ms, worker=worker)


async def claim_one(aredis: Redis, queue: str, now_ms: int, worker: str) -> engine.ClaimedTask:
    result = await engine.claim(
        aredis, SHOP, [queue], now_ms=now_ms, lease_ms=60_000, max_tasks=1, worker_id=worker
    )
    [task] = result.tasks
    return task


async def beat(aredis: Redis, app: str, worker: str, at_ms: int, **fields: Any) -> None:
    status = {"id": worker, "host": "h1", "pid": 42, "queues": ["*"], "running_count": 1}
    status.update(processed=7, failed=2, **fields)
    await engine.beat(
        aredis,
        AppKeys("bus", app),
        worker,
        orjson.dumps(status),
        now_ms=at_ms,
        reap_after_ms=10**12,
    )


async def register(aredis: Redis, app: str, *specs: SubscriptionSpec) -> None:
    await sync_subscriptions(aredis, BusKeys("bus"), app, list(specs))


# -- status --------------------------------------------------------------------------------


async def test_status_reports_depths_oldest_waiting_dead_and_workers(aredis: Redis) -> None:
    """Ready, delayed, in-flight, oldest waiting age, dead count and live workers are exact."""
    await register(aredis, "shop")
    await engine.enqueue(aredis, SHOP, "default", T0, [new_task("a"), new_task("b")])
    await engine.enqueue(aredis, SHOP, "default", T0 + 500, [new_task("c")])
    later = engine.NewTask("d", new_task("d").record, 5, T0 + 10**9)
    await engine.enqueue(aredis, SHOP, "default", T0, [later])
    await claim_one(aredis, "default", T0 + 1000, "w1")  # takes "a", the oldest
    await engine.enqueue(aredis, SHOP, "low", T0, [new_task("e", queue="low", max_attempts=1)])
    e = await claim_one(aredis, "low", T0 + 1000, "w1")
    dead = engine.Outcome("e", e.token, "low", "dead", b"failed by handler|" + b"{}")
    await engine.settle(aredis, SHOP, [dead], now_ms=T0 + 1100, retention_ms=10**9)
    await beat(aredis, "shop", "w1", T0 + 9000)
    await beat(aredis, "shop", "w0", T0 - 60_000)

    status = await bus_status(aredis, "bus", now_ms=T0 + 10_000)
    assert status.to_doc() == {
        "now_ms": T0 + 10_000,
        "live_after_ms": 45_000,
        "stale_after_ms": 300_000,
        "apps": [
            {
                "app": "shop",
                "registered": True,
                "queues": [
                    {
                        "queue": "default",
                        "ready": 2,
                        "delayed": 1,
                        "inflight": 1,
                        "oldest_waiting_id": "b",
                        "oldest_waiting_age_ms": 10_000,
                    },
                    {
                        "queue": "low",
                        "ready": 0,
                        "delayed": 0,
                        "inflight": 0,
                        "oldest_waiting_id": None,
                        "oldest_waiting_age_ms": None,
                    },
                ],
                "dead": 1,
                "live_workers": 1,
                "workers": [
                    {
                        "id": "w1",
                        "host": "h1",
                        "pid": 42,
                        "queues": ["*"],
                        "running": 1,
                        "processed": 7,
                        "failed": 2,
                        "last_beat_age_ms": 1000,
                        "live": True,
                    },
                    {
                        "id": "w0",
                        "host": "h1",
                        "pid": 42,
                        "queues": ["*"],
                        "running": 1,
                        "processed": 7,
                        "failed": 2,
                        "last_beat_age_ms": 70_000,
                        "live": False,
                    },
                ],
                "last_seen_ms": T0 + 9000,
                "stale": False,
                "warning": None,
            }
        ],
    }


async def test_registered_app_without_workers_is_flagged_after_the_threshold(
    aredis: Redis,
) -> None:
    """Never seen, or last seen longer ago than stale_after, is flagged; recently seen is not."""
    for app in ("never", "gone", "recent"):
        await register(aredis, app)
    await beat(aredis, "gone", "g1", T0 - 600_000)
    await beat(aredis, "recent", "r1", T0 - 120_000)

    status = await bus_status(aredis, "bus", now_ms=T0)
    flags = {a.app: (a.stale, a.warning) for a in status.apps}
    assert flags == {
        "gone": (True, "no live worker for 10m"),
        "never": (True, "never seen a worker"),
        "recent": (False, None),
    }


async def test_settled_tasks_count_as_signs_of_a_worker_that_stopped_cleanly(
    aredis: Redis,
) -> None:
    """A worker that left cleanly removed its record, but the task it finished shows it lived."""
    await register(aredis, "shop")
    await engine.enqueue(aredis, SHOP, "default", T0, [new_task("a")])
    a = await claim_one(aredis, "default", T0, "w1")
    ok = engine.Outcome("a", a.token, "default", "ok")
    await engine.settle(aredis, SHOP, [ok], now_ms=T0 + 100, retention_ms=10**9)

    [app] = (await bus_status(aredis, "bus", now_ms=T0 + 60_000)).apps
    assert app.last_seen_ms == T0 + 100
    assert not app.stale


async def test_apps_are_found_by_registry_and_by_their_keys_under_our_prefix_only(
    aredis: Redis,
) -> None:
    """An app with queues but no registration is listed; another prefix's apps are not."""
    await register(aredis, "billing")
    await engine.enqueue(aredis, SHOP, "default", T0, [new_task("a")])
    other = AppKeys("b*s", "intruder")
    await engine.enqueue(aredis, other, "default", T0, [new_task("x")])
    await aredis.set("bus:app:{Not An App}:queues", b"junk")

    assert await app_names(aredis, "bus") == (["billing"], ["shop"])
    assert await app_names(aredis, "b*s") == ([], ["intruder"])
    status = await bus_status(aredis, "bus", now_ms=T0)
    assert [(a.app, a.registered, a.warning) for a in status.apps] == [
        ("billing", True, "never seen a worker"),
        ("shop", False, None),
    ]


# -- task history ------------------------------------------------------------------------------


async def test_task_history_is_reconstructed_across_a_replay(aredis: Redis) -> None:
    """Created, failures with their workers, death, replay, the last start and success, in order."""
    await engine.enqueue(aredis, SHOP, "default", T0, [new_task("t", max_attempts=2)])
    first = await claim_one(aredis, "default", T0 + 100, "w1")
    retry = f"{T0 + 300}|".encode() + failure("boom 1", attempt=1, at_ms=T0 + 200, worker="w1")
    outcome = engine.Outcome("t", first.token, "default", "retry", retry)
    await engine.settle(aredis, SHOP, [outcome], now_ms=T0 + 200, retention_ms=10**9)
    second = await claim_one(aredis, "default", T0 + 300, "w1")
    died = b"attempts exhausted|" + failure("boom 2", attempt=2, at_ms=T0 + 400, worker="w1")
    outcome = engine.Outcome("t", second.token, "default", "dead", died)
    await engine.settle(aredis, SHOP, [outcome], now_ms=T0 + 400, retention_ms=10**9)
    assert await features.replay(aredis, SHOP, "default", T0 + 1000, ["t"]) == [True]
    third = await claim_one(aredis, "default", T0 + 2000, "w2")
    ok = engine.Outcome("t", third.token, "default", "ok")
    await engine.settle(aredis, SHOP, [ok], now_ms=T0 + 2100, retention_ms=10**9)

    task = await read_task(aredis, "bus", "shop", "t")
    history = [(e.at_ms - T0, e.event, e.detail) for e in task.history()]
    assert history == [
        (0, "created", {"queue": "default"}),
        (
            200,
            "attempt_failed",
            {"attempt": 1, "type": "ValueError", "message": "boom 1", "worker": "w1"},
        ),
        (
            400,
            "attempt_failed",
            {"attempt": 2, "type": "ValueError", "message": "boom 2", "worker": "w1"},
        ),
        (400, "dead", {"reason": "attempts exhausted"}),
        (1000, "replayed", {"replay": 1}),
        (2000, "started", {"attempt": 1, "worker": "w2"}),
        (2100, "succeeded", {}),
    ]
    doc = task.to_doc()
    assert (doc["state"], doc["replays"], doc["replayed_ms"]) == ("succeeded", 1, T0 + 1000)
    assert doc["record"]["payload"] == {"n": "t"}
    assert [e["message"] for e in doc["errors"]] == ["boom 1", "boom 2"]
    assert doc["errors"][0]["traceback"].startswith("ValueError: boom 1")


async def test_reading_an_unknown_task_names_the_app_and_the_retention(aredis: Redis) -> None:
    """An id the app does not have is a clear TaskNotFound, not None or a KeyError."""
    with pytest.raises(TaskNotFound, match=r"app 'shop' has no task 'nope'.*BUS_RETENTION_S"):
        await read_task(aredis, "bus", "shop", "nope")


# -- event lineage ----------------------------------------------------------------------------


ORDER = {
    "order_id": "o-7",
    "user_id": "u-1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}


async def publish(aredis: Redis, event_type: str, data: Any) -> str:
    """Publish through the real publisher (schemas of the repository); return the key."""
    bus = Bus(redis=aredis, schemas=SchemaRegistry.load(REPO_ROOT / "schemas"), source="test")
    return await bus.apublish(event_type, data)


async def test_event_lineage_shows_each_subscription_and_its_task_state(aredis: Redis) -> None:
    """Each registered subscription shows its task's state, or no task with whether it matches."""
    await register(
        aredis,
        "shop",
        SubscriptionSpec("shop", "on-order", ("order.placed",), max_attempts=1),
    )
    await register(aredis, "mail", SubscriptionSpec("mail", "welcome", ("user.signed_up",)))
    key = await publish(aredis, "order.placed", ORDER)
    await register(aredis, "late", SubscriptionSpec("late", "audit", ("order.*",)))
    task = await claim_one(aredis, "default", T0 + 10, "w1")
    died = b"failed by handler|" + failure("no stock", attempt=1, at_ms=T0 + 20, worker="w1")
    outcome = engine.Outcome(task.id, task.token, "default", "dead", died)
    await engine.settle(aredis, SHOP, [outcome], now_ms=T0 + 20, retention_ms=10**9)

    doc = (await event_lineage(aredis, "bus", key)).to_doc()
    assert (doc["key"], doc["type"], doc["pending"]) == (key, "order.placed", False)
    assert doc["recorded_ms"] is not None
    assert doc["envelope"]["data"] == ORDER
    assert doc["envelope"]["buskey"] == key
    assert [
        (d["app"], d["subscription"], d["task_id"], d["matches"], d["state"], d["dead_reason"])
        for d in doc["deliveries"]
    ] == [
        ("late", "audit", f"{key}.audit", True, None, None),
        ("mail", "welcome", f"{key}.welcome", False, None, None),
        ("shop", "on-order", f"{key}.on-order", True, "dead", "failed by handler"),
    ]
    assert doc["deliveries"][2]["last_error"]["message"] == "no stock"
    shown = await read_task(aredis, "bus", "shop", f"{key}.on-order")
    assert (shown.type, shown.event_key) == ("order.placed", key)


async def test_unknown_event_key_is_a_clear_error(aredis: Redis) -> None:
    """An event key not in the log raises EventNotFound naming the key."""
    with pytest.raises(EventNotFound, match="no event 'EVT404' in the event log"):
        await event_lineage(aredis, "bus", "EVT404")
