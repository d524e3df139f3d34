"""The durable subscription registry: which app wants which events, in Redis.

Apps register their subscriptions when they are deployed (``python -m bus
subscriptions sync --app NAME``) and at every worker start, so events are routed
to an app's queue whether or not any of its workers runs. The registry is one
hash (app -> JSON list of subscriptions) plus a version counter bumped on every
change; publishers cache a snapshot and learn from the version that it is stale
(see ``bus.router``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis
from redis.asyncio import Redis

from bus.errors import BusError
from bus.keys import BusKeys
from bus.matching import compile_filter, compile_pattern

__all__ = [
    "CompiledSubscription",
    "Registry",
    "RemovalRefused",
    "SubscriptionSpec",
    "SyncResult",
    "load_registry",
    "load_registry_sync",
    "sync_subscriptions",
    "unregister_app",
]


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """One subscription as registered: what it matches and how its tasks run."""

    app: str
    name: str
    events: tuple[str, ...]
    where: dict[str, Any] | None = None
    queue: str = "default"
    max_attempts: int = 5
    backoff: Any = None
    timeout_s: float = 60.0
    delay_s: float = 0.0
    scope: str = "any"

    def to_doc(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in the registry."""
        doc = asdict(self)
        doc["events"] = list(self.events)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SubscriptionSpec:
        """Build from the stored form."""
        return cls(**{**doc, "events": tuple(doc["events"])})


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
    """A snapshot of the registry at one version."""

    version: str
    subscriptions: tuple[CompiledSubscription, ...] = ()
    apps: tuple[str, ...] = ()
    damaged: tuple[str, ...] = ()

    def route(self, event_type: str, data: Any) -> list[SubscriptionSpec]:
        """Return the subscriptions an event goes to."""
        return [s.spec for s in self.subscriptions if s.matches(event_type, data)]

    @classmethod
    def parse(cls, version: bytes | str | None, raw: dict[Any, Any]) -> Registry:
        """Build from ``GET version`` and ``HGETALL subs``."""
        subs: list[CompiledSubscription] = []
        apps = []
        for app, doc in sorted(raw.items()):
            apps.append(app.decode() if isinstance(app, bytes) else app)
            for item in orjson.loads(doc):
                subs.append(CompiledSubscription.compile(SubscriptionSpec.from_doc(item)))
        v = version.decode() if isinstance(version, bytes) else (version or "0")
        return cls(version=v, subscriptions=tuple(subs), apps=tuple(apps))


async def load_registry(client: Redis, keys: BusKeys) -> Registry:
    """Read a consistent snapshot of the registry (one MULTI, one slot)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.subs_version)
        pipe.hgetall(keys.subs)
        version, raw = await pipe.execute()
    return Registry.parse(version, raw)


def load_registry_sync(client: redis.Redis, keys: BusKeys) -> Registry:
    """Like :func:`load_registry`, for synchronous callers."""
    with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.subs_version)
        pipe.hgetall(keys.subs)
        version, raw = pipe.execute()
    return Registry.parse(version, raw)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync changed (or would change, when refused or a dry run)."""

    app: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    applied: bool = False

    def describe(self) -> str:
        """A short human summary of the diff."""
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        return f"app {self.app}: " + ("; ".join(parts) if parts else "no changes")


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


def _diff(app: str, old: Iterable[SubscriptionSpec], new: Sequence[SubscriptionSpec]) -> SyncResult:
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    return SyncResult(
        app=app,
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        changed=sorted(n for n in set(after) & set(before) if after[n] != before[n]),
        unchanged=sorted(n for n in set(after) & set(before) if after[n] == before[n]),
    )


async def sync_subscriptions(
    client: Redis,
    keys: BusKeys,
    app: str,
    specs: Sequence[SubscriptionSpec],
    *,
    allow_removal: bool = False,
    dry_run: bool = False,
) -> SyncResult:
    """Make the registry's subscriptions of ``app`` equal ``specs``.

    An app with no subscriptions is still registered (an empty list), so that
    status can tell it exists.

    Raises:
        RemovalRefused: Subscriptions would be removed and ``allow_removal`` is
            False. Nothing is written.
    """
    raw = await client.hget(keys.subs, app)
    old = [SubscriptionSpec.from_doc(d) for d in orjson.loads(raw)] if raw else []
    result = _diff(app, old, specs)
    if result.removed and not allow_removal:
        raise RemovalRefused(result)
    if dry_run or (raw is not None and not (result.added or result.removed or result.changed)):
        return result
    doc = orjson.dumps([s.to_doc() for s in sorted(specs, key=lambda s: s.name)])
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.subs, app, doc)
        pipe.incr(keys.subs_version)
        await pipe.execute()
    return SyncResult(
        app=app,
        added=result.added,
        removed=result.removed,
        changed=result.changed,
        unchanged=result.unchanged,
        applied=True,
    )


async def unregister_app(client: Redis, keys: BusKeys, app: str) -> bool:
    """Remove an app and all its subscriptions; return False if it was unknown.

    Events published afterwards no longer reach the app. Its queues and tasks
    are left as they are (purge them with the dead-letter and status tools).
    """
    async with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.subs, app)
        pipe.incr(keys.subs_version)
        removed, _ = await pipe.execute()
    return bool(removed)
