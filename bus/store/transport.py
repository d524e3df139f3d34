"""Sending script calls to Redis: today's hand-packed fast path, with fallbacks.

Calls are packed with hiredis (C) and written to a pooled connection as one
buffer, not sent through redis-py's ``execute_command`` or ``Pipeline``: the
asyncio client encodes every argument in Python (about 70 ``Encoder.encode``
calls for one published event) and adds a retry wrapper and metrics per call,
which cost more than the script itself (docs/benchmarks.md, issue 7). A
connection or timeout error on that path falls back to redis-py's pipeline,
whose retry policy then applies as before. Two idle connections per asyncio
pool are kept here between calls, because taking one from redis-py's pool and
giving it back (a lock and metrics hooks each way) cost about 15% of a
one-task enqueue. Synchronous calls take connections from a free list of
their own beside the pool for the same reason (:mod:`bus.store.own`).

This module owns :func:`run_calls` and :func:`run_calls_sync` (one pipelined
round trip for a batch of :data:`~bus.store.scripts.Call`, loading scripts the
server does not know), the spare-connection cache and the pipeline fallbacks.
Callers look these functions up on this module (``transport.run_calls``), so
a test that replaces one replaces it for every caller, the typed wrappers of
:mod:`bus.store.engine` and :mod:`bus.store.features` included.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.store import own
from bus.store.redis_errors import note_command
from bus.store.scripts import Call, Script

__all__ = ["run_calls", "run_calls_sync", "run_script"]


async def run_script(
    client: Redis, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run one script; load it first if the server does not know it.

    Args:
        client: The Redis client to run it on.
        script: The script.
        keys: The KEYS array, as the script's header lists them.
        args: The ARGV array, as the script's header lists them.
    """
    return (await run_calls(client, [(script, keys, args)]))[0]


async def run_calls(
    client: Redis, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """Run script calls in one pipelined round trip, loading scripts if needed.

    The calls must be safe to repeat: after a NOSCRIPT reply (a restarted
    server) the whole batch runs again once the scripts are loaded, and after
    a connection error redis-py's pipeline sends it again.

    Args:
        client: The client to send them with.
        calls: The script calls, in the order Redis runs them.
        raise_on_error: Raise the first call's error (the default), or return
            each error in its call's place.

    Raises:
        redis.exceptions.RedisError: A call failed for another reason (with
            ``raise_on_error``), or the connection failed.
    """
    packed = b"".join(script.pack(keys, args) for script, keys, args in calls)
    for attempt in range(2):
        results = await _send(client, packed, calls)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
            for script in {c[0].sha: c[0] for c in calls}.values():
                await client.script_load(script.source)
            continue
        break
    _note_errors(results, calls, raise_first=raise_on_error)
    return results


# pool -> idle connections taken from it, for the next script calls (two: a
# worker's claim and settle calls overlap). The pool still counts them as in
# use, so closing the client disconnects them too (they are then handed back
# on their next turn). Never kept from a blocking pool or a small one, where
# holding connections could starve other callers.
_SPARE: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_SPARE_PER_POOL = 2
_SPARE_MIN_POOL = 64
# Larger batches go through send_packed_command, which waits for the socket.
_DIRECT_WRITE_MAX = 64 * 1024


async def _send(client: Redis, packed: bytes, calls: Sequence[Call]) -> list[Any]:
    pool = getattr(client, "connection_pool", None)
    if pool is None or client.connection is not None:
        return await _send_pipeline(client, calls)  # a single-connection client
    spare = _SPARE.get(pool)
    conn = spare.pop() if spare else None
    if conn is None or not conn.is_connected:
        if conn is not None:
            await pool.release(conn)
        try:
            conn = await pool.get_connection()
        except (RedisConnectionError, RedisTimeoutError):
            return await _send_pipeline(client, calls)
    keep = False
    try:
        writer = getattr(conn, "_writer", None)
        if (
            writer is not None
            and len(packed) <= _DIRECT_WRITE_MAX
            and not conn.health_check_interval
        ):
            # send_packed_command wraps every write in asyncio.wait_for when the
            # client has a socket timeout (redis-py's default: 5 s), a task and two
            # loop turns per call; a small write is buffered by the transport at
            # once, and the reply read below still runs under the timeout.
            writer.write(packed)
        else:
            await conn.send_packed_command([packed])
        results = []
        for _ in calls:
            try:
                results.append(await conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        keep = len(spare or ()) < _SPARE_PER_POOL and _may_keep(pool)
        return results
    except (RedisConnectionError, RedisTimeoutError):
        pass  # redis-py closed the connection; its pipeline reconnects and retries
    except BaseException:
        # Cancelled or failed mid-exchange: replies may still be unread.
        await conn.disconnect(nowait=True)
        raise
    finally:
        if keep:
            _SPARE.setdefault(pool, []).append(conn)
        else:
            await pool.release(conn)
    return await _send_pipeline(client, calls)


def _may_keep(pool: Any) -> bool:
    return (
        not isinstance(pool, BlockingConnectionPool)
        and getattr(pool, "max_connections", 0) >= _SPARE_MIN_POOL
    )


async def _send_pipeline(client: Redis, calls: Sequence[Call]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def run_calls_sync(
    client: SyncRedis, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """Like :func:`run_calls`, for synchronous callers."""
    packed = b"".join(script.pack(keys, args) for script, keys, args in calls)
    for attempt in range(2):
        results = _send_sync(client, packed, calls)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
            for script in {c[0].sha: c[0] for c in calls}.values():
                client.script_load(script.source)
            continue
        break
    _note_errors(results, calls, raise_first=raise_on_error)
    return results


def _note_errors(results: Sequence[Any], calls: Sequence[Call], *, raise_first: bool) -> None:
    for result, (script, keys, _args) in zip(results, calls, strict=False):
        if isinstance(result, Exception):
            # The reply names neither the script nor the key an ACL refused.
            note_command(result, f"EVALSHA {script.name}.lua", keys)
            if raise_first:
                raise result


def _send_sync(client: SyncRedis, packed: bytes, calls: Sequence[Call]) -> list[Any]:
    conn = own.take(client)
    pool = None
    if conn is None:
        pool = getattr(client, "connection_pool", None)
        if pool is None or client.connection is not None:
            return _send_pipeline_sync(client, calls)
        try:
            conn = pool.get_connection()
        except (RedisConnectionError, RedisTimeoutError):
            return _send_pipeline_sync(client, calls)
    done = False
    try:
        conn.send_packed_command([packed])
        results = []
        for _ in calls:
            try:
                results.append(conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        done = True
        return results
    except (RedisConnectionError, RedisTimeoutError):
        pass  # as in _send
    except BaseException:
        conn.disconnect()
        raise
    finally:
        if pool is not None:
            pool.release(conn)
        elif done:
            own.give_back(client, conn)
    return _send_pipeline_sync(client, calls)


def _send_pipeline_sync(client: SyncRedis, calls: Sequence[Call]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))
