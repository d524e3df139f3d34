"""Enqueueing from synchronous code: ``Bus.enqueue_sync`` and ``Bus.enqueue_many_sync``.

The sync front ends share validation, encoding and grouping with the async ones
(bus/enqueue.py ``_plan``, planning in bus/core/enqueue.py); these tests hold
them to the same records, the same idempotence and the same all-or-nothing refusal of bad input.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bus import App, TaskState
from bus.client import Bus
from bus.core.enqueue import EnqueueItem
from bus.store.keys import AppKeys
from tests.conftest import raw
from tests.engine_helpers import eventually, running_worker
from tests.test_bad_input import assert_unchanged, dump_all

APP = "shop"
KEYS = AppKeys("bus", APP)


@pytest.fixture
def sync_bus(bus: Bus, aredis: Redis, sync_client: redis.Redis) -> Bus:
    """conftest's ``bus`` (its settings, its asyncio client) plus a blocking client.

    Not the shared ``bus``: that one would open (and never close) a checked
    blocking client of its own on the first ``*_sync`` call, and these tests
    compare the two clients' writes on one server.
    """
    return Bus(bus.settings, redis=aredis, sync_redis=sync_client, source="tests")


def _record(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(raw)
    for field in ("id", "created_ms"):
        doc.pop(field)
    return doc


def _declared_app() -> App:
    app = App(APP)

    @app.task(queue="low", max_attempts=3, timeout_s=7, backoff=[1, 5])
    async def ship(payload: Any) -> None:
        pass

    return app


@pytest.mark.parametrize(
    ("make_app", "options"),
    [
        (lambda: APP, {"queue": "low", "max_attempts": 3, "timeout_s": 7, "backoff": [1, 5]}),
        (_declared_app, {}),
    ],
    ids=["explicit-options", "declared-options"],
)
async def test_sync_and_async_write_the_same_record_and_state(
    sync_bus: Bus, aredis: Redis, make_app: Any, options: dict[str, Any]
) -> None:
    """Same inputs, same stored record and state (apart from id and time)."""
    app = make_app()
    sync_ref = sync_bus.enqueue_sync(app, "ship", {"order": 7}, **options)
    async_ref = await sync_bus.enqueue(app, "ship", {"order": 7}, **options)
    assert sync_ref.added
    assert sync_ref.app == APP
    records = [raw(await aredis.hget(KEYS.tasks, ref.id)) for ref in (sync_ref, async_ref)]
    assert _record(records[0]) == _record(records[1])
    states = [orjson.loads(raw(await aredis.hget(KEYS.state, r.id))) for r in (sync_ref, async_ref)]
    assert [{k: v for k, v in st.items() if k != "tc"} for st in states] == [
        {"s": "queued", "a": 0, "m": 3}
    ] * 2
    assert await aredis.lrange(KEYS.queue("low").ready, 0, -1) == [
        async_ref.id.encode(),
        sync_ref.id.encode(),
    ]


async def test_a_sync_enqueued_task_runs_on_a_worker(sync_bus: Bus, aredis: Redis) -> None:
    """What enqueue_sync writes is a task a worker runs like any other."""
    app = App(APP)
    seen: list[Any] = []

    @app.task()
    async def ship(payload: Any) -> None:
        seen.append(payload)

    ref = sync_bus.enqueue_sync(app, "ship", {"order": 1})

    async def done() -> bool:
        info = await sync_bus.get_task(APP, ref.id)
        return info is not None and info.state is TaskState.SUCCEEDED

    async with running_worker(app, aredis):
        await eventually(done, what="the sync-enqueued task to succeed")
    assert seen == [{"order": 1}]


def test_a_known_id_is_a_noop(sync_bus: Bus, sync_client: redis.Redis) -> None:
    """The second enqueue of an id changes nothing and says so."""
    first = sync_bus.enqueue_sync(APP, "ship", {"v": 1}, id="order-7")
    second = sync_bus.enqueue_sync(APP, "ship", {"v": 2}, id="order-7")
    assert (first.added, second.added) == (True, False)
    assert sync_client.llen(KEYS.queue("default").ready) == 1
    stored = orjson.loads(sync_client.hget(KEYS.tasks, "order-7") or b"{}")
    assert stored["payload"] == {"v": 1}


def test_many_across_queues_in_one_call(sync_bus: Bus, sync_client: redis.Redis) -> None:
    """Items for two queues, delayed and due ones: refs in the items' order."""
    items = [
        EnqueueItem("ship", {"i": 0}, queue="a"),
        EnqueueItem("ship", {"i": 1}, queue="b"),
        EnqueueItem("ship", {"i": 2}, queue="a", delay_s=60),
        EnqueueItem("ship", {"i": 3}, queue="b", id="fixed"),
    ]
    refs = sync_bus.enqueue_many_sync(APP, items)
    assert [r.added for r in refs] == [True] * 4
    assert refs[3].id == "fixed"
    payloads = [orjson.loads(sync_client.hget(KEYS.tasks, r.id) or b"{}")["payload"] for r in refs]
    assert payloads == [{"i": i} for i in range(4)]
    assert sync_client.lrange(KEYS.queue("a").ready, 0, -1) == [refs[0].id.encode()]
    assert sync_client.zrange(KEYS.queue("a").delayed, 0, -1) == [refs[2].id.encode()]
    assert set(sync_client.lrange(KEYS.queue("b").ready, 0, -1)) == {
        refs[1].id.encode(),
        b"fixed",
    }
    again = sync_bus.enqueue_many_sync(APP, [EnqueueItem("ship", {"i": 9}, queue="b", id="fixed")])
    assert [r.added for r in again] == [False]


def test_delay_puts_the_task_in_the_delayed_set(sync_bus: Bus, sync_client: redis.Redis) -> None:
    """A delayed task waits in the queue's delayed zset, scheduled."""
    ref = sync_bus.enqueue_sync(APP, "ship", None, delay_s=30)
    assert sync_client.zscore(KEYS.queue("default").delayed, ref.id) is not None
    assert sync_client.llen(KEYS.queue("default").ready) == 0
    state = orjson.loads(sync_client.hget(KEYS.state, ref.id) or b"{}")
    assert state["s"] == "scheduled"


def _one(
    app: str, name: str, payload: Any = None, **options: Any
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return "one", (app, name, payload), options


def _many(app: str, items: list[EnqueueItem]) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return "many", (app, items), {}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (_one("Shop!", "ship"), ValueError, "invalid app name"),
        (_one(APP, "ship", queue="a b"), ValueError, "invalid queue name"),
        (_one(APP, "ship", max_attempts=0), ValueError, "max_attempts"),
        (_one(APP, "ship", timeout_s=0), ValueError, "timeout_s"),
        (_one(APP, "ship", run_at_ms=1, delay_s=1), ValueError, "not both"),
        (_one(APP, "ship", id="x" * 201), ValueError, "task id"),
        (_one(APP, "ship", id=""), ValueError, "task id"),  # not replaced by a new id
        (_one(APP, "ship", {1, 2}), TypeError, "not JSON-serialisable"),
        (
            _many(APP, [EnqueueItem("ship", 1), EnqueueItem("ship", object())]),
            TypeError,
            "not JSON-serialisable",
        ),
        (
            _many(APP, [EnqueueItem("ship", 1, queue="a"), EnqueueItem("ship", 2, delay_s=-1)]),
            ValueError,
            "delay_s",
        ),
        (_many("Shop!", [EnqueueItem("ship", 1)]), ValueError, "invalid app name"),
    ],
)
async def test_bad_input_raises_like_async_and_writes_nothing(
    sync_bus: Bus,
    sync_client: redis.Redis,
    call: tuple[str, tuple[Any, ...], dict[str, Any]],
    error: type[Exception],
    message: str,
) -> None:
    """A bad item fails the whole call as the async path does, before anything is written."""
    kind, args, options = call
    sync_bus.enqueue_sync(APP, "ship", {"before": True})
    before = dump_all(sync_client)
    sync_call: Any = sync_bus.enqueue_sync if kind == "one" else sync_bus.enqueue_many_sync
    async_call: Any = sync_bus.enqueue if kind == "one" else sync_bus.enqueue_many
    with pytest.raises(error, match=message) as sync_error:
        sync_call(*args, **options)
    assert_unchanged(before, dump_all(sync_client))
    with pytest.raises(error, match=message) as async_error:
        await async_call(*args, **options)
    assert_unchanged(before, dump_all(sync_client))
    assert (type(sync_error.value), str(sync_error.value)) == (
        type(async_error.value),
        str(async_error.value),
    )
