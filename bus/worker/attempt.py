"""One attempt of one claimed task: decode, find the handler, run it, judge.

Decides the verdict of an attempt (see :mod:`bus.core.verdict` for what an
error means); the worker loop turns verdicts into settle calls.

Whatever the record or the handler does, an attempt ends in a verdict and
frees its slot:

* a record that is not a well-formed task record (corrupt bytes, missing
  fields, fields of the wrong type) is dead at once as ``undecodable record``;
* anything a handler raises is a failure of the attempt, ``BaseException``
  subclasses included (``KeyboardInterrupt``, ``SystemExit``,
  ``GeneratorExit``, and an ``asyncio.CancelledError`` the handler raised
  itself rather than one the worker sent);
* a handler past its timeout is cancelled; an async one that ignores the
  cancellation is abandoned after a grace period (its timeout, at most
  :data:`ABANDON_AFTER_MAX_S`): the attempt fails with ``TaskTimeout``, the slot
  is freed, and ``handler_ignored_cancellation`` is logged. A sync one cannot
  be cancelled at all; its thread is abandoned at once (see
  :class:`~bus.core.handler_call.HandlerThreads`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from bus.core import clock
from bus.core.context import TaskContext
from bus.core.handler_call import call_handler
from bus.core.task import TaskRecord
from bus.core.verdict import OK, Verdict, dead, error_text, judge, reason_doc
from bus.nodes import is_node_queue
from bus.store.engine import ClaimedTask, Outcome
from bus.store.outcomes import settle_value

if TYPE_CHECKING:
    from bus.worker.loop import Running, Worker

__all__ = ["ABANDON_AFTER_MAX_S", "run_attempt"]

log = structlog.get_logger("bus.worker")

# An async handler cancelled at its timeout gets as long again (at most this)
# to finish its clean-up before the worker stops waiting for it.
ABANDON_AFTER_MAX_S = 5.0


async def run_attempt(worker: Worker, claimed: ClaimedTask, running: Running) -> Verdict | None:
    """Run one attempt of a claimed task; return its verdict, or None when the
    worker gave the task up (lease lost, handed back at shutdown, or the
    handler abandoned and its outcome already sent)."""
    now = clock.now_ms()
    try:
        record = TaskRecord.decode(claimed.record)
    except ValueError as exc:
        message = error_text(exc)
        log.error(
            "task_dead",
            app=worker.app.name,
            task_id=claimed.id,
            reason="undecodable",
            error=message,
        )
        return dead(
            "undecodable record",
            reason_doc(
                "UndecodableRecord", message, attempt=claimed.attempt, at_ms=now, worker=worker.id
            ),
            "UndecodableRecord",
        )
    if record.scope == "all" and not is_node_queue(claimed.queue):
        return await worker._broadcast(record, claimed)
    task = worker.app.get(record.name)
    ctx = TaskContext(
        app=worker.app.name,
        task_id=claimed.id,
        name=record.name,
        queue=claimed.queue,
        attempt=claimed.attempt,
        max_attempts=record.max_attempts,
        publisher=worker.publisher,
    )
    if record.kind == "event" and isinstance(record.payload, dict):
        ctx.event_id = _text_or_none(record.payload.get("buskey"))
        ctx.correlation_id = _text_or_none(record.payload.get("correlationid"))
    if task is None:
        known = sorted(worker.app.tasks)
        message = (
            f"no handler for task {record.name!r} in app {worker.app.name!r} "
            f"(this worker knows: {', '.join(known) or 'none'})"
        )
        log.error(
            "task_dead",
            app=worker.app.name,
            task_id=claimed.id,
            reason="no_handler",
            task=record.name,
        )
        return dead(
            "no handler",
            reason_doc("NoHandler", message, attempt=claimed.attempt, at_ms=now, worker=worker.id),
        )
    # Each task runs in its own asyncio Task, hence its own copy of the
    # context: binding here needs no unbinding.
    structlog.contextvars.bind_contextvars(
        app=ctx.app, task_id=ctx.task_id, attempt=ctx.attempt, event_id=ctx.event_id
    )
    started = clock.monotonic_s()
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    expired = False
    abandoned = False
    grace_s = min(record.timeout_s, ABANDON_AFTER_MAX_S)
    abandon_timer: asyncio.TimerHandle | None = None

    def expire() -> None:
        nonlocal expired, abandon_timer
        expired = True
        if this is not None:
            this.cancel()
        abandon_timer = loop.call_later(grace_s, abandon)

    def abandon() -> None:
        # The handler swallowed the cancellation and still runs: stop waiting
        # for it (without an extra asyncio Task per attempt, which would
        # double the worker's CPU per task).
        nonlocal abandoned
        if running.lost or running.released:
            return
        abandoned = True
        failure = TimeoutError(
            f"handler ran past its timeout of {record.timeout_s} s and ignored its "
            f"cancellation for {grace_s} s; the worker stopped waiting for it"
        )
        verdict = _judge(worker, record, claimed, failure, timed_out=True)
        log.error(
            "handler_ignored_cancellation",
            task=record.name,
            timeout_s=record.timeout_s,
            grace_s=grace_s,
            outcome=verdict.kind,
            reason="an async handler must let asyncio.CancelledError propagate; this one "
            "runs on, detached from its task, until it returns",
        )
        _give_up(worker, claimed, running, verdict)

    # A bare timer is several times cheaper per task than asyncio.timeout.
    timer = loop.call_later(record.timeout_s, expire)
    failure: BaseException
    try:
        payload = worker.payload_adapter(record, ctx) if worker.payload_adapter else record.payload
        try:
            await call_handler(task, payload, ctx, worker._executor)
        finally:
            timer.cancel()
            if abandon_timer is not None:
                abandon_timer.cancel()
        if abandoned:
            return None
        if expired and this is not None:
            this.uncancel()  # the handler swallowed our cancellation but returned
        log.debug(
            "task_succeeded",
            task=record.name,
            duration_ms=round((clock.monotonic_s() - started) * 1000, 3),
        )
        return OK
    except asyncio.CancelledError as exc:
        if running.lost or running.released or abandoned:
            return None
        if expired:
            if this is not None:
                this.uncancel()
            failure = TimeoutError(f"handler ran past its timeout of {record.timeout_s} s")
        elif this is not None and this.cancelling() > 0:
            raise  # a cancellation the worker did not send: not ours to judge
        else:
            failure = exc  # raised by the handler itself, not a cancellation
    except BaseException as exc:
        if abandoned:
            return None
        if expired and this is not None:
            this.uncancel()
        failure = exc
    verdict = _judge(worker, record, claimed, failure, timed_out=expired)
    duration_ms = round((clock.monotonic_s() - started) * 1000, 3)
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


def _judge(
    worker: Worker,
    record: TaskRecord,
    claimed: ClaimedTask,
    failure: BaseException,
    *,
    timed_out: bool,
) -> Verdict:
    return judge(
        failure,
        task_backoff=record.backoff,
        attempt=claimed.attempt,
        max_attempts=record.max_attempts,
        now_ms=clock.now_ms(),
        worker=worker.id,
        timed_out=timed_out,
    )


def _give_up(worker: Worker, claimed: ClaimedTask, running: Running, verdict: Verdict) -> None:
    """Settle an attempt whose handler still runs: free its slot, send its outcome.

    The same bookkeeping as the end of ``Worker._execute``, which for this
    attempt only frees nothing more once the handler ends (the attempt then
    returns None).
    """
    if worker._running.get(claimed.id) is running:
        del worker._running[claimed.id]
    worker._start_ready()
    worker._slot_free.set()
    worker.counters.processed += 1
    worker.counters.failed += 1
    if verdict.kind == "dead":
        worker.counters.dead += 1
    worker._outcomes.append(
        Outcome(claimed.id, claimed.token, claimed.queue, verdict.kind, settle_value(verdict))
    )
    worker._settle_wanted.set()


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
