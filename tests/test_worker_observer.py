"""The worker's observer seam (bus/worker/observer.py), over a real worker and Redis.

A recording observer sees every claim, one start and exactly one end per
attempt (ok, retry, dead, and a lost lease with no verdict), the settled
batches, and the lost lease; its context manager wraps the handler. An
observer that raises changes no outcome: its errors are logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from redis.asyncio import Redis

from bus import App, TaskContext, TaskState
from bus.client import Bus
from bus.core.task import TaskRecord
from bus.core.verdict import Verdict
from bus.store.engine import ClaimedTask, Outcome
from bus.store.keys import AppKeys
from bus.worker.observer import NullObserver
from tests.conftest import Logs, events
from tests.engine_helpers import eventually, running_worker, steal_lease, task_in_state

APP = "observed"
KEYS = AppKeys("bus", APP)


class Recorder(NullObserver):
    """Records every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        self.calls.append(("claimed", [t.id for t in tasks]))

    def started(self, ctx: TaskContext, record: TaskRecord) -> AbstractContextManager[Any] | None:
        self.calls.append(("started", ctx.task_id, ctx.attempt, record.name))
        return self._around(ctx.task_id)

    @contextmanager
    def _around(self, task_id: str) -> Iterator[None]:
        self.calls.append(("enter", task_id))
        try:
            yield
        except BaseException as exc:
            self.calls.append(("exit", task_id, type(exc).__name__))
            raise
        self.calls.append(("exit", task_id, None))

    def finished(self, claimed: ClaimedTask, verdict: Verdict | None, duration_s: float) -> None:
        assert duration_s >= 0
        kind = verdict.kind if verdict is not None else None
        self.calls.append(("finished", claimed.id, claimed.attempt, kind))

    def settled(self, accepted: Sequence[Outcome], rejected: Sequence[str]) -> None:
        self.calls.append(("settled", [(o.id, o.kind) for o in accepted], list(rejected)))

    def lease_lost(self, task_id: str) -> None:
        self.calls.append(("lease_lost", task_id))

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def _app(seen: list[str], gate: asyncio.Event) -> App:
    app = App(APP)

    @app.task()
    async def fine(payload: Any) -> None:
        seen.append("fine")

    @app.task(max_attempts=2, backoff=[0.01])
    async def flaky(payload: Any, ctx: TaskContext) -> None:
        seen.append(f"flaky{ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    @app.task(max_attempts=1)
    def broken(payload: Any) -> None:
        raise ValueError("always")

    @app.task()
    async def held(payload: Any) -> None:
        await gate.wait()

    return app


async def test_every_attempt_is_claimed_started_finished_once_and_settled(
    bus: Bus, aredis: Redis
) -> None:
    """ok, retry then ok, dead: one start and one end per attempt, in that order, then settled."""
    seen: list[str] = []
    app = _app(seen, asyncio.Event())
    recorder = Recorder()
    fine = await bus.enqueue(app, "fine", 1)
    flaky = await bus.enqueue(app, "flaky", 2)
    broken = await bus.enqueue(app, "broken", 3)
    async with running_worker(app, aredis, observer=recorder):
        await task_in_state(bus, APP, fine.id, TaskState.SUCCEEDED)
        await task_in_state(bus, APP, flaky.id, TaskState.SUCCEEDED)
        await task_in_state(bus, APP, broken.id, TaskState.DEAD)
        await eventually(lambda: _true(len(recorder.of("finished")) == 4), what="4 ends")
        await eventually(
            lambda: _true(sum(len(c[1]) for c in recorder.of("settled")) == 4), what="4 settled"
        )
    claimed = [task_id for c in recorder.of("claimed") for task_id in c[1]]
    assert sorted(claimed) == sorted([fine.id, flaky.id, flaky.id, broken.id])
    assert sorted(c[1:] for c in recorder.of("finished")) == sorted(
        [(fine.id, 1, "ok"), (flaky.id, 1, "retry"), (flaky.id, 2, "ok"), (broken.id, 1, "dead")]
    )
    assert sorted(c[1:] for c in recorder.of("started")) == sorted(
        [
            (fine.id, 1, "fine"),
            (flaky.id, 1, "flaky"),
            (flaky.id, 2, "flaky"),
            (broken.id, 1, "broken"),
        ]
    )
    settled = sorted(o for c in recorder.of("settled") for o in c[1])
    assert settled == sorted(
        [(fine.id, "ok"), (flaky.id, "retry"), (flaky.id, "ok"), (broken.id, "dead")]
    )
    assert all(c[2] == [] for c in recorder.of("settled"))
    # Per attempt: started, entered, exited (with the handler's error), finished.
    for task_id, errors in ((fine.id, [None]), (flaky.id, ["RuntimeError", None])):
        mine = [c for c in recorder.calls if len(c) > 1 and c[1] == task_id and c[0] != "settled"]
        steps = [c[0] for c in mine if c[0] != "claimed"]
        assert steps == ["started", "enter", "exit", "finished"] * len(errors)
        assert [c[2] for c in mine if c[0] == "exit"] == errors
    assert seen.count("fine") == 1
    assert seen.count("flaky1") == seen.count("flaky2") == 1


async def test_a_lost_lease_ends_the_attempt_without_a_verdict(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """A running task recovered elsewhere: lease_lost, then finished with no verdict, no settle."""
    gate = asyncio.Event()
    app = _app([], gate)
    recorder = Recorder()
    stolen = await bus.enqueue(app, "held", 1)
    async with running_worker(app, aredis, observer=recorder, lease_s=30) as worker:
        await eventually(lambda: _true(stolen.id in worker.slots.running), what="it to run")
        await steal_lease(aredis, KEYS, stolen.id)
        await worker.heartbeat.beat()
        await eventually(lambda: _true(bool(recorder.of("finished"))), what="the end")
    assert recorder.of("lease_lost") == [("lease_lost", stolen.id)]
    assert recorder.of("finished") == [("finished", stolen.id, 1, None)]
    assert recorder.of("exit") == [("exit", stolen.id, "CancelledError")]
    assert recorder.of("settled") == []
    assert [e["task_id"] for e in events(logs, "lease_lost")] == [stolen.id]


class Raising(NullObserver):
    """Raises in every call, and from its context manager."""

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        raise RuntimeError("claimed")

    def started(self, ctx: TaskContext, record: TaskRecord) -> AbstractContextManager[Any] | None:
        return self._broken()

    @contextmanager
    def _broken(self) -> Iterator[None]:
        raise RuntimeError("enter")
        yield  # pragma: no cover

    def finished(self, claimed: ClaimedTask, verdict: Verdict | None, duration_s: float) -> None:
        raise RuntimeError("finished")

    def settled(self, accepted: Sequence[Outcome], rejected: Sequence[str]) -> None:
        raise RuntimeError("settled")


async def test_an_observer_that_raises_changes_no_outcome(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """Its errors are logged as observer_failed; the handlers run and the tasks settle as ever."""
    seen: list[str] = []
    app = _app(seen, asyncio.Event())
    fine = await bus.enqueue(app, "fine", 1)
    broken = await bus.enqueue(app, "broken", 2)
    async with running_worker(app, aredis, observer=Raising()):
        await task_in_state(bus, APP, fine.id, TaskState.SUCCEEDED)
        await task_in_state(bus, APP, broken.id, TaskState.DEAD)
        await eventually(
            lambda: _true(any(e["call"] == "settled" for e in events(logs, "observer_failed"))),
            what="the settled call to fail",
        )
    assert seen == ["fine"]
    failed = {e["call"] for e in events(logs, "observer_failed")}
    assert failed == {"claimed", "started.__enter__", "finished", "settled"}
    assert all(e["observer"] == "Raising" for e in events(logs, "observer_failed"))


async def _true(value: bool) -> bool:
    return value
