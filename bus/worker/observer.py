"""What a worker tells an observer: the seam for metrics and tracing.

A worker built with ``observer=`` calls it at each step of a task's life in
the worker, from the event loop, synchronously:

=================  =========================================================
``claimed``        a claim returned tasks (once per claim, with the batch)
``started``        an attempt's handler is about to run; it may return a
                   context manager, entered around the handler (a trace span)
``finished``       an attempt ended: with its verdict, or with None when it
                   ended without an outcome (lease lost, handed back at stop)
``settled``        a settle call recorded a batch of outcomes (and refused the
                   stale ones)
``lease_lost``     a held task's lease was lost: the task was recovered and
                   may run elsewhere
=================  =========================================================

Every attempt gets exactly one ``finished``; ``started`` comes only before a
handler runs (not for an undecodable record, a task with no handler, or a
``scope = "all"`` task sent on to the nodes). An observer must be
quick and must not raise: it runs on the worker's hot path, and an error it
raises is logged (``observer_failed``) and dropped, never allowed to change a
task's outcome. :class:`NullObserver` does nothing for every call; subclass
it and override what you need. A worker without an observer (the default)
makes none of these calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

import structlog

from bus.core.context import TaskContext
from bus.core.task import TaskRecord
from bus.core.verdict import Verdict
from bus.store.engine import ClaimedTask, Outcome

__all__ = ["GuardedObserver", "NullObserver", "WorkerObserver"]

log = structlog.get_logger("bus.worker")


class WorkerObserver(Protocol):
    """The calls a worker makes to its observer (see the module docstring)."""

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        """A claim returned ``tasks`` (never empty), now held ready or started."""
        ...

    def started(self, ctx: TaskContext, record: TaskRecord) -> AbstractContextManager[Any] | None:
        """The handler of ``ctx``'s attempt is about to run.

        Returns:
            None, or a context manager the worker enters just before the
            handler runs and exits when it ends (with the handler's error,
            if any; its return value is ignored).
        """
        ...

    def finished(self, claimed: ClaimedTask, verdict: Verdict | None, duration_s: float) -> None:
        """An attempt ended.

        Args:
            claimed: The claimed task.
            verdict: Its outcome (``kind``: ok, retry or dead; ``error_type``),
                or None when it ended without one: its lease was lost, or it
                was handed back at shutdown.
            duration_s: From the attempt's start to its end, in seconds.
        """
        ...

    def settled(self, accepted: Sequence[Outcome], rejected: Sequence[str]) -> None:
        """A settle call recorded ``accepted`` and refused the ids in ``rejected``
        (stale claims: their leases were lost and the tasks recovered)."""
        ...

    def lease_lost(self, task_id: str) -> None:
        """The lease of a held task was lost; the worker dropped its claim."""
        ...


class NullObserver:
    """An observer that does nothing: a base to override single calls on."""

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        """See :meth:`WorkerObserver.claimed`."""

    def started(self, ctx: TaskContext, record: TaskRecord) -> AbstractContextManager[Any] | None:
        """See :meth:`WorkerObserver.started`."""
        return None

    def finished(self, claimed: ClaimedTask, verdict: Verdict | None, duration_s: float) -> None:
        """See :meth:`WorkerObserver.finished`."""

    def settled(self, accepted: Sequence[Outcome], rejected: Sequence[str]) -> None:
        """See :meth:`WorkerObserver.settled`."""

    def lease_lost(self, task_id: str) -> None:
        """See :meth:`WorkerObserver.lease_lost`."""


class GuardedObserver:
    """The worker's wrapper of a given observer: an error it raises is logged, not raised.

    Args:
        observer: The observer the worker was given.
        app_name: The app, for the log line.
    """

    __slots__ = ("_app", "_observer")

    def __init__(self, observer: WorkerObserver, app_name: str) -> None:
        self._observer = observer
        self._app = app_name

    def _failed(self, call: str, exc: Exception) -> None:
        log.error(
            "observer_failed",
            app=self._app,
            call=call,
            observer=type(self._observer).__name__,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        """See :meth:`WorkerObserver.claimed`."""
        try:
            self._observer.claimed(tasks)
        except Exception as exc:
            self._failed("claimed", exc)

    def started(self, ctx: TaskContext, record: TaskRecord) -> AbstractContextManager[Any] | None:
        """See :meth:`WorkerObserver.started`; a context manager that fails is dropped."""
        try:
            found = self._observer.started(ctx, record)
            if found is not None:
                return _Guarded(self, found)
        except Exception as exc:
            self._failed("started", exc)
        return None

    def finished(self, claimed: ClaimedTask, verdict: Verdict | None, duration_s: float) -> None:
        """See :meth:`WorkerObserver.finished`."""
        try:
            self._observer.finished(claimed, verdict, duration_s)
        except Exception as exc:
            self._failed("finished", exc)

    def settled(self, accepted: Sequence[Outcome], rejected: Sequence[str]) -> None:
        """See :meth:`WorkerObserver.settled`."""
        try:
            self._observer.settled(accepted, rejected)
        except Exception as exc:
            self._failed("settled", exc)

    def lease_lost(self, task_id: str) -> None:
        """See :meth:`WorkerObserver.lease_lost`."""
        try:
            self._observer.lease_lost(task_id)
        except Exception as exc:
            self._failed("lease_lost", exc)


class _Guarded:
    """An observer's context manager whose errors are logged, never the handler's fate."""

    __slots__ = ("_entered", "_inner", "_owner")

    def __init__(self, owner: GuardedObserver, inner: AbstractContextManager[Any]) -> None:
        self._owner = owner
        self._inner = inner
        self._entered = False

    def __enter__(self) -> None:
        try:
            self._inner.__enter__()
            self._entered = True
        except Exception as exc:
            self._owner._failed("started.__enter__", exc)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if self._entered:
            try:
                self._inner.__exit__(exc_type, exc, tb)
            except Exception as error:
                self._owner._failed("started.__exit__", error)
        return False  # the handler's error, if any, is the worker's to judge
