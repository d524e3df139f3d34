"""The stage a demo run plays on: its worker processes, the live screen and the clock.

:class:`Stage` holds what a run shows and runs (the workers and their status,
the events planned and published, the screen) and the moves every step of the
story makes: start a worker, wait for a condition while watching that no
worker died, refresh the summary, stop the workers. The story itself, the
steps in order, is :class:`bus.demo.run.Demo`, a :class:`Stage`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TextIO

from bus.config.settings import Settings
from bus.core import clock
from bus.demo import APPS, DEMO_PREFIX
from bus.demo.events import PlannedEvent, plan_events
from bus.demo.options import FIX_ENV, DemoFailed, DemoOptions
from bus.demo.procs import Child, Children, worker_env
from bus.demo.screen import Screen
from bus.demo.state import read_snapshot, worker_pids
from bus.store.types import STORE_ERRORS, AsyncClient

__all__ = ["CANCEL_TIMEOUT_S", "POLL_S", "Stage", "cancel", "together"]

POLL_S = 0.1
# How long an interrupted run may take to wind down before its workers are ended.
CANCEL_TIMEOUT_S = 5.0


class Stage:
    """The workers, screen and clock of one run of the demo, and the moves on them."""

    def __init__(
        self, settings: Settings, options: DemoOptions, out: TextIO, environ: Mapping[str, str]
    ) -> None:
        self.settings = settings.replace(prefix=DEMO_PREFIX)
        self.prefix = self.settings.prefix
        self.options = options
        self.out = out
        live = out.isatty() and not options.verbose and environ.get("TERM") != "dumb"
        self.screen = Screen(out, live=live)
        self.log_dir = None if options.verbose else self.settings.data_dir / "demo"
        self.children = Children(
            worker_env(environ, self.settings, {FIX_ENV: None}),
            ["--lease-s", str(options.lease_s), "--grace-s", "1"],
            self.log_dir,
        )
        self.plan: list[PlannedEvent] = plan_events(options.events, options.publish_s)
        self.published = 0
        self.workers: dict[str, str] = dict.fromkeys(APPS, "offline")
        self.current: dict[str, Child] = {}
        self._t0 = clock.monotonic_s()
        self._interrupted = asyncio.Event()

    # -- workers, waiting, the screen -----------------------------------------------------------

    def _start(self, app: str, *, label: str | None = None, **env: str | None) -> Child:
        child = self.children.start(app, label=label, **env)
        self.current[app] = child
        self.workers[app] = "starting"
        where = f", log {_short(child.log_path)}" if child.log_path else ""
        self.screen.note(f"{self._stamp()}started {child.label} worker (pid {child.pid}{where})")
        return child

    async def _wait_live(
        self, client: AsyncClient, children: list[Child], state: str = "running"
    ) -> None:
        """Wait until each child's worker has written its status record; show ``state``."""

        async def live() -> bool:
            pids = await worker_pids(client, self.prefix, {c.app for c in children})
            return all(c.pid in pids for c in children)

        labels = ", ".join(c.label for c in children)
        await self._wait(live, f"the {labels} worker(s) to start")
        for child in children:
            self.workers[child.app] = state

    async def _wait(
        self,
        check: Callable[[], bool | Awaitable[bool]],
        what: str,
        timeout_s: float | None = None,
        *,
        strict: bool = True,
    ) -> bool:
        """Poll ``check`` until true; fail when a worker dies or time is up.

        Returns:
            True when the check held; False on timeout when not ``strict``.

        Raises:
            DemoFailed: A worker exited unexpectedly, or (``strict``) time ran out.
        """
        limit = self.options.step_timeout_s if timeout_s is None else timeout_s
        deadline = clock.monotonic_s() + limit
        while True:
            if self._interrupted.is_set():
                raise asyncio.CancelledError
            crashed = self.children.crashed()
            if crashed:
                child = crashed[0]
                tail = child.log_tail()
                raise DemoFailed(
                    f"the {child.label} worker (pid {child.pid}) exited with status "
                    f"{child.exit_code()} while waiting for {what}"
                    + (f"; the end of {child.log_path}:\n{tail}" if tail else "")
                )
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return True
            if clock.monotonic_s() > deadline:
                if strict:
                    raise DemoFailed(f"timed out after {limit:g}s waiting for {what}")
                return False
            await asyncio.sleep(POLL_S)

    async def _refresh(self, client: AsyncClient) -> None:
        while True:
            try:
                snap = await read_snapshot(client, self.prefix, APPS)
            except STORE_ERRORS:
                pass  # the step that needs Redis reports it
            else:
                self.screen.show(
                    self._elapsed(), self.published, len(self.plan), snap, self.workers
                )
            await asyncio.sleep(self.options.refresh_s)

    def _stop_workers(self) -> None:
        for child in self.children.stop_all():
            self.workers[child.app] = "stopped"
            self.screen.note(f"{self._stamp()}stopped {child.label} worker (pid {child.pid})")

    def _where(self) -> str:
        if self.settings.redis_url is None:
            return f"the embedded server in {self.settings.data_dir} (BUS_REDIS_URL is not set)"
        return "the server at BUS_REDIS_URL"

    def _elapsed(self) -> float:
        return clock.monotonic_s() - self._t0

    def _stamp(self) -> str:
        return f"{self._elapsed():5.1f}s  "


async def cancel(task: asyncio.Task[Any], *, timeout_s: float) -> None:
    """Cancel a task and wait for it to end, for at most ``timeout_s``.

    The cancellation is repeated: redis-py can absorb one that lands inside a
    command, and the task would then carry on.
    """
    deadline = clock.monotonic_s() + timeout_s
    while not task.done() and clock.monotonic_s() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=POLL_S)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the interruption is what gets reported


async def together(*coros: Coroutine[Any, Any, None]) -> None:
    """Run coroutines concurrently; the first failure cancels the others."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            await cancel(task, timeout_s=CANCEL_TIMEOUT_S)


def _short(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
