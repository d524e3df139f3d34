"""Declared task options for a task enqueued by app name.

A producer often lives in another service, without the app's code: it calls
``bus.enqueue("support", "digest", ...)`` with the app's name. The options
that app.toml declares for ``digest`` (queue, max_attempts, backoff,
timeout_s, scope) reach it through the registry: every sync stores the app's
task declarations beside its subscriptions (``bus.events.registry``), and a
:class:`Declarations` cache per :class:`~bus.client.Bus` resolves them here.

The cache keeps the last registry snapshot and checks its version (one
``GET``) when the snapshot was last confirmed more than
:data:`CHECK_EVERY_S` ago, reloading it only when the version moved; a
producer that enqueues often so makes no extra round trip. A task declared
after the last check is found by one reload before the name is refused.

The rule, per item, once the options the caller gave are applied:

* a declared name takes the declaration's options for those not given;
* a name the app does not declare, or an app whose declarations entry is
  damaged, is refused (:class:`TaskNotDeclared`) unless the caller gives an
  option of its own (``queue``, ``max_attempts``, ``timeout_s``, ``backoff``
  or ``scope``); then the defaults fill in the rest;
* an app the registry holds no declarations of (never synced, or synced by a
  version that did not store them) takes the defaults, as before, with a
  ``task_declarations_unknown`` warning once per registry version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from bus.core import clock
from bus.errors import BusError
from bus.events.registry import Registry, load_registry, load_registry_sync
from bus.events.registry_specs import TaskSpec
from bus.store import reads
from bus.store.keys import BusKeys
from bus.store.types import AsyncClient, SyncClient

if TYPE_CHECKING:
    from bus.core.enqueue import EnqueueItem

log = structlog.get_logger("bus.declarations")

__all__ = ["CHECK_EVERY_S", "Declarations", "TaskNotDeclared"]

#: How long a snapshot is trusted before its version is checked again (one GET).
CHECK_EVERY_S = 1.0


class TaskNotDeclared(BusError, LookupError):
    """A task was enqueued by app name and the app does not declare it.

    Attributes:
        app: The app.
        name: The task name.
        declared: The names the app declares.
    """

    def __init__(self, app: str, name: str, declared: Sequence[str], damage: str | None) -> None:
        if damage is not None:
            what = f"the registry's task declarations of app {app!r} are damaged ({damage})"
            fix = f"repair them with `python -m bus subscriptions sync --app {app}`, or pass"
        else:
            listed = ", ".join(sorted(declared)) or "none"
            what = f"app {app!r} declares no task {name!r} (declared tasks: {listed})"
            fix = "declare it under [[tasks]] in its app.toml and sync the app, or pass"
        super().__init__(
            f"cannot enqueue {name!r}: {what}; {fix} the App object or explicit options "
            "(queue, max_attempts, timeout_s, backoff, scope). Nothing was written."
        )
        self.app = app
        self.name = name
        self.declared = sorted(declared)


def _explicit(item: EnqueueItem) -> bool:
    return (
        item.queue is not None
        or item.max_attempts is not None
        or item.timeout_s is not None
        or item.backoff is not None
        or item.scope is not None
    )


class _Missing(Exception):
    """A name the snapshot does not declare (before the one reload)."""


def _resolve(
    registry: Registry, app: str, items: Sequence[EnqueueItem], *, final: bool
) -> Mapping[str, TaskSpec] | None:
    """The app's declarations, after checking that every item may use them."""
    damage = registry.task_damage.get(app)
    declared = registry.tasks.get(app)
    if declared is None and damage is None:
        return None
    for item in items:
        if (declared is None or item.name not in declared) and not _explicit(item):
            if not final:
                raise _Missing
            raise TaskNotDeclared(app, item.name, list(declared or ()), damage)
    return declared or {}


class Declarations:
    """A producer's cached view of the registry's task declarations.

    Safe to share between threads and tasks: it only ever replaces its
    snapshot, and two callers that reload at once both get a current one.

    Args:
        keys: The bus keys.
        check_every_s: How long a snapshot is used before its version is
            checked again.
    """

    def __init__(self, keys: BusKeys, *, check_every_s: float = CHECK_EVERY_S) -> None:
        self.keys = keys
        self.check_every_s = check_every_s
        self._registry: Registry | None = None
        self._checked_s = 0.0
        self._warned: set[tuple[str, str]] = set()

    def _fresh(self) -> Registry | None:
        registry = self._registry
        if registry is not None and clock.monotonic_s() - self._checked_s < self.check_every_s:
            return registry
        return None

    def _keep(self, registry: Registry) -> Registry:
        self._registry = registry
        self._checked_s = clock.monotonic_s()
        return registry

    def _unknown(self, registry: Registry, app: str) -> None:
        key = (registry.version, app)
        if key not in self._warned:
            if len(self._warned) > 1024:
                self._warned.clear()
            self._warned.add(key)
            reason = (
                "registered by a version that did not store task declarations"
                if app in registry.apps
                else "not registered"
            )
            log.warning(
                "task_declarations_unknown",
                app=app,
                reason=reason,
                effect="tasks enqueued by app name get the default options",
                fix=f"start the app's worker or run `python -m bus subscriptions sync --app {app}`",
            )

    def _done(
        self, registry: Registry, app: str, items: Sequence[EnqueueItem], reloaded: bool
    ) -> tuple[Mapping[str, TaskSpec] | None, bool]:
        """Resolve; the flag says a reload is worth one more try."""
        try:
            found = _resolve(registry, app, items, final=reloaded)
        except _Missing:
            return None, True
        if found is None:
            self._unknown(registry, app)
        return found, False

    async def aresolve(
        self, client: AsyncClient, app: str, items: Sequence[EnqueueItem]
    ) -> Mapping[str, TaskSpec] | None:
        """The declarations ``items`` of ``app`` get; None when none are known.

        Raises:
            TaskNotDeclared: An item's name is not declared and it gives no
                option of its own.
        """
        registry = self._fresh()
        reloaded = False
        if registry is None:
            registry, reloaded = await self._acheck(client)
        found, retry = self._done(registry, app, items, reloaded)
        if retry:
            registry = self._keep(await load_registry(client, self.keys))
            found, _ = self._done(registry, app, items, True)
        return found

    async def _acheck(self, client: AsyncClient) -> tuple[Registry, bool]:
        registry = self._registry
        if registry is not None:
            version = await reads.registry_version(client, self.keys)
            if _text(version) == registry.version:
                return self._keep(registry), False
        return self._keep(await load_registry(client, self.keys)), True

    def resolve_sync(
        self, client: SyncClient, app: str, items: Sequence[EnqueueItem]
    ) -> Mapping[str, TaskSpec] | None:
        """Like :meth:`aresolve`, for synchronous callers."""
        registry = self._fresh()
        reloaded = False
        if registry is None:
            registry, reloaded = self._check_sync(client)
        found, retry = self._done(registry, app, items, reloaded)
        if retry:
            registry = self._keep(load_registry_sync(client, self.keys))
            found, _ = self._done(registry, app, items, True)
        return found

    def _check_sync(self, client: SyncClient) -> tuple[Registry, bool]:
        registry = self._registry
        if registry is not None:
            version = reads.registry_version_sync(client, self.keys)
            if _text(version) == registry.version:
                return self._keep(registry), False
        return self._keep(load_registry_sync(client, self.keys)), True

    def forget(self) -> None:
        """Drop the snapshot; the next enqueue by app name reads the registry."""
        self._registry = None


def _text(raw: object) -> str:
    if raw is None:
        return "0"
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
