"""The durable subscription registry: which app wants which events, and which
tasks each app declares, in Redis.

Apps register their subscriptions when they are deployed (``python -m bus
subscriptions sync --app NAME``) and at every worker start, so events are routed
to an app's queue whether or not any of its workers runs. The same sync stores
the app's task declarations (``[[tasks]]`` and ``[[recurring]]``), so that a
producer without the app's code enqueues a task by name with the declared
queue and options (``bus.events.declarations``).

The registry is two hashes, app -> JSON list (``subs``: subscriptions;
``tasks``: task declarations, see ``bus.events.registry_specs`` for the stored
forms), plus a version counter bumped on every change; publishers cache a
snapshot and learn from the version that it is stale (see ``bus.events.router``).
Syncing and removing apps, and the version epoch, are in ``bus.events.registry_sync``.
The declarations live in a hash of their own so that the ``subs`` entries keep
the form every earlier version reads and writes: a registry written by an
earlier version still parses (its apps just declare no tasks yet), and an
earlier publisher still reads a registry written by this one.

A damaged entry (not UTF-8, not JSON, a wrong shape or field, a pattern that no
longer compiles) costs that app's entry only: :meth:`Registry.parse` skips it,
lists the app in :attr:`Registry.damaged` with its reason, and logs
``registry_entry_damaged`` once per registry version. The publisher keeps
events pending while any entry is damaged, so the damaged app gets them once
its entry is repaired (a sync rewrites it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from bus.events.matching import FilterError, PatternError, compile_filter, compile_pattern
from bus.events.registry_specs import (
    EntryDamaged,
    SubscriptionSpec,
    TaskSpec,
    app_name_of,
    read_subscriptions,
    read_tasks,
)
from bus.store import reads
from bus.store.keys import BusKeys, validate_app_name
from bus.store.types import AsyncClient, SyncClient

log = structlog.get_logger("bus.registry")

__all__ = [
    "CompiledSubscription",
    "Registry",
    "SubscriptionSpec",
    "TaskSpec",
    "load_registry",
    "load_registry_sync",
]


@dataclass(frozen=True, slots=True)
class CompiledSubscription:
    """A subscription with its patterns and filter compiled for matching."""

    spec: SubscriptionSpec
    patterns: tuple[Any, ...]
    filter: Any

    @classmethod
    def compile(cls, spec: SubscriptionSpec) -> CompiledSubscription:
        """Compile a spec's patterns and filter."""
        return cls(
            spec=spec,
            patterns=tuple(compile_pattern(p) for p in spec.events),
            filter=compile_filter(spec.where) if spec.where else None,
        )

    def matches(self, event_type: str, data: Any) -> bool:
        """True if the event's type matches a pattern and its data the filter."""
        if not any(p.matches(event_type) for p in self.patterns):
            return False
        return self.filter is None or bool(self.filter.matches(data))


@dataclass(frozen=True, slots=True)
class Registry:
    """A snapshot of the registry at one version.

    Attributes:
        version: The registry version the snapshot was read at.
        subscriptions: Every sound subscription, compiled.
        apps: Every registered app, those with a damaged entry included.
        damaged: The apps whose subscriptions entry is damaged and skipped (a
            name that is not UTF-8 is shown escaped). Events must stay pending
            while this is not empty: the skipped apps may subscribe to them.
        damage: Why each app in ``damaged`` is.
        tasks: Per app whose entry has them, its task declarations by name.
            An app missing here declared none through the registry (it was
            synced by an earlier version, or never); see ``bus.events.declarations``.
        task_damage: Apps whose task declarations entry is damaged, and why.
    """

    version: str
    subscriptions: tuple[CompiledSubscription, ...] = ()
    apps: tuple[str, ...] = ()
    damaged: tuple[str, ...] = ()
    damage: Mapping[str, str] = field(default_factory=dict)
    tasks: Mapping[str, Mapping[str, TaskSpec]] = field(default_factory=dict)
    task_damage: Mapping[str, str] = field(default_factory=dict)

    @property
    def holds_events(self) -> bool:
        """True if no event may leave ``pending`` under this snapshot.

        An app's entry is damaged (that app may subscribe), or the version key
        is: ``routed.lua`` compares versions byte for byte, and a version that
        is not the counter's integer could never be matched.
        """
        return bool(self.damaged) or not self.version.isdigit()

    def route(self, event_type: str, data: Any) -> list[SubscriptionSpec]:
        """Return the subscriptions an event goes to."""
        return [s.spec for s in self.subscriptions if s.matches(event_type, data)]

    @classmethod
    def parse(
        cls,
        version: bytes | str | None,
        raw: Mapping[Any, Any],
        raw_tasks: Mapping[Any, Any] | None = None,
    ) -> Registry:
        """Build from ``GET version``, ``HGETALL subs`` and ``HGETALL tasks``.

        Never raises on a stored entry: a damaged one is skipped, listed in
        :attr:`damaged` (or :attr:`task_damage`) and logged once per version.
        """
        v = version.decode("utf-8", "backslashreplace") if isinstance(version, bytes) else version
        v = v or "0"
        if not v.isdigit():
            _DAMAGE_LOG.report_version(v)
        subs: list[CompiledSubscription] = []
        apps: list[str] = []
        damage: dict[str, str] = {}
        for raw_app, doc in sorted(raw.items()):
            app, reason = app_name_of(raw_app)
            apps.append(app)
            if reason is None:
                try:
                    specs = read_subscriptions(app, doc)
                    subs.extend(CompiledSubscription.compile(s) for s in specs)
                    continue
                except EntryDamaged as exc:
                    reason = exc.reason
                except (PatternError, FilterError) as exc:
                    reason = f"a pattern or filter no longer compiles: {exc}"
            damage[app] = reason
        tasks: dict[str, Mapping[str, TaskSpec]] = {}
        task_damage: dict[str, str] = {}
        for raw_app, doc in sorted((raw_tasks or {}).items()):
            app, reason = app_name_of(raw_app)
            if reason is None:
                try:
                    tasks[app] = read_tasks(doc)
                    continue
                except EntryDamaged as exc:
                    reason = exc.reason
            task_damage[app] = reason
        _DAMAGE_LOG.report(v, "subscriptions", damage)
        _DAMAGE_LOG.report(v, "tasks", task_damage)
        return cls(
            version=v,
            subscriptions=tuple(subs),
            apps=tuple(apps),
            damaged=tuple(damage),
            damage=damage,
            tasks=tasks,
            task_damage=task_damage,
        )


class _DamageLog:
    """Logs each damaged entry once per registry version, not on every load.

    Publishers reload on every version change and the sweep on every beat
    while events are pending, which a damaged entry makes them stay: the log
    line is worth one per version, not one per beat of every worker.
    """

    _KEEP = 256

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()

    def report(self, version: str, entry: str, damage: Mapping[str, str]) -> None:
        for app, reason in damage.items():
            key = (version, entry, app, reason)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > self._KEEP:
                self._seen.popitem(last=False)
            log.error(
                "registry_entry_damaged",
                app=app,
                entry=entry,
                reason=reason,
                registry_version=version,
                action=(
                    f"repair it: python -m bus subscriptions sync --app {app}"
                    if _valid_name(app)
                    else "delete this field of the registry hash: no app has this name"
                ),
            )

    def report_version(self, version: str) -> None:
        """Log a version key that is not an integer, once per value."""
        key = (version, "version", "", "")
        if key in self._seen:
            return
        self._seen[key] = None
        log.error(
            "registry_version_damaged",
            registry_version=version,
            reason="the registry version key does not hold an integer: no event can be "
            "marked routed (they stay pending) and no sync can bump it",
            action="delete the version key (DEL <prefix>:bus:{.bus}:subs:version); the next "
            "sync makes a new one",
        )

    def reset(self) -> None:
        """Forget what was logged (tests)."""
        self._seen.clear()


_DAMAGE_LOG = _DamageLog()


def _valid_name(app: str) -> bool:
    try:
        validate_app_name(app)
    except ValueError:
        return False
    return True


async def load_registry(client: AsyncClient, keys: BusKeys) -> Registry:
    """Read a consistent snapshot of the registry (one MULTI, one slot)."""
    return Registry.parse(*await reads.registry_entries(client, keys))


def load_registry_sync(client: SyncClient, keys: BusKeys) -> Registry:
    """Like :func:`load_registry`, for synchronous callers."""
    return Registry.parse(*reads.registry_entries_sync(client, keys))
