"""Handlers that misbehave: hang past their timeout, raise odd things, block the loop.

In every case the worker survives, the task gets its outcome (retry, then dead
with every attempt's error recorded), the worker's next tasks run, and the
worker logs what happened.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bus import App, TaskContext, TaskState, Worker
from bus.client import Bus
from bus.config.settings import Settings
from bus.core.verdict import MESSAGE_CHARS, TRACEBACK_CHARS
from bus.store.keys import AppKeys
from bus.worker.__main__ import main as worker_main
from bus.worker.watchdog import LoopWatchdog
from tests.conftest import Logs, events
from tests.engine_helpers import eventually, running_worker, task_in_state
from tests.procs.runner import Proc

APP = "faults"
KEYS = AppKeys("bus", APP)


# -- handlers that hang past their timeout ----------------------------------------


async def test_sync_handler_that_never_returns_costs_a_thread_not_the_worker(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """A hung sync handler is retried then dead; its thread is abandoned, later tasks get others."""
    app = App(APP)
    release = threading.Event()
    starts: list[int] = []

    @app.task(timeout_s=0.05, max_attempts=2, backoff=[0.01])
    def stuck(payload: Any, ctx: TaskContext) -> None:
        starts.append(ctx.attempt)
        release.wait(60)

    @app.task()
    def fine(payload: Any) -> str:
        return "ok"

    hung = await bus.enqueue(app, "stuck", 1)
    good = await bus.enqueue(app, "fine", 2)
    try:
        async with running_worker(app, aredis, concurrency=1) as worker:
            dead = await task_in_state(bus, APP, hung.id, TaskState.DEAD)
            await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
            assert worker.executor.abandoned == 2
            release.set()
            await eventually(lambda: _true(worker.executor.abandoned == 0), what="threads to end")
    finally:
        release.set()
    assert starts == [1, 2]  # the retry ran; it did not queue behind the hung thread
    assert dead.dead_reason == "attempts exhausted"
    assert [e.type for e in dead.errors] == ["TaskTimeout", "TaskTimeout"]
    abandoned = events(logs, "handler_thread_abandoned")
    assert [(e["task_id"], e["attempt"]) for e in abandoned] == [(hung.id, 1), (hung.id, 2)]
    finished = events(logs, "abandoned_handler_finished")
    assert sorted(e["attempt"] for e in finished) == [1, 2]


async def test_worker_stops_although_a_handler_ignores_cancellation_at_shutdown(
    bus: Bus, aredis: Redis, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown waits a bounded time for a deaf handler, hands its task back and leaves."""
    monkeypatch.setattr("bus.worker.loop.SHUTDOWN_CANCEL_WAIT_S", 0.2)
    app = App(APP)
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task(timeout_s=60)
    async def deaf(payload: Any, ctx: TaskContext) -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the bug under test: the cancellation is swallowed

    hung = await bus.enqueue(app, "deaf", 1)
    worker = Worker(app, aredis, lease_s=5.0, grace_s=0.1)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    try:
        await asyncio.wait_for(asyncio.shield(runner), 10)
    finally:
        release.set()
    info = await bus.get_task(APP, hung.id)
    assert info is not None
    assert info.state is TaskState.QUEUED  # handed back for another worker
    assert [e["count"] for e in events(logs, "handler_ignored_cancellation")] == [1]


async def test_async_handler_that_ignores_cancellation_is_abandoned_and_its_slot_freed(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """An async handler that swallows its timeout's cancellation is given up on after a grace."""
    app = App(APP)
    release = asyncio.Event()
    ended: list[int] = []

    @app.task(timeout_s=0.05, max_attempts=2, backoff=[0.01])
    async def deaf(payload: Any, ctx: TaskContext) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the bug under test: the cancellation is swallowed
        ended.append(ctx.attempt)

    @app.task()
    async def fine(payload: Any) -> None:
        return None

    hung = await bus.enqueue(app, "deaf", 1)
    good = await bus.enqueue(app, "fine", 2)
    async with running_worker(app, aredis, concurrency=1) as worker:
        dead = await task_in_state(bus, APP, hung.id, TaskState.DEAD)
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
        release.set()
        await eventually(lambda: _true(len(ended) == 2), what="the abandoned handlers to end")
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
    after = await bus.get_task(APP, hung.id)
    assert after is not None
    assert after.state is TaskState.DEAD  # the late return changed nothing
    assert dead.dead_reason == "attempts exhausted"
    assert [e.type for e in dead.errors] == ["TaskTimeout", "TaskTimeout"]
    assert "ignored its cancellation" in dead.errors[0].message
    reports = events(logs, "handler_ignored_cancellation")
    assert [(e["task_id"], e["outcome"]) for e in reports] == [
        (hung.id, "retry"),
        (hung.id, "dead"),
    ]
    assert (worker.counters.failed, worker.counters.dead) == (2, 1)


async def _true(value: bool) -> bool:
    return value


# -- handlers that raise odd things -------------------------------------------------


class Custom(BaseException):
    """A BaseException subclass that is not an Exception."""


class BadStr(Exception):
    """An exception whose message cannot be rendered."""

    def __str__(self) -> str:
        raise ValueError("no text for you")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


ODD: dict[str, tuple[Callable[[], BaseException], str, str]] = {
    "custom BaseException": (lambda: Custom("custom base"), "Custom", "custom base"),
    "KeyboardInterrupt": (lambda: KeyboardInterrupt("ctrl-c"), "KeyboardInterrupt", "ctrl-c"),
    "SystemExit": (lambda: SystemExit(3), "SystemExit", "3"),
    "CancelledError": (
        lambda: asyncio.CancelledError("by the handler"),
        "CancelledError",
        "by the handler",
    ),
    "GeneratorExit": (lambda: GeneratorExit("gen"), "GeneratorExit", "gen"),
    "__str__ raises": (lambda: BadStr(), "BadStr", "<BadStr.__str__ raised ValueError>"),
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("case", list(ODD))
async def test_handler_raising_an_odd_exception_is_retried_then_dead_with_it_recorded(
    bus: Bus, aredis: Redis, logs: Logs, case: str, sync: bool
) -> None:
    """BaseExceptions and unprintable errors fail the attempt like any error; the worker goes on."""
    make, expected_type, expected_message = ODD[case]
    app = App(APP)

    if sync:

        @app.task(name="odd", max_attempts=2, backoff=[0.01])
        def odd_sync(payload: Any) -> None:
            raise make()

    else:

        @app.task(name="odd", max_attempts=2, backoff=[0.01])
        async def odd_async(payload: Any) -> None:
            raise make()

    @app.task()
    async def fine(payload: Any) -> None:
        return None

    bad = await bus.enqueue(app, "odd", 1)
    async with running_worker(app, aredis, concurrency=1) as worker:
        dead = await task_in_state(bus, APP, bad.id, TaskState.DEAD)
        good = await bus.enqueue(app, "fine", 2)
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
    assert dead.dead_reason == "attempts exhausted"
    assert [(e.type, e.message) for e in dead.errors] == [(expected_type, expected_message)] * 2
    assert all(expected_type in e.traceback for e in dead.errors)
    assert (worker.counters.failed, worker.counters.dead) == (2, 1)
    assert [e["error_type"] for e in events(logs, "task_failed")] == [expected_type]
    assert [e["error_type"] for e in events(logs, "task_dead")] == [expected_type]


async def test_huge_exception_message_is_clipped_in_the_record_and_the_log(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """A multi-megabyte message is stored and logged clipped; the traceback keeps the frames."""
    app = App(APP)

    @app.task(max_attempts=1)
    async def shout(payload: Any) -> None:
        raise ValueError("x" * 5_000_000)

    ref = await bus.enqueue(app, "shout", 1)
    async with running_worker(app, aredis):
        dead = await task_in_state(bus, APP, ref.id, TaskState.DEAD)
    stored = await aredis.hget(KEYS.errors, ref.id)
    assert stored is not None
    assert len(stored) < MESSAGE_CHARS + TRACEBACK_CHARS + 1000
    [error] = orjson.loads(stored)
    assert error["message"].startswith("x" * MESSAGE_CHARS)
    assert error["message"].endswith(f"[{5_000_000 - MESSAGE_CHARS} more characters]")
    assert "in shout" in dead.errors[0].traceback
    [logged] = events(logs, "task_dead")
    assert len(logged["error"]) < MESSAGE_CHARS + 100


# -- a blocked event loop -------------------------------------------------------------


def block_the_loop(seconds: float) -> None:
    """Block the calling thread (the event loop's, in these tests)."""
    time.sleep(seconds)


async def test_watchdog_reports_a_blocked_loop_with_the_blocking_frame(logs: Logs) -> None:
    """A loop blocked past the threshold is reported, again as the block doubles, then its end."""
    dog = LoopWatchdog(0.05, app=APP, worker="w1")
    dog.start()
    try:
        block_the_loop(0.4)
        await eventually(lambda: _true(bool(events(logs, "event_loop_unblocked"))))
    finally:
        dog.stop()
    blocked = events(logs, "event_loop_blocked")
    assert len(blocked) >= 2
    durations = [e["blocked_s"] for e in blocked]
    assert durations == sorted(durations)
    assert durations[0] >= 0.05
    assert blocked[0]["app"] == APP
    assert "in block_the_loop: time.sleep(seconds)" in blocked[0]["stack"][-1]
    [unblocked] = events(logs, "event_loop_unblocked")
    assert unblocked["blocked_s"] >= 0.4


async def test_watchdog_stays_quiet_while_the_loop_runs_and_ends_its_thread_on_stop(
    logs: Logs,
) -> None:
    """A loop that keeps ticking is never reported; stop() ends the watching thread."""
    dog = LoopWatchdog(0.05)
    dog.start()
    assert dog.running
    await eventually(lambda: _true(dog.checks >= 20), what="20 checks")
    dog.stop()
    assert not dog.running
    assert events(logs, "event_loop_blocked") == []


async def test_async_handler_blocking_the_loop_past_its_lease_is_reported_and_work_goes_on(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """time.sleep in an async handler: the worker logs the blocked loop; the task completes."""
    app = App(APP)

    @app.task(timeout_s=5)
    async def sleepy(payload: Any, ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            block_the_loop(0.5)

    @app.task()
    async def fine(payload: Any) -> None:
        return None

    slow = await bus.enqueue(app, "sleepy", 1)
    async with running_worker(app, aredis, lease_s=0.2, block_warn_s=0.1):
        await task_in_state(bus, APP, slow.id, TaskState.SUCCEEDED)
        good = await bus.enqueue(app, "fine", 2)
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
        await eventually(lambda: _true(bool(events(logs, "event_loop_unblocked"))))
    blocked = events(logs, "event_loop_blocked")
    assert blocked
    assert blocked[0]["app"] == APP
    assert any("in block_the_loop: time.sleep(seconds)" in line for line in blocked[0]["stack"])
    assert any("in sleepy" in line for line in blocked[0]["stack"])


# -- the worker process -------------------------------------------------------------------

HANDLERS = '''
"""Handlers that misbehave, for the worker process tests."""
import os
import threading
import time

import redis


def stuck(payload):
    client = redis.Redis.from_url(os.environ["BUS_REDIS_URL"])
    client.rpush("test:stuck:started", payload)
    client.close()
    threading.Event().wait()  # never returns


async def sleepy(payload):
    time.sleep(payload)
'''

APP_TOML = """
name = "faults"

[[tasks]]
name = "stuck"
handler = "handlers:stuck"
timeout_s = 0.1
max_attempts = 1

[[tasks]]
name = "sleepy"
handler = "handlers:sleepy"
"""


@pytest.fixture
def worker_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment for a worker process of the app ``faults`` on the private server."""
    app_dir = tmp_path / "apps" / APP
    app_dir.mkdir(parents=True)
    (app_dir / "handlers.py").write_text(HANDLERS)
    (app_dir / "app.toml").write_text(APP_TOML)
    env = {
        "BUS_REDIS_URL": str(settings.redis_url),
        "BUS_SCHEMAS_DIR": str(settings.schemas_dir),
        "BUS_APPS_DIR": str(tmp_path / "apps"),
        "BUS_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(env)


async def start_worker(procs: Callable[..., Proc], *extra: str) -> Proc:
    """Start ``python -m bus.worker --app faults`` and wait until it works."""
    proc = procs("-m", "bus.worker", "--app", APP, "--log-level", "info", *extra, name="worker")
    await eventually(
        lambda: _true("worker_started" in proc.output() or proc.popen.poll() is not None),
        20,
        "the worker to start",
    )
    assert proc.popen.poll() is None, proc.output()
    return proc


async def test_worker_process_with_a_hung_sync_handler_still_stops_on_sigterm(
    worker_env: Settings, procs: Callable[..., Proc], bus: Bus
) -> None:
    """The hung handler's task dies on its timeout; SIGTERM then ends the process promptly."""
    proc = await start_worker(procs, "--grace-s", "0.2")
    ref = await bus.enqueue(APP, "stuck", 1, max_attempts=1, timeout_s=0.1)
    dead = await task_in_state(bus, APP, ref.id, TaskState.DEAD)
    assert dead.errors[0].type == "TaskTimeout"
    await eventually(lambda: _true("handler_thread_abandoned" in proc.output()))
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.output()
    assert "worker_stopped" in proc.output()


async def test_worker_process_logs_a_blocked_loop_with_the_handler_line(
    worker_env: Settings, procs: Callable[..., Proc], bus: Bus
) -> None:
    """--block-warn-s sets the watchdog's threshold; the log names the blocking handler line."""
    proc = await start_worker(procs, "--block-warn-s", "0.1")
    ref = await bus.enqueue(APP, "sleepy", 0.5)
    await task_in_state(bus, APP, ref.id, TaskState.SUCCEEDED)
    await eventually(lambda: _true("event_loop_unblocked" in proc.output()))
    lines = [orjson.loads(line) for line in proc.output().splitlines() if "event_loop_" in line]
    blocked = [line for line in lines if line["event"] == "event_loop_blocked"]
    assert blocked, proc.output()
    assert blocked[0]["app"] == APP
    assert blocked[0]["stack"][-1].startswith("handlers.py:")
    assert blocked[0]["stack"][-1].endswith("in sleepy: time.sleep(payload)")
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.output()


def test_worker_cli_refuses_a_negative_block_warn_threshold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--block-warn-s below 0 is a usage error naming the flag."""
    assert worker_main(["--app", APP, "--block-warn-s", "-1"]) == 2
    assert "--block-warn-s must be >= 0" in capsys.readouterr().err
