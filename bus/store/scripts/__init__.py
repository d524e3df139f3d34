"""The engine's atomic operations: one Lua file each, one typed wrapper each.

Each ``*.lua`` file beside this module is one atomic state change of an app's
keys; its header lists its KEYS and ARGV. Every key a script touches is passed
in ``KEYS`` and built by :mod:`bus.store.keys`; the caller passes the time in. Scripts
are called by EVALSHA and loaded on a NOSCRIPT reply (a restarted server or a
fresh replica has an empty script cache).

The wrappers here only translate between Python values and the scripts'
argument layouts; the policy (back-off, options, logging) lives in the callers.

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
their own beside the pool for the same reason (:mod:`bus.store.scripts.own`).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import hiredis
from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.store.keys import AppKeys
from bus.store.redis_errors import note_command
from bus.store.scripts import own

__all__ = [
    "Call",
    "ClaimResult",
    "ClaimedTask",
    "Held",
    "NewTask",
    "Outcome",
    "Script",
    "beat",
    "claim",
    "claim_when_woken",
    "enqueue",
    "enqueue_call",
    "node_beat",
    "node_drop_call",
    "purge",
    "recur_call",
    "release",
    "renew",
    "replay",
    "replay_call",
    "run_calls",
    "run_calls_sync",
    "settle",
]


class Script:
    """A Lua script loaded from this package, called by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files(__package__).joinpath(f"{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self._head = (b"EVALSHA", self.sha.encode())

    def pack(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        """Return the ``EVALSHA`` command for these KEYS and ARGV as protocol bytes."""
        packed: bytes = hiredis.pack_command((*self._head, len(keys), *keys, *args))
        return packed

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script; load it first if the server does not know it.

        Args:
            client: The Redis client to run it on.
            keys: The KEYS array, as the script's header lists them.
            args: The ARGV array, as the script's header lists them.
        """
        return (await run_calls(client, [(self, keys, args)]))[0]


_ENQUEUE = Script("enqueue")
_CLAIM = Script("claim")
_SETTLE = Script("settle")
_RENEW = Script("renew")
_RELEASE = Script("release")
_BEAT = Script("beat")
RECORD = Script("record")
ROUTED = Script("routed")

ALL_SCRIPTS = (_ENQUEUE, _CLAIM, _SETTLE, _RENEW, _RELEASE, _BEAT, RECORD, ROUTED)

# A script call inside a pipeline: (script, keys, args).
Call = tuple[Script, Sequence[str], Sequence[Any]]


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


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to add: its id, encoded record, attempt limit and due time."""

    id: str
    record: bytes
    max_attempts: int
    run_at_ms: int


async def enqueue(
    client: Redis, keys: AppKeys, queue: str, now_ms: int, tasks: Sequence[NewTask]
) -> list[bool]:
    """Add tasks to one queue atomically; a known id is left as it is.

    Args:
        client: Redis client.
        keys: The app's keys.
        queue: The queue the tasks go to.
        now_ms: The current time.
        tasks: The tasks to add.

    Returns:
        One flag per task: True if it was added, False if its id was known.
    """
    script, script_keys, args = enqueue_call(keys, queue, now_ms, tasks)
    result = await script(client, script_keys, args)
    return [bool(flag) for flag in result]


def enqueue_call(keys: AppKeys, queue: str, now_ms: int, tasks: Sequence[NewTask]) -> Call:
    """Return an :func:`enqueue` as a pipelinable call (see :func:`run_calls`)."""
    q = keys.queue(queue)
    args: list[Any] = [now_ms, queue]
    for task in tasks:
        args += (task.id, task.record, task.max_attempts, task.run_at_ms)
    return (
        _ENQUEUE,
        (keys.tasks, keys.state, keys.queues, q.ready, q.delayed, q.wake, keys.wake),
        args,
    )


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task this worker now holds: present ``token`` to settle or renew it."""

    id: str
    queue: str
    attempt: int
    token: str
    record: bytes


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a claim returned: the tasks, when to look again if idle, and damage.

    Attributes:
        tasks: The tasks claimed.
        next_wake_ms: When a delayed task or a lease is due, if fewer were claimed.
        damaged: ``(task id, reason)`` of each task the claim dead-lettered
            because its stored entries were damaged (see ``claim.lua``).
    """

    tasks: list[ClaimedTask]
    next_wake_ms: int | None
    damaged: list[tuple[str, str]] = field(default_factory=list)


async def claim(
    client: Redis,
    keys: AppKeys,
    queues: Sequence[str],
    *,
    now_ms: int,
    lease_ms: int,
    max_tasks: int,
    worker_id: str,
    limit: int = 1000,
) -> ClaimResult:
    """Recover expired leases, promote due tasks, then claim up to ``max_tasks``.

    Args:
        client: Redis client.
        keys: The app's keys.
        queues: Queue names in the order they are served.
        now_ms: The current time.
        lease_ms: How long the claim holds without renewal.
        max_tasks: The most tasks to claim.
        worker_id: Recorded on each claimed task.
        limit: The most recoveries and promotions per queue in one call.
    """
    script_keys = _claim_keys(keys, queues)
    raw = await _CLAIM(client, script_keys, (now_ms, lease_ms, max_tasks, worker_id, limit))
    return _claim_result(raw, queues)


def _claim_keys(keys: AppKeys, queues: Sequence[str]) -> list[str]:
    script_keys = [keys.state, keys.tasks, keys.errors, keys.dead, keys.seq]
    for name in queues:
        q = keys.queue(name)
        script_keys += (q.ready, q.delayed, q.inflight, q.wake)
    return script_keys


def _claim_result(raw: list[Any], queues: Sequence[str]) -> ClaimResult:
    tasks = [
        ClaimedTask(
            id=raw[i].decode(),
            queue=queues[int(raw[i + 1])],
            attempt=int(raw[i + 2]),
            token=raw[i + 3].decode(),
            record=raw[i + 4],
        )
        for i in range(2, len(raw), 5)
    ]
    wake = int(raw[0])
    damaged = raw[1]
    return ClaimResult(
        tasks=tasks,
        next_wake_ms=None if wake < 0 else wake,
        damaged=[(_shown(damaged[i]), _shown(damaged[i + 1])) for i in range(0, len(damaged), 2)],
    )


def _shown(value: bytes) -> str:
    # claim.lua only reports ids it made readable; never fail the reply on one.
    return value.decode("utf-8", "backslashreplace")


# The client waits this much longer than the server-side block before it gives
# up on the reply (a half-open connection).
_BLOCK_READ_MARGIN_S = 5.0


async def claim_when_woken(
    client: Redis,
    keys: AppKeys,
    queues: Sequence[str],
    wake_keys: Sequence[str],
    *,
    block_s: int,
    now_ms: int,
    lease_ms: int,
    max_tasks: int,
    worker_id: str,
    limit: int = 1000,
) -> tuple[bytes | None, ClaimResult | None]:
    """Block until one of ``wake_keys`` has an item (``BLPOP``), then claim.

    The claim is pipelined behind the ``BLPOP`` on the same connection, so
    the server runs it the moment the wait ends: a woken worker gets its tasks
    with the wake-up's own reply, one round trip instead of two. The claim
    takes its time from the server's clock when that is later than
    ``now_ms`` (the wait may have lasted up to ``block_s``).

    Returns:
        The wake key that was popped (None when ``block_s`` passed) and the
        claim's result, or None when the server did not know the claim script
        (claim again with :func:`claim`, which loads it).

    Raises:
        redis.exceptions.RedisError: The connection failed or the server
            refused a command; nothing was claimed that a lease will not
            recover.
    """
    if client.connection is not None:
        # A single-connection client: wait, and let the caller claim.
        popped = await client.blpop(list(wake_keys), timeout=block_s)
        return (_key_bytes(popped[0]) if popped else None), None
    script_keys = _claim_keys(keys, queues)
    wait: Any = ("BLPOP", *wake_keys, block_s)
    packed = hiredis.pack_command(wait) + _CLAIM.pack(
        script_keys, (now_ms, lease_ms, max_tasks, worker_id, limit, 1)
    )
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
        # Cancelled or failed mid-exchange: replies may still be unread, and a
        # claim still queued behind the wait must not run for nobody.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    key = _key_bytes(popped[0]) if isinstance(popped, list) and popped else None
    return key, (None if raw is None else _claim_result(raw, queues))


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


OutcomeKind = Literal["ok", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one claimed task ended.

    ``value`` is empty for ``ok``; ``"<run_at_ms>|<error JSON>"`` for
    ``retry``; ``"<reason>|<error JSON>"`` for ``dead``.
    """

    id: str
    token: str
    queue: str
    kind: OutcomeKind
    value: bytes = b""


async def settle(
    client: Redis,
    keys: AppKeys,
    outcomes: Sequence[Outcome],
    *,
    now_ms: int,
    retention_ms: int,
    sweep_limit: int = 100,
) -> list[str]:
    """Record outcomes of claimed tasks; expire old finished records.

    Args:
        client: Redis client.
        keys: The app's keys.
        outcomes: What happened to each task.
        now_ms: The current time.
        retention_ms: How long finished records are kept (0: not at all).
        sweep_limit: The most expired finished records to delete in this call.

    Returns:
        The ids whose outcome was rejected (stale token: fencing).
    """
    names, index = _index(outcomes)
    script_keys = [keys.state, keys.tasks, keys.errors, keys.finished, keys.dead]
    for name in names:
        q = keys.queue(name)
        script_keys += (q.inflight, q.delayed, q.wake)
    args: list[Any] = [now_ms, retention_ms, sweep_limit]
    for o in outcomes:
        head = f"{o.kind}\x1f{index[o.queue]}\x1f{o.token}\x1f{o.id}".encode()
        args.append(head + b"\x1f" + o.value if o.value else head)
    raw = await _SETTLE(client, script_keys, args)
    return [item.decode() for item in raw]


@dataclass(frozen=True, slots=True)
class Held:
    """A task a worker holds: enough to renew or release it."""

    id: str
    token: str
    queue: str


def _index(items: Sequence[Held] | Sequence[Outcome]) -> tuple[list[str], dict[str, int]]:
    names: list[str] = []
    index: dict[str, int] = {}
    for item in items:
        if item.queue not in index:
            index[item.queue] = len(names)
            names.append(item.queue)
    return names, index


async def renew(
    client: Redis,
    keys: AppKeys,
    held: Sequence[Held],
    *,
    now_ms: int,
    lease_ms: int,
) -> list[str]:
    """Extend the leases of held tasks; return the ids whose lease is lost."""
    names, index = _index(held)
    script_keys = [keys.state] + [keys.queue(name).inflight for name in names]
    args: list[Any] = [now_ms, lease_ms]
    for h in held:
        args += (h.id, h.token, index[h.queue])
    raw = await _RENEW(client, script_keys, args)
    return [item.decode() for item in raw]


async def release(client: Redis, keys: AppKeys, held: Sequence[Held], *, now_ms: int) -> int:
    """Hand held tasks back to the front of their queues; return how many were."""
    names, index = _index(held)
    script_keys = [keys.state]
    for name in names:
        q = keys.queue(name)
        script_keys += (q.ready, q.inflight, q.wake)
    args: list[Any] = [now_ms]
    for h in held:
        args += (h.id, h.token, index[h.queue])
    return int(await _RELEASE(client, script_keys, args))


async def beat(
    client: Redis,
    keys: AppKeys,
    worker_id: str,
    status: bytes,
    *,
    now_ms: int,
    reap_after_ms: int,
) -> list[str]:
    """Write a worker's status (empty: remove it); reap dead workers' records.

    Returns:
        The ids of the workers whose records were reaped.
    """
    raw = await _BEAT(
        client, (keys.workers, keys.beats), (now_ms, worker_id, status, reap_after_ms)
    )
    return [item.decode() for item in raw]


# -- dead letters (bus.inspect.deadletters) -------------------------------------------

_REPLAY = Script("replay")
_PURGE = Script("purge")


def replay_call(keys: AppKeys, queue: str, now_ms: int, ids: Sequence[str]) -> Call:
    """Return a replay of dead tasks of one queue as a pipelinable call.

    The script moves each id that is still dead back to the queue's ready list
    (see ``replay.lua``) and returns one flag per id: 1 replayed, 0 skipped.
    """
    q = keys.queue(queue)
    return (
        _REPLAY,
        (keys.state, keys.dead, q.ready, q.wake, keys.queues, keys.wake),
        [now_ms, queue, *ids],
    )


async def replay(
    client: Redis, keys: AppKeys, queue: str, now_ms: int, ids: Sequence[str]
) -> list[bool]:
    """Move dead tasks back to ``queue``; a task no longer dead is skipped.

    Args:
        client: Redis client.
        keys: The app's keys.
        queue: The queue the tasks go back to (the one in their records).
        now_ms: The current time.
        ids: The task ids, oldest dead first.

    Returns:
        One flag per id: True if it was replayed, False if it was not dead.
    """
    script, script_keys, args = replay_call(keys, queue, now_ms, ids)
    return [bool(flag) for flag in await script(client, script_keys, args)]


async def purge(client: Redis, keys: AppKeys, ids: Sequence[str]) -> list[bool]:
    """Delete dead tasks (record, state, errors, dead entry); others are skipped.

    Returns:
        One flag per id: True if it was purged, False if it was not dead.
    """
    raw = await _PURGE(client, (keys.state, keys.tasks, keys.errors, keys.dead), ids)
    return [bool(flag) for flag in raw]


# -- recurring tasks and nodes (bus.recurring, bus.nodes) --------------------

_RECUR = Script("recur")
_NODE_BEAT = Script("node_beat")
_NODE_DROP = Script("node_drop")


def recur_call(
    keys: AppKeys,
    *,
    now_ms: int,
    name: str,
    seen_id: str,
    seen_fp: str,
    seen_queue: str,
    entry: bytes,
    task: NewTask | None,
    queue: str,
    replace_waiting: bool = False,
) -> Call:
    """Return a move of a recurring task to its next occurrence (``recur.lua``).

    Args:
        keys: The app's keys.
        now_ms: The current time.
        name: The recurring task.
        seen_id: The occurrence id the caller read from the recurring hash
            (``""``: no entry); the move happens only if it is still current.
        seen_fp: The fingerprint the caller read (``""``: not compared).
        seen_queue: The queue of the current occurrence (deleted if waiting).
        entry: The new entry JSON; empty to remove the recurring task.
        task: The new occurrence (None with an empty ``entry``).
        queue: The new occurrence's queue.
        replace_waiting: Apply only if the current occurrence still waits.

    The call returns ``[1]`` when applied, ``[0, current entry]`` otherwise.
    """
    old, new = keys.queue(seen_queue), keys.queue(queue)
    args: list[Any] = [now_ms, name, seen_id, seen_fp, entry]
    args += (task.id, task.record, task.max_attempts, task.run_at_ms) if task else ("", "", 0, 0)
    args += (queue, "1" if replace_waiting else "0")
    return (
        _RECUR,
        (
            keys.recurring,
            keys.tasks,
            keys.state,
            keys.errors,
            keys.queues,
            keys.wake,
            old.ready,
            old.delayed,
            new.ready,
            new.delayed,
            new.wake,
        ),
        args,
    )


async def node_beat(
    client: Redis, keys: AppKeys, node: str, *, now_ms: int, ttl_ms: int, queue_prefix: str
) -> list[str]:
    """Keep ``node`` registered for ``ttl_ms``; return the nodes to drop."""
    raw = await _NODE_BEAT(
        client,
        (keys.nodes, keys.nodes_joined, keys.queues),
        (now_ms, node, ttl_ms, queue_prefix),
    )
    return [item.decode() for item in raw]


def node_drop_call(keys: AppKeys, node: str, queue: str, *, now_ms: int, force: bool) -> Call:
    """Return a drop of a node and its queue (``node_drop.lua``).

    The call returns the number of copies deleted, or -1 when the node is
    still alive and ``force`` is false (nothing changed).
    """
    q = keys.queue(queue)
    return (
        _NODE_DROP,
        (
            keys.nodes,
            keys.nodes_joined,
            keys.queues,
            keys.state,
            keys.tasks,
            keys.errors,
            q.ready,
            q.delayed,
            q.inflight,
            q.wake,
        ),
        (now_ms, node, queue, "1" if force else "0"),
    )
