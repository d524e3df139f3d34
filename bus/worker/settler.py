"""The settler: records the outcomes of finished attempts, in batches, and hands tasks back.

Attempts queue their outcomes with :meth:`Settler.add`; one coroutine
(:meth:`Settler.loop`) sends what has gathered as one ``settle.lua`` call
per up to 1,000 outcomes, so a busy worker pays one round trip for many
tasks. A call that fails for connection trouble is sent again, the same
batch, until Redis answers (settle is idempotent per claim token). The
claim of every outcome sent is dropped from the slots; outcomes the script
refuses (stale tokens: the lease was lost and the task recovered) are
logged ``ack_rejected``. Hooks given as ``on_settled`` (recurring chains)
then run with the accepted outcomes.

:meth:`Settler.hand_back` releases held tasks to the front of their queues
(at shutdown, and for tasks claimed while the worker stopped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from bus.core import clock
from bus.store import engine
from bus.store.engine import Held, Outcome
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient, StoreError
from bus.worker.hooks import run_hooks
from bus.worker.observer import GuardedObserver
from bus.worker.slots import Counters, Slots
from bus.worker.trouble import Trouble

__all__ = ["BATCH_MAX", "Settler"]

log = structlog.get_logger("bus.worker")

#: The most outcomes one settle call carries.
BATCH_MAX = 1000
# A hand-back is tried this many times, this far apart, before the tasks are
# left to be recovered when their leases expire.
_HAND_BACK_TRIES = 20
_HAND_BACK_PAUSE_S = 0.1


class Settler:
    """Sends the outcomes of one worker's attempts (see the module docstring)."""

    __slots__ = (
        "_app",
        "_counters",
        "_keys",
        "_observer",
        "_on_settled",
        "_redis",
        "_retention_ms",
        "_slots",
        "_trouble",
        "closing",
        "outcomes",
        "settles",
        "wanted",
    )

    def __init__(
        self,
        redis: AsyncClient,
        keys: AppKeys,
        *,
        app_name: str,
        retention_ms: int,
        slots: Slots,
        counters: Counters,
        trouble: Trouble,
        on_settled: Sequence[Callable[[Sequence[Outcome]], Awaitable[object]]],
        observer: GuardedObserver | None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._app = app_name
        self._retention_ms = retention_ms
        self._slots = slots
        self._counters = counters
        self._trouble = trouble
        self._on_settled = list(on_settled)
        self._observer = observer
        #: Outcomes waiting to be sent, in the order attempts ended.
        self.outcomes: list[Outcome] = []
        #: Set when outcomes are waiting (or the loop should end).
        self.wanted = asyncio.Event()
        #: Settle calls completed, so a burst worker can tell a settle happened.
        self.settles = 0
        #: The loop ends once everything queued is sent.
        self.closing = False

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome; the loop sends it with whatever else has gathered."""
        self.outcomes.append(outcome)
        self.wanted.set()

    async def loop(self) -> None:
        """Send queued outcomes until :attr:`closing` is set and nothing is left."""
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            while self.outcomes:
                batch, self.outcomes = self.outcomes[:BATCH_MAX], self.outcomes[BATCH_MAX:]
                await self._settle(batch)
            if self.closing:
                return

    async def _settle(self, batch: list[Outcome]) -> None:
        while True:
            try:
                rejected = await engine.settle(
                    self._redis,
                    self._keys,
                    batch,
                    now_ms=clock.now_ms(),
                    retention_ms=self._retention_ms,
                )
                break
            except StoreError as exc:
                await self._trouble.wait(exc)
        self._trouble.recovered()
        self.settles += 1
        forget = self._slots.forget
        for outcome in batch:
            forget(outcome.id, outcome.token)
        for task_id in rejected:
            self._counters.rejected += 1
            log.warning(
                "ack_rejected",
                app=self._app,
                task_id=task_id,
                reason="stale claim token: the lease was lost and the task recovered",
            )
        if self._on_settled or self._observer is not None:
            refused = set(rejected)
            accepted = [o for o in batch if o.id not in refused] if refused else batch
            if self._observer is not None:
                self._observer.settled(accepted, rejected)
            if self._on_settled:
                await run_hooks(self._app, "settle_hook_failed", self._on_settled, accepted)

    async def flush(self) -> None:
        """Return once every outcome queued or still to be queued by a done
        attempt is recorded (a burst worker's last step before it exits)."""
        while self.outcomes or self._slots.awaiting_settle():
            self.wanted.set()
            await asyncio.sleep(0.001)

    async def hand_back(self, held: list[Held]) -> None:
        """Release held tasks to the front of their queues (retrying briefly)."""
        for unsettled in held:
            self._slots.forget(unsettled.id, unsettled.token)
        last: StoreError | None = None
        for _ in range(_HAND_BACK_TRIES):
            try:
                count = await engine.release(self._redis, self._keys, held, now_ms=clock.now_ms())
                log.info("tasks_handed_back", app=self._app, count=count)
                return
            except StoreError as exc:
                await asyncio.sleep(_HAND_BACK_PAUSE_S)
                last = exc
        log.error(
            "hand_back_failed",
            app=self._app,
            tasks=[h.id for h in held],
            error=str(last),
            note="the tasks are recovered when their leases expire",
        )
