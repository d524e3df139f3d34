"""Attempts: one claimed task's run in a slot, from its record to its verdict.

:class:`Runner` starts the ready tasks in free slots, each as an
:class:`Attempt` in its own asyncio task, and ends every attempt through one
path (:meth:`Runner.end`): free the slot, start the next ready task, count,
queue the outcome for the settler. An attempt ends there exactly once, with
its verdict, or with none when it was given up (lease lost, handed back at
shutdown).

Whatever the record or the handler does, an attempt ends and frees its slot
(see :mod:`bus.core.verdict` for what an error means):

* a record that is not a well-formed task record (corrupt bytes, missing
  fields, fields of the wrong type) is dead at once as ``undecodable record``;
* anything a handler raises is a failure of the attempt, ``BaseException``
  subclasses included (``KeyboardInterrupt``, ``SystemExit``,
  ``GeneratorExit``, and an ``asyncio.CancelledError`` the handler raised
  itself rather than one the worker sent);
* a handler past its timeout is cancelled; an async one that ignores the
  cancellation is abandoned after a grace period (its timeout, at most
  :data:`ABANDON_AFTER_MAX_S`): the attempt ends at once with ``TaskTimeout``,
  the slot is freed, and ``handler_ignored_cancellation`` is logged. A sync
  one cannot be cancelled at all; its thread is abandoned at once (see
  :class:`~bus.core.handler_call.HandlerThreads`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bus.core import clock
from bus.core.app import App
from bus.core.context import TaskContext
from bus.core.handler_call import HandlerThreads, call_handler
from bus.core.task import TaskRecord
from bus.core.verdict import OK, Verdict, dead, error_text, judge, reason_doc
from bus.nodes import is_node_queue
from bus.store.engine import ClaimedTask, Held, Outcome
from bus.store.outcomes import settle_value
from bus.worker.observer import GuardedObserver
from bus.worker.settler import Settler
from bus.worker.slots import Counters, Running, Slots

__all__ = ["ABANDON_AFTER_MAX_S", "Attempt", "PayloadAdapter", "Runner"]

log = structlog.get_logger("bus.worker")

# An async handler cancelled at its timeout gets as long again (at most this)
# to finish its clean-up before the worker stops waiting for it.
ABANDON_AFTER_MAX_S = 5.0

#: Turns a record into the handler's first argument (the bus's events).
PayloadAdapter = Callable[[TaskRecord, TaskContext], Any]
#: Sends a ``scope = "all"`` task to every node (``bus.nodes.Node.fan_out``
#: judged): the attempt's verdict.
Broadcast = Callable[[TaskRecord, ClaimedTask], Awaitable[Verdict]]


class Runner:
    """Starts attempts in free slots and ends them, for one worker.

    Args:
        app: The app whose handlers run.
        worker_id: The worker, for error documents.
        slots: The worker's slots.
        settler: Where outcomes go.
        counters: The worker's counters.
        executor: The threads sync handlers run in.
        broadcast: Runs a ``scope = "all"`` task claimed from an app queue.
        payload_adapter: Turns a record into the handler's first argument.
        publisher: Given to handlers as ``ctx.publish``.
        observer: Told of each start and end (None: nothing is told).
    """

    __slots__ = (
        "app",
        "broadcast",
        "counters",
        "executor",
        "observer",
        "payload_adapter",
        "publisher",
        "settler",
        "slots",
        "worker_id",
    )

    def __init__(
        self,
        app: App,
        worker_id: str,
        *,
        slots: Slots,
        settler: Settler,
        counters: Counters,
        executor: HandlerThreads,
        broadcast: Broadcast,
        payload_adapter: PayloadAdapter | None,
        publisher: Callable[..., Awaitable[str]] | None,
        observer: GuardedObserver | None,
    ) -> None:
        self.app = app
        self.worker_id = worker_id
        self.slots = slots
        self.settler = settler
        self.counters = counters
        self.executor = executor
        self.broadcast = broadcast
        self.payload_adapter = payload_adapter
        self.publisher = publisher
        self.observer = observer

    def start_ready(self) -> None:
        """Start the oldest ready tasks in the free slots, no round trip."""
        slots = self.slots
        ready, running = slots.ready, slots.running
        while ready and len(running) < slots.concurrency and not slots.stopping:
            claimed = ready.pop(next(iter(ready)))
            attempt = Attempt(self, claimed, slots.unsettled[claimed.id])
            running[claimed.id] = attempt
            attempt.task = asyncio.create_task(attempt.run())

    def end(self, attempt: Attempt, verdict: Verdict | None) -> None:
        """The one end of every attempt: free its slot, count, queue its outcome."""
        if attempt.ended:
            return
        attempt.ended = True
        claimed = attempt.claimed
        self.slots.vacate(claimed.id, attempt)
        self.start_ready()
        if self.observer is not None:
            self.observer.finished(claimed, verdict, clock.monotonic_s() - attempt.began)
        if verdict is None:
            return
        counters = self.counters
        counters.processed += 1
        if verdict.kind != "ok":
            counters.failed += 1
            if verdict.kind == "dead":
                counters.dead += 1
        self.settler.add(
            Outcome(claimed.id, claimed.token, claimed.queue, verdict.kind, settle_value(verdict))
        )


class Attempt(Running):
    """One attempt of one claimed task, in its slot (see the module docstring)."""

    __slots__ = (
        "_abandon_timer",
        "_abandoned",
        "_expired",
        "_grace_s",
        "_runner",
        "began",
        "claimed",
        "ended",
    )

    def __init__(self, runner: Runner, claimed: ClaimedTask, held: Held) -> None:
        super().__init__(held)
        self._runner = runner
        self.claimed = claimed
        #: When it started (monotonic seconds): durations are measured from here.
        self.began = clock.monotonic_s()
        #: Set once :meth:`Runner.end` has run for it.
        self.ended = False
        self._expired = False
        self._abandoned = False
        self._grace_s = 0.0
        self._abandon_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Run the attempt to its verdict and end it (the asyncio task's body)."""
        verdict = await self._verdict()
        self._runner.end(self, verdict)

    async def _verdict(self) -> Verdict | None:
        """The attempt's verdict, or None when it was given up."""
        runner, claimed = self._runner, self.claimed
        app = runner.app
        try:
            record = TaskRecord.decode(claimed.record)
        except ValueError as exc:
            return self._undecodable(exc)
        if record.scope == "all" and not is_node_queue(claimed.queue):
            return await runner.broadcast(record, claimed)
        task = app.get(record.name)
        ctx = TaskContext(
            app=app.name,
            task_id=claimed.id,
            name=record.name,
            queue=claimed.queue,
            attempt=claimed.attempt,
            max_attempts=record.max_attempts,
            publisher=runner.publisher,
        )
        if record.kind == "event" and isinstance(record.payload, dict):
            ctx.event_id = _text_or_none(record.payload.get("buskey"))
            ctx.correlation_id = _text_or_none(record.payload.get("correlationid"))
        if task is None:
            return self._no_handler(record)
        # Each task runs in its own asyncio Task, hence its own copy of the
        # context: binding here needs no unbinding.
        structlog.contextvars.bind_contextvars(
            app=ctx.app, task_id=ctx.task_id, attempt=ctx.attempt, event_id=ctx.event_id
        )
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        self._grace_s = min(record.timeout_s, ABANDON_AFTER_MAX_S)
        # A bare timer is several times cheaper per task than asyncio.timeout.
        timer = loop.call_later(record.timeout_s, self._expire, record, loop)
        failure: BaseException
        try:
            payload = (
                runner.payload_adapter(record, ctx) if runner.payload_adapter else record.payload
            )
            around = runner.observer.started(ctx, record) if runner.observer is not None else None
            try:
                if around is None:
                    await call_handler(task, payload, ctx, runner.executor)
                else:
                    with around:
                        await call_handler(task, payload, ctx, runner.executor)
            finally:
                timer.cancel()
                abandon_timer = self._abandon_timer
                if abandon_timer is not None:
                    abandon_timer.cancel()
            if self._abandoned:
                return None
            if self._expired and this is not None:
                this.uncancel()  # the handler swallowed our cancellation but returned
            log.debug(
                "task_succeeded",
                task=record.name,
                duration_ms=round((clock.monotonic_s() - self.began) * 1000, 3),
            )
            return OK
        except asyncio.CancelledError as exc:
            if self.lost or self.released or self._abandoned:
                return None
            if self._expired:
                if this is not None:
                    this.uncancel()
                failure = TimeoutError(f"handler ran past its timeout of {record.timeout_s} s")
            elif this is not None and this.cancelling() > 0:
                raise  # a cancellation the worker did not send: not ours to judge
            else:
                failure = exc  # raised by the handler itself, not a cancellation
        except BaseException as exc:
            if self._abandoned:
                return None
            if self._expired and this is not None:
                this.uncancel()
            failure = exc
        return self._failed(record, failure)

    def _expire(self, record: TaskRecord, loop: asyncio.AbstractEventLoop) -> None:
        # The timeout passed: cancel the handler, and give it a grace period.
        self._expired = True
        if self.task is not None:
            self.task.cancel()
        self._abandon_timer = loop.call_later(self._grace_s, self._abandon, record)

    def _abandon(self, record: TaskRecord) -> None:
        # The handler swallowed the cancellation and still runs: stop waiting
        # for it (without an extra asyncio Task per attempt, which would
        # double the worker's CPU per task). Its later return changes nothing.
        if self.lost or self.released:
            return
        self._abandoned = True
        grace_s = self._grace_s
        failure = TimeoutError(
            f"handler ran past its timeout of {record.timeout_s} s and ignored its "
            f"cancellation for {grace_s} s; the worker stopped waiting for it"
        )
        verdict = self._judge(record, failure, timed_out=True)
        log.error(
            "handler_ignored_cancellation",
            task=record.name,
            timeout_s=record.timeout_s,
            grace_s=grace_s,
            outcome=verdict.kind,
            reason="an async handler must let asyncio.CancelledError propagate; this one "
            "runs on, detached from its task, until it returns",
        )
        self._runner.end(self, verdict)

    def _undecodable(self, exc: ValueError) -> Verdict:
        message = error_text(exc)
        runner, claimed = self._runner, self.claimed
        log.error(
            "task_dead",
            app=runner.app.name,
            task_id=claimed.id,
            reason="undecodable",
            error=message,
        )
        return dead(
            "undecodable record", self._error_doc("UndecodableRecord", message), "UndecodableRecord"
        )

    def _no_handler(self, record: TaskRecord) -> Verdict:
        runner, claimed = self._runner, self.claimed
        app = runner.app
        known = sorted(app.tasks)
        message = (
            f"no handler for task {record.name!r} in app {app.name!r} "
            f"(this worker knows: {', '.join(known) or 'none'})"
        )
        log.error(
            "task_dead", app=app.name, task_id=claimed.id, reason="no_handler", task=record.name
        )
        return dead("no handler", self._error_doc("NoHandler", message))

    def _error_doc(self, error_type: str, message: str) -> bytes:
        # The error entry of an attempt that ended before any handler ran.
        return reason_doc(
            error_type,
            message,
            attempt=self.claimed.attempt,
            at_ms=clock.now_ms(),
            worker=self._runner.worker_id,
        )

    def _failed(self, record: TaskRecord, failure: BaseException) -> Verdict:
        verdict = self._judge(record, failure, timed_out=self._expired)
        duration_ms = round((clock.monotonic_s() - self.began) * 1000, 3)
        if verdict.kind == "retry":
            log.warning(
                "task_failed",
                task=record.name,
                error_type=verdict.error_type,
                error=error_text(failure),
                duration_ms=duration_ms,
                retry_in_s=round(verdict.retry_in_s or 0, 3),
            )
        else:
            log.error(
                "task_dead",
                task=record.name,
                error_type=verdict.error_type,
                error=error_text(failure),
                duration_ms=duration_ms,
                exc_info=failure,
            )
        return verdict

    def _judge(self, record: TaskRecord, failure: BaseException, *, timed_out: bool) -> Verdict:
        return judge(
            failure,
            task_backoff=record.backoff,
            attempt=self.claimed.attempt,
            max_attempts=record.max_attempts,
            now_ms=clock.now_ms(),
            worker=self._runner.worker_id,
            timed_out=timed_out,
        )


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
