"""Helpers for engine tests: waiting on conditions and task states, running in-process workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from bus import App, TaskInfo, TaskState, Worker
from bus.client import Bus
from bus.core import clock
from bus.store import engine
from bus.store.engine import ClaimedTask
from bus.store.keys import AppKeys


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 5.0, what: str = ""
) -> Any:
    """Await ``check()`` every 5 ms until it is truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        await asyncio.sleep(0.005)


async def task_in_state(bus: Bus, app: str, task_id: str, state: TaskState) -> TaskInfo:
    """Wait until the task is in ``state``; return it."""

    async def check() -> TaskInfo | None:
        info = await bus.get_task(app, task_id)
        return info if info is not None and info.state is state else None

    found: TaskInfo = await eventually(check, what=f"{task_id} to be {state.value}")
    return found


@asynccontextmanager
async def running_worker(app: App, redis: Redis, **options: Any) -> AsyncIterator[Worker]:
    """Run a worker in this event loop for the duration of the block."""
    options.setdefault("lease_s", 2.0)
    options.setdefault("grace_s", 2.0)
    worker = Worker(app, redis, **options)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def steal_lease(
    redis: Redis, keys: AppKeys, task_id: str, queue: str = "default"
) -> ClaimedTask:
    """Let a held task's lease "expire" and have another worker's claim recover it.

    Returns the thief's claim of it: the holder's next renew finds its lease lost.
    """
    changed = await redis.zadd(keys.queue(queue).inflight, {task_id: 1}, xx=True, ch=True)
    assert changed == 1, f"{task_id} is not in flight"
    result = await engine.claim(
        redis,
        keys,
        [queue],
        now_ms=clock.now_ms(),
        lease_ms=30_000,
        max_tasks=1,
        worker_id="thief",
    )
    assert [t.id for t in result.tasks] == [task_id]
    return result.tasks[0]
