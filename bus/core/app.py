"""Apps and their task declarations: which handler runs for which task name.

An :class:`App` is a name plus a table of handlers. Handlers are declared with
the :meth:`App.task` decorator (or built from ``apps/<app>/app.toml`` by the bus
layer). The table is what a worker consults: a task whose name is not in it is
dead-lettered with that reason, never dropped, and the handler is always taken
from this table, never from anything in the message.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bus.core import clock
from bus.core.context import TaskContext
from bus.core.handler_call import call_handler, run_log
from bus.core.ids import new_id
from bus.core.names import validate_app_name, validate_queue_name

__all__ = ["App", "TaskDef"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TaskDef:
    """One declared task: its handler and the defaults for its options.

    Attributes:
        name: The task name.
        fn: The handler, ``fn(payload, ctx)`` or ``fn(payload)``, sync or async.
        queue: Default queue.
        max_attempts: Default attempts before the task is dead.
        timeout_s: Default per-attempt timeout in seconds.
        backoff: Default back-off spec (see :mod:`bus.backoff`); None = default.
        scope: ``"any"`` (one worker) or ``"all"`` (every node).
        kind: ``"task"`` or ``"event"`` (a subscription's handler).
    """

    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    max_attempts: int = 5
    timeout_s: float = 60.0
    backoff: Any = None
    scope: str = "any"
    kind: str = "task"
    is_async: bool = field(init=False)
    takes_ctx: bool = field(init=False)

    def __post_init__(self) -> None:
        fn = self.fn
        target = fn.func if isinstance(fn, functools.partial) else fn
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - async callable objects
        )
        object.__setattr__(self, "is_async", is_async)
        object.__setattr__(self, "takes_ctx", _takes_two_args(fn))


def _takes_two_args(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


class App:
    """An application: a name and the handlers of its tasks.

    Args:
        name: The app name (lowercase letters, digits, ``_``, ``-``). It names
            the app's queues in Redis.

    Example:
        >>> app = App("billing")
        >>> @app.task(max_attempts=3)
        ... async def send_invoice(payload, ctx):
        ...     ...
    """

    def __init__(self, name: str) -> None:
        self.name = validate_app_name(name)
        self._tasks: dict[str, TaskDef] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, tasks={sorted(self._tasks)})"

    @property
    def tasks(self) -> dict[str, TaskDef]:
        """The declared tasks by name (a copy)."""
        return dict(self._tasks)

    def get(self, name: str) -> TaskDef | None:
        """Return the declaration of a task, or None if there is none."""
        return self._tasks.get(name)

    def add(self, task: TaskDef) -> TaskDef:
        """Declare a task.

        Raises:
            ValueError: A task of that name is declared already, or an option is
                out of range.
        """
        if task.name in self._tasks:
            raise ValueError(f"app {self.name!r}: task {task.name!r} is declared twice")
        if not task.name or len(task.name) > 200:
            raise ValueError(f"app {self.name!r}: task name must be 1-200 characters")
        validate_queue_name(task.queue)
        if task.max_attempts < 1:
            raise ValueError(f"task {task.name!r}: max_attempts must be >= 1")
        if task.timeout_s <= 0:
            raise ValueError(f"task {task.name!r}: timeout_s must be > 0")
        if task.scope not in ("any", "all"):
            raise ValueError(f"task {task.name!r}: scope must be 'any' or 'all'")
        self._tasks[task.name] = task
        return task

    def task(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        max_attempts: int = 5,
        timeout_s: float = 60.0,
        backoff: Any = None,
        scope: str = "any",
    ) -> Callable[[F], F]:
        """Decorator: declare the decorated function as the handler of a task.

        Args:
            name: The task name; defaults to the function's name.
            queue: Default queue of the task.
            max_attempts: Attempts before the task is dead.
            timeout_s: Per-attempt timeout in seconds.
            backoff: Back-off spec (see :mod:`bus.backoff`).
            scope: ``"any"`` or ``"all"``.
        """

        def decorate(fn: F) -> F:
            self.add(
                TaskDef(
                    name=name or fn.__name__,
                    fn=fn,
                    queue=queue,
                    max_attempts=max_attempts,
                    timeout_s=timeout_s,
                    backoff=backoff,
                    scope=scope,
                )
            )
            return fn

        return decorate

    async def run(self, name: str, payload: Any = None, *, task_id: str | None = None) -> Any:
        """Run a task's handler now, in this process, bypassing the queue.

        The essay's ``run()``: useful when a request needs the result now. The
        handler gets a context with ``in_process=True`` and attempt 1; nothing is
        written to Redis and there is no retry.

        Args:
            name: The task name.
            payload: The payload, as it would be enqueued.
            task_id: Id for the context and logs (default: a new one).

        Returns:
            Whatever the handler returns.

        Raises:
            LookupError: No task of that name is declared.
        """
        task = self._tasks.get(name)
        if task is None:
            raise LookupError(
                f"app {self.name!r} has no task {name!r}; declared: {sorted(self._tasks) or 'none'}"
            )
        ctx = TaskContext(
            app=self.name,
            task_id=task_id or new_id(clock.now_ms()),
            name=name,
            queue=task.queue,
            attempt=1,
            max_attempts=1,
            in_process=True,
        )
        async with run_log(ctx):
            return await asyncio.wait_for(call_handler(task, payload, ctx, None), task.timeout_s)
