"""What a handler gets besides its payload, and how it steers its own retries.

A handler is called as ``handler(payload, ctx)`` (or ``handler(payload)`` if it
takes one argument). ``ctx`` is a :class:`TaskContext`. To control what happens
after a failure a handler raises :class:`Retry` ("try again in N seconds") or
:class:`Fail` ("this will never work: dead now, no more attempts").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Fail", "Retry", "TaskContext"]


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

        Args:
            event_type: The event type.
            payload: The event payload, validated like any publish.
            **kwargs: Passed on to ``Bus.apublish``.

        Returns:
            The new event's id.

        Raises:
            RuntimeError: The context has no bus to publish through.
        """
        if self.publisher is None:
            raise RuntimeError(
                "this task context has no bus to publish through: run the worker with a Bus"
            )
        kwargs.setdefault("correlation_id", self.correlation_id or self.event_id)
        return await self.publisher(event_type, payload, **kwargs)
