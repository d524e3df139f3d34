"""One attempt of one claimed task: decode, find the handler, run it, judge.

Decides the verdict of an attempt (see :mod:`bus.worker.execute` for what an
error means); the worker loop turns verdicts into settle calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from bus import clock
from bus.context import TaskContext
from bus.nodes import is_node_queue
from bus.scripts import ClaimedTask
from bus.task import TaskRecord
from bus.worker.execute import OK, Verdict, call_handler, judge, reason_doc

if TYPE_CHECKING:
    from bus.worker.loop import Running, Worker

__all__ = ["run_attempt"]

log = structlog.get_logger("bus.worker")


async def run_attempt(worker: Worker, claimed: ClaimedTask, running: Running) -> Verdict | None:
    """Run one attempt of a claimed task; return its verdict, or None when the
    worker gave the task up (lease lost, or handed back at shutdown)."""
    now = clock.now_ms()
    try:
        record = TaskRecord.decode(claimed.record)
    except ValueError as exc:
        log.error(
            "task_dead",
            app=worker.app.name,
            task_id=claimed.id,
            reason="undecodable",
            error=str(exc),
        )
        return Verdict(
            "dead",
            b"undecodable record|"
            + reason_doc(
                "UndecodableRecord",
                str(exc),
                attempt=claimed.attempt,
                at_ms=now,
                worker=worker.id,
            ),
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
        ctx.event_id = record.payload.get("buskey")
        ctx.correlation_id = record.payload.get("correlationid")
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
        return Verdict(
            "dead",
            b"no handler|"
            + reason_doc(
                "NoHandler", message, attempt=claimed.attempt, at_ms=now, worker=worker.id
            ),
        )
    # Each task runs in its own asyncio Task, hence its own copy of the
    # context: binding here needs no unbinding.
    structlog.contextvars.bind_contextvars(
        app=ctx.app, task_id=ctx.task_id, attempt=ctx.attempt, event_id=ctx.event_id
    )
    started = clock.monotonic_s()
    this = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if this is not None:
            this.cancel()

    # A bare timer is several times cheaper per task than asyncio.timeout.
    timer = asyncio.get_running_loop().call_later(record.timeout_s, expire)
    try:
        payload = worker.payload_adapter(record, ctx) if worker.payload_adapter else record.payload
        try:
            await call_handler(task, payload, ctx, worker._executor)
        finally:
            timer.cancel()
        if expired and this is not None:
            this.uncancel()  # the handler swallowed our cancellation but returned
        log.debug(
            "task_succeeded",
            task=record.name,
            duration_ms=round((clock.monotonic_s() - started) * 1000, 3),
        )
        return OK
    except asyncio.CancelledError:
        if running.lost or running.released:
            return None
        if not expired:
            raise
        if this is not None:
            this.uncancel()
        failure: BaseException = TimeoutError(
            f"handler ran past its timeout of {record.timeout_s} s"
        )
    except BaseException as exc:
        failure = exc
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            failure = RuntimeError(f"handler raised {type(exc).__name__}: {exc}")
    verdict = judge(
        failure,
        task_backoff=record.backoff,
        attempt=claimed.attempt,
        max_attempts=record.max_attempts,
        now_ms=clock.now_ms(),
        worker=worker.id,
        timed_out=expired,
    )
    duration_ms = round((clock.monotonic_s() - started) * 1000, 3)
    if verdict.kind == "retry":
        log.warning(
            "task_failed",
            task=record.name,
            error_type=verdict.error_type,
            error=str(failure),
            duration_ms=duration_ms,
            retry_in_s=round(verdict.retry_in_s or 0, 3),
        )
    else:
        log.error(
            "task_dead",
            task=record.name,
            error_type=verdict.error_type,
            error=str(failure),
            duration_ms=duration_ms,
            exc_info=failure,
        )
    return verdict
