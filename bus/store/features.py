"""The calls beside the task lifecycle: dead letters, recurring tasks, nodes.

Replay and purge of dead tasks (:mod:`bus.inspect.deadletters`), the move of a
recurring task to its next occurrence (:mod:`bus.recurring`), and node
registration and removal (:mod:`bus.nodes`): one typed wrapper or call
builder per script, translating between Python values and the scripts'
argument layouts (see each ``*.lua`` header in :mod:`bus.store.scripts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bus.store import scripts, transport
from bus.store.engine import NewTask
from bus.store.keys import AppKeys
from bus.store.scripts import Call

__all__ = ["node_beat", "node_drop_call", "purge", "recur_call", "replay", "replay_call"]


def replay_call(keys: AppKeys, queue: str, now_ms: int, ids: Sequence[str]) -> Call:
    """Return a replay of dead tasks of one queue as a pipelinable call.

    The script moves each id that is still dead back to the queue's ready list
    (see ``replay.lua``) and returns one flag per id: 1 replayed, 0 skipped.
    """
    q = keys.queue(queue)
    return (
        scripts.REPLAY,
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
    return [bool(flag) for flag in await transport.run_script(client, script, script_keys, args)]


async def purge(client: Redis, keys: AppKeys, ids: Sequence[str]) -> list[bool]:
    """Delete dead tasks (record, state, errors, dead entry); others are skipped.

    Returns:
        One flag per id: True if it was purged, False if it was not dead.
    """
    raw = await transport.run_script(
        client, scripts.PURGE, (keys.state, keys.tasks, keys.errors, keys.dead), ids
    )
    return [bool(flag) for flag in raw]


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
        scripts.RECUR,
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
    raw = await transport.run_script(
        client,
        scripts.NODE_BEAT,
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
        scripts.NODE_DROP,
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
