"""The dead set of an app read: list, count, show and select dead tasks.

The engine dead-letters a task, per app, when it exhausts its attempts (also
when its lease expires on the last one), when its handler raises
:class:`~bus.core.context.Fail`, when an event fails the consumer-side schema check
or its envelope cannot be decoded (the payload adapter fails it), when its
record cannot be decoded, or when no handler is declared for it. The dead set
is the zset :attr:`AppKeys.dead` (id -> dead time), read in pages with
:func:`bus.store.reads.dead_page`; the record, state and every attempt's
error stay until purged.

Selecting tasks: explicit ids, or filters on type (the task name, or the event
type for an event's task) and on the dead time (``since_ms <= dead_ms <=
until_ms``), or every dead task. A type filter is a pattern of the bus's one
matching language (:mod:`bus.events.matching`: ``order.*``, ``*.failed``), the same
as in subscriptions; a task name outside that grammar is matched exactly.
Replay and purge (:mod:`bus.inspect.replay`) act on a :func:`select_dead`
selection; the documented entry point is :mod:`bus.inspect.deadletters`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.errors import BusError
from bus.events.matching import PatternError, compile_pattern
from bus.inspect.tasks import TaskSnapshot, read_tasks
from bus.store import reads
from bus.store.keys import AppKeys, validate_app_name, validate_queue_name
from bus.store.redis_errors import maps_client_errors
from bus.store.types import AsyncClient

__all__ = [
    "DeadLetterError",
    "DeadTask",
    "Selection",
    "count_dead",
    "get_dead",
    "list_dead",
    "select_dead",
]

# Dead ids are read from the zset this many at a time.
PAGE = 500


class DeadLetterError(BusError):
    """A dead-letter operation was asked for something it cannot do."""


@dataclass(frozen=True, slots=True)
class DeadTask:
    """A dead task: the stored task and when it died.

    Attributes:
        task: Record, state and errors as stored.
        dead_ms: When it died (its score in the dead set).
    """

    task: TaskSnapshot
    dead_ms: int

    @property
    def id(self) -> str:
        """The task id."""
        return self.task.id

    @property
    def type(self) -> str | None:
        """The event type for an event's task, else the task name; None if undecodable."""
        return _text(self.task.type)

    @property
    def queue(self) -> str | None:
        """The queue a replay sends it to; None if the record is undecodable or names
        no valid queue."""
        queue = _text(self.task.queue)
        try:
            return None if queue is None else validate_queue_name(queue)
        except ValueError:
            return None

    @property
    def unreplayable(self) -> str:
        """Why a task without a :attr:`queue` cannot be replayed."""
        if self.task.record_error is not None:
            return self.task.record_error
        return f"its record names no valid queue ({self.task.queue!r})"

    @property
    def reason(self) -> str | None:
        """Why it died (``attempts exhausted``, ``failed by handler``, ...)."""
        return self.task.info.dead_reason

    def to_doc(self, *, full: bool = False) -> dict[str, Any]:
        """Return the task as a JSON-ready mapping (see ``docs/operations.md``)."""
        return self.task.to_doc(full=full)


@dataclass(frozen=True, slots=True)
class Selection:
    """Dead tasks picked by ids or filters, and the ids that could not be.

    Attributes:
        tasks: The dead tasks, oldest dead first.
        missing: Given ids that are not dead, with why (unknown, or its state).
    """

    tasks: list[DeadTask]
    missing: dict[str, str] = field(default_factory=dict)


def _text(value: object) -> str | None:
    # A record can decode with a field of the wrong type (a corrupt or
    # hand-written one): show and match only strings.
    return value if isinstance(value, str) else None


def _keys(prefix: str, app: str) -> AppKeys:
    return AppKeys(prefix, validate_app_name(app))


def _bound(value: int | None, default: str) -> int | str:
    return default if value is None else value


async def _dead_pages(
    client: AsyncClient,
    keys: AppKeys,
    since_ms: int | None,
    until_ms: int | None,
    *,
    newest_first: bool,
    size: int = PAGE,
) -> AsyncIterator[list[tuple[str, int]]]:
    """Yield the dead set in pages of ``(id, dead_ms)`` within the time range.

    Pages follow a score cursor (plus an offset among equal scores) rather
    than a growing offset: cheap on a large set, and removals of entries
    already read (replayed elsewhere) do not shift the next page.
    """
    low: int | str = _bound(since_ms, "-inf")
    high: int | str = _bound(until_ms, "+inf")
    ties = 0
    while True:
        page = await reads.dead_page(
            client, keys, low, high, offset=ties, size=size, newest_first=newest_first
        )
        if not page:
            return
        # A member that is not UTF-8 (damage) is shown escaped; it has no
        # task under that text, so it costs its own row only.
        items = [(member.decode("utf-8", "backslashreplace"), int(score)) for member, score in page]
        yield items
        if len(items) < size:
            return
        last = items[-1][1]
        same = sum(1 for _, score in items if score == last)
        ties = ties + same if (high if newest_first else low) == last else same
        if newest_first:
            high = last
        else:
            low = last


def _type_matches(task: TaskSnapshot, pattern: str | None) -> bool:
    if pattern is None:
        return True
    if not isinstance(task.type, str):
        return False
    try:
        return compile_pattern(pattern).matches(task.type)
    except PatternError:
        # Task names may hold characters event types cannot (upper case, ...).
        return task.type == pattern


@maps_client_errors
async def list_dead(
    client: AsyncClient,
    prefix: str,
    app: str,
    *,
    type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 100,
) -> list[DeadTask]:
    """List an app's dead tasks, newest dead first.

    Args:
        client: Redis client.
        prefix: The key prefix.
        app: The app.
        type: Only tasks of this type (task name, or event type pattern).
        since_ms: Only tasks that died at or after this time.
        until_ms: Only tasks that died at or before this time.
        limit: The most tasks to return.

    Raises:
        ValueError: The app name is invalid.
    """
    keys = _keys(prefix, app)
    out: list[DeadTask] = []
    # Without a type filter every task read is shown: read no more than wanted.
    size = PAGE if type is not None else max(1, min(PAGE, limit))
    pages = _dead_pages(client, keys, since_ms, until_ms, newest_first=True, size=size)
    async for page in pages:
        found = await read_tasks(client, keys, [i for i, _ in page])
        for task_id, dead_ms in page:
            task = found.get(task_id)
            if task is not None and _type_matches(task, type):
                out.append(DeadTask(task, dead_ms))
                if len(out) >= limit:
                    return out
    return out


@maps_client_errors
async def count_dead(
    client: AsyncClient,
    prefix: str,
    app: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """Count an app's dead tasks that died within the time range."""
    keys = _keys(prefix, app)
    return await reads.count_dead(client, keys, _bound(since_ms, "-inf"), _bound(until_ms, "+inf"))


@maps_client_errors
async def get_dead(client: AsyncClient, prefix: str, app: str, task_id: str) -> DeadTask | None:
    """Return one dead task with its errors; None if the app has no dead task of that id."""
    keys = _keys(prefix, app)
    task = (await read_tasks(client, keys, [task_id])).get(task_id)
    if task is None or task.dead_ms is None:
        return None
    return DeadTask(task, task.dead_ms)


@maps_client_errors
async def select_dead(
    client: AsyncClient,
    prefix: str,
    app: str,
    ids: Sequence[str] | None = None,
    *,
    type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    everything: bool = False,
) -> Selection:
    """Pick dead tasks by ids, by filters, or all of them (errors are not read).

    Args:
        client: Redis client.
        prefix: The key prefix.
        app: The app.
        ids: Explicit task ids (not combined with filters).
        type: Task name, or event type pattern (``order.*``).
        since_ms: Died at or after this time.
        until_ms: Died at or before this time.
        everything: Every dead task of the app (no ids, no filters).

    Returns:
        The dead tasks, oldest dead first; for ids, those that are not dead.

    Raises:
        ValueError: The app name is invalid, or the selection is empty or mixed.
    """
    keys = _keys(prefix, app)
    has_filter = type is not None or since_ms is not None or until_ms is not None
    if sum((ids is not None, has_filter, everything)) != 1:
        raise ValueError("select dead tasks by ids, by filters (type, time), or everything=True")
    if ids is not None:
        unique = list(dict.fromkeys(ids))
        found = await read_tasks(client, keys, unique, errors=False)
        tasks, missing = [], {}
        for task_id in unique:
            task = found.get(task_id)
            if task is None:
                missing[task_id] = "unknown task"
            elif task.dead_ms is None:
                missing[task_id] = f"not dead (state {task.info.state.value})"
            else:
                tasks.append(DeadTask(task, task.dead_ms))
        tasks.sort(key=lambda t: t.dead_ms)
        return Selection(tasks, missing)
    out: list[DeadTask] = []
    async for page in _dead_pages(client, keys, since_ms, until_ms, newest_first=False):
        found = await read_tasks(client, keys, [i for i, _ in page], errors=False)
        for task_id, dead_ms in page:
            task = found.get(task_id)
            if task is not None and _type_matches(task, type):
                out.append(DeadTask(task, dead_ms))
    return Selection(out)
