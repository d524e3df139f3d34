"""Calling a task's handler: on the loop if async, on a handler thread if sync.

This module owns the execution of a handler, with no Redis and no judgement
in it: :func:`call_handler` is what both the worker's attempts and
:meth:`bus.core.app.App.run` call, :func:`run_log` binds a run's ids to the
log context, and :class:`HandlerThreads` runs sync handlers. What the end of
an attempt means is :mod:`bus.core.verdict`'s job.

Sync handlers run on :class:`HandlerThreads`: daemon threads, one per running
handler, reused when idle. A thread cannot be stopped, so a sync handler that
runs past its timeout is *abandoned*: the attempt fails with ``TaskTimeout``,
the thread runs on (logged as ``handler_thread_abandoned``, and again when it
ends), and the next handler gets a fresh thread instead of queueing behind it.
Daemon threads also let the process exit while such a handler still runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from contextlib import asynccontextmanager
from queue import Empty, SimpleQueue
from typing import Any, Protocol

import structlog

from bus.core import clock
from bus.core.context import TaskContext

__all__ = ["Handler", "HandlerThreads", "call_handler", "run_log"]

log = structlog.get_logger("bus.worker")


class Handler(Protocol):
    """What :func:`call_handler` needs of a declared task (a :class:`~bus.core.app.TaskDef`)."""

    @property
    def name(self) -> str: ...
    @property
    def fn(self) -> Callable[..., Any]: ...
    @property
    def is_async(self) -> bool: ...
    @property
    def takes_ctx(self) -> bool: ...


async def call_handler(
    task: Handler, payload: Any, ctx: TaskContext, executor: Executor | None
) -> Any:
    """Call a handler: async ones on the loop, sync ones in the thread pool.

    Sync handlers run with a copy of the caller's contextvars, so their log
    lines carry the same bound ids. When the attempt is cancelled (timeout,
    shutdown, lost lease) while a sync handler runs, its thread cannot be
    stopped: it is logged as abandoned and left to finish on its own.
    """
    args = (payload, ctx) if task.takes_ctx else (payload,)
    if task.is_async:
        return await task.fn(*args)
    run = contextvars.copy_context().run
    if executor is None:
        loop = asyncio.get_running_loop()
        ok, result = await loop.run_in_executor(None, run, _outcome, task.fn, args)
    else:
        future = executor.submit(run, _outcome, task.fn, args)
        try:
            ok, result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # cancel() fails only when the handler already runs in its thread.
            if not future.cancel() and not future.done():
                _abandoned(future, task.name, ctx, executor)
            raise
    if not ok:
        raise result
    if inspect.isawaitable(result):
        result = await result
    return result


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    """Call ``fn`` and return ``(True, result)`` or ``(False, what it raised)``.

    A sync handler's exception is raised again on the loop rather than carried
    by the future: a ``GeneratorExit`` coming out of an awaited future does not
    reach the awaiting coroutine as raised (it gets a bare ``GeneratorExit()``
    and the original escapes past any handler up to the asyncio Task).
    """
    try:
        return True, fn(*args)
    except BaseException as exc:  # raised again by call_handler, on the loop
        return False, exc


def _abandoned(future: Future[Any], name: str, ctx: TaskContext, executor: Executor) -> None:
    started = clock.monotonic_s()
    count = executor.note_abandoned(future) if isinstance(executor, HandlerThreads) else None
    log.warning(
        "handler_thread_abandoned",
        task=name,
        abandoned_threads=count,
        reason="the attempt ended (timeout, shutdown or lost lease) while its sync handler "
        "ran; a thread cannot be stopped, so it runs on and its result is ignored",
    )
    task_id, attempt = ctx.task_id, ctx.attempt

    def finished(_: Future[Any]) -> None:
        log.info(
            "abandoned_handler_finished",
            task=name,
            task_id=task_id,
            attempt=attempt,
            ran_on_s=round(clock.monotonic_s() - started, 3),
        )

    future.add_done_callback(finished)


class HandlerThreads(Executor):
    """Runs sync handlers on daemon threads: one per running handler, reused when idle.

    Unlike a fixed-size pool, a handler that never returns holds only its own
    thread: the next call gets another one. The worker's concurrency already
    bounds how many handlers run at once, so threads are made only as needed.
    The threads are daemons, so an abandoned handler never keeps the process
    from exiting.

    Args:
        name: Prefix of the threads' names.
    """

    def __init__(self, name: str = "bus-handler") -> None:
        self.name = name
        self._work: SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._work = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._abandoned: set[Future[Any]] = set()
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads were started and have not ended."""
        return self._threads

    @property
    def abandoned(self) -> int:
        """How many abandoned handlers still run."""
        with self._lock:
            return len(self._abandoned)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args)`` on an idle thread, or on a new one if none is idle.

        Raises:
            RuntimeError: The executor was shut down.
        """
        if kwargs:
            raise TypeError("HandlerThreads.submit takes positional arguments only")
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: cannot run a handler after shutdown")
            self._work.put((future, fn, args))
            if self._idle > 0:
                self._idle -= 1  # that idle thread takes this item
            else:
                self._threads += 1
                number = self._threads
                threading.Thread(
                    target=self._serve, name=f"{self.name}-{number}", daemon=True
                ).start()
        return future

    def note_abandoned(self, future: Future[Any]) -> int:
        """Count ``future``'s handler as abandoned until it ends; return how many are."""
        with self._lock:
            self._abandoned.add(future)
            count = len(self._abandoned)
        future.add_done_callback(self._forget)
        return count

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._abandoned.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; idle threads end. Abandoned ones are never waited for.

        Args:
            wait: Unused: handlers still running are either finished by the
                worker's grace period or abandoned.
            cancel_futures: Cancel calls not started yet.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in range(idle):
            self._work.put(None)

    def _serve(self) -> None:
        try:
            while True:
                item = self._work.get()
                if item is None:
                    return
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args)
                    except BaseException as exc:  # the caller judges whatever it raised
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                del item, future, fn, args
                with self._lock:
                    if self._closed:
                        return
                    self._idle += 1
        finally:
            with self._lock:
                self._threads -= 1


@asynccontextmanager
async def run_log(ctx: TaskContext) -> AsyncIterator[None]:
    """Bind the task's ids to the log context for the duration of a run."""
    with structlog.contextvars.bound_contextvars(
        app=ctx.app, task_id=ctx.task_id, attempt=ctx.attempt, event_id=ctx.event_id
    ):
        yield
