"""The Bus object: one connection to Redis and everything a producer does with it.

A :class:`Bus` is built once and passed around (no hidden globals). It enqueues
tasks by name, reads tasks back by id, and (see :mod:`bus.publish`) publishes
events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bus.app import App
from bus.enqueue import EnqueueItem, TaskRef, enqueue_items
from bus.keys import AppKeys, validate_app_name
from bus.task import TaskInfo

__all__ = ["Bus"]


class Bus:
    """A handle on the bus: enqueue, inspect, publish.

    Args:
        redis: An asyncio Redis client with ``decode_responses=False``.
        prefix: The key prefix (``BUS_PREFIX``).
    """

    def __init__(self, redis: Redis, *, prefix: str = "bus") -> None:
        self.redis = redis
        self.prefix = prefix

    async def enqueue(
        self,
        app: App | str,
        name: str,
        payload: Any = None,
        *,
        id: str | None = None,
        queue: str | None = None,
        run_at_ms: int | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        backoff: Any = None,
    ) -> TaskRef:
        """Enqueue one task by name, durably; a known ``id`` is a no-op.

        Args:
            app: The app whose worker runs the task (an :class:`App` lends its
                declared options as defaults).
            name: The task name.
            payload: A JSON-serialisable payload.
            id: Optional caller-given id, for idempotent enqueue.
            queue: The queue (default: the declaration's, else ``default``).
            run_at_ms: Due time in epoch milliseconds.
            delay_s: Due this many seconds from now.
            max_attempts: Attempts before the task is dead.
            timeout_s: Per-attempt timeout.
            backoff: Back-off spec.

        Returns:
            The task's reference; ``added`` is False if the id was known.

        Raises:
            ValueError: An option or name is invalid (nothing is written).
            TypeError: The payload is not JSON-serialisable (nothing is written).
        """
        item = EnqueueItem(
            name=name,
            payload=payload,
            id=id,
            queue=queue,
            run_at_ms=run_at_ms,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            backoff=backoff,
        )
        return (await enqueue_items(self.redis, self.prefix, app, [item]))[0]

    async def enqueue_many(self, app: App | str, items: Sequence[EnqueueItem]) -> list[TaskRef]:
        """Enqueue many tasks of one app in one round trip; all or nothing on bad input."""
        return await enqueue_items(self.redis, self.prefix, app, items)

    async def get_task(self, app: str, task_id: str) -> TaskInfo | None:
        """Read a task by id: record, state and errors; None if unknown or expired."""
        keys = AppKeys(self.prefix, validate_app_name(app))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.state, task_id)
            pipe.hget(keys.tasks, task_id)
            pipe.hget(keys.errors, task_id)
            state, record, errors = await pipe.execute()
        if state is None:
            return None
        return TaskInfo.from_raw(task_id, state, record, errors)

    async def aclose(self) -> None:
        """Close the Redis client."""
        await self.redis.aclose()
