"""Adding tasks: planned tasks grouped into script calls and sent in one round trip.

Planning (options resolved, records encoded, ids and due times) is
:mod:`bus.core.enqueue`, which does no I/O; this module groups the planned
tasks by queue into ``enqueue.lua`` calls of at most ``MAX_BATCH`` tasks, sends
them through the store's transport, and turns the scripts' added-flags into
:class:`~bus.core.enqueue.TaskRef`. It is a composition module at the top of
the package (docs/architecture.md): the task model below it, the store beside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from bus.core import clock
from bus.core.app import App
from bus.core.enqueue import Declared, EnqueueItem, TaskRef, prepare
from bus.core.names import validate_app_name
from bus.core.task import NewTask
from bus.store import engine, scripts, transport
from bus.store.keys import app_keys
from bus.store.types import AsyncClient, SyncClient

__all__ = ["EnqueueItem", "TaskRef", "enqueue_items", "enqueue_items_sync", "prepare"]

MAX_BATCH = 500


def _plan(
    prefix: str,
    app: App | str,
    items: Sequence[EnqueueItem],
    declarations: Mapping[str, Declared] | None,
) -> tuple[str, list[tuple[list[int], list[NewTask]]], list[scripts.Call]]:
    """Validate and encode every item, then group them into script calls.

    Returns the app's name, per call the item indexes and tasks it carries,
    and the calls. Raises before anything is written if any item is bad.
    """
    now = clock.now_ms()
    app_name = app.name if isinstance(app, App) else validate_app_name(app)
    keys = app_keys(prefix, app_name)
    if len(items) == 1:
        # One task (``Bus.enqueue``): one script call, no grouping.
        queue, task = prepare(app, items[0], now, app_name=app_name, declarations=declarations)
        return app_name, [([0], [task])], [engine.enqueue_call(keys, queue, now, [task])]
    by_queue: dict[str, list[tuple[int, NewTask]]] = defaultdict(list)
    queues: dict[str, str] = {}
    for index, item in enumerate(items):
        queue, task = prepare(
            app, item, now, app_name=app_name, queues=queues, declarations=declarations
        )
        by_queue[queue].append((index, task))
    groups: list[tuple[list[int], list[NewTask]]] = []
    calls: list[scripts.Call] = []
    for queue, entries in by_queue.items():
        for start in range(0, len(entries), MAX_BATCH):
            chunk = entries[start : start + MAX_BATCH]
            tasks = [t for _, t in chunk]
            groups.append(([i for i, _ in chunk], tasks))
            calls.append(engine.enqueue_call(keys, queue, now, tasks))
    return app_name, groups, calls


def _refs(
    app_name: str,
    count: int,
    groups: list[tuple[list[int], list[NewTask]]],
    results: list[Any],
) -> list[TaskRef]:
    """Turn the scripts' added-flags into one :class:`TaskRef` per item, in order."""
    if count == 1:
        # One task: one call, one flag. The general loop below costs a microsecond
        # more, which showed on one-by-one enqueue (measured, client side).
        return [TaskRef(app_name, groups[0][1][0].id, bool(results[0][0]))]
    refs: list[TaskRef | None] = [None] * count
    for (indexes, tasks), flags in zip(groups, results, strict=True):
        for index, task, added in zip(indexes, tasks, flags, strict=True):
            refs[index] = TaskRef(app_name, task.id, bool(added))
    return [ref for ref in refs if ref is not None]


async def enqueue_items(
    redis: AsyncClient,
    prefix: str,
    app: App | str,
    items: Sequence[EnqueueItem],
    *,
    declarations: Mapping[str, Declared] | None = None,
) -> list[TaskRef]:
    """Enqueue tasks of one app: validated first, then one script call per queue
    and batch, pipelined in one round trip.

    Every item is validated and encoded before anything is written, so a bad
    item fails the whole call and writes nothing. ``declarations`` are the
    declared tasks of an app given by name (``bus.events.declarations``).
    """
    app_name, groups, calls = _plan(prefix, app, items, declarations)
    results = await transport.run_calls(redis, calls)
    return _refs(app_name, len(items), groups, results)


def enqueue_items_sync(
    redis: SyncClient,
    prefix: str,
    app: App | str,
    items: Sequence[EnqueueItem],
    *,
    declarations: Mapping[str, Declared] | None = None,
) -> list[TaskRef]:
    """:func:`enqueue_items` for synchronous callers (one blocking round trip)."""
    app_name, groups, calls = _plan(prefix, app, items, declarations)
    results = transport.run_calls_sync(redis, calls)
    return _refs(app_name, len(items), groups, results)
