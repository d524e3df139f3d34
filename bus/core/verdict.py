"""Verdicts: what the end of one attempt means for its task.

This module decides what an attempt's end means: success; a retry with back-off
(an exception, a timeout, or the handler's own :class:`~bus.core.context.Retry`);
or death (the last attempt failed, the handler raised :class:`~bus.core.context.Fail`,
the record could not be decoded, or no handler is declared for the task name).
It also owns the error entry an attempt leaves in the task's error list.
It knows nothing of Redis; the worker turns verdicts into settle calls.

Whatever a handler raises is recorded safely: a message whose ``str()`` fails
is replaced by a note saying so, and messages and tracebacks are clipped
(:data:`MESSAGE_CHARS`, :data:`TRACEBACK_CHARS`) so one huge error cannot
bloat the task's error list or the log.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog

from bus.core.context import Fail, Retry
from bus.core.options import Backoff
from bus.core.task import clip

__all__ = [
    "MESSAGE_CHARS",
    "OK",
    "TRACEBACK_CHARS",
    "Verdict",
    "VerdictKind",
    "dead",
    "error_doc",
    "error_text",
    "judge",
    "reason_doc",
    "retry_delay_s",
    "traceback_text",
]

log = structlog.get_logger("bus.worker")

TRACEBACK_CHARS = 4000
MESSAGE_CHARS = 2000
# One part of a formatted traceback (a frame, or the exception line) is cut to
# this, so that one huge message cannot push every frame out of the kept tail.
_TRACEBACK_PART_CHARS = 1000


def error_text(exc: BaseException) -> str:
    """Return an exception's message for records and logs: never raises, never huge.

    An empty message falls back to ``repr()``; a ``__str__`` that raises is
    replaced by a note naming what it raised.
    """
    try:
        text = str(exc) or repr(exc)
    except Exception as err:
        text = f"<{type(exc).__qualname__}.__str__ raised {type(err).__qualname__}>"
    return clip(text, MESSAGE_CHARS)


def traceback_text(exc: BaseException) -> str:
    """Return the formatted traceback, each part clipped, at most the last characters."""
    parts = traceback.TracebackException.from_exception(exc).format()
    text = "".join(clip(part, _TRACEBACK_PART_CHARS) for part in parts)
    return text[-TRACEBACK_CHARS:]


def error_doc(
    exc: BaseException, *, kind: str | None, attempt: int, at_ms: int, worker: str
) -> bytes:
    """Encode one attempt's error as stored in the task's error list."""
    return orjson.dumps(
        {
            "type": kind or type(exc).__qualname__,
            "message": error_text(exc),
            "traceback": traceback_text(exc),
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
            :meth:`bus.core.options.Backoff.from_doc`); None is the default policy.
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


VerdictKind = Literal["ok", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an attempt's end means for the task.

    Attributes:
        kind: ``ok``, ``retry`` or ``dead``.
        error: The error entry the attempt adds to the task's error list
            (:func:`error_doc`, :func:`reason_doc`); empty for ``ok``.
        reason: Why the task is dead (``dead`` only): ``attempts exhausted``,
            ``no handler``, ``undecodable record`` or the handler's own
            :class:`~bus.core.context.Fail` reason.
        run_at_ms: When the retry is due (``retry`` only).
        error_type: Names the failure for the log.
        retry_in_s: The back-off before the retry (``retry`` only).
    """

    kind: VerdictKind
    error: bytes = b""
    reason: str = ""
    run_at_ms: int = 0
    error_type: str | None = None
    retry_in_s: float | None = None


OK = Verdict("ok")


def dead(reason: str, error: bytes, error_type: str | None = None) -> Verdict:
    """The verdict of a task dead now for ``reason``, with its error entry."""
    return Verdict("dead", error, reason, error_type=error_type)


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
        return dead(exc.dead_reason, doc, "Fail")
    kind = "TaskTimeout" if timed_out else None
    doc = error_doc(exc, kind=kind, attempt=attempt, at_ms=now_ms, worker=worker)
    error_type = kind or type(exc).__qualname__
    if attempt >= max_attempts:
        return dead("attempts exhausted", doc, error_type)
    if isinstance(exc, Retry) and exc.after_s is not None:
        delay = max(0.0, float(exc.after_s))
    else:
        delay = retry_delay_s(task_backoff, attempt)
    run_at = now_ms + int(delay * 1000)
    return Verdict("retry", doc, run_at_ms=run_at, error_type=error_type, retry_in_s=delay)
