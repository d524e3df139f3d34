"""Writing the subscription registry: sync an app's entries, unregister an app,
and the version epoch every write starts from.

The registry's layout and its reading (snapshots, damaged entries) are in
``bus.events.registry``; a sync diffs the stored entries against the app's
config and writes them in one MULTI, bumping the version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from bus.core import clock
from bus.errors import BusError
from bus.events.matching import FilterError, PatternError
from bus.events.registry import CompiledSubscription
from bus.events.registry_specs import (
    EntryDamaged,
    SubscriptionSpec,
    TaskSpec,
    read_subscriptions,
    read_tasks,
)
from bus.store import reads, writes
from bus.store.keys import BusKeys
from bus.store.types import AsyncClient

__all__ = [
    "VERSION_EPOCH",
    "RemovalRefused",
    "SyncResult",
    "fresh_version",
    "sync_subscriptions",
    "unregister_app",
    "version_epoch",
]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync changed (or would change, when refused or a dry run).

    ``added`` .. ``unchanged`` name subscriptions, ``tasks_*`` task
    declarations; ``repaired`` says why the stored entries it replaced were
    damaged.
    """

    app: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    applied: bool = False
    tasks_added: list[str] = field(default_factory=list)
    tasks_removed: list[str] = field(default_factory=list)
    tasks_changed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A short human summary of the diff."""
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
                ("tasks added", self.tasks_added),
                ("tasks removed", self.tasks_removed),
                ("tasks changed", self.tasks_changed),
            )
            if names
        ]
        parts += [f"replaced a damaged entry ({reason})" for reason in self.repaired]
        return f"app {self.app}: " + ("; ".join(parts) if parts else "no changes")

    @property
    def has_changes(self) -> bool:
        """True if the sync writes (or would write) anything."""
        return bool(
            self.added
            or self.removed
            or self.changed
            or self.tasks_added
            or self.tasks_removed
            or self.tasks_changed
            or self.repaired
        )


class RemovalRefused(BusError):
    """A sync would drop subscriptions and was not allowed to."""

    def __init__(self, result: SyncResult) -> None:
        super().__init__(
            f"syncing app {result.app!r} would remove subscriptions "
            f"{', '.join(result.removed)}; events of those types would no longer reach it. "
            f"Re-run with --allow-removal (API: allow_removal=True) if that is intended. "
            f"Full diff: {result.describe()}"
        )
        self.result = result


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], ...]:
    """Added, removed, changed and unchanged names between two name -> spec maps."""
    return (
        sorted(set(new) - set(old)),
        sorted(set(old) - set(new)),
        sorted(n for n in set(new) & set(old) if new[n] != old[n]),
        sorted(n for n in set(new) & set(old) if new[n] == old[n]),
    )


def _stored(raw: bytes | None, read: Any, what: str, repaired: list[str]) -> dict[str, Any] | None:
    """The stored entry by name; None if there is none; {} (noted) if damaged."""
    if raw is None:
        return None
    try:
        found = read(raw)
    except (EntryDamaged, PatternError, FilterError) as exc:
        repaired.append(f"{what}: {getattr(exc, 'reason', exc)}")
        return {}
    return dict(found)


async def sync_subscriptions(
    client: AsyncClient,
    keys: BusKeys,
    app: str,
    specs: Sequence[SubscriptionSpec],
    *,
    tasks: Sequence[TaskSpec] | None = None,
    allow_removal: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Make the registry's entries of ``app`` equal ``specs`` (and ``tasks``).

    An app with no subscriptions is still registered (an empty list), so that
    status can tell it exists. A damaged stored entry is replaced (it routes
    nothing, so nothing that works is removed) and the result says so.

    Args:
        client: The client.
        keys: The bus keys.
        app: The app.
        specs: Its subscriptions.
        tasks: Its task declarations (``bus.config.apps.task_specs``); None leaves
            the stored declarations as they are.
        allow_removal: Allow dropping subscriptions.
        dry_run: Compute the diff, write nothing.

    Raises:
        RemovalRefused: Subscriptions would be removed and ``allow_removal`` is
            False. Nothing is written.
    """
    raw, raw_tasks = await reads.app_registration(client, keys, app)
    repaired: list[str] = []

    def read_subs(doc: bytes) -> dict[str, SubscriptionSpec]:
        found = read_subscriptions(app, doc)
        for spec in found:
            CompiledSubscription.compile(spec)
        return {s.name: s for s in found}

    old = _stored(raw, read_subs, "subscriptions", repaired)
    added, removed, changed, unchanged = _diff(old or {}, {s.name: s for s in specs})
    tasks_diff: tuple[list[str], ...] = ([], [], [], [])
    if tasks is not None:
        old_tasks = _stored(raw_tasks, read_tasks, "tasks", repaired)
        tasks_diff = _diff(old_tasks or {}, {t.name: t for t in tasks})
    result = SyncResult(
        app=app,
        added=added,
        removed=removed,
        changed=changed,
        unchanged=unchanged,
        tasks_added=tasks_diff[0],
        tasks_removed=tasks_diff[1],
        tasks_changed=tasks_diff[2],
        repaired=repaired,
    )
    if result.removed and not allow_removal:
        raise RemovalRefused(result)
    missing = raw is None or (tasks is not None and raw_tasks is None)
    if dry_run or not (missing or result.has_changes):
        return result
    await writes.write_app(
        client,
        keys,
        app,
        _encode(specs),
        None if tasks is None else _encode(tasks),
        fresh_version=fresh_version(clock.now_ms()),
    )
    return replace(result, applied=True)


# A registry version is EPOCH * VERSION_EPOCH + n: a registry made afresh
# (first sync, or after Redis lost its data) starts from the time in ms, and
# every change adds 1. So a version never comes back after a loss (a
# publisher's cached snapshot from before it can never look current), and a
# change of epoch tells a lost registry from an app removed (bus.events.registry_watch).
VERSION_EPOCH = 1_000_000


def fresh_version(now_ms: int) -> int:
    """The version a registry made afresh at ``now_ms`` starts from (before its first +1)."""
    return now_ms * VERSION_EPOCH


def version_epoch(version: int) -> int:
    """The epoch of a version: when its registry was made (0 for one made by INCR alone)."""
    return version // VERSION_EPOCH


def _encode(specs: Sequence[SubscriptionSpec | TaskSpec]) -> bytes:
    return orjson.dumps([s.to_doc() for s in sorted(specs, key=lambda s: s.name)])


async def unregister_app(client: AsyncClient, keys: BusKeys, app: str) -> bool:
    """Remove an app, its subscriptions and task declarations; False if unknown.

    Events published afterwards no longer reach the app. Its queues and tasks
    are left as they are (purge them with the dead-letter and status tools).
    """
    return await writes.remove_app(client, keys, app, fresh_version=fresh_version(clock.now_ms()))
