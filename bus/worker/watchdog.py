"""The event-loop watchdog: notices and reports a blocked worker loop.

Everything a worker does (claims, heartbeats, settles, async handlers) shares
one asyncio event loop. An async handler that blocks it (``time.sleep``, a
CPU-bound loop, a blocking client) stalls all of that: leases are not renewed
and may expire, other handlers' timeouts cannot fire. Nothing inside the loop
can notice, so a daemon thread watches it.

The loop ticks every quarter of the threshold (a timer callback that notes the
time). The thread checks as often; when the last tick is older than the
threshold it logs ``event_loop_blocked`` with how long the loop has been
blocked and the loop thread's current stack (innermost frame last: the line
that blocks). While the block lasts it logs again each time the duration
doubles; once the loop ticks again it logs ``event_loop_unblocked`` with the
total. The worker starts the watchdog when it runs and stops it when it ends.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from pathlib import Path

import structlog

from bus.core import clock

__all__ = ["DEFAULT_BLOCK_WARN_S", "LoopWatchdog", "stack_summary"]

log = structlog.get_logger("bus.worker")

# A loop blocked this long has already delayed every other handler and timer of
# the worker by a second: long enough to be a bug, short enough to report well
# before a lease (15 s by default) is at risk.
DEFAULT_BLOCK_WARN_S = 1.0
STACK_FRAMES = 12


def stack_summary(thread_id: int, limit: int = STACK_FRAMES) -> list[str]:
    """Return the innermost ``limit`` frames of a thread's current stack, innermost last.

    Each frame is ``file:line in function``; the innermost also shows its
    source line. Empty when the thread is not running.
    """
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return []
    frames = traceback.extract_stack(frame)[-limit:]
    out = [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
    if frames and frames[-1].line:
        out[-1] += f": {frames[-1].line}"
    return out


class LoopWatchdog:
    """Watches one event loop from a daemon thread and logs when it is blocked.

    Args:
        threshold_s: How long the loop may go without ticking before it is
            reported.
        app: The app, for the log lines.
        worker: The worker id, for the log lines.
    """

    def __init__(self, threshold_s: float, *, app: str = "", worker: str = "") -> None:
        if not threshold_s > 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s}")
        self.threshold_s = threshold_s
        self.app = app
        self.worker = worker
        self.interval_s = threshold_s / 4
        self.checks = 0
        self._last_tick = clock.monotonic_s()
        self._reported_s = 0.0  # how long the current block was when last reported
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def started(
        cls, threshold_s: float | None, *, app: str = "", worker: str = ""
    ) -> LoopWatchdog | None:
        """Start a watchdog on the running loop; None (no watchdog) when ``threshold_s`` is
        None or 0."""
        if not threshold_s:
            return None
        watchdog = cls(threshold_s, app=app, worker=worker)
        watchdog.start()
        return watchdog

    @property
    def running(self) -> bool:
        """The watching thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching the running loop (call from the loop's thread)."""
        if self._thread is not None:
            raise RuntimeError("the watchdog was started already")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last_tick = clock.monotonic_s()
        self._handle = self._loop.call_later(self.interval_s, self._tick)
        self._thread = threading.Thread(
            target=self._watch, name=f"bus-watchdog-{self.app or 'loop'}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the thread ends within one check interval."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, 2 * self.interval_s))

    def _tick(self) -> None:
        now = clock.monotonic_s()
        if self._reported_s:
            log.warning(
                "event_loop_unblocked",
                app=self.app,
                worker=self.worker,
                blocked_s=round(now - self._last_tick, 3),
            )
            self._reported_s = 0.0
        self._last_tick = now
        if not self._stop.is_set() and self._loop is not None:
            self._handle = self._loop.call_later(self.interval_s, self._tick)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def check(self) -> None:
        """Look once: log if the loop has not ticked for longer than the threshold."""
        self.checks += 1
        blocked_s = clock.monotonic_s() - self._last_tick
        due = max(self.threshold_s, 2 * self._reported_s)
        if blocked_s < due or self._stop.is_set():
            return
        self._reported_s = blocked_s
        log.warning(
            "event_loop_blocked",
            app=self.app,
            worker=self.worker,
            blocked_s=round(blocked_s, 3),
            threshold_s=self.threshold_s,
            stack=stack_summary(self._loop_thread),
            reason="something on the event loop blocks it (time.sleep, CPU-bound work, "
            "blocking I/O in an async handler?): no heartbeat, claim or timeout runs meanwhile",
        )
