"""Connection trouble: one warning when Redis goes away, back-off, one line when it is back.

The claimer, the settler and the heartbeat meet the same outage at once;
they share one :class:`Trouble`, so the log says ``redis_unavailable`` once
and ``redis_reconnected`` once, with how long it lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog

from bus.core import clock
from bus.store.types import StoreError, is_connection_trouble

__all__ = ["Trouble"]

log = structlog.get_logger("bus.worker")

# The first retry waits about this long; each further one doubles it, up to the cap.
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 2.0


class Trouble:
    """The worker's view of its Redis connection: up, or down since when.

    Args:
        app_name: The app, for log lines.
        worker_id: The worker, for log lines.
        stop: Set when the worker stops: a back-off ends early.
        on_recovered: Called when Redis answers again (the worker beats at
            once: the server may have come back empty).
    """

    __slots__ = ("_app", "_delay", "_on_recovered", "_stop", "_worker", "since")

    def __init__(
        self, app_name: str, worker_id: str, stop: asyncio.Event, on_recovered: Callable[[], None]
    ) -> None:
        self._app = app_name
        self._worker = worker_id
        self._stop = stop
        self._on_recovered = on_recovered
        self._delay = _FIRST_DELAY_S
        #: When the trouble began (monotonic seconds), None while Redis answers.
        self.since: float | None = None

    async def wait(self, exc: StoreError) -> None:
        """Note a failed call and wait before the caller tries again (jittered, doubling)."""
        if self.since is None:
            self.since = clock.monotonic_s()
            log.warning(
                "redis_unavailable",
                app=self._app,
                worker=self._worker,
                error=f"{type(exc).__name__}: {exc}",
            )
        elif not is_connection_trouble(exc):
            log.warning("redis_error", app=self._app, error=f"{type(exc).__name__}: {exc}")
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, _MAX_DELAY_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def recovered(self) -> None:
        """Note a call that succeeded (cheap while nothing was wrong)."""
        if self.since is not None:
            down_s = round(clock.monotonic_s() - self.since, 3)
            log.info("redis_reconnected", app=self._app, worker=self._worker, down_s=down_s)
            self.since = None
            self._delay = _FIRST_DELAY_S
            self._on_recovered()
