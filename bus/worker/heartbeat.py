"""The heartbeat: renews the leases a worker holds, writes its status, runs beat hooks.

Every third of the lease, and at once after a reconnect (:meth:`Heartbeat.soon`):

* renews the lease of every held task (running, ready, or awaiting its
  settle) in one call; a task whose lease was lost (the worker was paused
  past it, and the task recovered) is dropped from the slots, and a running
  handler of it cancelled, with no outcome;
* writes the worker's status record and reaps the records of workers that
  stopped beating (:func:`bus.store.engine.beat`);
* refreshes the queue list and runs the beat hooks (the node's membership,
  recurring chains, the bus's sweep of unrouted events).

It keeps beating while running handlers finish during a stop's grace period
(their leases must hold), and ends when told (:meth:`Heartbeat.finish`), by an
event rather than a cancellation, which a redis-py call can absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from bus.core import clock
from bus.store import engine
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient, StoreError
from bus.worker.hooks import Hook, run_hooks
from bus.worker.observer import GuardedObserver
from bus.worker.slots import Slots

__all__ = ["Heartbeat", "reap_after_ms"]

log = structlog.get_logger("bus.worker")


def reap_after_ms(lease_ms: int) -> int:
    """How long a worker's status record lasts without a beat before it is reaped."""
    return max(3 * lease_ms, 30_000)


class Heartbeat:
    """One worker's heartbeat (see the module docstring).

    Args:
        redis: The worker's client.
        keys: The app's keys.
        app_name: The app, for log lines.
        worker_id: The worker.
        lease_ms: The lease; a beat every third of it.
        slots: The tasks whose leases it renews.
        status: Builds the worker's status record for each beat.
        refresh_queues: Re-reads the app's queue list.
        hooks: Run after every beat; their errors are logged.
        observer: Told of lost leases (None: nothing is told).
    """

    __slots__ = (
        "_app",
        "_done",
        "_hooks",
        "_keys",
        "_lease_ms",
        "_observer",
        "_redis",
        "_refresh_queues",
        "_slots",
        "_soon",
        "_status",
        "_worker",
    )

    def __init__(
        self,
        redis: AsyncClient,
        keys: AppKeys,
        *,
        app_name: str,
        worker_id: str,
        lease_ms: int,
        slots: Slots,
        status: Callable[[], bytes],
        refresh_queues: Callable[[], Awaitable[None]],
        hooks: Sequence[Hook],
        observer: GuardedObserver | None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._app = app_name
        self._worker = worker_id
        self._lease_ms = lease_ms
        self._slots = slots
        self._status = status
        self._refresh_queues = refresh_queues
        self._hooks = list(hooks)
        self._observer = observer
        self._done = asyncio.Event()
        self._soon = asyncio.Event()

    def soon(self) -> None:
        """Beat now rather than at the end of the interval (after a reconnect)."""
        self._soon.set()

    def finish(self) -> None:
        """End the loop after the beat in progress, if any."""
        self._done.set()
        self._soon.set()

    async def loop(self) -> None:
        """Beat every third of the lease until :meth:`finish` is called."""
        interval = self._lease_ms / 3000
        while not self._done.is_set():
            self._soon.clear()
            try:
                await self.beat()
            except StoreError as exc:
                log.warning("heartbeat_failed", app=self._app, worker=self._worker, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), interval)

    async def beat(self) -> None:
        """One heartbeat: renew held leases, write status, reap dead workers, hooks."""
        now = clock.now_ms()
        held = list(self._slots.unsettled.values())
        if held:
            lost = await engine.renew(
                self._redis, self._keys, held, now_ms=now, lease_ms=self._lease_ms
            )
            tokens = {h.id: h.token for h in held}
            for task_id in lost:
                if self._slots.lose(task_id, tokens[task_id]) and self._observer is not None:
                    self._observer.lease_lost(task_id)
        reaped = await engine.beat(
            self._redis,
            self._keys,
            self._worker,
            self._status(),
            now_ms=now,
            reap_after_ms=reap_after_ms(self._lease_ms),
        )
        if reaped:
            log.info("workers_reaped", app=self._app, workers=reaped)
        await self._refresh_queues()
        await run_hooks(self._app, "beat_hook_failed", self._hooks)

    async def leave(self) -> None:
        """Remove the worker's status record (its last beat, at shutdown)."""
        await engine.beat(
            self._redis,
            self._keys,
            self._worker,
            b"",
            now_ms=clock.now_ms(),
            reap_after_ms=reap_after_ms(self._lease_ms),
        )
