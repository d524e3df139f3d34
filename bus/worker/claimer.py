"""The claimer: takes tasks for the free slots, and waits for work without polling.

Its loop claims as many tasks as there are free slots, plus up to
``prefetch`` more held ready so that a freed slot starts its next task
without a round trip, in queue order. With every slot busy it tops the ready
tasks up only once half of them have started: fewer, larger claims. When the
queues are empty it blocks on their wake lists (``BLPOP``) with the next
claim queued behind the wait on the same connection, so a woken worker's
claim costs no extra round trip (:func:`bus.store.engine.claim_when_woken`).
A delayed task or a lease coming due is met by a local timer that pokes the
worker's own wake list at that moment, because Redis only checks blocking
timeouts about every 100 ms: it never polls.

A worker serving ``*`` keeps the app's queue list, read at start, with every
beat, and when the app's wake list says a queue was added.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from bus.core import clock
from bus.nodes import is_node_queue
from bus.store import engine, reads, writes
from bus.store.engine import ClaimedTask, ClaimResult
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient, StoreError
from bus.worker.attempt import Runner
from bus.worker.observer import GuardedObserver
from bus.worker.settler import Settler
from bus.worker.slots import Slots
from bus.worker.trouble import Trouble

__all__ = ["WAIT_BLOCK_S", "Claimer"]

log = structlog.get_logger("bus.worker")

# An idle worker's blocking wait ends after this long at the latest (a guard
# against half-open connections; work and due times wake it much sooner).
WAIT_BLOCK_S = 30


class Claimer:
    """Claims one worker's tasks (see the module docstring).

    Args:
        redis: The worker's client.
        keys: The app's keys.
        app_name: The app, for log lines.
        worker_id: The worker.
        queues: The queues as configured (``*`` included).
        node_queue: The node's own queue, served first.
        lease_ms: The lease each claim takes.
        burst: Return once nothing runs, is due or awaits settling.
        slots: Where claimed tasks go.
        runner: Starts the ready tasks.
        settler: Flushed before a burst worker decides it is idle.
        trouble: Shared connection trouble.
        observer: Told of each claim (None: nothing is told).
    """

    __slots__ = (
        "_app",
        "_burst",
        "_keys",
        "_lease_ms",
        "_node_queue",
        "_observer",
        "_redis",
        "_runner",
        "_settler",
        "_slots",
        "_trouble",
        "_worker",
        "known_queues",
        "own_wake",
        "queues",
    )

    def __init__(
        self,
        redis: AsyncClient,
        keys: AppKeys,
        *,
        app_name: str,
        worker_id: str,
        queues: Sequence[str],
        node_queue: str,
        lease_ms: int,
        burst: bool,
        slots: Slots,
        runner: Runner,
        settler: Settler,
        trouble: Trouble,
        observer: GuardedObserver | None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._app = app_name
        self._worker = worker_id
        self.queues = list(queues)
        self._node_queue = node_queue
        self._lease_ms = lease_ms
        self._burst = burst
        self._slots = slots
        self._runner = runner
        self._settler = settler
        self._trouble = trouble
        self._observer = observer
        #: The app's queues as last read (for ``*``).
        self.known_queues: list[str] = []
        #: The worker's own wake list: a poke ends its blocking wait.
        self.own_wake = keys.worker_wake(worker_id)

    async def loop(self) -> None:
        """Claim until the slots stop (or, in burst mode, until idle)."""
        slots, trouble = self._slots, self._trouble
        woken: ClaimResult | None = None
        while not slots.stopping:
            free = slots.concurrency - len(slots.running)
            room = free + slots.prefetch - len(slots.ready)
            # With every slot busy, top the ready tasks up only once half of
            # them have started: fewer, larger claims.
            if room <= 0 or (free <= 0 and len(slots.ready) > slots.prefetch // 2):
                slots.freed.clear()
                await slots.freed.wait()
                # Let the handlers that end in this loop turn free their slots
                # too: one claim for all of them instead of one claim each.
                await asyncio.sleep(0)
                continue
            queues = self.serve_order()
            settles_before = self._settler.settles
            if woken is not None:
                # The claim that came back with the wake-up is the fresh one.
                result, woken = woken, None
            else:
                try:
                    result = await engine.claim(
                        self._redis,
                        self._keys,
                        queues,
                        now_ms=clock.now_ms(),
                        lease_ms=self._lease_ms,
                        max_tasks=room,
                        worker_id=self._worker,
                    )
                except StoreError as exc:
                    await trouble.wait(exc)
                    continue
                trouble.recovered()
                self._log_damaged(result)
            self.take(result.tasks)
            if len(result.tasks) >= room:
                continue
            if not self._burst:
                if result.tasks:
                    # Let the tasks just started reach their handlers before
                    # the wait is armed: packing and writing BLPOP + claim
                    # first held each of them back by ~100 us (issue 7, C).
                    await asyncio.sleep(0)
                woken = await self._wait_for_work(
                    queues, result.next_wake_ms, room - len(result.tasks)
                )
            elif await self._burst_idle(result, settles_before):
                return

    def take(self, claimed: Sequence[ClaimedTask]) -> None:
        """Hold claimed tasks ready and start what the free slots can run."""
        if claimed:
            self._slots.take(claimed)
            if self._observer is not None:
                self._observer.claimed(claimed)
        self._runner.start_ready()

    def _log_damaged(self, result: ClaimResult) -> None:
        # The claim dead-lettered these in the same step; each is reported by
        # exactly one claim, so this is the one log line per damaged task.
        for task_id, reason in result.damaged:
            log.error(
                "task_damaged", app=self._app, worker=self._worker, task_id=task_id, reason=reason
            )

    async def _burst_idle(self, result: ClaimResult, settles_before: int) -> bool:
        """In burst mode: True once nothing runs, is due, or awaits settling."""
        slots = self._slots
        if result.tasks or self._settler.settles != settles_before:
            # A settle that completed while this claim was in flight may have
            # scheduled a retry the claim could not see yet.
            return False
        if slots.running:
            slots.freed.clear()
            await slots.freed.wait()
            return False
        if self._settler.outcomes or slots.unsettled:
            # Claim again after the last outcomes are recorded: a retry they
            # schedule may be due at once and must run before we exit.
            await self._settler.flush()
            return False
        return result.next_wake_ms is None or result.next_wake_ms > clock.now_ms()

    def serve_order(self) -> list[str]:
        """The queues of the next claim, in the order they are served."""
        # The node's own queue comes first; '*' never stands for a node queue.
        node_queue = self._node_queue
        named = [q for q in self.queues if q not in ("*", node_queue)]
        if "*" not in self.queues:
            return [node_queue, *named]
        rest = [q for q in self.known_queues if q not in named and not is_node_queue(q)]
        order: list[str] = [node_queue]
        for q in self.queues:
            order.extend(rest if q == "*" else [q] if q in named else [])
        return order

    async def refresh_queues(self) -> None:
        """Re-read the app's queue list (a worker serving ``*``)."""
        if "*" in self.queues:
            try:
                self.known_queues = await reads.queue_names(self._redis, self._keys)
            except StoreError as exc:
                await self._trouble.wait(exc)

    async def _wait_for_work(
        self, queues: list[str], next_wake_ms: int | None, room: int
    ) -> ClaimResult | None:
        """Block until work may be there; return the claim made on waking, if any."""
        keys = self._keys
        wake_keys = [keys.queue(q).wake for q in queues]
        if "*" in self.queues:
            wake_keys.append(keys.wake)
        wake_keys.append(self.own_wake)
        loop = asyncio.get_running_loop()
        timer = None
        if next_wake_ms is not None:
            delay_s = (next_wake_ms - clock.now_ms()) / 1000
            if delay_s <= 0:
                return None
            timer = loop.call_later(delay_s, lambda: loop.create_task(self.poke()))
        try:
            # The server-side timeout is only a liveness guard for half-open
            # connections; work and due times wake us through the lists.
            popped, result = await engine.claim_when_woken(
                self._redis,
                keys,
                queues,
                wake_keys,
                block_s=WAIT_BLOCK_S,
                now_ms=clock.now_ms(),
                lease_ms=self._lease_ms,
                max_tasks=room,
                worker_id=self._worker,
            )
        except StoreError as exc:
            await self._trouble.wait(exc)
            return None
        finally:
            if timer is not None:
                timer.cancel()
        self._trouble.recovered()
        if result is not None:
            self._log_damaged(result)
        if self._slots.stopping and result is not None:
            # Stopped while the claim ran: the tasks go to the ready set, which
            # shutdown hands back at once.
            self.take(result.tasks)
            return None
        if popped == keys.wake.encode():
            await self.refresh_queues()
            if result is not None:
                # Claimed over the old queue list: take it, then claim again.
                self.take(result.tasks)
            return None
        return result

    async def poke(self) -> None:
        """End the worker's blocking wait (a due time came, or the worker stops)."""
        with contextlib.suppress(StoreError):  # the claim loop meets it too, and reports it
            await writes.poke_wake(self._redis, self.own_wake)

    async def leave(self) -> None:
        """Delete the worker's own wake list (at shutdown)."""
        await writes.drop_wake(self._redis, self.own_wake)
