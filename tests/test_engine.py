"""The task engine in one process: records, states, retries, queues, delays."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bus import App, Fail, Retry, TaskContext, TaskState, Worker
from bus.client import Bus
from bus.core.enqueue import EnqueueItem
from bus.store.keys import AppKeys
from tests.engine_helpers import eventually, running_worker


async def test_enqueue_writes_record_and_state_readable_by_id(bus: Bus) -> None:
    """An enqueued task can be read back by id with its payload and state."""
    ref = await bus.enqueue("shop", "ship", {"order": 7}, max_attempts=3, timeout_s=5)
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.state is TaskState.QUEUED
    assert info.attempts == 0
    assert info.max_attempts == 3
    assert info.record is not None
    assert info.record.payload == {"order": 7}
    assert info.record.queue == "default"
    assert info.record.timeout_s == 5


async def test_enqueue_same_id_twice_is_a_noop(bus: Bus, aredis: Redis) -> None:
    """A second enqueue of a known id changes nothing and reports added=False."""
    first = await bus.enqueue("shop", "ship", {"v": 1}, id="order-7")
    second = await bus.enqueue("shop", "ship", {"v": 2}, id="order-7")
    assert (first.added, second.added) == (True, False)
    keys = AppKeys("bus", "shop")
    assert await aredis.llen(keys.queue("default").ready) == 1
    info = await bus.get_task("shop", "order-7")
    assert info is not None
    assert info.record is not None
    assert info.record.payload == {"v": 1}


async def test_enqueue_rejects_bad_input_and_writes_nothing(bus: Bus, aredis: Redis) -> None:
    """Bad names, options or payloads raise and leave Redis empty."""
    with pytest.raises(ValueError, match="invalid app name"):
        await bus.enqueue("Shop!", "ship")
    with pytest.raises(ValueError, match="invalid queue name"):
        await bus.enqueue("shop", "ship", queue="a b")
    with pytest.raises(ValueError, match="max_attempts"):
        await bus.enqueue("shop", "ship", max_attempts=0)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await bus.enqueue("shop", "ship", {"when": object()})
    with pytest.raises(TypeError):
        await bus.enqueue_many("shop", [EnqueueItem("a", 1), EnqueueItem("b", {1, 2})])
    assert await aredis.dbsize() == 0


async def test_handler_runs_and_task_succeeds(bus: Bus, aredis: Redis) -> None:
    """A worker runs the handler with payload and context, then marks it succeeded."""
    app = App("shop")
    seen: list[tuple[Any, int, str]] = []

    @app.task()
    async def ship(payload: Any, ctx: TaskContext) -> None:
        seen.append((payload, ctx.attempt, ctx.task_id))

    ref = await bus.enqueue(app, "ship", {"order": 1})
    async with running_worker(app, aredis):
        await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.SUCCEEDED))
    assert seen == [({"order": 1}, 1, ref.id)]
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.finished_ms is not None
    assert info.started_ms is not None


async def test_sync_handler_runs_in_a_thread(bus: Bus, aredis: Redis) -> None:
    """A plain function handler runs off the event loop thread."""
    app = App("shop")
    threads: list[str] = []

    @app.task()
    def ship(payload: Any) -> None:
        threads.append(threading.current_thread().name)

    ref = await bus.enqueue(app, "ship", 1)
    async with running_worker(app, aredis):
        await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.SUCCEEDED))
    assert threads
    assert threads[0] != threading.main_thread().name


async def test_failing_task_retries_with_backoff_then_dies_with_every_error(
    bus: Bus, aredis: Redis
) -> None:
    """Each failure is recorded; after max attempts the task is dead and stays."""
    app = App("shop")
    times: list[float] = []

    @app.task(max_attempts=3, backoff=[0.05, 0.1])
    async def ship(payload: Any, ctx: TaskContext) -> None:
        times.append(time.monotonic())
        raise ValueError(f"broken on attempt {ctx.attempt}")

    ref = await bus.enqueue(app, "ship", 1)
    async with running_worker(app, aredis):
        info = await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.DEAD))
    assert len(times) == 3
    assert times[1] - times[0] >= 0.045
    assert times[2] - times[1] >= 0.095
    assert info.dead_reason == "attempts exhausted"
    assert [e.message for e in info.errors] == [f"broken on attempt {n}" for n in (1, 2, 3)]
    assert all(e.type == "ValueError" and "Traceback" in e.traceback for e in info.errors)
    assert await aredis.zscore(AppKeys("bus", "shop").dead, ref.id) is not None


async def test_handler_can_ask_for_retry_after_seconds_or_fail_now(bus: Bus, aredis: Redis) -> None:
    """Retry(after_s) reschedules at that delay; Fail kills at once with no retry."""
    app = App("shop")
    calls: dict[str, list[float]] = {"later": [], "never": []}

    @app.task(max_attempts=5)
    async def later(payload: Any, ctx: TaskContext) -> None:
        calls["later"].append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry(after_s=0.2, reason="upstream busy")

    @app.task(max_attempts=5)
    async def never(payload: Any) -> None:
        calls["never"].append(time.monotonic())
        raise Fail("card number is invalid")

    r1 = await bus.enqueue(app, "later", 1)
    r2 = await bus.enqueue(app, "never", 1)
    async with running_worker(app, aredis):
        await eventually(lambda: _state_is(bus, "shop", r1.id, TaskState.SUCCEEDED))
        dead = await eventually(lambda: _state_is(bus, "shop", r2.id, TaskState.DEAD))
    assert len(calls["later"]) == 2
    assert calls["later"][1] - calls["later"][0] >= 0.19
    assert len(calls["never"]) == 1
    assert dead.dead_reason == "failed by handler"
    assert dead.errors[-1].message == "card number is invalid"


async def test_handler_past_its_timeout_is_cancelled_and_counts_as_failed(
    bus: Bus, aredis: Redis
) -> None:
    """A handler that runs past timeout_s is cancelled; the attempt fails."""
    app = App("shop")
    cancelled = asyncio.Event()

    @app.task(timeout_s=0.05, max_attempts=1)
    async def hang(payload: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ref = await bus.enqueue(app, "hang", 1)
    async with running_worker(app, aredis):
        info = await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.DEAD))
    assert cancelled.is_set()
    assert info.errors[0].type == "TaskTimeout"
    assert "timeout of 0.05 s" in info.errors[0].message


async def test_task_without_handler_is_dead_lettered_not_dropped(bus: Bus, aredis: Redis) -> None:
    """A task name the worker has no handler for ends dead with that reason."""
    app = App("shop")

    @app.task()
    async def ship(payload: Any) -> None:
        return None

    ref = await bus.enqueue("shop", "refund", {"x": 1})
    async with running_worker(app, aredis):
        info = await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.DEAD))
    assert info.dead_reason == "no handler"
    assert "no handler for task 'refund'" in info.errors[0].message
    assert "ship" in info.errors[0].message


async def test_corrupt_record_is_dead_lettered_and_worker_keeps_going(
    bus: Bus, aredis: Redis
) -> None:
    """A record that cannot be decoded ends dead; other tasks still run."""
    app = App("shop")
    done: list[int] = []

    @app.task()
    async def ship(payload: int) -> None:
        done.append(payload)

    bad = await bus.enqueue(app, "ship", 1)
    await aredis.hset(AppKeys("bus", "shop").tasks, bad.id, b'{"id": "trunc')
    good = await bus.enqueue(app, "ship", 2)
    async with running_worker(app, aredis):
        info = await eventually(lambda: _state_is(bus, "shop", bad.id, TaskState.DEAD))
        await eventually(lambda: _state_is(bus, "shop", good.id, TaskState.SUCCEEDED))
    assert info.dead_reason == "undecodable record"
    assert done == [2]


async def test_worker_takes_from_first_nonempty_queue_in_its_order(bus: Bus, aredis: Redis) -> None:
    """With queues critical,default,low the worker drains them in that order."""
    app = App("shop")
    order: list[str] = []

    @app.task()
    async def job(payload: str) -> None:
        order.append(payload)

    for queue in ("low", "default", "critical"):
        await bus.enqueue_many(
            app, [EnqueueItem("job", f"{queue}{i}", queue=queue) for i in range(3)]
        )
    worker = Worker(app, aredis, queues=["critical", "default", "low"], concurrency=1, burst=True)
    await worker.run()
    assert order == [f"{q}{i}" for q in ("critical", "default", "low") for i in range(3)]


async def test_star_serves_all_queues_alphabetically_after_named_ones(
    bus: Bus, aredis: Redis
) -> None:
    """'*' stands for the app's other queues in alphabetical order."""
    app = App("shop")
    order: list[str] = []

    @app.task()
    async def job(payload: str) -> None:
        order.append(payload)

    for queue in ("b", "zz", "a"):
        await bus.enqueue(app, "job", queue, queue=queue)
    worker = Worker(app, aredis, queues=["zz", "*"], concurrency=1, burst=True)
    await worker.run()
    assert order == ["zz", "a", "b"]


async def test_delayed_task_runs_when_due_not_before(bus: Bus, aredis: Redis) -> None:
    """A task with delay_s stays scheduled until due, then runs promptly."""
    app = App("shop")
    started: list[float] = []

    @app.task()
    async def later(payload: float) -> None:
        started.append(time.time())

    due = time.time() + 0.3
    ref = await bus.enqueue(app, "later", due, delay_s=0.3)
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.state is TaskState.SCHEDULED
    async with running_worker(app, aredis):
        await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.SUCCEEDED))
    assert started[0] >= due - 0.002
    assert started[0] - due < 0.1


async def test_idle_worker_blocks_instead_of_polling(bus: Bus, aredis: Redis) -> None:
    """An idle worker sends no commands while it waits; new work wakes it."""
    app = App("shop")
    done = asyncio.Event()

    @app.task()
    async def job(payload: int) -> None:
        done.set()

    async with running_worker(app, aredis, lease_s=30):
        await asyncio.sleep(0.2)
        before = await _commands_processed(aredis)
        await asyncio.sleep(0.5)
        after = await _commands_processed(aredis)
        # The INFO calls themselves are the only commands expected.
        assert after - before <= 2
        t0 = time.monotonic()
        await bus.enqueue(app, "job", 1)
        await asyncio.wait_for(done.wait(), 2)
        assert time.monotonic() - t0 < 0.1


async def test_burst_worker_exits_when_queues_are_empty(bus: Bus, aredis: Redis) -> None:
    """--burst works the due tasks and returns; a far-future task is left."""
    app = App("shop")
    done: list[int] = []

    @app.task()
    async def job(payload: int) -> None:
        done.append(payload)

    await bus.enqueue_many(app, [EnqueueItem("job", i) for i in range(50)])
    far = await bus.enqueue(app, "job", 99, delay_s=3600)
    await asyncio.wait_for(Worker(app, aredis, burst=True, concurrency=7).run(), 10)
    assert sorted(done) == list(range(50))
    info = await bus.get_task("shop", far.id)
    assert info is not None
    assert info.state is TaskState.SCHEDULED


async def test_finished_records_expire_after_retention_dead_ones_stay(
    bus: Bus, aredis: Redis
) -> None:
    """Succeeded records are swept once older than the retention; dead remain."""
    app = App("shop")

    @app.task(max_attempts=1)
    async def job(payload: int) -> None:
        if payload < 0:
            raise ValueError("negative")

    ok = await bus.enqueue(app, "job", 1)
    bad = await bus.enqueue(app, "job", -1)
    await Worker(app, aredis, burst=True, retention_s=0.05).run()
    assert (await bus.get_task("shop", ok.id)) is not None
    await asyncio.sleep(0.1)
    await bus.enqueue(app, "job", 2)
    await Worker(app, aredis, burst=True, retention_s=0.05).run()
    assert await bus.get_task("shop", ok.id) is None
    dead = await bus.get_task("shop", bad.id)
    assert dead is not None
    assert dead.state is TaskState.DEAD


async def test_zero_retention_deletes_records_on_success(bus: Bus, aredis: Redis) -> None:
    """With retention 0 a succeeded task leaves nothing behind."""
    app = App("shop")

    @app.task()
    async def job(payload: int) -> None:
        return None

    await bus.enqueue_many(app, [EnqueueItem("job", i) for i in range(10)])
    await Worker(app, aredis, burst=True, retention_s=0).run()
    keys = AppKeys("bus", "shop")
    assert await aredis.hlen(keys.tasks) == 0
    assert await aredis.hlen(keys.state) == 0


async def test_graceful_stop_hands_unfinished_tasks_back_at_once(bus: Bus, aredis: Redis) -> None:
    """After the grace period, running tasks are queued again without waiting for the lease."""
    app = App("shop")
    started = asyncio.Event()

    @app.task()
    async def slow(payload: int) -> None:
        started.set()
        await asyncio.sleep(60)

    ref = await bus.enqueue(app, "slow", 1)
    worker = Worker(app, aredis, lease_s=60, grace_s=0.05)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(task, 5)
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.state is TaskState.QUEUED
    assert info.attempts == 0
    keys = AppKeys("bus", "shop")
    assert await aredis.zcard(keys.queue("default").inflight) == 0
    assert await aredis.lrange(keys.queue("default").ready, 0, -1) == [ref.id.encode()]


async def test_graceful_stop_lets_running_tasks_finish_within_grace(
    bus: Bus, aredis: Redis
) -> None:
    """A task that finishes inside the grace period is settled, not handed back."""
    app = App("shop")
    started = asyncio.Event()

    @app.task()
    async def short(payload: int) -> None:
        started.set()
        await asyncio.sleep(0.1)

    ref = await bus.enqueue(app, "short", 1)
    async with running_worker(app, aredis, grace_s=5):
        await asyncio.wait_for(started.wait(), 5)
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.state is TaskState.SUCCEEDED


async def test_worker_status_record_is_written_and_removed(bus: Bus, aredis: Redis) -> None:
    """A running worker keeps a status record; it is gone after a clean stop."""
    app = App("shop")
    keys = AppKeys("bus", "shop")
    async with running_worker(app, aredis, queues=["critical", "default"]) as worker:
        raw = await eventually(lambda: aredis.hget(keys.workers, worker.id))
        status = orjson.loads(raw)
        assert status["app"] == "shop"
        assert status["queues"] == ["critical", "default"]
        assert {"host", "pid", "started_ms", "beat_ms", "running", "processed"} <= set(status)
    assert await aredis.hget(keys.workers, worker.id) is None


async def test_dead_worker_status_is_reaped_by_live_workers(aredis: Redis) -> None:
    """A status record whose heartbeat is old is removed by another worker's beat."""
    app = App("shop")
    keys = AppKeys("bus", "shop")
    await aredis.hset(keys.workers, "ghost", b"{}")
    await aredis.zadd(keys.beats, {"ghost": 1})
    async with running_worker(app, aredis):
        await eventually(lambda: _missing(aredis.hget(keys.workers, "ghost")))
    assert await aredis.zscore(keys.beats, "ghost") is None


async def test_long_task_keeps_its_lease_through_heartbeats(bus: Bus, aredis: Redis) -> None:
    """A task longer than the lease runs once: heartbeats renew the lease."""
    app = App("shop")
    runs: list[int] = []

    @app.task()
    async def long(payload: int) -> None:
        runs.append(payload)
        await asyncio.sleep(0.8)

    ref = await bus.enqueue(app, "long", 1)
    async with running_worker(app, aredis, lease_s=0.3), running_worker(app, aredis, lease_s=0.3):
        await eventually(lambda: _state_is(bus, "shop", ref.id, TaskState.SUCCEEDED), 5)
    assert runs == [1]


async def test_run_in_process_calls_handler_without_redis() -> None:
    """App.run invokes the handler now, in this process, and returns its result."""
    app = App("shop")

    @app.task()
    async def total(payload: list[int], ctx: TaskContext) -> int:
        assert ctx.in_process
        assert ctx.attempt == 1
        return sum(payload)

    assert await app.run("total", [1, 2, 3]) == 6
    with pytest.raises(LookupError, match="no task 'nope'"):
        await app.run("nope")


async def test_worker_embeds_in_a_running_program(bus: Bus, aredis: Redis) -> None:
    """`async with Worker(...)` runs beside other coroutines and stops cleanly."""
    app = App("shop")
    done = asyncio.Event()

    @app.task()
    async def job(payload: int) -> None:
        done.set()

    async with Worker(app, aredis, lease_s=1, grace_s=1):
        await bus.enqueue(app, "job", 1)
        ticks = 0
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)
        assert ticks >= 0


async def _state_is(bus: Bus, app: str, task_id: str, state: TaskState) -> Any:
    info = await bus.get_task(app, task_id)
    return info if info is not None and info.state is state else None


async def _commands_processed(redis: Redis) -> int:
    info = await redis.info("stats")
    return int(info["total_commands_processed"])


async def _missing(value: Any) -> bool:
    return (await value) is None


async def test_burst_worker_runs_retries_that_are_due_at_once(bus: Bus, aredis: Redis) -> None:
    """A retry with no back-off is run before a burst worker exits."""
    app = App("shop")
    attempts: list[int] = []

    @app.task(max_attempts=3, backoff=[0])
    async def flaky(payload: int, ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError("not yet")

    ref = await bus.enqueue(app, "flaky", 1)
    await asyncio.wait_for(Worker(app, aredis, burst=True).run(), 10)
    assert attempts == [1, 2, 3]
    info = await bus.get_task("shop", ref.id)
    assert info is not None
    assert info.state is TaskState.SUCCEEDED


async def test_burst_worker_stops_promptly_with_a_long_lease(bus: Bus, aredis: Redis) -> None:
    """Exiting does not wait for a heartbeat interval (lease / 3)."""
    app = App("shop")

    @app.task()
    async def job(payload: int) -> None:
        return None

    await bus.enqueue(app, "job", 1)
    started = time.monotonic()
    await asyncio.wait_for(Worker(app, aredis, burst=True, lease_s=60).run(), 10)
    assert time.monotonic() - started < 1.0
