"""The worker's upkeep: heartbeats (leases, status, hooks) and shutdown.

Functions of a :class:`~bus.worker.loop.Worker`, kept apart from the claim and
run loop so that each module stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING

import orjson
import structlog

from bus.core import clock
from bus.store import engine
from bus.store.engine import Held
from bus.store.types import StoreError

if TYPE_CHECKING:
    from bus.worker.loop import Worker

__all__ = ["beat", "hand_back", "heartbeat_loop", "shutdown", "status_record"]

log = structlog.get_logger("bus.worker")

# How long shutdown waits for cancelled handlers before handing their tasks back.
SHUTDOWN_CANCEL_WAIT_S = 5.0


def status_record(worker: Worker) -> bytes:
    """The worker's status record, as stored in the app's workers hash."""
    return orjson.dumps(
        {
            "id": worker.id,
            "app": worker.app.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": worker.queues,
            "concurrency": worker.concurrency,
            "started_ms": worker.counters.started_ms,
            "beat_ms": clock.now_ms(),
            "running": list(worker._running)[:50],
            "running_count": len(worker._running),
            "prefetched": len(worker._ready),
            "processed": worker.counters.processed,
            "failed": worker.counters.failed,
            "dead": worker.counters.dead,
        }
    )


async def heartbeat_loop(worker: Worker) -> None:
    """Renew leases, write the status record and run beat hooks until shutdown."""
    # Runs until shutdown sets _beats_done: leases of running tasks must
    # still be renewed while they finish during the grace period. It ends
    # by an event, not by cancellation, because a cancellation that lands
    # inside a redis-py call can be absorbed by it.
    # A reconnect sets _beat_soon (and shutdown sets it with _beats_done) to
    # beat before the interval is over.
    interval = worker.lease_ms / 3000
    while not worker._beats_done.is_set():
        worker._beat_soon.clear()
        try:
            await beat(worker)
        except StoreError as exc:
            log.warning("heartbeat_failed", app=worker.app.name, worker=worker.id, error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker._beat_soon.wait(), interval)


async def beat(worker: Worker) -> None:
    """One heartbeat: renew held leases, write status, reap dead workers, hooks."""
    now = clock.now_ms()
    held = list(worker._unsettled.values())
    if held:
        lost = await engine.renew(
            worker.redis, worker.keys, held, now_ms=now, lease_ms=worker.lease_ms
        )
        tokens = {h.id: h.token for h in held}
        for task_id in lost:
            worker._lose(task_id, tokens[task_id])
    reaped = await engine.beat(
        worker.redis,
        worker.keys,
        worker.id,
        status_record(worker),
        now_ms=now,
        reap_after_ms=max(3 * worker.lease_ms, 30_000),
    )
    if reaped:
        log.info("workers_reaped", app=worker.app.name, workers=reaped)
    await worker._refresh_queues()
    await worker._run_hooks("beat_hook_failed", worker.on_beat)


async def shutdown(worker: Worker, settler: asyncio.Task[None], beater: asyncio.Task[None]) -> None:
    """Hand back the tasks not started, drain within the grace period, hand
    back the rest, settle, leave."""
    if worker._ready:
        # release.lua pushes each onto the end claims take from: newest first
        # keeps the oldest next in line.
        ready = [Held(c.id, c.token, c.queue) for c in reversed(worker._ready.values())]
        worker._ready.clear()
        await hand_back(worker, ready)
    tasks = [r.task for r in worker._running.values() if r.task is not None]
    if tasks:
        log.info("worker_draining", app=worker.app.name, running=len(tasks), grace_s=worker.grace_s)
        await asyncio.wait(tasks, timeout=worker.grace_s)
    leftover = [r for r in worker._running.values() if r.task is not None]
    for running in leftover:
        running.released = True
        running.task.cancel()  # type: ignore[union-attr]
    if leftover:
        cancelled = [r.task for r in leftover if r.task is not None]
        # Bounded: a handler that swallows its cancellation must not keep the
        # worker from leaving; its task is handed back all the same.
        done, stuck = await asyncio.wait(cancelled, timeout=SHUTDOWN_CANCEL_WAIT_S)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the attempt already recorded it
        if stuck:
            log.error(
                "handler_ignored_cancellation",
                app=worker.app.name,
                count=len(stuck),
                reason="handlers still running at shutdown; their tasks are handed back",
            )
        await hand_back(worker, [r.held for r in leftover])
    worker._closing = True
    worker._settle_wanted.set()
    try:
        await asyncio.wait_for(settler, timeout=max(worker.grace_s, 5.0))
    except TimeoutError:
        log.error("settle_unfinished", app=worker.app.name, outcomes=len(worker._outcomes))
    worker._beats_done.set()
    worker._beat_soon.set()
    try:
        await asyncio.wait_for(beater, timeout=5.0)
    except TimeoutError:
        log.error("heartbeat_unfinished", app=worker.app.name, worker=worker.id)
    try:
        await worker.node.leave(clock.now_ms())
        await engine.beat(
            worker.redis,
            worker.keys,
            worker.id,
            b"",
            now_ms=clock.now_ms(),
            reap_after_ms=max(3 * worker.lease_ms, 30_000),
        )
        await worker.redis.delete(worker._own_wake)
    except StoreError as exc:
        log.warning("status_not_removed", app=worker.app.name, error=str(exc))
    worker._executor.shutdown(wait=False, cancel_futures=True)
    log.info(
        "worker_stopped",
        app=worker.app.name,
        worker=worker.id,
        processed=worker.counters.processed,
        failed=worker.counters.failed,
    )


async def hand_back(worker: Worker, held: list[Held]) -> None:
    """Release held tasks to the front of their queues (retrying briefly)."""
    for unsettled in held:
        worker._forget(unsettled.id, unsettled.token)
    for _ in range(20):
        try:
            count = await engine.release(worker.redis, worker.keys, held, now_ms=clock.now_ms())
            log.info("tasks_handed_back", app=worker.app.name, count=count)
            return
        except StoreError as exc:
            await asyncio.sleep(0.1)
            last = exc
    log.error(
        "hand_back_failed",
        app=worker.app.name,
        tasks=[h.id for h in held],
        error=str(last),
        note="the tasks are recovered when their leases expire",
    )
