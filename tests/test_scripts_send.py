"""Tests of how bus.scripts sends script calls: packed by hand, with fallbacks."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from bus import scripts
from bus.keys import AppKeys

KEYS = AppKeys("bus", "shop")
T0 = 1_700_000_000_000


def _task(task_id: str) -> scripts.NewTask:
    return scripts.NewTask(task_id, b'{"id":"%s"}' % task_id.encode(), 3, 0)


async def test_a_flushed_script_cache_is_loaded_again(aredis: redis.asyncio.Redis) -> None:
    """After SCRIPT FLUSH (a restarted server) a call loads its script and runs once."""
    await scripts.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.script_flush()
    assert await scripts.enqueue(aredis, KEYS, "default", T0, [_task("b")]) == [True]
    assert await aredis.lrange(KEYS.queue("default").ready, 0, -1) == [b"b", b"a"]


async def test_a_script_error_is_raised_and_the_connection_stays_usable(
    aredis: redis.asyncio.Redis,
) -> None:
    """A Lua error comes back as ResponseError; the next calls on the client still work."""
    await aredis.set(KEYS.state, b"not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await scripts.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.delete(KEYS.state)
    assert await scripts.enqueue(aredis, KEYS, "default", T0, [_task("a")]) == [True]
    assert await aredis.ping()


async def test_calls_work_after_the_pool_was_disconnected(aredis: redis.asyncio.Redis) -> None:
    """A kept connection that the pool closed (client closed, server gone) is replaced."""
    await scripts.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.connection_pool.disconnect()
    assert await scripts.enqueue(aredis, KEYS, "default", T0, [_task("b")]) == [True]
    await aredis.client_kill_filter(_type="normal", skipme=False)
    assert await scripts.enqueue(aredis, KEYS, "default", T0, [_task("c")]) == [True]


async def test_pipelined_calls_return_one_reply_each(aredis: redis.asyncio.Redis) -> None:
    """run_calls sends several calls in one write and returns their replies in order."""
    calls = [
        scripts.enqueue_call(KEYS, "default", T0, [_task("a"), _task("b")]),
        scripts.enqueue_call(KEYS, "low", T0, [_task("c")]),
        scripts.enqueue_call(KEYS, "default", T0, [_task("a")]),
    ]
    assert await scripts.run_calls(aredis, calls) == [[1, 1], [1], [0]]


def test_sync_calls_match_async_ones(redis_url: str) -> None:
    """run_calls_sync sends the same protocol and survives a killed connection."""
    client = redis.Redis.from_url(redis_url)
    try:
        call = scripts.enqueue_call(KEYS, "default", T0, [_task("a")])
        assert scripts.run_calls_sync(client, [call]) == [[1]]
        client.client_kill_filter(_type="normal", skipme=False)
        assert scripts.run_calls_sync(client, [call]) == [[0]]
    finally:
        client.close()
