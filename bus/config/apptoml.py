"""App config: ``apps/<app>/app.toml``, parsed strictly into frozen dataclasses.

This module owns the app config format and its checks: it reads the file into
the dataclasses of :mod:`bus.config.model`. Format (keys optional unless marked)::

    name = "billing"                  # required; equals the directory name
    description = "..."
    handlers = "handlers"             # module of handler refs given as "function"
    allow_external_handlers = ["mylib.tasks"]  # modules outside the app directory
                                      # handlers may name: these and their submodules
                                      # (default []: only the app directory's own)

    [worker]
    queues = ["critical", "default"]  # serve order; "*" = every other queue of the app,
                                      # alphabetically (default ["*"]: all queues)
    concurrency = 16                  # default 10
    prefetch = 16                     # claimed tasks held ready beyond the running
                                      # ones (default: concurrency; 0 for long tasks)

    [[subscriptions]]
    name = "charge_order"             # required: [a-z0-9_-], 1-64; unique in the app
    events = "order.placed"           # required: a pattern or a list (docs/matching.md)
    handler = "handlers:charge_order" # required: "module:function" or "function"
    where = { currency = "EUR" }      # payload filter (docs/matching.md)
    queue = "default"                 # task options (bus.core.options.TaskOptions) ...
    max_attempts = 5
    backoff = { base_s = 1.0, max_s = 300.0, jitter = 0.2 }   # or a list: [1, 5, 30]
    timeout_s = 60
    delay_s = 0                       # subscriptions only: delay every delivery
    scope = "any"                     # "any" (one worker) or "all" (every node)

    [[tasks]]                         # tasks enqueued by name from code
    name = "send_invoice"             # required
    handler = "handlers:send_invoice" # required; + queue, max_attempts, backoff,
                                      #   timeout_s, scope
    [[recurring]]
    name = "hourly_report"            # required
    handler = "handlers:hourly_report"# required; + the same options as [[tasks]]
    every = "1h"                      # exactly one of every / cron
    cron = "0 3 * * *"                # five fields: minute hour day month weekday
    timezone = "Europe/Berlin"        # with cron only; default "UTC"
    catch_up = 1                      # missed slots run on return (>= 0); default 1

Every mistake is a :class:`~bus.errors.ConfigError` naming the file and the
table: unknown keys (settings are never silently ignored), wrong types, bad
patterns, filters, durations, cron lines or time zones, names used twice
(subscriptions, tasks and recurring tasks share one namespace: the task table
of the app), queues that a worker with an explicit ``queues`` list would never
serve, integers outside TOML's 64-bit range, and ``timeout_s``, ``delay_s`` or
back-off delays over 100 years (a due time that far out cannot be stored).

Parsing imports no handler: :func:`bus.config.handlers.resolve_handler` does,
when a worker starts, confined to the app's directory and ``allow_external_handlers``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from bus.config.handlers import is_module_path
from bus.config.model import (
    AppConfig,
    RecurringConfig,
    SubscriptionConfig,
    TaskConfig,
    WorkerConfig,
)
from bus.config.tables import Table, check_integers
from bus.core.options import MAX_PREFETCH, Backoff, OptionError, TaskOptions
from bus.errors import ConfigError
from bus.events.matching import FilterError, PatternError, compile_filter, compile_pattern
from bus.store.keys import validate_app_name, validate_queue_name

__all__ = [
    "load_all_apps",
    "load_app_config",
    "parse_duration",
]

_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_DURATION_RE = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m(?!s))?"
    r"(?:(?P<s>[0-9]+)s)?(?:(?P<ms>[0-9]+)ms)?"
)
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# Longest timeout_s, delay_s or back-off delay: far past any real use, and far
# below what a due time in epoch milliseconds can hold (1e300 s would not encode).
_MAX_SECONDS = 100 * 365 * 86_400


def parse_duration(text: str) -> int:
    """Parse a duration such as ``30s``, ``5m``, ``1h30m``, ``1d`` or ``250ms``.

    Units, largest first, each at most once: ``d``, ``h``, ``m``, ``s``,
    ``ms``; whole numbers only, no spaces.

    Args:
        text: The duration.

    Returns:
        The duration in milliseconds (may be 0).

    Raises:
        ConfigError: ``text`` is not such a duration.
    """
    match = _DURATION_RE.fullmatch(text) if isinstance(text, str) and text else None
    if match is None:
        raise ConfigError(
            f"invalid duration {text!r}: use whole numbers with units, largest first, each "
            "unit once, no spaces: '1d', '1h30m', '5m', '30s', '250ms'"
        )
    return sum(int(v) * _UNIT_MS[unit] for unit, v in match.groupdict().items() if v)


def _name(table: Table, kind: str) -> str:
    name: str = table.require("name", (str,))
    if _NAME_RE.fullmatch(name) is None:
        raise table.error(f"{kind} name {name!r} must be 1-64 characters of a-z, 0-9, '_', '-'")
    table.where = f"{table.where} ({name!r})"
    return name


def _handler_ref(table: Table, default_module: str) -> str:
    ref: str = table.require("handler", (str,))
    module, _, function = ref.rpartition(":")
    module = module or default_module
    if not function.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise table.error(f"'handler' must be 'module:function' or 'function', got {ref!r}")
    return f"{module}:{function}"


def _options(table: Table, *, with_delay: bool) -> TaskOptions:
    number = (int, float)
    raw_backoff = table.get("backoff", (dict, list))
    try:
        options = TaskOptions(
            queue=table.get("queue", (str,), "default"),
            max_attempts=table.get("max_attempts", (int,), 5),
            backoff=Backoff.from_doc(raw_backoff),
            timeout_s=table.get("timeout_s", number, 60.0),
            delay_s=table.get("delay_s", number, 0.0) if with_delay else 0.0,
            scope=table.get("scope", (str,), "any"),
        )
    except OptionError as exc:
        raise table.error(str(exc)) from exc
    longest_backoff = max(options.backoff.delays_s or (options.backoff.max_s,))
    for key, seconds in (
        ("timeout_s", options.timeout_s),
        ("delay_s", options.delay_s),
        ("backoff", longest_backoff),
    ):
        if seconds > _MAX_SECONDS:
            raise table.error(
                f"{key!r} must be at most {_MAX_SECONDS} seconds (100 years), got {seconds!r}"
            )
    return options


_NO_DELAY = {
    "delay_s": " ('delay_s' is for subscriptions; delay a task when enqueuing it, "
    "and a recurring task runs at its slot)"
}


def _subscription(table: Table, handlers: str) -> SubscriptionConfig:
    name = _name(table, "subscription")
    raw = table.require("events", (str, list))
    events = (raw,) if isinstance(raw, str) else tuple(raw)
    if not events:
        raise table.error("'events' must be a pattern or a non-empty array of patterns")
    where = table.get("where", (dict,))
    try:
        for pattern in events:
            compile_pattern(pattern)
        if where is not None:
            compile_filter(where)
    except (PatternError, FilterError) as exc:
        raise table.error(str(exc)) from exc
    handler = _handler_ref(table, handlers)
    options = _options(table, with_delay=True)
    table.done()
    return SubscriptionConfig(name, events, handler, where, options)


def _task(table: Table, handlers: str) -> TaskConfig:
    name = _name(table, "task")
    config = TaskConfig(name, _handler_ref(table, handlers), _options(table, with_delay=False))
    table.done(_NO_DELAY)
    return config


def _zone(table: Table, zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise table.error(
            f"unknown time zone {zone!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from exc
    return zone


def _recurring(table: Table, handlers: str) -> RecurringConfig:
    name = _name(table, "recurring task")
    handler = _handler_ref(table, handlers)
    every, cron = table.get("every", (str,)), table.get("cron", (str,))
    zone = table.get("timezone", (str,))
    if (every is None) == (cron is None):
        raise table.error("give exactly one of 'every' (e.g. '1h') and 'cron' (e.g. '0 3 * * *')")
    every_ms = None
    if every is not None:
        if zone is not None:
            raise table.error("'timezone' goes with 'cron' only ('every' counts real time)")
        try:
            every_ms = parse_duration(every)
        except ConfigError as exc:
            raise table.error(f"'every': {exc}") from exc
        if every_ms == 0:
            raise table.error("'every' must be longer than zero")
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise table.error(
            f"'cron' must be five valid fields (minute hour day month weekday), got {cron!r}"
        )
    catch_up = table.get("catch_up", (int,), 1)
    if catch_up < 0:
        raise table.error(f"'catch_up' must be >= 0, got {catch_up}")
    options = _options(table, with_delay=False)
    table.done(_NO_DELAY)
    return RecurringConfig(
        name,
        handler,
        every_ms,
        cron,
        _zone(table, "UTC" if zone is None else zone),
        catch_up,
        options,
    )


def _worker(top: Table) -> WorkerConfig:
    raw = top.get("worker", (dict,))
    if raw is None:
        return WorkerConfig()
    table = Table(raw, "[worker]", top.file)
    queues = tuple(table.get("queues", (list,), ["*"]))
    if not queues:
        raise table.error("'queues' must name at least one queue (or '*' for all)")
    for queue in queues:
        if not isinstance(queue, str):
            raise table.error(f"'queues' must hold strings, got {queue!r}")
        if queue != "*":
            try:
                validate_queue_name(queue)
            except ValueError as exc:
                raise table.error(f"'queues': {exc}") from exc
        if queues.count(queue) > 1:
            raise table.error(f"'queues' names {queue!r} twice")
    concurrency = table.get("concurrency", (int,), 10)
    if concurrency < 1:
        raise table.error(f"'concurrency' must be >= 1, got {concurrency}")
    prefetch = table.get("prefetch", (int,), None)
    if prefetch is not None and not 0 <= prefetch <= MAX_PREFETCH:
        raise table.error(f"'prefetch' must be 0..{MAX_PREFETCH}, got {prefetch}")
    table.done()
    return WorkerConfig(queues, concurrency, prefetch)


def _entries(top: Table, key: str) -> list[Table]:
    raw = top.get(key, (list, dict), [])
    tables = []
    for index, item in enumerate(raw if isinstance(raw, list) else [raw], start=1):
        if isinstance(raw, dict) or not isinstance(item, dict):
            raise top.error(f"'{key}' must be an array of tables: write [[{key}]] sections")
        tables.append(Table(item, f"[[{key}]] #{index}", top.file))
    return tables


def load_app_config(path: Path) -> AppConfig:
    """Read and check an app's config.

    Args:
        path: The app directory, or its ``app.toml``.

    Returns:
        The config. Handlers are not imported (see
        :func:`bus.config.handlers.resolve_handler`).

    Raises:
        ConfigError: Unreadable file, bad TOML (with its line), unknown key,
            wrong type, invalid name, pattern, filter, option, duration, cron
            line or zone, ``every`` with ``cron``, a name used twice, a queue
            the worker would never serve, or an app name that differs from
            the directory name. The message names the file and the table.
    """
    path = Path(path)
    file = path if path.suffix == ".toml" else path / "app.toml"
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such file (an app directory needs an app.toml)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read: {exc}") from exc
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an integer of 5000 digits
        raise ConfigError(f"{file}: invalid TOML: {exc}") from exc
    check_integers(file, data, "")
    top = Table(data, "top level", file)
    name: str = top.require("name", (str,))
    try:
        validate_app_name(name)
    except ValueError as exc:
        raise top.error(str(exc)) from exc
    if name != file.parent.name:
        raise top.error(f"name {name!r} must equal the app's directory name {file.parent.name!r}")
    description = top.get("description", (str,), "")
    handlers = top.get("handlers", (str,), "handlers")
    if not all(part.isidentifier() for part in handlers.split(".")):
        raise top.error(f"'handlers' must be a module name such as 'handlers', got {handlers!r}")
    allow_external = _allow_external(top)
    worker = _worker(top)
    subscriptions = tuple(_subscription(t, handlers) for t in _entries(top, "subscriptions"))
    tasks = tuple(_task(t, handlers) for t in _entries(top, "tasks"))
    recurring = tuple(_recurring(t, handlers) for t in _entries(top, "recurring"))
    top.done()
    _check_names_and_queues(top, worker, subscriptions, tasks, recurring)
    return AppConfig(
        name,
        file.parent,
        file,
        description,
        handlers,
        worker,
        subscriptions,
        tasks,
        recurring,
        allow_external_handlers=allow_external,
    )


def _allow_external(top: Table) -> tuple[str, ...]:
    raw: list[Any] = top.get("allow_external_handlers", (list,), [])
    for item in raw:
        if not is_module_path(item):
            raise top.error(
                f"'allow_external_handlers' must list module names such as 'mylib.tasks', "
                f"got {item!r}"
            )
    return tuple(raw)


def _check_names_and_queues(
    top: Table,
    worker: WorkerConfig,
    *groups: tuple[SubscriptionConfig, ...] | tuple[TaskConfig, ...] | tuple[RecurringConfig, ...],
) -> None:
    kinds = ("[[subscriptions]]", "[[tasks]]", "[[recurring]]")
    seen: dict[str, str] = {}
    for kind, group in zip(kinds, groups, strict=True):
        for entry in group:
            if entry.name in seen:
                raise top.error(
                    f"the name {entry.name!r} is used by {seen[entry.name]} and by {kind}; "
                    "subscriptions, tasks and recurring tasks share one namespace"
                )
            seen[entry.name] = kind
            queue = entry.options.queue
            if "*" not in worker.queues and queue not in worker.queues:
                raise top.error(
                    f"{kind} {entry.name!r} uses queue {queue!r}, which [worker] queues "
                    f"{list(worker.queues)} never serves; add it, or '*'"
                )


def load_all_apps(apps_dir: Path) -> dict[str, AppConfig]:
    """Load every app of a directory: each ``<apps_dir>/<app>/app.toml``.

    Args:
        apps_dir: The apps directory (``BUS_APPS_DIR``).

    Returns:
        The configs by app name, in name order.

    Raises:
        ConfigError: The directory is missing, or a config is invalid.
    """
    apps_dir = Path(apps_dir)
    if not apps_dir.is_dir():
        raise ConfigError(f"{apps_dir}: no such apps directory (set BUS_APPS_DIR)")
    configs = (load_app_config(f) for f in sorted(apps_dir.glob("*/app.toml")))
    return {config.name: config for config in configs}
