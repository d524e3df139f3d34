"""The task lifecycle's calls: one typed wrapper per atomic operation.

Enqueue, claim (also woken by ``BLPOP`` with the claim queued behind it),
settle, renew, release, and the worker heartbeat: the calls every task and
every worker makes, with the dataclasses of their arguments and results. The
wrappers here only translate between Python values and the scripts' argument
layouts (see each ``*.lua`` header in :mod:`bus.store.scripts`); the policy
(back-off, options, logging) lives in the callers, and the sending in
:mod:`bus.store.transport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from bus.core.task import NewTask
from bus.store import scripts, transport
from bus.store.keys import AppKeys
from bus.store.scripts import Call

__all__ = [
    "ClaimResult",
    "ClaimedTask",
    "Held",
    "NewTask",
    "Outcome",
    "beat",
    "claim",
    "claim_when_woken",
    "enqueue",
    "enqueue_call",
    "release",
    "renew",
    "settle",
]


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
    result = await transport.run_script(client, script, script_keys, args)
    return [bool(flag) for flag in result]


def enqueue_call(keys: AppKeys, queue: str, now_ms: int, tasks: Sequence[NewTask]) -> Call:
    """Return an :func:`enqueue` as a pipelinable call (see :mod:`bus.store.transport`)."""
    q = keys.queue(queue)
    args: list[Any] = [now_ms, queue]
    for task in tasks:
        args += (task.id, task.record, task.max_attempts, task.run_at_ms)
    return (
        scripts.ENQUEUE,
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
    raw = await transport.run_script(
        client, scripts.CLAIM, script_keys, (now_ms, lease_ms, max_tasks, worker_id, limit)
    )
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

    The claim is queued behind the ``BLPOP`` on the same connection
    (:meth:`bus.store.transport.Transport.wait_then_run`), so the server runs
    it the moment the wait ends: a woken worker gets its tasks with the
    wake-up's own reply, one round trip instead of two. The claim takes its
    time from the server's clock when that is later than ``now_ms`` (the wait
    may have lasted up to ``block_s``).

    Returns:
        The wake key that was popped (None when ``block_s`` passed) and the
        claim's result, or None when the claim did not run (the server did not
        know the claim script, or the client cannot queue it behind the wait):
        claim again with :func:`claim`, which loads it.

    Raises:
        redis.exceptions.RedisError: The connection failed or the server
            refused a command; nothing was claimed that a lease will not
            recover.
    """
    call: Call = (
        scripts.CLAIM,
        _claim_keys(keys, queues),
        (now_ms, lease_ms, max_tasks, worker_id, limit, 1),
    )
    key, raw = await transport.transport_for(client).wait_then_run(wake_keys, block_s, call)
    return key, (None if raw is None else _claim_result(raw, queues))


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
    raw = await transport.run_script(client, scripts.SETTLE, script_keys, args)
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
    raw = await transport.run_script(client, scripts.RENEW, script_keys, args)
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
    return int(await transport.run_script(client, scripts.RELEASE, script_keys, args))


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
    raw = await transport.run_script(
        client, scripts.BEAT, (keys.workers, keys.beats), (now_ms, worker_id, status, reap_after_ms)
    )
    return [item.decode() for item in raw]
