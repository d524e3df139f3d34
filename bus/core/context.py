"""What a handler gets besides its payload, and how it steers its own retries.

A handler is called as ``handler(payload, ctx)`` (or ``handler(payload)`` if it
takes one argument). ``ctx`` is a :class:`TaskContext`. To control what happens
after a failure a handler raises :class:`Retry` ("try again in N seconds") or
:class:`Fail` ("this will never work: dead now, no more attempts").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Fail", "Retry", "TaskContext", "follow_up_id"]

# A derived follow-up id is readable (``<app>:<task id>/<n>``) when that makes a
# valid event id, else ``fu-`` and a digest of app and task id (task ids may be
# 200 characters of any printable text; event ids are 128 of a narrower set).
# The readable form always has the ':' after the app name and the digest form
# never has one, so the two never meet.
_READABLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,116}")


class Retry(Exception):
    """Raised by a handler: retry this task after ``after_s`` seconds.

    The attempt counts; when it was the last one the task is dead.

    Args:
        after_s: Seconds to wait before the next attempt (default: the task's
            back-off).
        reason: Recorded with the attempt.
    """

    def __init__(self, after_s: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.after_s = after_s
        self.reason = reason


class Fail(Exception):
    """Raised by a handler: fail this task now, with no further attempts.

    Args:
        reason: Recorded as the error message of the attempt.
        dead_reason: The dead-letter reason (default ``failed by handler``).
    """

    def __init__(self, reason: str, *, dead_reason: str = "failed by handler") -> None:
        super().__init__(reason)
        self.reason = reason
        self.dead_reason = dead_reason


Publisher = Callable[..., Awaitable[str]]


def follow_up_id(app: str, task_id: str, ordinal: int) -> str:
    """The id of a task's ``ordinal``-th follow-up event (from 1), the same on every attempt.

    Task ids are unique within an app only (a routed task is ``<event
    key>.<subscription>``, and two apps may have subscriptions of the same
    name), so the app is part of the id: follow-ups of two apps' tasks never
    dedup against each other, even through one shared publisher.

    Args:
        app: The app whose task publishes the follow-up.
        task_id: The task publishing the follow-up.
        ordinal: Which ``ctx.publish`` call of the attempt it is, from 1.

    Returns:
        A valid event id (see :func:`bus.events.envelope.validate_event_id`):
        ``<app>:<task id>/<ordinal>`` when it fits, else ``fu-`` and a digest
        of app and task id, then ``/<ordinal>`` (no ``:``, so the two forms
        never meet). Distinct (app, task id) pairs give distinct ids.
    """
    readable = f"{app}:{task_id}"
    if _READABLE_ID.fullmatch(readable):
        return f"{readable}/{ordinal}"
    digest = hashlib.sha256(f"{app}\x00{task_id}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"fu-{digest[:48]}/{ordinal}"


@dataclass(slots=True)
class TaskContext:
    """The context of one attempt of one task.

    Attributes:
        app: The app whose worker runs the task.
        task_id: The task id.
        name: The task name.
        queue: The queue the task came from.
        attempt: This attempt's number, from 1.
        max_attempts: The attempts the task has in all.
        event_id: For routed events, the event id.
        correlation_id: For routed events, the correlation id follow-ups carry.
        in_process: True when run by ``App.run`` rather than by a worker.
    """

    app: str
    task_id: str
    name: str
    queue: str
    attempt: int
    max_attempts: int
    event_id: str | None = None
    correlation_id: str | None = None
    in_process: bool = False
    publisher: Publisher | None = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)
    _published: int = field(default=0, repr=False)

    @property
    def log(self) -> Any:
        """A structlog logger bound with the app, task, event and attempt ids."""
        if self._log is None:
            self._log = structlog.get_logger("bus.handler").bind(
                app=self.app, task_id=self.task_id, attempt=self.attempt, event_id=self.event_id
            )
        return self._log

    async def publish(self, event_type: str, payload: Any, **kwargs: Any) -> str:
        """Publish a follow-up event that carries this task's correlation id.

        Follow-ups are idempotent across attempts: without an explicit ``id``
        the n-th call of an attempt gets the id :func:`follow_up_id` derives
        from the task id and n, so a retried handler publishes the same ids
        again and the dedup window drops them. A handler whose follow-ups
        differ from one attempt to the next (another order, other events)
        passes its own ``id``.

        Args:
            event_type: The event type.
            payload: The event payload, validated like any publish.
            **kwargs: Passed on to ``Bus.apublish``; ``id`` overrides the
                derived id.

        Returns:
            The event's key (the first event's key when the id is a duplicate).

        Raises:
            RuntimeError: The context has no bus to publish through.
        """
        if self.publisher is None:
            raise RuntimeError(
                "this task context has no bus to publish through: run the worker with a Bus"
            )
        # Every call counts, with an explicit id or not, so that the ordinal of
        # a call does not depend on which calls before it passed one.
        self._published += 1
        if kwargs.get("id") is None:
            kwargs["id"] = follow_up_id(self.app, self.task_id, self._published)
        kwargs.setdefault("correlation_id", self.correlation_id or self.event_id)
        return await self.publisher(event_type, payload, **kwargs)
