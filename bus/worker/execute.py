"""Running one attempt of one task: calling the handler and judging the outcome.

This module decides what an attempt's end means: success; a retry with back-off
(an exception, a timeout, or the handler's own :class:`~bus.context.Retry`);
or death (the last attempt failed, the handler raised :class:`~bus.context.Fail`,
the record could not be decoded, or no handler is declared for the task name).
It knows nothing of Redis; the worker loop turns verdicts into settle calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from bus.app import TaskDef
from bus.context import Fail, Retry, TaskContext
from bus.options import Backoff

__all__ = ["Verdict", "call_handler", "error_doc", "judge", "retry_delay_s", "run_log"]

log = structlog.get_logger("bus.worker")

TRACEBACK_CHARS = 4000


async def call_handler(
    task: TaskDef, payload: Any, ctx: TaskContext, executor: Executor | None
) -> Any:
    """Call a handler: async ones on the loop, sync ones in the thread pool.

    Sync handlers run with a copy of the caller's contextvars, so their log
    lines carry the same bound ids.
    """
    args = (payload, ctx) if task.takes_ctx else (payload,)
    if task.is_async:
        return await task.fn(*args)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(executor, contextvars.copy_context().run, task.fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


@asynccontextmanager
async def run_log(ctx: TaskContext) -> AsyncIterator[None]:
    """Bind the task's ids to the log context for the duration of a run."""
    with structlog.contextvars.bound_contextvars(
        app=ctx.app, task_id=ctx.task_id, attempt=ctx.attempt, event_id=ctx.event_id
    ):
        yield


def error_doc(
    exc: BaseException, *, kind: str | None, attempt: int, at_ms: int, worker: str
) -> bytes:
    """Encode one attempt's error as stored in the task's error list."""
    tb = "".join(traceback.format_exception(exc))
    return orjson.dumps(
        {
            "type": kind or type(exc).__qualname__,
            "message": str(exc) or repr(exc),
            "traceback": tb[-TRACEBACK_CHARS:],
            "attempt": attempt,
            "at": at_ms,
            "worker": worker,
        }
    )


def reason_doc(kind: str, message: str, *, attempt: int, at_ms: int, worker: str) -> bytes:
    """Encode an error that has no exception behind it (e.g. no handler)."""
    return orjson.dumps(
        {
            "type": kind,
            "message": message,
            "traceback": "",
            "attempt": attempt,
            "at": at_ms,
            "worker": worker,
        }
    )


def retry_delay_s(spec: Any, attempt: int, rng: random.Random | None = None) -> float:
    """Return the back-off before the attempt after ``attempt``.

    Args:
        spec: The task's back-off in its stored form (see
            :meth:`bus.options.Backoff.from_doc`); None is the default policy.
            A spec that cannot be read falls back to the default policy rather
            than losing the retry.
        attempt: The number of the attempt that just failed, from 1.
        rng: Random source for the jitter (tests pass a seeded one).
    """
    try:
        policy = Backoff.from_doc(spec)
    except (ValueError, TypeError):
        log.warning("backoff_unreadable", spec=repr(spec)[:200])
        policy = Backoff()
    return policy.delay_s(max(attempt, 1), rng)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an attempt's end means for the task.

    ``kind`` is ``ok``, ``retry`` or ``dead``; ``value`` is the settle script's
    value for it; ``error_type`` names the failure for the log.
    """

    kind: str
    value: bytes = b""
    error_type: str | None = None
    retry_in_s: float | None = None


OK = Verdict("ok")


def judge(
    exc: BaseException,
    *,
    task_backoff: Any,
    attempt: int,
    max_attempts: int,
    now_ms: int,
    worker: str,
    timed_out: bool = False,
) -> Verdict:
    """Turn a handler's exception into a retry or a death.

    Args:
        exc: What the handler raised (or the TimeoutError of its timeout).
        task_backoff: The task's back-off spec.
        attempt: This attempt's number.
        max_attempts: The task's attempt limit.
        now_ms: The current time.
        worker: This worker's id, recorded with the error.
        timed_out: The handler ran past its timeout and was cancelled.
    """
    if isinstance(exc, Fail):
        doc = error_doc(exc, kind="Fail", attempt=attempt, at_ms=now_ms, worker=worker)
        return Verdict("dead", exc.dead_reason.encode() + b"|" + doc, "Fail")
    kind = "TaskTimeout" if timed_out else None
    doc = error_doc(exc, kind=kind, attempt=attempt, at_ms=now_ms, worker=worker)
    error_type = kind or type(exc).__qualname__
    if attempt >= max_attempts:
        return Verdict("dead", b"attempts exhausted|" + doc, error_type)
    if isinstance(exc, Retry) and exc.after_s is not None:
        delay = max(0.0, float(exc.after_s))
    else:
        delay = retry_delay_s(task_backoff, attempt)
    run_at = now_ms + int(delay * 1000)
    return Verdict("retry", str(run_at).encode() + b"|" + doc, error_type, delay)
