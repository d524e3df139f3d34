"""Tests of how bus.scripts sends script calls: packed by hand, with fallbacks."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from bus import scripts
from bus.client import Bus
from bus.keys import AppKeys
from bus.scripts import own

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


def _client_count(client: redis.Redis) -> int:
    return len(client.client_list(_type="normal"))


def test_sync_calls_use_one_connection_of_the_thread_s_own(redis_url: str) -> None:
    """Repeated sync calls in one thread reuse one connection the pool does not count."""
    client = redis.Redis.from_url(redis_url)
    observer = redis.Redis.from_url(redis_url)
    try:
        before = _client_count(observer)
        for i in range(20):
            call = scripts.enqueue_call(KEYS, "default", T0, [_task(f"t{i}")])
            assert scripts.run_calls_sync(client, [call]) == [[1]]
        assert _client_count(observer) == before + 1
        pool = client.connection_pool
        assert not pool._in_use_connections  # nothing checked out and left there
        assert own.connection(client) is own.connection(client)
    finally:
        own.close(client)
        client.close()
        observer.close()


def test_threads_that_end_leave_no_connection_open(redis_url: str) -> None:
    """Each thread gets its own connection; it is closed when the thread is gone."""
    client = redis.Redis.from_url(redis_url)
    observer = redis.Redis.from_url(redis_url)
    seen: list[object] = []

    def work(n: int) -> None:
        call = scripts.enqueue_call(KEYS, "default", T0, [_task(f"th{n}")])
        assert scripts.run_calls_sync(client, [call]) == [[1]]
        seen.append(own.connection(client))

    try:
        before = _client_count(observer)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(map(id, seen))) == 8
        seen.clear()
        gc.collect()
        deadline = time.monotonic() + 5
        while _client_count(observer) > before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _client_count(observer) == before
        assert observer.llen(KEYS.queue("default").ready) == 8
    finally:
        client.close()
        observer.close()


def test_close_ends_the_connections_and_later_calls_connect_again(redis_url: str) -> None:
    """Bus.close_sync closes the threads' own connections even of a client it was given."""
    client = redis.Redis.from_url(redis_url)
    observer = redis.Redis.from_url(redis_url)
    bus = Bus(redis=redis.asyncio.Redis.from_url(redis_url), sync_redis=client)
    try:
        before = _client_count(observer)
        assert bus.enqueue_sync("shop", "a").added
        assert _client_count(observer) == before + 1
        bus.close_sync()
        assert _client_count(observer) == before
        assert bus.enqueue_sync("shop", "b").added
        assert _client_count(observer) == before + 1
    finally:
        bus.close_sync()
        client.close()
        observer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_share_its_parent_s_connection(redis_url: str) -> None:
    """After a fork the child opens its own connection; the parent's keeps working."""
    client = redis.Redis.from_url(redis_url)
    try:
        parent_conn = own.connection(client)
        call = scripts.enqueue_call(KEYS, "default", T0, [_task("before")])
        assert scripts.run_calls_sync(client, [call]) == [[1]]
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if it used a connection of its own
            try:
                ok = own.connection(client) is not parent_conn
                call = scripts.enqueue_call(KEYS, "default", T0, [_task("child")])
                ok = ok and scripts.run_calls_sync(client, [call]) == [[1]]
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert own.connection(client) is parent_conn
        call = scripts.enqueue_call(KEYS, "default", T0, [_task("after")])
        assert scripts.run_calls_sync(client, [call]) == [[1]]
        assert client.lrange(KEYS.queue("default").ready, 0, -1) == [b"after", b"child", b"before"]
    finally:
        own.close(client)
        client.close()


@pytest.mark.parametrize("kind", ["blocking", "single"])
def test_pools_that_bound_or_pin_connections_are_left_alone(redis_url: str, kind: str) -> None:
    """A blocking pool (a chosen bound) and a single-connection client keep their own way."""
    if kind == "blocking":
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url))
    else:
        client = redis.Redis.from_url(redis_url, single_connection_client=True)
    try:
        assert own.connection(client) is None
        call = scripts.enqueue_call(KEYS, "default", T0, [_task("a")])
        assert scripts.run_calls_sync(client, [call]) == [[1]]
        assert scripts.run_calls_sync(client, [call]) == [[0]]
    finally:
        client.close()
