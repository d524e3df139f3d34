"""Dead letters: every way into the dead set, and list, replay and purge out of it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bus import App, Fail, TaskState, Worker
from bus.client import Bus
from bus.config.apps import event_adapter
from bus.core import clock
from bus.core.enqueue import EnqueueItem
from bus.core.task import TaskRecord
from bus.events.schemas import SchemaRegistry
from bus.inspect.deadletters import get_dead, list_dead, purge, replay, select_dead
from bus.inspect.replay import batch_size
from bus.store import engine, features
from bus.store.keys import AppKeys
from tests.conftest import raw, texts
from tests.engine_helpers import eventually, running_worker

APP = "shop"
KEYS = AppKeys("bus", APP)


def doomed_app(runs: list[Any] | None = None, *, fail: bool = True) -> App:
    """An app whose ``job`` fails for good (or succeeds when ``fail`` is False)."""
    app = App(APP)

    @app.task(max_attempts=1)
    async def job(payload: Any) -> None:
        if runs is not None:
            runs.append(payload)
        if fail:
            raise Fail(f"cannot handle {payload}")

    return app


async def kill(bus: Bus, aredis: Redis, items: list[EnqueueItem]) -> list[str]:
    """Enqueue tasks whose handler fails for good, and run them dead."""
    refs = await bus.enqueue_many(APP, items)
    await Worker(doomed_app(), aredis, burst=True).run()
    return [ref.id for ref in refs]


async def enqueue_event_task(
    aredis: Redis, task_id: str, event_type: str, data: Any = None
) -> None:
    """Add a task as routing would: kind 'event', the envelope as payload."""
    key = task_id.split(".")[0]
    doc: dict[str, Any] = {
        "id": key,
        "source": "test",
        "type": event_type,
        "time": "2026-11-28T10:00:00Z",
    }
    doc.update(buskey=key, data={"n": 1} if data is None else data)
    record = TaskRecord(
        id=task_id, app=APP, name="on-event", queue="default", payload=doc, kind="event"
    )
    now = clock.now_ms()
    await engine.enqueue(
        aredis, KEYS, "default", now, [engine.NewTask(task_id, record.encode(), 5, 0)]
    )


async def state_of(aredis: Redis, task_id: str) -> dict[str, Any]:
    raw = await aredis.hget(KEYS.state, task_id)
    assert raw is not None
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


# -- every path into the dead set ----------------------------------------------


async def test_task_out_of_attempts_is_dead_lettered_with_every_error(
    bus: Bus, aredis: Redis
) -> None:
    """A task that fails on every attempt lands in the dead set with all its errors."""
    app = App(APP)

    @app.task(max_attempts=3, backoff=[0])
    async def job(payload: Any) -> None:
        raise ValueError("upstream down")

    ref = await bus.enqueue(app, "job", 1)
    async with running_worker(app, aredis):
        dead = await eventually(lambda: get_dead(aredis, "bus", APP, ref.id))
    assert dead.reason == "attempts exhausted"
    assert [e.attempt for e in dead.task.info.errors] == [1, 2, 3]


async def test_lease_expiring_on_the_last_attempt_dead_letters_the_task(
    bus: Bus, aredis: Redis
) -> None:
    """A worker that vanished holding the last attempt leaves the task dead, not stuck."""
    ref = await bus.enqueue(APP, "job", 1, max_attempts=1)
    claimed = await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1, max_tasks=1, worker_id="gone"
    )
    assert [t.id for t in claimed.tasks] == [ref.id]
    await asyncio.sleep(0.01)
    # A short lease keeps the burst worker's heartbeat interval (lease / 3) short.
    await Worker(doomed_app(), aredis, burst=True, lease_s=0.3).run()
    dead = await get_dead(aredis, "bus", APP, ref.id)
    assert dead is not None
    assert dead.reason == "attempts exhausted"
    assert dead.task.info.errors[-1].type == "LeaseExpired"
    assert dead.task.info.errors[-1].worker == "gone"


async def test_handler_fail_dead_letters_at_once(bus: Bus, aredis: Redis) -> None:
    """Fail from the handler ends the task dead after one attempt."""
    ref = await bus.enqueue(APP, "job", 1, max_attempts=5)
    await Worker(doomed_app(), aredis, burst=True).run()
    dead = await get_dead(aredis, "bus", APP, ref.id)
    assert dead is not None
    assert dead.reason == "failed by handler"
    assert dead.task.info.attempts == 1


async def test_task_without_handler_is_dead_lettered(bus: Bus, aredis: Redis) -> None:
    """A task name no handler is declared for is dead-lettered, not dropped."""
    ref = await bus.enqueue(APP, "refund", 1)
    await Worker(doomed_app(), aredis, burst=True).run()
    dead = await get_dead(aredis, "bus", APP, ref.id)
    assert dead is not None
    assert dead.reason == "no handler"


async def test_undecodable_record_is_dead_lettered(bus: Bus, aredis: Redis) -> None:
    """A corrupt record ends in the dead set, and listing it says why it is unreadable."""
    ref = await bus.enqueue(APP, "job", 1)
    await aredis.hset(KEYS.tasks, ref.id, b'{"id": "trunc')
    await Worker(doomed_app(), aredis, burst=True).run()
    dead = await get_dead(aredis, "bus", APP, ref.id)
    assert dead is not None
    assert dead.reason == "undecodable record"
    assert dead.queue is None
    assert dead.task.record_error is not None
    assert "undecodable task record" in dead.task.record_error


def subscriber(ran: list[Any]) -> App:
    """An app with the subscription handler ``on-event``, which records what it got."""
    app = App(APP)

    @app.task(name="on-event", max_attempts=5)
    async def on_event(event: Any) -> None:
        ran.append(event)

    return app


async def test_event_failing_the_consumer_schema_check_is_dead_lettered(
    aredis: Redis, tmp_path: Path
) -> None:
    """An event whose data the subscriber's schema rejects dies at once, not after retries."""
    schema = {"$id": "test/order.placed", "version": 1, "type": "object", "required": ["order"]}
    (tmp_path / "order.placed.json").write_bytes(orjson.dumps(schema))
    adapter = event_adapter(SchemaRegistry.load(tmp_path))
    ran: list[Any] = []
    await enqueue_event_task(aredis, "EVT1.on-event", "order.placed", {"total": 3})
    await enqueue_event_task(aredis, "EVT2.on-event", "order.placed", {"order": 3})
    await Worker(subscriber(ran), aredis, burst=True, payload_adapter=adapter).run()
    dead = await get_dead(aredis, "bus", APP, "EVT1.on-event")
    assert dead is not None
    assert dead.reason == "schema check failed"
    assert dead.task.info.attempts == 1
    assert "order" in dead.task.info.errors[-1].message
    assert [event.key for event in ran] == ["EVT2"]


async def test_event_whose_envelope_cannot_be_decoded_is_dead_lettered(aredis: Redis) -> None:
    """A routed task whose payload is no event envelope dies as undecodable, never runs."""
    ran: list[Any] = []
    await enqueue_event_task(aredis, "EVT1.on-event", "order.placed")
    record = orjson.loads(raw(await aredis.hget(KEYS.tasks, "EVT1.on-event")))
    del record["payload"]["source"]
    await aredis.hset(KEYS.tasks, "EVT1.on-event", orjson.dumps(record))
    await Worker(subscriber(ran), aredis, burst=True, payload_adapter=event_adapter()).run()
    dead = await get_dead(aredis, "bus", APP, "EVT1.on-event")
    assert dead is not None
    assert dead.reason == "undecodable event"
    assert ran == []


# -- listing and selecting ---------------------------------------------------------


async def test_list_dead_filters_by_type_and_time_newest_first(bus: Bus, aredis: Redis) -> None:
    """Type matches the task name or the event type; since/until bound the dead time."""
    early = await kill(bus, aredis, [EnqueueItem("job", i) for i in range(3)])
    await asyncio.sleep(0.01)
    middle = clock.now_ms()
    await asyncio.sleep(0.01)
    await enqueue_event_task(aredis, "EVT1.on-event", "order.placed")
    await enqueue_event_task(aredis, "EVT2.on-event", "order.cancelled")
    await Worker(doomed_app(), aredis, burst=True).run()

    everything = await list_dead(aredis, "bus", APP)
    assert len(everything) == 5
    assert [t.dead_ms for t in everything] == sorted((t.dead_ms for t in everything), reverse=True)
    assert {t.id for t in await list_dead(aredis, "bus", APP, type="job")} == set(early)
    placed = await list_dead(aredis, "bus", APP, type="order.placed")
    assert [t.id for t in placed] == ["EVT1.on-event"]
    assert len(await list_dead(aredis, "bus", APP, type="order.*")) == 2
    one_segment = await list_dead(aredis, "bus", APP, type="*.placed")
    assert [t.id for t in one_segment] == ["EVT1.on-event"]
    assert await list_dead(aredis, "bus", APP, type="order") == []
    assert {t.id for t in await list_dead(aredis, "bus", APP, until_ms=middle)} == set(early)
    late = await list_dead(aredis, "bus", APP, since_ms=middle)
    assert {t.id for t in late} == {"EVT1.on-event", "EVT2.on-event"}
    assert len(await list_dead(aredis, "bus", APP, limit=2)) == 2


async def test_type_filter_matches_a_task_name_outside_the_pattern_grammar_exactly(
    bus: Bus, aredis: Redis
) -> None:
    """A task name such as 'SendInvoice' is no event pattern; it is matched as written."""
    [task_id] = await kill(bus, aredis, [EnqueueItem("SendInvoice", 1)])
    assert [t.id for t in await list_dead(aredis, "bus", APP, type="SendInvoice")] == [task_id]
    assert await list_dead(aredis, "bus", APP, type="SendInv") == []


async def test_listing_pages_through_many_tasks_dead_in_the_same_millisecond(
    aredis: Redis,
) -> None:
    """Ties in dead time across page boundaries neither repeat nor skip a task."""
    ids = [f"t{i:04d}" for i in range(1234)]
    await aredis.zadd(KEYS.dead, {task_id: 1000 + i // 600 for i, task_id in enumerate(ids)})
    for task_id in ids:
        await aredis.hset(KEYS.state, task_id, b'{"s":"dead","a":1,"m":1}')
    newest_first = await list_dead(aredis, "bus", APP, limit=5000)
    assert sorted(t.id for t in newest_first) == ids
    newest_700 = [t.id for t in await list_dead(aredis, "bus", APP, limit=700)]
    assert sorted(newest_700) == ids[-700:]
    selection = await select_dead(aredis, "bus", APP, everything=True)
    assert sorted(t.id for t in selection.tasks) == ids


async def test_select_by_ids_reports_unknown_and_living_tasks(bus: Bus, aredis: Redis) -> None:
    """Ids that are unknown or not dead are named with the reason, not selected."""
    [dead_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    alive = await bus.enqueue(APP, "job", 2)
    selection = await select_dead(aredis, "bus", APP, [dead_id, alive.id, "nope"])
    assert [t.id for t in selection.tasks] == [dead_id]
    assert selection.missing == {alive.id: "not dead (state queued)", "nope": "unknown task"}


async def test_select_refuses_an_empty_or_mixed_selection(aredis: Redis) -> None:
    """Nothing selected, or ids mixed with filters, is an error rather than 'all'."""
    with pytest.raises(ValueError, match="by ids, by filters"):
        await select_dead(aredis, "bus", APP)
    with pytest.raises(ValueError, match="by ids, by filters"):
        await select_dead(aredis, "bus", APP, ["a"], type="job")
    with pytest.raises(ValueError, match="by ids, by filters"):
        await replay(aredis, "bus", APP, everything=True, type="job")


# -- replay ------------------------------------------------------------------------------


async def test_replay_by_id_moves_the_task_back_and_it_runs(bus: Bus, aredis: Redis) -> None:
    """The task leaves the dead set, is queued with 0 attempts and its errors, and runs."""
    runs: list[Any] = []
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 7, queue="slow")])
    report = await replay(aredis, "bus", APP, [task_id])
    assert report.replayed == [task_id]
    assert report.queues == {"slow": 1}
    st = await state_of(aredis, task_id)
    assert (st["s"], st["a"], st["rp"]) == ("queued", 0, 1)
    assert "why" not in st
    assert await aredis.zscore(KEYS.dead, task_id) is None
    assert await aredis.lrange(KEYS.queue("slow").ready, 0, -1) == [task_id.encode()]
    assert await aredis.llen(KEYS.queue("slow").wake) == 1

    app = doomed_app(runs, fail=False)
    async with running_worker(app, aredis, queues=["slow"]):
        await eventually(lambda: _state(aredis, task_id, TaskState.SUCCEEDED))
    assert runs == [7]
    info = await bus.get_task(APP, task_id)
    assert info is not None
    assert info.replays == 1
    assert [e.message for e in info.errors] == ["cannot handle 7"]


async def test_replay_wakes_an_idle_worker_at_once(bus: Bus, aredis: Redis) -> None:
    """A worker blocked on an empty queue picks a replayed task up without polling."""
    runs: list[Any] = []
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    app = doomed_app(runs, fail=False)
    async with running_worker(app, aredis, lease_s=30):
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await replay(aredis, "bus", APP, [task_id])
        await eventually(lambda: _state(aredis, task_id, TaskState.SUCCEEDED))
        assert time.monotonic() - started < 0.5
    assert runs == [1]


async def test_replay_by_type_and_time_range_leaves_the_rest_dead(bus: Bus, aredis: Redis) -> None:
    """Only tasks matching the type and dying inside the range are replayed."""
    first = await kill(bus, aredis, [EnqueueItem("job", i) for i in range(2)])
    await asyncio.sleep(0.01)
    middle = clock.now_ms()
    await asyncio.sleep(0.01)
    second = await kill(bus, aredis, [EnqueueItem("job", i) for i in range(3)])
    await enqueue_event_task(aredis, "EVT1.on-event", "order.placed")
    await Worker(doomed_app(), aredis, burst=True).run()

    by_time = await replay(aredis, "bus", APP, since_ms=middle, type="job")
    assert sorted(by_time.replayed) == sorted(second)
    by_type = await replay(aredis, "bus", APP, type="order.placed")
    assert by_type.replayed == ["EVT1.on-event"]
    remaining = await aredis.zrange(KEYS.dead, 0, -1)
    assert sorted(texts(remaining)) == sorted(first)


async def test_dry_run_reports_and_changes_nothing(bus: Bus, aredis: Redis) -> None:
    """A dry run lists what would be replayed; the dead set and queues stay as they were."""
    ids = await kill(bus, aredis, [EnqueueItem("job", i) for i in range(4)])
    before = await aredis.zrange(KEYS.dead, 0, -1, withscores=True)
    report = await replay(aredis, "bus", APP, everything=True, dry_run=True)
    assert report.dry_run
    assert sorted(report.replayed) == sorted(ids)
    assert report.queues == {"default": 4}
    assert await aredis.zrange(KEYS.dead, 0, -1, withscores=True) == before
    assert await aredis.llen(KEYS.queue("default").ready) == 0


async def test_replay_keeps_to_the_requested_rate(bus: Bus, aredis: Redis) -> None:
    """N tasks at R per second take at least (N/R - one batch) seconds."""
    n, rate = 40, 100.0
    await kill(bus, aredis, [EnqueueItem("job", i) for i in range(n)])
    size = batch_size(100, rate)
    assert size == 10
    started = time.monotonic()
    report = await replay(aredis, "bus", APP, everything=True, rate_per_s=rate)
    elapsed = time.monotonic() - started
    assert len(report.replayed) == n
    assert elapsed >= n / rate - size / rate
    assert await aredis.llen(KEYS.queue("default").ready) == n


async def test_concurrent_replays_of_one_task_run_it_once(bus: Bus, aredis: Redis) -> None:
    """Two operators replaying the same task at once: one moves it, the worker runs it once."""
    runs: list[Any] = []
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    a, b = await asyncio.gather(
        replay(aredis, "bus", APP, [task_id]), replay(aredis, "bus", APP, [task_id])
    )
    assert len(a.replayed) + len(b.replayed) == 1
    assert await aredis.lrange(KEYS.queue("default").ready, 0, -1) == [task_id.encode()]
    await Worker(doomed_app(runs, fail=False), aredis, burst=True).run()
    assert runs == [1]


async def test_replay_script_skips_a_task_that_is_no_longer_dead(bus: Bus, aredis: Redis) -> None:
    """The atomic step itself refuses a task already replayed: it moves, never copies."""
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    now = clock.now_ms()
    assert await features.replay(aredis, KEYS, "default", now, [task_id]) == [True]
    assert await features.replay(aredis, KEYS, "default", now, [task_id]) == [False]
    assert await aredis.llen(KEYS.queue("default").ready) == 1
    assert (await state_of(aredis, task_id))["rp"] == 1


async def test_replay_skips_a_task_whose_record_cannot_be_decoded(bus: Bus, aredis: Redis) -> None:
    """A dead task with a corrupt record has no queue to go back to; it is reported."""
    ref = await bus.enqueue(APP, "job", 1)
    await aredis.hset(KEYS.tasks, ref.id, b"garbage")
    await Worker(doomed_app(), aredis, burst=True).run()
    report = await replay(aredis, "bus", APP, everything=True)
    assert report.replayed == []
    assert "cannot replay" in report.skipped[ref.id]
    assert await aredis.zscore(KEYS.dead, ref.id) is not None


async def test_replayed_task_that_dies_again_keeps_both_rounds(bus: Bus, aredis: Redis) -> None:
    """A second death adds its error to the first; the replay count and history remain."""
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    await replay(aredis, "bus", APP, [task_id])
    await Worker(doomed_app(), aredis, burst=True).run()
    dead = await get_dead(aredis, "bus", APP, task_id)
    assert dead is not None
    assert dead.task.info.replays == 1
    assert len(dead.task.info.errors) == 2
    assert len(dead.task.state["rh"]) == 1


# -- purge -----------------------------------------------------------------------------


async def test_purge_deletes_dead_tasks_only(bus: Bus, aredis: Redis) -> None:
    """Purge removes record, state, errors and dead entry; a living task is untouched."""
    ids = await kill(bus, aredis, [EnqueueItem("job", i) for i in range(3)])
    alive = await bus.enqueue(APP, "job", 9)
    assert await purge(aredis, "bus", APP, [ids[0], alive.id, "nope"]) == 1
    assert await aredis.hexists(KEYS.state, ids[0]) == 0
    assert await aredis.hexists(KEYS.tasks, ids[0]) == 0
    assert await aredis.hexists(KEYS.errors, ids[0]) == 0
    assert await aredis.zscore(KEYS.dead, ids[0]) is None
    assert await aredis.hexists(KEYS.state, alive.id) == 1
    assert await purge(aredis, "bus", APP, type="job") == 2
    assert await aredis.zcard(KEYS.dead) == 0


async def test_purge_leaves_a_task_replayed_meanwhile(bus: Bus, aredis: Redis) -> None:
    """A task replayed between selection and purge is no longer dead and survives."""
    [task_id] = await kill(bus, aredis, [EnqueueItem("job", 1)])
    selection = await select_dead(aredis, "bus", APP, everything=True)
    await replay(aredis, "bus", APP, [task_id])
    assert await purge(aredis, "bus", APP, [t.id for t in selection.tasks]) == 0
    assert (await state_of(aredis, task_id))["s"] == "queued"


async def _state(aredis: Redis, task_id: str, state: TaskState) -> bool:
    raw = await aredis.hget(KEYS.state, task_id)
    return raw is not None and orjson.loads(raw)["s"] == state.value
