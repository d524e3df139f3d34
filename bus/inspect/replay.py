"""Replay (redrive) and purge of dead tasks: the dead-letter actions.

Replay moves a task back to its queue (the one in its record), never copies
it: ``replay.lua`` checks that it is still dead and moves it in one step, so two
operators replaying the same task run it once. Thousands are replayed in
batches at a chosen rate. Purge deletes dead tasks for good (``purge.lua``).
Both take the tasks that :func:`bus.inspect.deadset.select_dead` picks; the
documented entry point is :mod:`bus.inspect.deadletters`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bus.core import clock
from bus.inspect.deadset import select_dead
from bus.store import features, transport
from bus.store.keys import AppKeys, validate_app_name
from bus.store.redis_errors import maps_client_errors
from bus.store.types import AsyncClient

__all__ = [
    "DEFAULT_BATCH",
    "ReplayReport",
    "batch_size",
    "purge",
    "replay",
]

DEFAULT_BATCH = 100


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay did (or, in a dry run, would do).

    Attributes:
        app: The app.
        dry_run: Nothing was changed.
        replayed: Ids moved back to their queues (in a dry run: would be).
        skipped: Ids not replayed, with why.
        queues: How many went back to each queue.
        elapsed_s: How long it took.
    """

    app: str
    dry_run: bool
    replayed: list[str]
    skipped: dict[str, str]
    queues: dict[str, int]
    elapsed_s: float

    def to_doc(self) -> dict[str, Any]:
        """Return the report as a JSON-ready mapping (``dead replay --json``)."""
        return {
            "app": self.app,
            "dry_run": self.dry_run,
            "replayed": len(self.replayed),
            "skipped": len(self.skipped),
            "queues": self.queues,
            "elapsed_s": round(self.elapsed_s, 3),
            "ids": self.replayed,
            "skipped_ids": self.skipped,
        }


def batch_size(batch: int, rate_per_s: float | None) -> int:
    """The tasks per batch: ``batch``, or a tenth of a second's worth at the rate."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if rate_per_s is None:
        return batch
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    # Small batches keep the flow smooth: ten per second at most, never a burst
    # of more than a tenth of a second's worth.
    return max(1, min(batch, int(rate_per_s / 10)))


@maps_client_errors
async def replay(
    client: AsyncClient,
    prefix: str,
    app: str,
    ids: Sequence[str] | None = None,
    *,
    type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    everything: bool = False,
    dry_run: bool = False,
    rate_per_s: float | None = None,
    batch: int = DEFAULT_BATCH,
) -> ReplayReport:
    """Move dead tasks back to their queues, attempts reset, errors kept.

    Each task goes back to the queue in its record as ``queued`` with 0
    attempts, its replay count up by one, and idle workers are woken. A task
    that is no longer dead when its batch runs (replayed or purged by someone
    else) is skipped. Batches run one after another; with ``rate_per_s``, a
    batch starts no earlier than its share of the rate allows.

    Args:
        client: Redis client.
        prefix: The key prefix.
        app: The app.
        ids: Explicit task ids; or select with the filters (see :func:`select_dead`).
        type: Task name, or event type pattern (``order.*``).
        since_ms: Died at or after this time.
        until_ms: Died at or before this time.
        everything: Replay every dead task of the app.
        dry_run: Report what would be replayed; change nothing.
        rate_per_s: The most tasks replayed per second (None: as fast as possible).
        batch: The most tasks per batch (one script call per queue in a batch).

    Raises:
        ValueError: Invalid app name, selection, batch or rate.
    """
    size = batch_size(batch, rate_per_s)
    started = clock.monotonic_s()
    selection = await select_dead(
        client,
        prefix,
        app,
        ids,
        type=type,
        since_ms=since_ms,
        until_ms=until_ms,
        everything=everything,
    )
    skipped = dict(selection.missing)
    todo: list[tuple[str, str]] = []
    for dead in selection.tasks:
        if dead.task.state_error is not None:
            skipped[dead.id] = (
                f"cannot replay: its state is unreadable ({dead.task.state_error}); purge it"
            )
        elif dead.queue is None:
            skipped[dead.id] = f"cannot replay: {dead.unreplayable}"
        else:
            todo.append((dead.id, dead.queue))
    replayed: list[str] = []
    queues: dict[str, int] = {}
    if dry_run:
        for task_id, queue in todo:
            replayed.append(task_id)
            queues[queue] = queues.get(queue, 0) + 1
        return ReplayReport(app, True, replayed, skipped, queues, clock.monotonic_s() - started)
    keys = AppKeys(prefix, validate_app_name(app))
    done = 0
    for start in range(0, len(todo), size):
        if rate_per_s is not None:
            # The next batch may start once the ones before it fit the rate.
            wait_s = started + done / rate_per_s - clock.monotonic_s()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        chunk = todo[start : start + size]
        groups: dict[str, list[str]] = {}
        for task_id, queue in chunk:
            groups.setdefault(queue, []).append(task_id)
        now = clock.now_ms()
        calls = [features.replay_call(keys, q, now, group) for q, group in groups.items()]
        results = await transport.run_calls(client, calls)
        for (queue, group), flags in zip(groups.items(), results, strict=True):
            for task_id, flag in zip(group, flags, strict=True):
                if flag:
                    replayed.append(task_id)
                    queues[queue] = queues.get(queue, 0) + 1
                else:
                    skipped[task_id] = "not dead any more (replayed or purged meanwhile)"
        done += len(chunk)
    return ReplayReport(app, False, replayed, skipped, queues, clock.monotonic_s() - started)


@maps_client_errors
async def purge(
    client: AsyncClient,
    prefix: str,
    app: str,
    ids: Sequence[str] | None = None,
    *,
    type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    everything: bool = False,
    batch: int = 500,
) -> int:
    """Delete dead tasks for good: record, state, errors and dead-set entry.

    Only tasks that are dead when their batch runs are deleted; ids that are
    unknown or not dead are ignored.

    Args:
        client: Redis client.
        prefix: The key prefix.
        app: The app.
        ids: Explicit task ids; or select with the filters (see :func:`select_dead`).
        type: Task name, or event type pattern (``order.*``).
        since_ms: Died at or after this time.
        until_ms: Died at or before this time.
        everything: Purge every dead task of the app.
        batch: Tasks per script call.

    Returns:
        How many tasks were deleted.

    Raises:
        ValueError: Invalid app name or selection.
    """
    keys = AppKeys(prefix, validate_app_name(app))
    has_filter = type is not None or since_ms is not None or until_ms is not None
    if ids is not None and not has_filter and not everything:
        # Explicit ids: the script itself checks each is dead; no need to read them.
        targets = list(dict.fromkeys(ids))
    else:
        selection = await select_dead(
            client,
            prefix,
            app,
            ids,
            type=type,
            since_ms=since_ms,
            until_ms=until_ms,
            everything=everything,
        )
        targets = [t.id for t in selection.tasks]
    purged = 0
    for start in range(0, len(targets), max(1, batch)):
        flags = await features.purge(client, keys, targets[start : start + max(1, batch)])
        purged += sum(flags)
    return purged
