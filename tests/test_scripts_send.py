"""Tests of how bus.store.transport sends script calls: packed by hand, with fallbacks."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import pytest
import redis
import redis.asyncio
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import ResponseError

from bus.client import Bus
from bus.store import engine, own, scripts, transport
from bus.store.keys import AppKeys
from tests.redis_server import MakeRedisServer

KEYS = AppKeys("bus", "shop")
T0 = 1_700_000_000_000


def _task(task_id: str) -> engine.NewTask:
    return engine.NewTask(task_id, b'{"id":"%s"}' % task_id.encode(), 3, 0)


async def test_a_flushed_script_cache_is_loaded_again(aredis: redis.asyncio.Redis) -> None:
    """After SCRIPT FLUSH (a restarted server) a call loads its script and runs once."""
    await engine.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.script_flush()
    assert await engine.enqueue(aredis, KEYS, "default", T0, [_task("b")]) == [True]
    assert await aredis.lrange(KEYS.queue("default").ready, 0, -1) == [b"b", b"a"]


async def test_a_script_error_is_raised_and_the_connection_stays_usable(
    aredis: redis.asyncio.Redis,
) -> None:
    """A Lua error comes back as ResponseError; the next calls on the client still work."""
    await aredis.set(KEYS.state, b"not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await engine.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.delete(KEYS.state)
    assert await engine.enqueue(aredis, KEYS, "default", T0, [_task("a")]) == [True]
    assert await aredis.ping()


async def test_calls_work_after_the_pool_was_disconnected(aredis: redis.asyncio.Redis) -> None:
    """A kept connection that the pool closed (client closed, server gone) is replaced."""
    await engine.enqueue(aredis, KEYS, "default", T0, [_task("a")])
    await aredis.connection_pool.disconnect()
    assert await engine.enqueue(aredis, KEYS, "default", T0, [_task("b")]) == [True]
    await aredis.client_kill_filter(_type="normal", skipme=False)
    assert await engine.enqueue(aredis, KEYS, "default", T0, [_task("c")]) == [True]


async def test_pipelined_calls_return_one_reply_each(aredis: redis.asyncio.Redis) -> None:
    """run_calls sends several calls in one write and returns their replies in order."""
    calls = [
        engine.enqueue_call(KEYS, "default", T0, [_task("a"), _task("b")]),
        engine.enqueue_call(KEYS, "low", T0, [_task("c")]),
        engine.enqueue_call(KEYS, "default", T0, [_task("a")]),
    ]
    assert await transport.run_calls(aredis, calls) == [[1, 1], [1], [0]]


def test_sync_calls_match_async_ones(redis_url: str) -> None:
    """run_calls_sync sends the same protocol and survives a killed connection."""
    client = redis.Redis.from_url(redis_url)
    try:
        call = engine.enqueue_call(KEYS, "default", T0, [_task("a")])
        assert transport.run_calls_sync(client, [call]) == [[1]]
        client.client_kill_filter(_type="normal", skipme=False)
        assert transport.run_calls_sync(client, [call]) == [[0]]
    finally:
        client.close()


NAME = "own-test"


def _client_count(observer: redis.Redis) -> int:
    """Connections of the clients under test (named NAME), as the server lists them."""
    return sum(c["name"] == NAME for c in observer.client_list(_type="normal"))


def _settled_count(observer: redis.Redis, expected: int) -> int:
    """That count once the server has seen closed sockets go (or after 5 s)."""
    deadline = time.monotonic() + 5
    while (count := _client_count(observer)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def _connections_received(client: redis.Redis) -> int:
    return int(client.info("stats")["total_connections_received"])


def _enqueue_one(client: redis.Redis, task_id: str) -> None:
    call = engine.enqueue_call(KEYS, "default", T0, [_task(task_id)])
    assert transport.run_calls_sync(client, [call]) == [[1]]


def test_sync_calls_reuse_one_connection_beside_the_pool(redis_url: str) -> None:
    """One caller's sync calls share one connection, which the pool neither made nor holds."""
    client = redis.Redis.from_url(redis_url, client_name=NAME)
    observer = redis.Redis.from_url(redis_url)
    observer.script_load(scripts.ALL_SCRIPTS[0].source)  # no NOSCRIPT round on the pool
    try:
        for i in range(20):
            _enqueue_one(client, f"t{i}")
        assert _client_count(observer) == 1
        pool = client.connection_pool
        assert not pool._in_use_connections
        assert not pool._available_connections
    finally:
        own.close(client)
        client.close()
        observer.close()


def test_threads_that_come_and_go_share_the_connections(redis_url: str) -> None:
    """Short-lived threads reuse the idle connections: no connect per thread, none left over."""
    client = redis.Redis.from_url(redis_url)
    observer = redis.Redis.from_url(redis_url)
    try:
        _enqueue_one(client, "warm")
        connects = _connections_received(observer)
        for n in range(30):  # one after another, as a thread-per-request server runs them
            thread = threading.Thread(target=_enqueue_one, args=(client, f"seq{n}"))
            thread.start()
            thread.join()
        assert _connections_received(observer) == connects
        barrier = threading.Barrier(8)

        def together(n: int) -> None:
            barrier.wait()
            for k in range(20):
                _enqueue_one(client, f"par{n}-{k}")

        threads = [threading.Thread(target=together, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _connections_received(observer) - connects <= 8
        assert observer.llen(KEYS.queue("default").ready) == 1 + 30 + 8 * 20
    finally:
        own.close(client)
        client.close()
        observer.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_idle_connections_go_with_their_pool(redis_url: str, protocol: int) -> None:
    """The free list lives on the pool: a client that is dropped leaves nothing behind."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    _enqueue_one(client, "a")
    pool_ref = weakref.ref(client.connection_pool)
    del client
    gc.collect()
    assert pool_ref() is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_dropped_sync_client_closes_its_sockets_at_once(redis_url: str, protocol: int) -> None:
    """No reference cycle holds a dropped blocking client: its pool goes without the cyclic GC."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    _enqueue_one(client, "a")
    transport.sync_transport_for(client).commands([("PING",)])
    pool_ref = weakref.ref(client.connection_pool)
    gc.disable()
    try:
        del client
        assert pool_ref() is None
    finally:
        gc.enable()


async def test_clients_sharing_a_pool_keep_two_spare_connections_in_all(redis_url: str) -> None:
    """The spare connections belong to the pool: clients made and dropped on it hold none."""
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, max_connections=100)
    try:
        for i in range(60):
            client = redis.asyncio.Redis(connection_pool=pool)
            call = engine.enqueue_call(KEYS, "default", T0, [_task(f"t{i}")])
            assert await transport.run_calls(client, [call]) == [[1]]
            del client
        assert len(pool._in_use_connections) <= 2
    finally:
        await pool.disconnect()


def test_close_ends_the_idle_connections_and_later_calls_connect_again(redis_url: str) -> None:
    """Bus.close_sync closes the idle connections even of a client it was given."""
    client = redis.Redis.from_url(redis_url, client_name=NAME)
    observer = redis.Redis.from_url(redis_url)
    bus = Bus(redis=redis.asyncio.Redis.from_url(redis_url), sync_redis=client)
    try:
        assert bus.enqueue_sync("shop", "a").added  # loads the script (on a pool connection)
        client.connection_pool.disconnect()
        assert _settled_count(observer, 1) == 1  # the idle script connection
        bus.close_sync()
        assert _settled_count(observer, 0) == 0
        assert bus.enqueue_sync("shop", "b").added
        assert _client_count(observer) == 1
    finally:
        bus.close_sync()
        client.close()
        observer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_use_its_parent_s_connection(redis_url: str) -> None:
    """A forked child opens its own connection; the parent's keeps working."""
    client = redis.Redis.from_url(redis_url)
    try:
        _enqueue_one(client, "before")
        parent_conn = own.take(client)
        own.give_back(client, parent_conn)
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if it used a connection of its own
            try:
                conn = own.take(client)
                ok = conn is not parent_conn
                own.give_back(client, conn)
                _enqueue_one(client, "child")
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        _enqueue_one(client, "after")
        assert own.take(client) is parent_conn
        assert client.lrange(KEYS.queue("default").ready, 0, -1) == [b"after", b"child", b"before"]
    finally:
        own.close(client)
        client.close()


@pytest.mark.parametrize("kind", ["blocking", "single", "resp3", "credentials"])
def test_clients_whose_connections_redis_py_manages_keep_the_pool(
    redis_url: str, kind: str, make_redis_server: MakeRedisServer
) -> None:
    """Blocking pools (a chosen bound), single-connection clients, RESP3 maintenance
    notifications and credential providers keep redis-py's own way; calls still work."""
    if kind == "blocking":
        client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url))
    elif kind == "single":
        client = redis.Redis.from_url(redis_url, single_connection_client=True)
    elif kind == "resp3":
        # redis-py adds its maintenance handler to TCP clients, not unix-socket ones.
        client = redis.Redis.from_url(make_redis_server(tcp=True).tcp_url, protocol=3)
    else:
        client = redis.Redis.from_url(
            redis_url, credential_provider=UsernamePasswordCredentialProvider()
        )
    try:
        if kind == "resp3" and not client.connection_pool.connection_kwargs.get(
            "maint_notifications_pool_handler"
        ):
            pytest.skip("redis-py gave this client no maintenance-notification handler")
        assert own.take(client) is None
        call = engine.enqueue_call(KEYS, "default", T0, [_task("a")])
        assert transport.run_calls_sync(client, [call]) == [[1]]
        assert transport.run_calls_sync(client, [call]) == [[0]]
    finally:
        client.close()


def test_included_helpers_are_expanded_into_each_script() -> None:
    """No include line reaches the server; the SHA1 is that of the text the server runs."""
    import hashlib

    every = [v for v in vars(scripts).values() if isinstance(v, scripts.Script)]
    assert len(every) == 13
    users = {s.name for s in every if "local function state_or_nil" in s.source}
    assert users == {"purge", "release", "renew", "replay", "settle"}
    assert {s.name for s in every if "local function add_error" in s.source} == {
        "claim",
        "settle",
    }
    for script in every:
        assert not any(line.startswith("--! include") for line in script.source.splitlines())
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()


def test_an_include_that_does_not_exist_is_named() -> None:
    """A typo in an include line fails at import with the script and the file, not on the server."""
    with pytest.raises(FileNotFoundError, match=r"claim\.lua includes nope\.lua"):
        scripts._expand("--! include nope.lua\nreturn 1\n", "claim")
