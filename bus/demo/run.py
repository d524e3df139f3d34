"""``python -m bus demo``: the whole bus in one command, which checks its own outcome.

The story, on the configured Redis or the embedded one, under its own key
prefix (``demo``; its keys are cleared first with ``SCAN`` + ``UNLINK``, nothing
else is touched):

1. the subscriptions of the three example apps (billing, email, analytics)
   are synced, and the billing and email workers start as child processes
   (``python -m bus.worker``, logs in ``<data dir>/demo/<app>.log``);
2. a stream of events is published (:mod:`bus.demo.events`), one of them a
   poison order; billing publishes follow-ups for large orders;
3. a few seconds in, analytics starts *late* and catches up on the tasks that
   waited for it in Redis while it was offline;
4. the poison order fails every attempt in billing and becomes a dead letter;
5. the fix is "deployed": billing's worker is restarted with
   ``BILLING_POISON_FIXED=1`` and the dead task is replayed
   (:func:`bus.inspect.deadletters.replay`), then delivered;
6. once everything settled, the demo checks the outcome against the registry
   (:func:`bus.demo.state.final_checks`), prints a verdict
   (:mod:`bus.demo.verdict`) and exits 0 or 1.

Every child is ended by pid (SIGTERM, then SIGKILL) on success, failure,
Ctrl-C or SIGTERM; the embedded Redis is left running, since other taskbus
processes share it.

The steps are :class:`Demo`'s methods; the moves they share (start a worker,
wait for a condition while watching the workers, refresh the summary) are
:class:`bus.demo.stage.Stage`'s, the options and errors :mod:`bus.demo.options`'s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import TextIO

from bus.client import Bus
from bus.config.settings import Settings
from bus.core import clock
from bus.core.task import TaskState
from bus.demo import APPS
from bus.demo.events import PlannedEvent
from bus.demo.options import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    FIX_APP,
    FIX_ENV,
    LATE_APP,
    DemoBusy,
    DemoFailed,
    DemoOptions,
)
from bus.demo.stage import CANCEL_TIMEOUT_S, POLL_S, Stage, cancel, together
from bus.demo.state import (
    expected_tasks,
    final_checks,
    live_workers,
    read_snapshot,
    states_of,
    sync_apps,
)
from bus.demo.verdict import own_checks, verdict
from bus.errors import RedisCommandError, RedisSetupError, RedisUnavailable
from bus.events.publish import EventSpec
from bus.events.registry import load_registry
from bus.events.router import task_id_for
from bus.inspect.deadset import DeadTask, get_dead
from bus.inspect.replay import replay
from bus.store.admin import clear_prefix
from bus.store.connection import check_server, connect
from bus.store.keys import BusKeys
from bus.store.types import STORE_ERRORS, AsyncClient

__all__ = ["Demo", "run_demo"]

# A worker beating more recently than this belongs to a running demo (the
# demo's workers beat every lease / 3 s).
_LIVE_BEAT_MS = 10_000
# The read API (get_dead) raises taskbus's errors, the store's plain reads its own.
_REDIS_FAILED: tuple[type[Exception], ...] = (*STORE_ERRORS, RedisUnavailable, RedisCommandError)


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the demo; return its exit status.

    Args:
        settings: Where Redis, apps and schemas are; the prefix is replaced
            by :data:`~bus.demo.DEMO_PREFIX`.
        options: Durations and sizes.
        out: Where to write (default: standard output).
        environ: The environment the workers inherit (default: ``os.environ``).

    Returns:
        0 when every check held, 1 when one failed, 130 when interrupted.

    Raises:
        RedisSetupError: Redis cannot be used.
        DemoBusy: Another demo runs against the same Redis.
        ConfigError: An example app's config is invalid or missing.
    """
    demo = Demo(settings, options, out or sys.stdout, os.environ if environ is None else environ)
    return asyncio.run(demo.run())


class Demo(Stage):
    """One run of the demo (see the module docstring for the story)."""

    def __init__(
        self, settings: Settings, options: DemoOptions, out: TextIO, environ: Mapping[str, str]
    ) -> None:
        super().__init__(settings, options, out, environ)
        self.poison_key: str | None = None
        self.poison_tasks: dict[str, list[str]] = {}
        self.late_backlog: int | None = None
        self.caught_up_s: float | None = None
        self._stream_t0 = self._t0

    # -- the run -------------------------------------------------------------------

    async def run(self) -> int:
        """Run every step, check, stop the workers; return the exit status."""
        client = await connect(self.settings)
        loop = asyncio.get_running_loop()
        caught: list[str] = []

        def interrupt(name: str) -> None:
            caught.append(name)
            self._interrupted.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt, sig.name)
        scenario = asyncio.create_task(self._run(client), name="demo")
        interrupted = asyncio.create_task(self._interrupted.wait(), name="demo-interrupt")
        try:
            await asyncio.wait({scenario, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not self._interrupted.is_set():
                return scenario.result()
            await cancel(scenario, timeout_s=CANCEL_TIMEOUT_S)
            self.screen.freeze()
            self.screen.note(f"interrupted ({caught[0]}): stopping the workers")
            return EXIT_INTERRUPTED
        finally:
            interrupted.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._stop_workers()
            await client.aclose()

    async def _run(self, client: AsyncClient) -> int:
        try:
            await check_server(client, embedded=self.settings.redis_url is None)
        except STORE_ERRORS as exc:
            raise RedisSetupError(
                f"cannot reach {self._where()}: {exc}; check the setting and that the server runs"
            ) from exc
        await self._refuse_if_running(client)
        self._intro()
        try:
            return await self._story(client)
        except _REDIS_FAILED as exc:
            self.screen.freeze()
            self.screen.note(f"demo failed: Redis failed during the demo: {exc}")
            self.screen.note("verdict: FAIL - Redis failed during the demo")
            return EXIT_FAIL

    async def _story(self, client: AsyncClient) -> int:
        cleared = await clear_prefix(client, self.prefix)
        self.screen.note(
            f"cleared {cleared} keys of prefix '{self.prefix}:' (SCAN + UNLINK, nothing else)"
        )
        synced = await sync_apps(client, self.settings, APPS)
        self.screen.note(
            "synced subscriptions: " + ", ".join(f"{a} ({n})" for a, n in synced.items())
        )
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for app in APPS:
                (self.log_dir / f"{app}.log").write_bytes(b"")
            self.screen.note(f"worker logs: {self.log_dir}/<app>.log")
        refresher = asyncio.create_task(self._refresh(client), name="demo-refresh")
        failure: str | None = None
        try:
            first = [self._start(app) for app in APPS if app != LATE_APP]
            await self._wait_live(client, first)
            self._stream_t0 = clock.monotonic_s()
            await together(
                self._publish(Bus(self.settings, redis=client, source="demo")),
                self._late_start(client),
                self._poison_and_fix(client),
            )
            await self._drain(client)
        except DemoFailed as exc:
            failure = str(exc)
        finally:
            await cancel(refresher, timeout_s=CANCEL_TIMEOUT_S)
        crashed = self.children.crashed()
        self._stop_workers()
        snap = await read_snapshot(client, self.prefix, APPS)
        self.screen.table(self._elapsed(), self.published, len(self.plan), snap, self.workers)
        if failure is not None:
            self.screen.note(f"demo failed: {failure}")
        checks = await final_checks(
            client,
            self.prefix,
            APPS,
            published=self.published,
            poison_tasks=self.poison_tasks,
        )
        checks += own_checks(
            crashed,
            late_start_s=self.options.late_start_s,
            late_backlog=self.late_backlog,
            caught_up_s=self.caught_up_s,
        )
        return verdict(
            self.screen, checks, failure, settings=self.settings, poison_tasks=self.poison_tasks
        )

    # -- steps --------------------------------------------------------------------------

    def _intro(self) -> None:
        apps = ", ".join(APPS)
        self.screen.note(
            f"taskbus demo: {len(self.plan)} events over {self.options.publish_s:g}s to "
            f"{apps}; key prefix '{self.prefix}'"
        )
        self.screen.note(f"redis: {self._where()}")

    async def _refuse_if_running(self, client: AsyncClient) -> None:
        seen = await live_workers(client, self.prefix, APPS, clock.now_ms() - _LIVE_BEAT_MS)
        # A worker of this host whose process is gone (a crash) beat recently but is
        # no demo running; it is left out.
        alive = [
            f"{w.app} pid {w.pid or '?'} on {w.host or '?'}"
            for w in seen
            if w.host != socket.gethostname() or w.pid is None or _process_exists(w.pid)
        ]
        if alive:
            raise DemoBusy(
                f"another demo is running against this Redis (live workers of prefix "
                f"'{self.prefix}': {'; '.join(alive)}); wait for it to finish (it takes under "
                "a minute), or end those processes"
            )

    async def _publish(self, bus: Bus) -> None:
        index = 0
        while index < len(self.plan):
            if self._interrupted.is_set():
                raise asyncio.CancelledError
            now_s = clock.monotonic_s() - self._stream_t0
            due: list[PlannedEvent] = []
            while index + len(due) < len(self.plan) and self.plan[index + len(due)].at_s <= now_s:
                due.append(self.plan[index + len(due)])
            if not due:
                await asyncio.sleep(min(self.plan[index].at_s - now_s, POLL_S))
                continue
            keys = await bus.apublish_many([EventSpec(e.type, e.payload) for e in due])
            self.published += len(due)
            index += len(due)
            for event, key in zip(due, keys, strict=True):
                if event.poison:
                    self.poison_key = key
                    self.screen.note(
                        f"{self._stamp()}published the poison order {event.payload['order_id']} "
                        f"(event {key}): billing's handler fails on it"
                    )
        self.screen.note(f"{self._stamp()}published all {self.published} events")

    async def _late_start(self, client: AsyncClient) -> None:
        start_at = self._stream_t0 + self.options.late_start_s
        await self._wait(
            lambda: clock.monotonic_s() >= start_at,
            f"{LATE_APP}'s start time",
            self.options.late_start_s + 5,
        )
        backlog = (await read_snapshot(client, self.prefix, [LATE_APP])).apps[LATE_APP].total
        self.screen.note(
            f"{self._stamp()}starting {LATE_APP} late: {backlog} tasks waited for it in Redis "
            "while it was offline"
        )
        child = self._start(LATE_APP)
        started = clock.monotonic_s()
        await self._wait_live(client, [child])

        async def caught_up() -> bool:
            snap = await read_snapshot(client, self.prefix, [LATE_APP])
            return snap.apps[LATE_APP].delivered >= backlog

        await self._wait(caught_up, f"{LATE_APP} to catch up on its backlog of {backlog}")
        self.late_backlog = backlog
        self.caught_up_s = clock.monotonic_s() - started
        self.screen.note(
            f"{self._stamp()}{LATE_APP} caught up: its backlog of {backlog} delivered "
            f"{self.caught_up_s:.1f}s after it started"
        )

    async def _poison_and_fix(self, client: AsyncClient) -> None:
        await self._wait(
            lambda: self.poison_key is not None,
            "the poison order to be published",
            self.options.publish_s + self.options.step_timeout_s,
        )
        assert self.poison_key is not None
        ids = await self._poison_task_ids(client, self.poison_key)
        dead = await self._wait_poison_dead(client, ids)
        for task in dead:
            info = task.task.info
            error = info.errors[-1] if info.errors else None
            self.screen.note(
                f"{self._stamp()}dead letter in {FIX_APP}: task {task.id} failed "
                f"{info.attempts} of {info.max_attempts} attempts ({task.reason})"
            )
            if error is not None:
                self.screen.note(f"{' ' * 8}last error: {error.type}: {error.message}")
        await asyncio.sleep(self.options.show_dead_s)
        self.screen.note(
            f"{self._stamp()}deploying the fix: restarting {FIX_APP}'s worker with {FIX_ENV}=1"
        )
        old = self.current[FIX_APP]
        self.workers[FIX_APP] = "restarting"
        code = await self.children.stop(old)
        self.screen.note(f"{self._stamp()}stopped {old.label} worker (pid {old.pid}, exit {code})")
        new = self._start(FIX_APP, label=f"{FIX_APP} (fixed)", **{FIX_ENV: "1"})
        await self._wait_live(client, [new], state="running+fix")
        dead_ids = [t.id for t in dead]
        report = await replay(client, self.prefix, FIX_APP, dead_ids)
        if report.skipped:
            raise DemoFailed(f"replay skipped {report.skipped}")
        queues = ", ".join(f"{q} ({n})" for q, n in sorted(report.queues.items()))
        self.screen.note(
            f"{self._stamp()}replayed {len(report.replayed)} dead task(s) of {FIX_APP} "
            f"(bus.inspect.deadletters.replay) to queue {queues}"
        )
        self.poison_tasks = {FIX_APP: dead_ids}

        async def delivered() -> bool:
            tasks = [await get_dead(client, self.prefix, FIX_APP, i) for i in dead_ids]
            if any(t is not None for t in tasks):
                return False
            states = await states_of(client, self.prefix, FIX_APP, dead_ids)
            return all(s == TaskState.SUCCEEDED.value for s in states)

        await self._wait(delivered, "the replayed poison order to be delivered")
        self.screen.note(
            f"{self._stamp()}the poison order was delivered by {FIX_APP} after the replay"
        )

    async def _poison_task_ids(self, client: AsyncClient, key: str) -> list[str]:
        poison = next(e for e in self.plan if e.poison)
        registry = await load_registry(client, BusKeys(self.prefix))
        specs = [s for s in registry.route(poison.type, poison.payload) if s.app == FIX_APP]
        if not specs:
            raise DemoFailed(
                f"{FIX_APP} has no subscription matching the poison {poison.type} event; "
                f"check apps/{FIX_APP}/app.toml"
            )
        return [task_id_for(key, s.name) for s in specs]

    async def _wait_poison_dead(self, client: AsyncClient, ids: list[str]) -> list[DeadTask]:
        found: list[DeadTask] = []

        async def settled() -> bool:
            # Some of billing's subscriptions may handle the poison fine: wait
            # until each of its tasks either died or succeeded.
            states = await states_of(client, self.prefix, FIX_APP, ids)
            done = (TaskState.DEAD.value, TaskState.SUCCEEDED.value)
            if not all(s in done for s in states):
                return False
            found[:] = [
                t
                for t in [await get_dead(client, self.prefix, FIX_APP, i) for i in ids]
                if t is not None
            ]
            return True

        await self._wait(settled, f"the poison order's tasks in {FIX_APP} to fail or succeed")
        if not found:
            raise DemoFailed(
                f"the poison order did not fail in {FIX_APP} (is {FIX_ENV} set for its worker?)"
            )
        return found

    async def _drain(self, client: AsyncClient) -> None:
        async def drained() -> bool:
            snap = await read_snapshot(client, self.prefix, APPS)
            if snap.pending or any(c.unfinished for c in snap.apps.values()):
                return False
            expected = await expected_tasks(client, self.prefix, APPS)
            return all(snap.apps[a].total >= len(expected[a]) for a in APPS)

        self.screen.note(f"{self._stamp()}waiting for every task to finish")
        limit_s = self.options.drain_timeout_s
        if await self._wait(drained, "every task to finish", limit_s, strict=False):
            self.screen.note(f"{self._stamp()}everything settled")
        else:
            self.screen.note(f"{self._stamp()}not settled after {limit_s:g}s; checking anyway")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
