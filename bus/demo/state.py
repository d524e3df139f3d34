"""The demo's view of the bus: its apps, their counts, its verdict.

The reads themselves are the store's (:mod:`bus.store.reads`), the clearing
of the demo's prefix too (:func:`bus.store.admin.clear_prefix`); this module
makes sense of them. :func:`sync_apps` stores the apps' subscriptions;
:func:`live_workers` and :func:`worker_pids` read the workers' status records.

:func:`read_snapshot` counts each app's *deliveries* (its tasks of recorded
events; recurring and named tasks are left out) by state, from the app's state
hash and the event log's keys in one round trip (the demo's apps hold a few
thousand tasks at most), and the events recorded and pending.

:func:`expected_tasks` derives, from the subscription registry and the event
log, the task every (event, matching subscription) pair must have become:
``Registry.route`` over every recorded event, follow-ups published by handlers
included. :func:`final_checks` compares the two and says, check by check,
whether the bus did its job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from bus.config.apps import load_app_config_named, subscription_specs, task_specs
from bus.config.settings import Settings
from bus.core.task import TaskState
from bus.events.registry import load_registry
from bus.events.registry_sync import sync_subscriptions
from bus.events.router import task_id_for
from bus.inspect.tasks import read_tasks
from bus.store import reads
from bus.store.keys import AppKeys, BusKeys
from bus.store.types import AsyncClient

__all__ = [
    "AppCounts",
    "Check",
    "SeenWorker",
    "Snapshot",
    "deliveries",
    "expected_tasks",
    "final_checks",
    "live_workers",
    "read_snapshot",
    "states_of",
    "sync_apps",
    "worker_pids",
]

_WAITING = (TaskState.QUEUED.value, TaskState.SCHEDULED.value)


@dataclass(frozen=True, slots=True)
class AppCounts:
    """An app's deliveries by state: its tasks of recorded events.

    Other tasks of the app (recurring ones, tasks enqueued by name) are not
    deliveries and are not counted.

    Attributes:
        delivered: Succeeded.
        waiting: Queued or scheduled (due later), not claimed yet.
        running: Claimed by a worker, under lease.
        retrying: Failed, waiting for the back-off before the next attempt.
        dead: Dead letters.
    """

    delivered: int = 0
    waiting: int = 0
    running: int = 0
    retrying: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        """Every delivery of the app."""
        return self.delivered + self.waiting + self.running + self.retrying + self.dead

    @property
    def unfinished(self) -> int:
        """Deliveries still to run: waiting, running or retrying."""
        return self.waiting + self.running + self.retrying


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The demo's apps and events at one moment.

    Attributes:
        apps: Task counts per app.
        events: Events in the event log (published by the demo and by handlers).
        pending: Events recorded but not yet routed to every subscriber.
    """

    apps: dict[str, AppCounts]
    events: int
    pending: int


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict item: what was checked, and whether it held."""

    ok: bool
    text: str


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1

    def app_counts(self) -> AppCounts:
        c = self.counts
        return AppCounts(
            delivered=c.get(TaskState.SUCCEEDED.value, 0),
            waiting=sum(c.get(s, 0) for s in _WAITING),
            running=c.get(TaskState.RUNNING.value, 0),
            retrying=c.get(TaskState.RETRYING.value, 0),
            dead=c.get(TaskState.DEAD.value, 0),
        )


async def sync_apps(client: AsyncClient, settings: Settings, apps: Sequence[str]) -> dict[str, int]:
    """Store each app's subscriptions from its ``app.toml``; return how many each has.

    Raises:
        ConfigError: An app is missing or its config is invalid.
    """
    synced = {}
    for app in apps:
        config = load_app_config_named(settings, app)
        await sync_subscriptions(
            client,
            BusKeys(settings.prefix),
            app,
            subscription_specs(config),
            tasks=task_specs(config),
            allow_removal=True,
        )
        synced[app] = len(config.subscriptions)
    return synced


@dataclass(frozen=True, slots=True)
class SeenWorker:
    """A worker whose heartbeat was recent: its app, and pid and host when recorded."""

    app: str
    pid: int | None
    host: str | None


async def live_workers(
    client: AsyncClient, prefix: str, apps: Sequence[str], since_ms: int
) -> list[SeenWorker]:
    """The workers of ``apps`` whose last heartbeat is at or after ``since_ms``."""
    alive = []
    for app in apps:
        for raw in await reads.beating_workers(client, AppKeys(prefix, app), since_ms):
            doc = orjson.loads(raw) if raw else {}
            pid = doc.get("pid")
            alive.append(SeenWorker(app, pid if isinstance(pid, int) else None, doc.get("host")))
    return alive


async def worker_pids(client: AsyncClient, prefix: str, apps: Iterable[str]) -> set[int]:
    """The pids in the status records of the apps' workers."""
    pids = set()
    for app in apps:
        for raw in await reads.worker_records(client, AppKeys(prefix, app)):
            pid = orjson.loads(raw).get("pid")
            if isinstance(pid, int):
                pids.add(pid)
    return pids


async def states_of(
    client: AsyncClient, prefix: str, app: str, ids: Sequence[str]
) -> list[str | None]:
    """The states of some tasks of an app (None for an unknown id)."""
    raws = await reads.task_states(client, AppKeys(prefix, app), ids)
    return [None if raw is None else str(orjson.loads(raw).get("s")) for raw in raws]


async def read_snapshot(client: AsyncClient, prefix: str, apps: Sequence[str]) -> Snapshot:
    """Count every app's deliveries by state, and the events recorded and pending.

    Args:
        client: The asyncio Redis client.
        prefix: The key prefix.
        apps: The apps to count.
    """
    stored = await reads.delivery_states(client, prefix, apps)
    events = {_text(k) for k in stored.event_keys}
    counts = {}
    for app, raw in zip(apps, stored.states, strict=True):
        tally = _Tally()
        for state in _deliveries(raw, events).values():
            tally.add(state)
        counts[app] = tally.app_counts()
    return Snapshot(counts, len(events), stored.pending)


async def deliveries(client: AsyncClient, prefix: str, app: str) -> dict[str, str]:
    """Return an app's deliveries (tasks of recorded events) with their states."""
    stored = await reads.delivery_states(client, prefix, [app])
    return _deliveries(stored.states[0], {_text(k) for k in stored.event_keys})


def _deliveries(raw: Mapping[bytes, bytes], events: set[str]) -> dict[str, str]:
    # Ids of event tasks start with the event key (<key>.<subscription>, and
    # <key>.<subscription>@<node> for a broadcast's copies); recurring and
    # named tasks do not, and are no deliveries.
    out = {}
    for key, value in raw.items():
        task_id = _text(key)
        if task_id.split(".", 1)[0] in events:
            out[task_id] = str(orjson.loads(value).get("s"))
    return out


async def expected_tasks(
    client: AsyncClient, prefix: str, apps: Sequence[str]
) -> dict[str, set[str]]:
    """The task ids each app must have: one per (recorded event, matching subscription).

    Args:
        client: The asyncio Redis client.
        prefix: The key prefix.
        apps: The apps to compute (subscriptions of other apps are ignored).
    """
    keys = BusKeys(prefix)
    registry = await load_registry(client, keys)
    out: dict[str, set[str]] = {app: set() for app in apps}
    async for raw in reads.envelopes(client, keys):
        envelope = orjson.loads(raw)
        for spec in registry.route(envelope["type"], envelope.get("data")):
            if spec.app in out:
                out[spec.app].add(task_id_for(envelope["buskey"], spec.name))
    return out


async def final_checks(
    client: AsyncClient,
    prefix: str,
    apps: Sequence[str],
    *,
    published: int,
    poison_tasks: Mapping[str, Sequence[str]],
) -> list[Check]:
    """Check the end state of the demo.

    Args:
        client: The asyncio Redis client.
        prefix: The key prefix.
        apps: The demo's apps.
        published: How many events the demo itself published.
        poison_tasks: Per app, the task ids of the poison event that were
            dead-lettered and replayed.

    Returns:
        One :class:`Check` per property: every event routed; per app, the
        delivered tasks are exactly the expected ones; nothing left to run; no
        dead letter; the poison delivered after its replay.
    """
    snap = await read_snapshot(client, prefix, apps)
    expected = await expected_tasks(client, prefix, apps)
    follow_ups = snap.events - published
    checks = [
        Check(
            snap.pending == 0,
            f"every event was routed: {snap.events} recorded ({published} published by the "
            f"demo, {follow_ups} follow-ups by handlers), {snap.pending} pending",
        )
    ]
    for app in apps:
        states = await deliveries(client, prefix, app)
        want = expected[app]
        delivered = {i for i in want if states.get(i) == TaskState.SUCCEEDED.value}
        # A broadcast's copies (<task id>@<node>) come with their expected task.
        extra = {i for i in states if i not in want and i.split("@", 1)[0] not in want}
        missing = len(want - set(states))
        text = (
            f"{app}: {len(delivered)} delivered, {len(want)} expected "
            f"(one per event and matching subscription)"
        )
        if missing or extra:
            text += f"; {missing} expected tasks missing, {len(extra)} unexpected tasks"
        checks.append(Check(delivered == want and not extra, text))
    unfinished = {a: c.unfinished for a, c in snap.apps.items() if c.unfinished}
    checks.append(
        Check(
            not unfinished,
            "no task left waiting, running or retrying"
            + (f" (left: {_per_app(unfinished)})" if unfinished else ""),
        )
    )
    dead = {a: c.dead for a, c in snap.apps.items() if c.dead}
    checks.append(
        Check(
            not dead,
            "no dead letter after the replay" + (f" (dead: {_per_app(dead)})" if dead else ""),
        )
    )
    poison_ok, poison_text = await _poison_check(client, prefix, poison_tasks)
    checks.append(Check(poison_ok, poison_text))
    return checks


async def _poison_check(
    client: AsyncClient, prefix: str, poison_tasks: Mapping[str, Sequence[str]]
) -> tuple[bool, str]:
    ids = [(app, task_id) for app, group in poison_tasks.items() for task_id in group]
    if not ids:
        return False, "the poison order was never dead-lettered"
    problems = []
    for app, task_id in ids:
        task = (await read_tasks(client, AppKeys(prefix, app), [task_id], errors=False)).get(
            task_id
        )
        if task is None:
            problems.append(f"{app} has no task {task_id}")
        elif task.info.state is not TaskState.SUCCEEDED or task.info.replays < 1:
            problems.append(f"{task_id} is {task.info.state.value}, replayed {task.info.replays}x")
    if problems:
        return False, "the poison order was not delivered after its replay: " + "; ".join(problems)
    where = ", ".join(sorted({app for app, _ in ids}))
    return True, f"the poison order was dead-lettered in {where}, replayed, then delivered"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _per_app(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{app} {n}" for app, n in sorted(counts.items()))
