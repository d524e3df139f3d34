"""Nodes and broadcasts: how a ``scope = "all"`` task runs once on every node.

A *node* is one worker process by default (named after the worker id), or
every process started with the same ``--node NAME`` (e.g. one name per host,
so "every node" means "every host"). Each node has its own queue,
``node.<name>``, which only that node's workers serve, first, before their
other queues; ``*`` never stands for a node queue.

Nodes register in the app's node registry with every heartbeat
(``node_beat.lua``): a zset of node -> alive-until (last beat plus the node's
own TTL, three leases) and the time each node joined. Any worker's heartbeat
drops the nodes whose time ran out (``node_drop.lua``): the node leaves the
registry and the copies waiting in its queue are deleted, never run elsewhere.

A task with scope ``all`` (enqueued by name, routed to a subscription, or an
occurrence of a recurring task) is first an ordinary task, the *broadcast*,
on its declared queue. Whichever worker claims it once it is due fans it out:
one copy per live node that joined no later than the broadcast became due,
with the id ``<task id>@<node>``, on that node's queue; then the broadcast
succeeds. Copies are ordinary tasks: leases, retries and dead letters apply.
Ids are deterministic, so a fan-out repeated after a crash adds nothing twice.

The late-joiner rule: a node that joined after a broadcast became due does
not receive it (like a message system, a broadcast reaches those listening
when it is sent), and an app with no node at that moment receives nothing.
"""

from __future__ import annotations

import re
from dataclasses import replace

import structlog

from bus.core.task import TaskRecord
from bus.store import engine, features, reads, transport
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient

__all__ = [
    "NODE_QUEUE_PREFIX",
    "Node",
    "copy_id",
    "default_node",
    "is_node_queue",
    "node_queue",
    "validate_node_name",
]

log = structlog.get_logger("bus.nodes")

NODE_QUEUE_PREFIX = "node."
_NODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,90}$")


def validate_node_name(name: str) -> str:
    """Return ``name`` if it can name a node, else raise ``ValueError``.

    Raises:
        ValueError: Not 1-90 characters of ``A-Z a-z 0-9 _ . -``.
    """
    if not isinstance(name, str) or not _NODE_RE.fullmatch(name):
        raise ValueError(
            f"invalid node name {name!r}: use 1-90 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        )
    return name


def default_node(worker_id: str) -> str:
    """The node name of a worker that was given none: its id, made valid."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", worker_id)[-90:] or "node"


def node_queue(node: str) -> str:
    """The name of a node's own queue."""
    return NODE_QUEUE_PREFIX + node


def is_node_queue(queue: str) -> bool:
    """True if ``queue`` is some node's own queue."""
    return queue.startswith(NODE_QUEUE_PREFIX)


def copy_id(task_id: str, node: str) -> str:
    """The id of a broadcast's copy for one node."""
    return f"{task_id}@{node}"


class Node:
    """One worker's membership of its app's node registry.

    Args:
        redis: The worker's Redis client.
        keys: The app's keys.
        name: The node name.
        ttl_ms: How long the node counts as alive after each beat.
        shared: The name was given (``--node``), so other processes may share
            the node: leaving does not drop it, its time running out does.
    """

    def __init__(
        self, redis: AsyncClient, keys: AppKeys, name: str, *, ttl_ms: int, shared: bool
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = validate_node_name(name)
        self.queue = node_queue(name)
        self.ttl_ms = ttl_ms
        self.shared = shared

    async def beat(self, now_ms: int) -> dict[str, int]:
        """Register (or stay registered); drop the nodes that are gone.

        Safe from any number of workers at once: a drop happens only if the
        node is still gone when the drop runs.

        Returns:
            The nodes dropped by this call, with how many copies each lost.
        """
        gone = await features.node_beat(
            self.redis,
            self.keys,
            self.name,
            now_ms=now_ms,
            ttl_ms=self.ttl_ms,
            queue_prefix=NODE_QUEUE_PREFIX,
        )
        if not gone:
            return {}
        calls = [
            features.node_drop_call(self.keys, node, node_queue(node), now_ms=now_ms, force=False)
            for node in gone
        ]
        results = await transport.run_calls(self.redis, calls)
        dropped = {node: int(n) for node, n in zip(gone, results, strict=True) if int(n) >= 0}
        if dropped:
            log.warning(
                "nodes_dropped",
                app=self.keys.app,
                nodes=dropped,
                reason="no heartbeat within their TTL; copies waiting for them were deleted",
            )
        return dropped

    async def leave(self, now_ms: int) -> None:
        """Leave the registry at a clean stop, unless other processes share the node."""
        if self.shared:
            return
        call = features.node_drop_call(self.keys, self.name, self.queue, now_ms=now_ms, force=True)
        (deleted,) = await transport.run_calls(self.redis, [call])
        log.info("node_left", app=self.keys.app, node=self.name, copies_deleted=int(deleted))

    async def live(self, *, now_ms: int, joined_by_ms: int) -> list[str]:
        """The nodes alive now that joined no later than ``joined_by_ms``."""
        alive, joined = await reads.live_nodes(self.redis, self.keys, now_ms=now_ms)
        return sorted(
            node.decode() for node in alive if node in joined and int(joined[node]) <= joined_by_ms
        )

    async def fan_out(self, record: TaskRecord, *, now_ms: int) -> list[str]:
        """Add one copy of a broadcast to the queue of each node it reaches.

        Args:
            record: The broadcast (a task with scope ``all`` on an ordinary queue).
            now_ms: The current time.

        Returns:
            The nodes that got a copy (or had one already).
        """
        due_ms = max(record.created_ms, record.run_at_ms)
        nodes = await self.live(now_ms=now_ms, joined_by_ms=due_ms)
        calls = []
        for node in nodes:
            copy = replace(
                record,
                id=copy_id(record.id, node),
                queue=node_queue(node),
                created_ms=now_ms,
                run_at_ms=0,
            )
            task = engine.NewTask(copy.id, copy.encode(), copy.max_attempts, 0)
            calls.append(engine.enqueue_call(self.keys, copy.queue, now_ms, [task]))
        if calls:
            await transport.run_calls(self.redis, calls)
        return nodes
