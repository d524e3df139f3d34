"""Noticing that Redis lost the subscription registry, and putting an app back.

A Redis server that comes back empty (restarted without persistence, a
failover to an empty replica, a ``FLUSHALL``) has no registry: every worker
reconnects and works its queues again, but events published afterwards reach
no app, and nothing said so. A worker's :class:`RegistryWatch` checks with
every heartbeat, and at once after a reconnect, that its app still has its
registry entry: ``HEXISTS`` of the entry and ``GET`` of the registry version,
pipelined in one round trip (both O(1)) beside the heartbeat's other calls. It
cannot ride inside the heartbeat's own script: the registry is a bus-wide key
(hash tag ``{.bus}``) and the heartbeat's keys are the app's (``{app}``), and a
script may only touch the keys of one Redis Cluster slot.

An entry can also be missing because an operator removed the app
(``subscriptions unregister``), which a worker must not undo. The version
tells the two apart: every registry change increments it, and a registry made
afresh starts from a new epoch (the time, see ``bus.events.registry``), so a loss
shows as no version, a version that went down, or one of another epoch. One
of the same epoch that went up is a removal, logged once as
``app_unregistered`` and left alone.

On a loss the watch logs ``registry_lost`` as an error, once per loss, and,
if the worker syncs its app at start (no ``--no-sync``), syncs it again from
the worker's config with the same call the start uses; then it runs the
``after_loss`` hooks (the worker re-runs its recurring tasks' boot check,
whose chains were lost with the rest).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from bus.events.registry_sync import SyncResult, version_epoch
from bus.store import reads
from bus.store.keys import BusKeys
from bus.store.types import AsyncClient

__all__ = ["RegistryWatch"]

log = structlog.get_logger("bus.worker")


class RegistryWatch:
    """Checks that an app is still registered; re-syncs it when Redis lost it.

    Args:
        client: The worker's Redis client.
        keys: The bus-wide keys.
        app: The app whose registry entry to watch.
        resync: Syncs the app's declarations from its config (the worker's
            start-up sync); None when the worker was started without syncing,
            so a loss is only logged.
        after_loss: Coroutines run after a loss was found and re-synced (or,
            with no ``resync``, after it was found): what else an empty Redis
            took that the worker can put back.
    """

    def __init__(
        self,
        client: AsyncClient,
        keys: BusKeys,
        app: str,
        *,
        resync: Callable[[], Awaitable[SyncResult]] | None,
        after_loss: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        self.client = client
        self.keys = keys
        self.app = app
        self.resync = resync
        self.after_loss = list(after_loss)
        self._lost = False
        self._removed = False
        # The registry version at the last check that found the entry.
        self._seen_version: int | None = None

    async def prime(self) -> None:
        """Take the registry version as it is after the worker's start-up sync.

        Without it, the first check would have no version to compare with,
        and a loss before it (another app re-registering first) would pass
        for an operator's removal. An app not registered at all (a
        ``--no-sync`` worker of an app never synced) is logged once as
        ``app_not_registered`` and not taken for a removed one later.
        """
        present, version = await self._read()
        self._seen_version = version
        if not present:
            self._removed = True
            log.warning(
                "app_not_registered",
                app=self.app,
                reason="the app has no entry in the subscription registry: events reach "
                "no worker of it",
                action=f"`python -m bus subscriptions sync --app {self.app}`",
            )

    async def _read(self) -> tuple[bool, int | None]:
        present, raw_version = await reads.app_registered(self.client, self.keys, self.app)
        return present, _version(raw_version)

    async def check(self) -> bool:
        """One check (a heartbeat hook); re-sync the app if Redis lost its entry.

        Returns:
            True if the app is registered (again, after a re-sync).

        Raises:
            bus.store.types.StoreError: Redis failed; the next heartbeat
                checks again (the loss is not logged twice).
        """
        present, version = await self._read()
        if present:
            self._lost = self._removed = False
            self._seen_version = version
            return True
        if not self._lost and not self._lost_registry(version):
            if not self._removed:
                self._removed = True
                log.warning(
                    "app_unregistered",
                    app=self.app,
                    reason="the app was removed from the subscription registry (its version "
                    "went up, Redis did not lose it); this worker leaves it removed",
                    action=f"`python -m bus subscriptions sync --app {self.app}` or a worker "
                    "restart registers it again",
                )
            return False
        if not self._lost:
            self._lost = True
            log.error(
                "registry_lost",
                app=self.app,
                resync=self.resync is not None,
                version_seen=self._seen_version,
                version_now=version,
                reason="the app has no entry in the subscription registry and the registry "
                "version is gone or went back: Redis lost its data; events published "
                "meanwhile reached no worker of this app",
                action="re-syncing from the app's config"
                if self.resync is not None
                else "started with --no-sync, so not writing: run `python -m bus "
                f"subscriptions sync --app {self.app}`",
            )
            if self.resync is None:
                for hook in self.after_loss:
                    await hook()
        if self.resync is None:
            return False
        result = await self.resync()
        log.warning("registry_restored", app=self.app, diff=result.describe())
        for hook in self.after_loss:
            await hook()
        return True

    def _lost_registry(self, version: int | None) -> bool:
        # No version at all: nothing was ever registered, or Redis lost it.
        if version is None:
            return True
        seen = self._seen_version
        if seen is None:
            return False
        # A new epoch: the registry was made afresh since (bus.events.registry).
        return version < seen or version_epoch(version) != version_epoch(seen)


def _version(raw: bytes | str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
