"""Prefetch and the claim on wake-up: tasks held ready beyond the running ones.

A worker claims up to ``prefetch`` tasks more than it has free slots; they wait
in the worker (leases renewed), start the moment a slot frees, and are handed
back at once on stop. An idle worker's claim is pipelined behind its blocking
wait, runs on the server's clock, and survives a server that forgot the script.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio
from redis.asyncio import Redis

from bus import App, TaskState, Worker
from bus.client import Bus
from bus.core import clock
from bus.core.enqueue import EnqueueItem, prepare
from bus.core.options import MAX_PREFETCH
from bus.store import engine, transport
from bus.store.keys import AppKeys
from bus.worker import claimer
from tests.conftest import Logs, events, raw, scored, texts
from tests.engine_helpers import eventually, running_worker, steal_lease

APP = "prefetch"
KEYS = AppKeys("bus", APP)
QUEUE = KEYS.queue("default")


def gated_app(gate: asyncio.Event, calls: list[int]) -> App:
    """An app whose ``job`` records its payload, then waits for ``gate``."""
    app = App(APP)

    @app.task()
    async def job(payload: int) -> None:
        calls.append(payload)
        await gate.wait()

    return app


async def enqueue_jobs(bus: Bus, app: App, count: int) -> list[str]:
    """Enqueue ``job`` with payloads 0..count-1 in that order; return their ids."""
    refs = await bus.enqueue_many(app, [EnqueueItem("job", i) for i in range(count)])
    return [ref.id for ref in refs]


async def held(worker: Worker, running: int, ready: int) -> bool:
    """True once the worker runs ``running`` tasks and holds ``ready`` more."""
    return len(worker.slots.running) == running and len(worker.slots.ready) == ready


async def inflight(aredis: Redis) -> set[str]:
    """Ids in the default queue's in-flight zset."""
    return set(texts(await aredis.zrange(QUEUE.inflight, 0, -1)))


async def queued(aredis: Redis) -> list[str]:
    """Ids in the default queue's ready list, next to be claimed first."""
    return texts(reversed(await aredis.lrange(QUEUE.ready, 0, -1)))


async def queued_count(aredis: Redis, count: int) -> bool:
    """True once the default queue's ready list holds ``count`` ids."""
    return int(await aredis.llen(QUEUE.ready)) == count


async def state(aredis: Redis, task_id: str) -> dict[str, Any]:
    """The task's raw state entry."""
    raw = await aredis.hget(KEYS.state, task_id)
    assert raw is not None, task_id
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


async def all_in_state(bus: Bus, ids: list[str], wanted: TaskState) -> bool:
    """True once every task is in ``wanted``."""
    for task_id in ids:
        info = await bus.get_task(APP, task_id)
        if info is None or info.state is not wanted:
            return False
    return True


async def blocked_clients(aredis: Redis) -> int:
    """How many clients the server holds in a blocking command."""
    return int((await aredis.info("clients"))["blocked_clients"])


async def _true(value: bool) -> bool:
    return value


# -- prefetch -------------------------------------------------------------------


async def test_holds_concurrency_running_plus_prefetch_ready_then_runs_all_in_order(
    bus: Bus, aredis: Redis
) -> None:
    """Concurrency 2, prefetch 3: 2 run, 3 wait claimed, no more is claimed; all run once, FIFO."""
    gate = asyncio.Event()
    calls: list[int] = []
    app = gated_app(gate, calls)
    ids = await enqueue_jobs(bus, app, 8)
    async with running_worker(app, aredis, concurrency=2, prefetch=3, lease_s=30) as worker:
        await eventually(lambda: held(worker, 2, 3), what="2 running and 3 ready")
        assert list(worker.slots.running) == ids[:2]
        assert list(worker.slots.ready) == ids[2:5]
        assert await inflight(aredis) == set(ids[:5])
        for task_id in ids[:5]:
            st = await state(aredis, task_id)
            assert (st["s"], st["a"], st["w"]) == ("running", 1, worker.id)
        # Nothing more is claimed while every slot and the ready room are full.
        await asyncio.sleep(0.3)
        assert await held(worker, 2, 3)
        assert await inflight(aredis) == set(ids[:5])
        assert await queued(aredis) == ids[5:]
        await worker.heartbeat.beat()
        status = orjson.loads(raw(await aredis.hget(KEYS.workers, worker.id)))
        assert (status["running_count"], status["prefetched"]) == (2, 3)
        gate.set()
        await eventually(lambda: all_in_state(bus, ids, TaskState.SUCCEEDED), what="all done")
    assert calls == list(range(8))
    for task_id in ids:
        info = await bus.get_task(APP, task_id)
        assert info is not None
        assert (info.attempts, info.errors) == (1, [])


async def test_stop_hands_ready_tasks_back_at_once_and_running_ones_finish(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """On stop the ready tasks are queued again uncounted at once; running ones finish in grace."""
    gate = asyncio.Event()
    first: list[int] = []
    ids = await enqueue_jobs(bus, gated_app(gate, first), 5)
    worker = Worker(
        gated_app(gate, first), aredis, concurrency=2, prefetch=3, lease_s=30, grace_s=5
    )
    run = asyncio.create_task(worker.run())
    await eventually(lambda: held(worker, 2, 3), what="2 running and 3 ready")
    worker.stop()
    # Handed back while the running handlers are still blocked.
    await eventually(
        lambda: queued_count(aredis, 3), timeout_s=1.0, what="the ready tasks to be queued again"
    )
    assert sorted(await queued(aredis)) == sorted(ids[2:5])
    assert not run.done()
    assert await inflight(aredis) == set(ids[:2])
    for task_id in ids[2:5]:
        st = await state(aredis, task_id)
        assert (st["s"], st["a"]) == ("queued", 0)
    assert [e["count"] for e in events(logs, "tasks_handed_back")] == [3]
    gate.set()
    await asyncio.wait_for(run, 5)
    assert await all_in_state(bus, ids[:2], TaskState.SUCCEEDED)
    assert first == [0, 1]
    # Nothing lost: a second worker runs exactly the handed-back tasks, once each.
    second: list[int] = []
    await asyncio.wait_for(Worker(gated_app(gate, second), aredis, burst=True).run(), 5)
    assert sorted(second) == [2, 3, 4]
    assert Counter(first + second) == Counter(range(5))
    for task_id in ids:
        info = await bus.get_task(APP, task_id)
        assert info is not None
        assert (info.state, info.attempts, info.errors) == (TaskState.SUCCEEDED, 1, [])
    assert await inflight(aredis) == set()


async def test_ready_tasks_handed_back_on_stop_keep_their_queue_order(
    bus: Bus, aredis: Redis
) -> None:
    """Handed-back ready tasks run next, in the order they were enqueued, before later ones."""
    gate = asyncio.Event()
    first: list[int] = []
    ids = await enqueue_jobs(bus, gated_app(gate, first), 6)
    worker = Worker(
        gated_app(gate, first), aredis, concurrency=1, prefetch=3, lease_s=30, grace_s=5
    )
    run = asyncio.create_task(worker.run())
    await eventually(lambda: held(worker, 1, 3), what="1 running and 3 ready")
    worker.stop()
    gate.set()
    await asyncio.wait_for(run, 5)
    assert first == [0]
    assert [ids.index(task_id) for task_id in await queued(aredis)] == [1, 2, 3, 4, 5]
    second: list[int] = []
    await asyncio.wait_for(
        Worker(gated_app(gate, second), aredis, burst=True, concurrency=1).run(), 5
    )
    assert second == [1, 2, 3, 4, 5]


async def test_prefetch_zero_claims_only_for_free_slots(
    bus: Bus, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With prefetch 0 the worker never holds more tasks than it runs."""
    asked: list[int] = []
    claim, claim_when_woken = engine.claim, engine.claim_when_woken

    async def spy_claim(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["max_tasks"])
        return await claim(*args, **kwargs)

    async def spy_claim_when_woken(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["max_tasks"])
        return await claim_when_woken(*args, **kwargs)

    monkeypatch.setattr(engine, "claim", spy_claim)
    monkeypatch.setattr(engine, "claim_when_woken", spy_claim_when_woken)
    gate = asyncio.Event()
    calls: list[int] = []
    app = gated_app(gate, calls)
    ids = await enqueue_jobs(bus, app, 6)
    async with running_worker(app, aredis, concurrency=2, prefetch=0, lease_s=30) as worker:
        assert worker.prefetch == 0
        await eventually(lambda: held(worker, 2, 0), what="2 running")
        await asyncio.sleep(0.3)
        assert await held(worker, 2, 0)
        assert await inflight(aredis) == set(ids[:2])
        assert await queued(aredis) == ids[2:]
        gate.set()
        await eventually(lambda: all_in_state(bus, ids, TaskState.SUCCEEDED), what="all done")
    assert calls == list(range(6))
    assert asked
    assert max(asked) <= 2


async def test_ready_task_whose_lease_was_lost_never_runs_here(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """A ready task recovered elsewhere leaves the ready set, logs lease_lost, never runs here."""
    gate = asyncio.Event()
    calls: list[int] = []
    app = gated_app(gate, calls)
    ids = await enqueue_jobs(bus, app, 2)
    async with running_worker(app, aredis, concurrency=1, prefetch=1, lease_s=30) as worker:
        await eventually(lambda: held(worker, 1, 1), what="1 running and 1 ready")
        stolen = ids[1]
        assert list(worker.slots.ready) == [stolen]
        # Its lease "expires"; another worker's claim recovers and takes it.
        assert (await steal_lease(aredis, KEYS, stolen)).attempt == 2
        await worker.heartbeat.beat()
        assert worker.slots.ready == {}
        assert stolen not in worker.slots.unsettled
        lost = events(logs, "lease_lost")
        assert [e["task_id"] for e in lost] == [stolen]
        # The slot frees: the first worker must not start the stolen task; a
        # task enqueued afterwards runs instead.
        gate.set()
        later = await bus.enqueue(app, "job", 2)
        await eventually(
            lambda: all_in_state(bus, [ids[0], later.id], TaskState.SUCCEEDED), what="done"
        )
        assert calls == [0, 2]
        st = await state(aredis, stolen)
        assert (st["s"], st["a"], st["w"]) == ("running", 2, "thief")
    info = await bus.get_task(APP, stolen)
    assert info is not None
    assert [e.type for e in info.errors] == ["LeaseExpired"]


async def test_heartbeat_renews_the_leases_of_ready_tasks(bus: Bus, aredis: Redis) -> None:
    """Ready tasks waiting past their first lease deadline are not recovered; each runs once."""
    gate = asyncio.Event()
    calls: list[int] = []
    app = gated_app(gate, calls)
    ids = await enqueue_jobs(bus, app, 3)
    async with running_worker(app, aredis, concurrency=1, prefetch=2, lease_s=1.0) as worker:
        await eventually(lambda: held(worker, 1, 2), what="1 running and 2 ready")
        first_deadline = max(
            int(score)
            for _, score in scored(await aredis.zrange(QUEUE.inflight, 0, -1, withscores=True))
        )
        await eventually(
            lambda: _true(clock.now_ms() > first_deadline + 300),
            what="the first lease deadline to pass",
        )
        # Any other worker's claim would recover expired leases now.
        probe = await engine.claim(
            aredis,
            KEYS,
            ["default"],
            now_ms=clock.now_ms(),
            lease_ms=1000,
            max_tasks=0,
            worker_id="probe",
        )
        assert probe.tasks == []
        assert await inflight(aredis) == set(ids)
        assert await held(worker, 1, 2)
        gate.set()
        await eventually(lambda: all_in_state(bus, ids, TaskState.SUCCEEDED), what="all done")
    assert calls == [0, 1, 2]
    for task_id in ids:
        info = await bus.get_task(APP, task_id)
        assert info is not None
        assert (info.attempts, info.errors) == (1, [])


async def test_prefetch_out_of_range_is_refused(aredis: Redis) -> None:
    """A negative or too large prefetch raises ValueError; None means the concurrency."""
    app = App(APP)
    with pytest.raises(ValueError, match="prefetch"):
        Worker(app, aredis, prefetch=-1)
    with pytest.raises(ValueError, match="prefetch"):
        Worker(app, aredis, prefetch=MAX_PREFETCH + 1)
    assert Worker(app, aredis, concurrency=4).prefetch == 4
    assert Worker(app, aredis, concurrency=4, prefetch=0).prefetch == 0


# -- the claim on wake-up ---------------------------------------------------------


async def test_idle_worker_with_short_socket_timeout_logs_no_trouble(
    bus: Bus, aredis: Redis, redis_url: str, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting past the client's socket timeout is not a Redis failure; work still wakes it."""
    monkeypatch.setattr(claimer, "WAIT_BLOCK_S", 1)
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.5)
    started: list[float] = []
    app = App(APP)

    @app.task()
    async def job(payload: int) -> None:
        started.append(time.monotonic())

    try:
        async with running_worker(app, client, queues=["default"], lease_s=30):
            await eventually(lambda: blocked_clients(aredis), what="the worker to wait")
            before = (await aredis.info("commandstats")).get("cmdstat_blpop", {}).get("calls", 0)
            await asyncio.sleep(2.0)  # 4 socket timeouts, 2 server-side blocks
            after = (await aredis.info("commandstats"))["cmdstat_blpop"]["calls"]
            assert after - before >= 1  # at least one wait outlasted the socket timeout
            enqueued = time.monotonic()
            await bus.enqueue(app, "job", 1)
            await eventually(lambda: _true(bool(started)), timeout_s=2, what="the task to start")
            assert started[0] - enqueued < 0.5
    finally:
        await client.aclose()
    assert events(logs, "redis_unavailable") == []
    assert events(logs, "redis_reconnected") == []
    assert events(logs, "redis_error") == []


async def test_delayed_task_on_idle_worker_runs_on_time(bus: Bus, aredis: Redis) -> None:
    """A task delayed 0.3 s, enqueued while the worker waits, starts 0.3-0.6 s later."""
    started: list[float] = []
    app = App(APP)

    @app.task()
    async def job(payload: int) -> None:
        started.append(time.time())

    async with running_worker(app, aredis, queues=["default"], lease_s=30):
        await eventually(lambda: blocked_clients(aredis), what="the worker to wait")
        before = time.time()
        ref = await bus.enqueue(app, "job", 1, delay_s=0.3)
        after = time.time()
        await eventually(lambda: all_in_state(bus, [ref.id], TaskState.SUCCEEDED), what="run")
    assert started[0] >= before + 0.3 - 0.002
    assert started[0] - after < 0.6


async def test_claim_when_woken_uses_the_server_clock(bus: Bus, aredis: Redis) -> None:
    """The claim behind the wait promotes a task due by the server's clock, not the send time."""
    app = App(APP)
    # Load the claim script so the pipelined EVALSHA finds it.
    await engine.claim(
        aredis,
        KEYS,
        ["default"],
        now_ms=clock.now_ms(),
        lease_ms=1000,
        max_tasks=0,
        worker_id="w",
    )
    ref = await bus.enqueue(app, "job", 1, delay_s=0.2)
    wake = KEYS.worker_wake("w")

    async def poke() -> None:
        await asyncio.sleep(0.4)
        await aredis.lpush(wake, "1")

    poker = asyncio.create_task(poke())
    popped, result = await engine.claim_when_woken(
        aredis,
        KEYS,
        ["default"],
        [wake],
        block_s=5,
        now_ms=clock.now_ms() - 60_000,  # sent long before the wait ended
        lease_ms=30_000,
        max_tasks=1,
        worker_id="w",
    )
    await poker
    assert popped == wake.encode()
    assert result is not None
    assert [t.id for t in result.tasks] == [ref.id]


async def test_stop_while_idle_returns_promptly(bus: Bus, aredis: Redis) -> None:
    """A worker blocked in its wake-up wait stops within a second, holding nothing."""
    app = App(APP)
    worker = Worker(app, aredis, queues=["default"], lease_s=30)
    run = asyncio.create_task(worker.run())
    await eventually(lambda: blocked_clients(aredis), what="the worker to wait")
    stopped = time.monotonic()
    worker.stop()
    await asyncio.wait_for(run, 5)
    assert time.monotonic() - stopped < 1.0
    assert await inflight(aredis) == set()
    assert await blocked_clients(aredis) == 0


async def test_tasks_arriving_as_an_idle_worker_stops_are_not_lost(
    bus: Bus, aredis: Redis, redis_url: str
) -> None:
    """Tasks the wake-up claim took just as the worker stopped are handed back, not stranded."""
    gate = asyncio.Event()
    gate.set()
    first: list[int] = []
    app = gated_app(gate, first)
    worker = Worker(app, aredis, queues=["default"], lease_s=30, grace_s=5)
    run = asyncio.create_task(worker.run())
    await eventually(lambda: blocked_clients(aredis), what="the worker to wait")
    now = clock.now_ms()
    tasks = [prepare(app, EnqueueItem("job", i), now)[1] for i in range(5)]
    sync = redis.Redis.from_url(redis_url)
    try:
        # The event loop is blocked from here to stop(): the server wakes the
        # worker and runs the claim behind its wait, but the worker reads that
        # reply only after stop() (as when SIGTERM lands in the same instant).
        transport.run_calls_sync(sync, [engine.enqueue_call(KEYS, "default", now, tasks)])
        deadline = time.monotonic() + 2
        while sync.zcard(QUEUE.inflight) < 5:
            assert time.monotonic() < deadline, "the claim behind the wait did not run"
        worker.stop()
    finally:
        sync.close()
    await asyncio.wait_for(run, 5)
    assert await inflight(aredis) == set()
    second: list[int] = []
    await asyncio.wait_for(Worker(gated_app(gate, second), aredis, burst=True).run(), 5)
    assert Counter(first + second) == Counter(range(5))
    assert await all_in_state(bus, [t.id for t in tasks], TaskState.SUCCEEDED)


async def test_woken_worker_claims_after_the_server_forgot_the_claim_script(
    bus: Bus, aredis: Redis, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After SCRIPT FLUSH the claim behind the wait gets NOSCRIPT; the worker claims again."""
    woken: list[tuple[bytes | None, engine.ClaimResult | None]] = []
    claim_when_woken = engine.claim_when_woken

    async def spy(*args: Any, **kwargs: Any) -> Any:
        result = await claim_when_woken(*args, **kwargs)
        woken.append(result)
        return result

    monkeypatch.setattr(engine, "claim_when_woken", spy)
    app = App(APP)
    done = asyncio.Event()

    @app.task()
    async def job(payload: int) -> None:
        done.set()

    async with running_worker(app, aredis, queues=["default"], lease_s=30):
        await eventually(lambda: blocked_clients(aredis), what="the worker to wait")
        await aredis.script_flush()
        ref = await bus.enqueue(app, "job", 1)
        await asyncio.wait_for(done.wait(), 2)
        await eventually(lambda: all_in_state(bus, [ref.id], TaskState.SUCCEEDED), what="done")
    # The wake-up came with no claim (NOSCRIPT), not with an error.
    assert woken[0] == (QUEUE.wake.encode(), None)
    assert events(logs, "redis_unavailable") == []
    assert events(logs, "redis_error") == []
