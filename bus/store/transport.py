"""The transport: what the engine needs from a Redis deployment, and the single server's fast path.

**The seam.** Everything above the transport speaks in script calls
(:data:`~bus.store.scripts.Call`) and plain commands; only the transport knows
how a deployment carries them. :class:`Transport` (asyncio) and
:class:`SyncTransport` (blocking) list the three exchanges the engine and the
bus need:

* ``run_calls``: a batch of script calls in one round trip, replies in order,
  loading scripts the server does not know;
* ``wait_then_run`` (asyncio only): block on wake keys (``BLPOP``) with one
  call queued behind the wait on the same connection, so the server runs it the
  moment the wait ends (a woken worker's claim, :func:`bus.store.engine.claim_when_woken`);
* ``commands``: plain commands pipelined (the reads of :mod:`bus.store.reads`
  and the few writes that are not scripts), optionally as one ``MULTI``.

Callers get a client's transport from :func:`transport_for` (built once and
kept on the asyncio client) or :func:`sync_transport_for` (built per call: it
holds nothing but the client); the one place that picks a class for an
asyncio client is :func:`_build` (the cluster issue adds a ``ClusterTransport``
there, and its blocking twin in :func:`sync_transport_for`: slot-grouped
pipelines per node). The module-level
:func:`run_calls`, :func:`run_calls_sync` and :func:`run_script` are what the
typed wrappers of :mod:`bus.store.engine` and :mod:`bus.store.features` and
the publisher call; they look the transport up and return its coroutine (no
extra await). Callers look them up on this module (``transport.run_calls``),
so a test that replaces one replaces it for every caller.

**RedisTransport**, one server (or a Sentinel-managed primary): calls are
packed with hiredis (C) and written to a pooled connection as one buffer, not
sent through redis-py's ``execute_command`` or ``Pipeline``: the asyncio
client encodes every argument in Python (about 70 ``Encoder.encode`` calls for
one published event) and adds a retry wrapper and metrics per call, which cost
more than the script itself (docs/benchmarks.md, issue 7). A connection or
timeout error on that path falls back to redis-py's pipeline, whose retry
policy then applies as before. Two idle connections of a pool are kept beside
it between calls (shared by every client of that pool), because taking one from redis-py's pool
and giving it back (a lock and metrics hooks each way) cost about 15% of a
one-task enqueue. Synchronous calls take connections from a free list of
their own beside the pool for the same reason (:mod:`bus.store.own`). A
single-connection client (``client.connection`` set) always goes through
redis-py's pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import hiredis
from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.store import own
from bus.store.redis_errors import note_command
from bus.store.scripts import Call, Script

__all__ = [
    "Command",
    "RedisTransport",
    "SyncRedisTransport",
    "SyncTransport",
    "Transport",
    "run_calls",
    "run_calls_sync",
    "run_script",
    "sync_transport_for",
    "transport_for",
]

#: A plain command: its name and arguments, e.g. ``("HGET", key, field)``.
#: Replies are parsed as redis-py parses that command's (``HGETALL``: a dict).
Command = tuple[Any, ...]


class Transport(Protocol):
    """What the engine needs from a Redis deployment, for asyncio callers."""

    async def run_calls(self, calls: Sequence[Call], *, raise_on_error: bool = True) -> list[Any]:
        """Run script calls in one round trip, in order, loading unknown scripts.

        The calls must be safe to repeat: after a NOSCRIPT reply (a restarted
        server) the whole batch runs again once the scripts are loaded, and
        after a connection error it may be sent again.

        Args:
            calls: The script calls, in the order Redis runs them.
            raise_on_error: Raise the first call's error (the default), or
                return each error in its call's place.

        Raises:
            redis.exceptions.RedisError: A call failed for another reason
                (with ``raise_on_error``), or the connection failed.
        """
        ...

    async def wait_then_run(
        self, wake_keys: Sequence[str], block_s: int, call: Call
    ) -> tuple[bytes | None, Any]:
        """Block until one of ``wake_keys`` has an item (``BLPOP``), then run ``call``.

        Returns:
            The key popped (None when ``block_s`` passed) and the call's reply,
            or None in its place when the call did not run (the server did not
            know the script, or this client cannot queue a call behind a wait):
            run it again with :meth:`run_calls`.

        Raises:
            redis.exceptions.RedisError: The connection failed or the server
                refused a command.
        """
        ...

    async def commands(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        """Send plain commands pipelined in one round trip; return their replies.

        Args:
            commands: The commands, in order.
            atomic: Wrap them in ``MULTI``/``EXEC`` (their keys must share a slot).

        Raises:
            redis.exceptions.RedisError: A command failed or the connection did.
        """
        ...


class SyncTransport(Protocol):
    """What the blocking side needs (publish and enqueue from sync code, the CLI)."""

    def run_calls(self, calls: Sequence[Call], *, raise_on_error: bool = True) -> list[Any]:
        """Like :meth:`Transport.run_calls`."""
        ...

    def commands(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        """Like :meth:`Transport.commands`."""
        ...


# Where a client keeps its transport (redis-py clients have a __dict__).
_ATTR = "_taskbus_transport"


def transport_for(client: Redis) -> Transport:
    """The transport of an asyncio client, built on first use and kept on it."""
    found: Transport | None = getattr(client, _ATTR, None)
    if found is None:
        found = _build(client)
        setattr(client, _ATTR, found)
    return found


def sync_transport_for(client: SyncRedis) -> SyncTransport:
    """The transport of a blocking client.

    Built per call, not kept on the client: it holds nothing but the client,
    and kept there it would make a reference cycle, so a blocking client that
    is dropped without ``close()`` would keep its sockets open until Python's
    cyclic collector ran instead of closing them at once.
    """
    return SyncRedisTransport(client)


def _build(client: Redis) -> Transport:
    # The one place that picks a deployment's transport (a cluster's comes here).
    return RedisTransport(client)


def run_calls(
    client: Redis, calls: Sequence[Call], *, raise_on_error: bool = True
) -> Awaitable[list[Any]]:
    """Run script calls on ``client``'s transport (:meth:`Transport.run_calls`)."""
    return transport_for(client).run_calls(calls, raise_on_error=raise_on_error)


def run_calls_sync(
    client: SyncRedis, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """Like :func:`run_calls`, for synchronous callers."""
    return SyncRedisTransport(client).run_calls(calls, raise_on_error=raise_on_error)


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


# Idle connections kept from a pool for the next script calls (two: a
# worker's claim and settle calls overlap), in a list on the pool itself, so
# that every client and transport of one pool shares them and a dropped client
# leaves none behind. The pool still counts them as in use: its disconnect()
# closes them, and a closed one is handed back and replaced on its next turn.
# Never kept from a blocking pool or a small one, where holding connections
# could starve other callers.
_SPARE_ATTR = "_taskbus_spare"
_SPARE_PER_POOL = 2
_SPARE_MIN_POOL = 64
# Larger batches go through send_packed_command, which waits for the socket.
_DIRECT_WRITE_MAX = 64 * 1024
# The client waits this much longer than the server-side block before it gives
# up on a wait's reply (a half-open connection).
_BLOCK_READ_MARGIN_S = 5.0


class RedisTransport:
    """One server's transport for an asyncio client: the hand-packed fast path.

    Args:
        client: The client whose pool it takes connections from.
    """

    __slots__ = ("_client", "_may_keep", "_pool", "_spare")

    def __init__(self, client: Redis) -> None:
        # The client is held (a cycle through its _taskbus_transport attribute):
        # an asyncio client is closed with aclose(), not by being dropped, and a
        # coroutine from run_calls(Redis(...), ...) must not outlive its client.
        self._client = client
        pool = getattr(client, "connection_pool", None)
        self._pool: Any = pool
        self._may_keep = (
            pool is not None
            and not isinstance(pool, BlockingConnectionPool)
            and getattr(pool, "max_connections", 0) >= _SPARE_MIN_POOL
        )
        spare: list[Any] = []
        if self._may_keep:
            found = getattr(pool, _SPARE_ATTR, None)
            if found is None:
                setattr(pool, _SPARE_ATTR, spare)
            else:
                spare = found
        self._spare = spare

    async def run_calls(self, calls: Sequence[Call], *, raise_on_error: bool = True) -> list[Any]:
        """See :meth:`Transport.run_calls`."""
        packed = b"".join(script.pack(keys, args) for script, keys, args in calls)
        for attempt in range(2):
            results = await self._send(packed, calls)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                for script in {c[0].sha: c[0] for c in calls}.values():
                    await self._client.script_load(script.source)
                continue
            break
        _note_errors(results, calls, raise_first=raise_on_error)
        return results

    async def _send(self, packed: bytes, calls: Sequence[Call]) -> list[Any]:
        pool = self._pool
        if pool is None or self._client.connection is not None:
            return await self._send_pipeline(calls)  # a single-connection client
        spare = self._spare
        conn = spare.pop() if spare else None
        if conn is None or not conn.is_connected:
            if conn is not None:
                await pool.release(conn)
            try:
                conn = await pool.get_connection()
            except (RedisConnectionError, RedisTimeoutError):
                return await self._send_pipeline(calls)
        keep = False
        try:
            writer = getattr(conn, "_writer", None)
            if (
                writer is not None
                and len(packed) <= _DIRECT_WRITE_MAX
                and not conn.health_check_interval
            ):
                # send_packed_command wraps every write in asyncio.wait_for when
                # the client has a socket timeout (redis-py's default: 5 s), a
                # task and two loop turns per call; a small write is buffered by
                # the transport at once, and the reply read below still runs
                # under the timeout.
                writer.write(packed)
            else:
                await conn.send_packed_command([packed])
            results = []
            for _ in calls:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:
                    results.append(exc)
            keep = len(spare) < _SPARE_PER_POOL and self._may_keep
            return results
        except (RedisConnectionError, RedisTimeoutError):
            pass  # redis-py closed the connection; its pipeline reconnects and retries
        except BaseException:
            # Cancelled or failed mid-exchange: replies may still be unread.
            await conn.disconnect(nowait=True)
            raise
        finally:
            if keep:
                spare.append(conn)
            else:
                await pool.release(conn)
        return await self._send_pipeline(calls)

    async def _send_pipeline(self, calls: Sequence[Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    async def wait_then_run(
        self, wake_keys: Sequence[str], block_s: int, call: Call
    ) -> tuple[bytes | None, Any]:
        """See :meth:`Transport.wait_then_run`."""
        client = self._client
        if client.connection is not None:
            # A single-connection client: wait, and let the caller run the call.
            popped = await client.blpop(list(wake_keys), timeout=block_s)
            return (_key_bytes(popped[0]) if popped else None), None
        script, keys, args = call
        wait: Any = ("BLPOP", *wake_keys, block_s)
        packed = hiredis.pack_command(wait) + script.pack(keys, args)
        pool: Any = client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command([packed])
            popped = await conn.read_response(timeout=block_s + _BLOCK_READ_MARGIN_S)
            try:
                raw = await conn.read_response()
            except NoScriptError:
                raw = None
        except BaseException:
            # Cancelled or failed mid-exchange: replies may still be unread, and
            # a call still queued behind the wait must not run for nobody.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        key = _key_bytes(popped[0]) if isinstance(popped, list) and popped else None
        return key, raw

    async def commands(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        """See :meth:`Transport.commands`."""
        async with self._client.pipeline(transaction=atomic) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())


class SyncRedisTransport:
    """One server's transport for a blocking client (connections from :mod:`bus.store.own`).

    Args:
        client: The client whose settings its connections are built from.
    """

    __slots__ = ("_client",)

    def __init__(self, client: SyncRedis) -> None:
        self._client = client

    def run_calls(self, calls: Sequence[Call], *, raise_on_error: bool = True) -> list[Any]:
        """See :meth:`Transport.run_calls`."""
        packed = b"".join(script.pack(keys, args) for script, keys, args in calls)
        for attempt in range(2):
            results = self._send(packed, calls)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                for script in {c[0].sha: c[0] for c in calls}.values():
                    self._client.script_load(script.source)
                continue
            break
        _note_errors(results, calls, raise_first=raise_on_error)
        return results

    def _send(self, packed: bytes, calls: Sequence[Call]) -> list[Any]:
        client = self._client
        conn = own.take(client)
        pool = None
        if conn is None:
            pool = getattr(client, "connection_pool", None)
            if pool is None or client.connection is not None:
                return self._send_pipeline(calls)
            try:
                conn = pool.get_connection()
            except (RedisConnectionError, RedisTimeoutError):
                return self._send_pipeline(calls)
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
            pass  # as in RedisTransport._send
        except BaseException:
            conn.disconnect()
            raise
        finally:
            if pool is not None:
                pool.release(conn)
            elif done:
                own.give_back(client, conn)
        return self._send_pipeline(calls)

    def _send_pipeline(self, calls: Sequence[Call]) -> list[Any]:
        with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(pipe.execute(raise_on_error=False))

    def commands(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        """See :meth:`Transport.commands`."""
        with self._client.pipeline(transaction=atomic) as pipe:
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return list(pipe.execute())


def _note_errors(results: Sequence[Any], calls: Sequence[Call], *, raise_first: bool) -> None:
    for result, (script, keys, _args) in zip(results, calls, strict=False):
        if isinstance(result, Exception):
            # The reply names neither the script nor the key an ACL refused.
            note_command(result, f"EVALSHA {script.name}.lua", keys)
            if raise_first:
                raise result


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key
