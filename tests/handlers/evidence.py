"""Handlers for worker-process tests: each leaves evidence of its runs in Redis.

Tests copy this file into a temporary app directory as ``handlers.py`` and
point ``app.toml`` at one of the functions (``handlers:record`` and so on); the
worker subprocess imports it from there, so it uses nothing from ``tests``.
Each process keeps one client on ``BUS_REDIS_URL``, the test's private server.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio

from bus import TaskContext

_client: redis.asyncio.Redis | None = None


def _redis() -> redis.asyncio.Redis:
    global _client
    if _client is None:
        _client = redis.asyncio.Redis.from_url(os.environ["BUS_REDIS_URL"])
    return _client


async def record(event: Any, ctx: TaskContext) -> None:
    """Count every delivery per app and event key (``test:got:<app>``)."""
    await _redis().hincrby(f"test:got:{ctx.app}", event.key, 1)


async def note(payload: Any, ctx: TaskContext) -> None:
    """Add ``task id|queue|pid`` to ``test:runs``; hold 60 s on queue ``hold``."""
    await _redis().rpush("test:runs", f"{ctx.task_id}|{ctx.queue}|{os.getpid()}")
    hold = payload.get("hold") if isinstance(payload, dict) else None
    if hold == ctx.queue:
        await asyncio.sleep(60)


async def tick(payload: Any, ctx: TaskContext) -> None:
    """Add ``task id|attempt|pid`` to ``test:ticks``; hold 60 s if ``test:hold-next``."""
    await _redis().rpush("test:ticks", f"{ctx.task_id}|{ctx.attempt}|{os.getpid()}")
    if await _redis().getdel("test:hold-next"):
        await asyncio.sleep(60)
