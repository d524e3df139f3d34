"""The worker's slots: the tasks it holds, which of them run, which wait ready.

One owner for the three sets the claimer, the attempts, the settler and the
heartbeat all read:

* ``unsettled``: every task the worker holds a claim on (running, ready, or
  done with its outcome not yet recorded); the heartbeat renews their leases;
* ``ready``: claimed, not started yet (at most ``prefetch``), in claim order;
  a freed slot starts the oldest at once, without a round trip, and on stop
  they are handed back at once, their attempt not counted;
* ``running``: the attempts whose handlers run now (at most ``concurrency``).

A task id comes back for each attempt, so everything that drops a claim names
its token as well: an old claim's answer never drops a newer claim of the same
task. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from bus.core import clock
from bus.store.engine import ClaimedTask, Held

__all__ = ["Counters", "Running", "Slots"]

log = structlog.get_logger("bus.worker")


@dataclass(slots=True)
class Counters:
    """What the worker has done since it started (its status record shows them)."""

    processed: int = 0
    failed: int = 0
    dead: int = 0
    rejected: int = 0
    started_ms: int = field(default_factory=clock.now_ms)


class Running:
    """A task whose handler runs in one of the slots (an attempt, :mod:`bus.worker.attempt`).

    Attributes:
        held: The claim it runs under.
        task: The asyncio task that runs it.
        lost: Its lease was lost: it was cancelled and has no outcome.
        released: It was handed back at shutdown: cancelled, no outcome.
    """

    __slots__ = ("held", "lost", "released", "task")

    def __init__(self, held: Held) -> None:
        self.held = held
        self.task: asyncio.Task[None] | None = None
        self.lost = False
        self.released = False

    def cancel(self, *, lost: bool) -> None:
        """Stop the handler: its lease was lost, or the worker hands it back."""
        if lost:
            self.lost = True
        else:
            self.released = True
        if self.task is not None:
            self.task.cancel()


class Slots:
    """The tasks one worker holds, runs and has ready (see the module docstring).

    Args:
        app_name: The app, for log lines.
        concurrency: The most handlers running at once.
        prefetch: The most claimed tasks held ready beyond the running ones.
    """

    __slots__ = (
        "app_name",
        "concurrency",
        "freed",
        "prefetch",
        "ready",
        "running",
        "stopping",
        "unsettled",
    )

    def __init__(self, app_name: str, concurrency: int, prefetch: int) -> None:
        self.app_name = app_name
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.running: dict[str, Running] = {}
        self.ready: dict[str, ClaimedTask] = {}
        self.unsettled: dict[str, Held] = {}
        #: Set when a slot frees (or the worker stops): the claimer waits on it.
        self.freed = asyncio.Event()
        #: No new task starts once set (the worker is stopping).
        self.stopping = False

    def take(self, claimed: Sequence[ClaimedTask]) -> None:
        """Hold newly claimed tasks as ready (started by the attempts' runner)."""
        unsettled, ready = self.unsettled, self.ready
        for task in claimed:
            unsettled[task.id] = Held(task.id, task.token, task.queue)
            ready[task.id] = task

    def vacate(self, task_id: str, running: Running) -> None:
        """Free the slot of an attempt that ended (or was given up)."""
        if self.running.get(task_id) is running:
            del self.running[task_id]
        self.freed.set()

    def take_ready(self) -> list[Held]:
        """Drop every ready task and return their claims, newest first.

        For handing back: release.lua pushes each onto the end claims take
        from, so newest first keeps the oldest next in line.
        """
        ready = [Held(c.id, c.token, c.queue) for c in reversed(self.ready.values())]
        self.ready.clear()
        return ready

    def forget(self, task_id: str, token: str) -> None:
        """Drop a claim whose outcome was recorded (or that was handed back)."""
        held = self.unsettled.get(task_id)
        if held is not None and held.token == token:
            del self.unsettled[task_id]

    def lose(self, task_id: str, token: str) -> bool:
        """The lease of a held task was lost (a renew found it recovered).

        A ready task is dropped; a running one is cancelled, with no outcome.
        A task whose handler is done keeps its claim: its outcome is on its
        way, and the settle's answer decides (a stale one is logged
        ``ack_rejected``). Returns whether a claim was dropped.
        """
        held = self.unsettled.get(task_id)
        if held is None or held.token != token:
            return False
        running = self.running.get(task_id)
        if running is None and task_id in self.ready:
            del self.ready[task_id]
            del self.unsettled[task_id]
            log.warning(
                "lease_lost",
                app=self.app_name,
                task_id=task_id,
                reason="lease expired before the task started; it was recovered "
                "and may run elsewhere",
            )
            return True
        if running is None:
            return False
        del self.unsettled[task_id]
        log.warning(
            "lease_lost",
            app=self.app_name,
            task_id=task_id,
            reason="lease expired; the task was recovered and may run elsewhere",
        )
        if running.held.token == token:
            running.cancel(lost=True)
        return True

    def awaiting_settle(self) -> bool:
        """Whether a held task is done and its outcome not recorded yet."""
        running, ready = self.running, self.ready
        return any(h.id not in running and h.id not in ready for h in self.unsettled.values())
