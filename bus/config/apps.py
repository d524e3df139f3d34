"""From an app's config to a runnable app: handlers, subscriptions, adapters.

``apps/<app>/app.toml`` (parsed by :mod:`bus.config.apptoml`) becomes an :class:`App`
whose task table holds its tasks and one entry per subscription (kind
``event``), and the lists of :class:`~bus.events.registry.SubscriptionSpec` and
:class:`~bus.events.registry.TaskSpec` for the registry. Handlers are imported
here, at worker start: a handler that cannot be imported stops the start with
an error naming it, never a silent drop.
"""

from __future__ import annotations

from typing import Any

from bus.config.apptoml import load_app_config
from bus.config.handlers import resolve_handler
from bus.config.model import AppConfig, RecurringConfig, SubscriptionConfig, TaskConfig
from bus.config.settings import Settings
from bus.core.app import App, TaskDef
from bus.core.context import Fail, TaskContext
from bus.core.task import TaskRecord
from bus.errors import ConfigError
from bus.events.envelope import Event
from bus.events.registry import SubscriptionSpec, TaskSpec
from bus.events.schemas import SchemaError, SchemaRegistry

__all__ = [
    "build_app",
    "event_adapter",
    "load_app_config_named",
    "subscription_specs",
    "task_specs",
]


def load_app_config_named(settings: Settings, name: str) -> AppConfig:
    """Load ``<apps_dir>/<name>/app.toml``.

    Raises:
        ConfigError: No such app (the message lists the apps there are), or an
            invalid config.
    """
    directory = settings.apps_dir / name
    if not (directory / "app.toml").is_file():
        known = sorted(p.parent.name for p in settings.apps_dir.glob("*/app.toml"))
        raise ConfigError(
            f"no app {name!r}: {directory / 'app.toml'} does not exist "
            f"(apps in {settings.apps_dir}: {', '.join(known) or 'none'}; set BUS_APPS_DIR)"
        )
    return load_app_config(directory)


def subscription_specs(config: AppConfig) -> list[SubscriptionSpec]:
    """The registry entries of an app's subscriptions."""
    return [
        SubscriptionSpec(
            app=config.name,
            name=sub.name,
            events=sub.events,
            where=sub.where,
            queue=sub.options.queue,
            max_attempts=sub.options.max_attempts,
            backoff=sub.options.backoff.to_doc(),
            timeout_s=sub.options.timeout_s,
            delay_s=sub.options.delay_s,
            scope=sub.options.scope,
        )
        for sub in config.subscriptions
    ]


def task_specs(config: AppConfig) -> list[TaskSpec]:
    """The registry entries of an app's tasks (named and recurring).

    They let a producer without the app's code enqueue a task by name with
    the options app.toml declares (``bus.events.declarations``).
    """
    named: list[TaskConfig | RecurringConfig] = [*config.tasks, *config.recurring]
    return [
        TaskSpec(
            name=task.name,
            queue=task.options.queue,
            max_attempts=task.options.max_attempts,
            timeout_s=task.options.timeout_s,
            backoff=task.options.backoff.to_doc(),
            scope=task.options.scope,
        )
        for task in named
    ]


def build_app(config: AppConfig) -> App:
    """Build the app's task table, importing every handler.

    Raises:
        HandlerImportError: A handler cannot be imported.
        ConfigError: A subscription and a task share a name.
    """
    app = App(config.name)
    Declared = SubscriptionConfig | TaskConfig | RecurringConfig
    declared: list[tuple[Declared, str]] = [(sub, "event") for sub in config.subscriptions]
    named: list[Declared] = [*config.tasks, *config.recurring]
    declared += [(task, "task") for task in named]
    for item, kind in declared:
        options = item.options
        task = TaskDef(
            name=item.name,
            fn=resolve_handler(config, item.handler),
            queue=options.queue,
            max_attempts=options.max_attempts,
            timeout_s=options.timeout_s,
            backoff=options.backoff.to_doc(),
            scope=options.scope,
            kind=kind,
        )
        _add(app, config, task)
    return app


def _add(app: App, config: AppConfig, task: TaskDef) -> None:
    try:
        app.add(task)
    except ValueError as exc:
        raise ConfigError(
            f"{config.file}: {exc} (subscriptions, tasks and recurring tasks "
            "share one namespace of names)"
        ) from exc


def event_adapter(schemas: SchemaRegistry | None = None) -> Any:
    """Return the worker's payload adapter: events become :class:`Event` objects.

    Args:
        schemas: When given, the payload of every event is validated again on
            the consumer side; an event that fails is dead at once (``Fail``)
            with the violations, since retrying cannot fix it.
    """

    def adapt(record: TaskRecord, ctx: TaskContext) -> Any:
        if record.kind != "event":
            return record.payload
        try:
            event = Event.from_envelope(record.payload)
        except ValueError as exc:
            raise Fail(f"undecodable event: {exc}", dead_reason="undecodable event") from exc
        if schemas is not None:
            try:
                schemas.validate(event.type, event.data)
            except SchemaError as exc:
                raise Fail(
                    f"consumer-side schema check failed: {exc}", dead_reason="schema check failed"
                ) from exc
        return event

    return adapt
