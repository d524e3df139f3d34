"""The app config model: the frozen dataclasses an ``app.toml`` is parsed into.

This module owns what an app's config *is* (:class:`AppConfig` and its parts:
worker defaults, subscriptions, named tasks, recurring tasks), with no parsing
and no imports of handlers. :mod:`bus.config.apptoml` reads the file into these;
:mod:`bus.config.handlers` resolves their handler refs; :mod:`bus.config.apps`
builds a runnable app from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.core.options import TaskOptions

__all__ = [
    "AppConfig",
    "RecurringConfig",
    "SubscriptionConfig",
    "TaskConfig",
    "WorkerConfig",
]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Worker defaults of an app (the worker CLI's flags override them).

    Attributes:
        queues: Queues in serve order; ``"*"`` stands for every queue of the
            app not named before it, alphabetically.
        concurrency: Most tasks run at once.
        prefetch: Most claimed tasks held ready beyond the running ones; None
            means as many as ``concurrency``.
    """

    queues: tuple[str, ...] = ("*",)
    concurrency: int = 10
    prefetch: int | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """A subscription: which events, which filter, which handler, which options.

    Attributes:
        name: Unique in the app; part of the deterministic task ids.
        events: Event type patterns (any one must match).
        handler: ``"module:function"``.
        where: The payload filter as written, or ``None``.
        options: How its tasks run.
    """

    name: str
    events: tuple[str, ...]
    handler: str
    where: dict[str, Any] | None = None
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """A task enqueued by name from code.

    Attributes:
        name: Unique in the app.
        handler: ``"module:function"``.
        options: Its default options.
    """

    name: str
    handler: str
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class RecurringConfig:
    """A recurring task: every ``every_ms``, or on a ``cron`` line in ``timezone``.

    Attributes:
        name: Unique in the app.
        handler: ``"module:function"``.
        every_ms: Interval in milliseconds (exclusive with ``cron``).
        cron: Five-field cron line (exclusive with ``every_ms``).
        timezone: IANA zone of the cron line.
        catch_up: Most missed slots run when the app comes back (0: none).
        options: Its options.
    """

    name: str
    handler: str
    every_ms: int | None = None
    cron: str | None = None
    timezone: str = "UTC"
    catch_up: int = 1
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """A whole ``app.toml``.

    Attributes:
        name: The app name (equals its directory name).
        directory: The app directory (handler modules are looked up here).
        file: The ``app.toml`` file.
        description: Free text.
        handlers: Module of handler refs written as a bare ``"function"``.
        worker: Worker defaults.
        subscriptions: Its subscriptions, in file order.
        tasks: Its named tasks, in file order.
        recurring: Its recurring tasks, in file order.
        allow_external_handlers: Modules outside the app directory that
            handler refs may name, each with its submodules (module-path
            prefixes: ``mylib.tasks`` allows ``mylib.tasks.x``, never
            ``mylib.tasksevil``). Empty: only the app's own modules.
    """

    name: str
    directory: Path
    file: Path
    description: str = ""
    handlers: str = "handlers"
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    tasks: tuple[TaskConfig, ...] = ()
    recurring: tuple[RecurringConfig, ...] = ()
    allow_external_handlers: tuple[str, ...] = ()
