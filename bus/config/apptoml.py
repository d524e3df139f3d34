"""App config: ``apps/<app>/app.toml``, parsed strictly into frozen dataclasses.

This module owns the app config format, its checks, and the import of the
handlers it names. Format (keys optional unless marked)::

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

Handlers are imported only by :func:`resolve_handler`, when a worker starts.
A handler ref names a module of the app's own directory; one that names any
other module (``os:system``) is refused unless ``allow_external_handlers``
lists it or a package above it, so that a config line can never turn a task's
payload into the arguments of an arbitrary function of the import path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import re
import sys
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from bus.core.options import MAX_PREFETCH, Backoff, OptionError, TaskOptions
from bus.errors import ConfigError
from bus.events.matching import FilterError, PatternError, compile_filter, compile_pattern
from bus.store.keys import validate_app_name, validate_queue_name

__all__ = [
    "AppConfig",
    "HandlerImportError",
    "RecurringConfig",
    "SubscriptionConfig",
    "TaskConfig",
    "WorkerConfig",
    "load_all_apps",
    "load_app_config",
    "parse_duration",
    "resolve_handler",
]

_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_DURATION_RE = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m(?!s))?"
    r"(?:(?P<s>[0-9]+)s)?(?:(?P<ms>[0-9]+)ms)?"
)
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_TOML_INT_MIN, _TOML_INT_MAX = -(2**63), 2**63 - 1  # TOML's integers; tomllib takes any size
# Longest timeout_s, delay_s or back-off delay: far past any real use, and far
# below what a due time in epoch milliseconds can hold (1e300 s would not encode).
_MAX_SECONDS = 100 * 365 * 86_400
_APPS_PACKAGE = "taskbus_apps"


class HandlerImportError(ConfigError):
    """A handler named in an app config cannot be imported or is not callable."""


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


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


class _Table:
    """Strict, typed access to one TOML table; :meth:`done` rejects unread keys."""

    def __init__(self, data: Mapping[str, Any], where: str, file: Path) -> None:
        self.data, self.where, self.file = data, where, file
        self.read: set[str] = set()

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}: {message}")

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
        """Return the value of ``key`` (``default`` if absent) after a type check."""
        self.read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python, never in TOML.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise self.error(f"{key!r} must be {expected}, got {value!r}")
        return value

    def require(self, key: str, kinds: tuple[type, ...]) -> Any:
        """Like :meth:`get`, for a key that must be present."""
        if key not in self.data:
            raise self.error(f"missing required key {key!r}")
        return self.get(key, kinds)

    def done(self, hint: Mapping[str, str] | None = None) -> None:
        """Raise if the table has keys nobody read, naming the first one."""
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            why = (hint or {}).get(unknown[0], "")
            raise self.error(f"unknown key {unknown[0]!r}{why}")


def _name(table: _Table, kind: str) -> str:
    name: str = table.require("name", (str,))
    if _NAME_RE.fullmatch(name) is None:
        raise table.error(f"{kind} name {name!r} must be 1-64 characters of a-z, 0-9, '_', '-'")
    table.where = f"{table.where} ({name!r})"
    return name


def _handler_ref(table: _Table, default_module: str) -> str:
    ref: str = table.require("handler", (str,))
    module, _, function = ref.rpartition(":")
    module = module or default_module
    if not function.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise table.error(f"'handler' must be 'module:function' or 'function', got {ref!r}")
    return f"{module}:{function}"


def _options(table: _Table, *, with_delay: bool) -> TaskOptions:
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


def _subscription(table: _Table, handlers: str) -> SubscriptionConfig:
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


def _task(table: _Table, handlers: str) -> TaskConfig:
    name = _name(table, "task")
    config = TaskConfig(name, _handler_ref(table, handlers), _options(table, with_delay=False))
    table.done(_NO_DELAY)
    return config


def _zone(table: _Table, zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise table.error(
            f"unknown time zone {zone!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from exc
    return zone


def _recurring(table: _Table, handlers: str) -> RecurringConfig:
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


def _worker(top: _Table) -> WorkerConfig:
    raw = top.get("worker", (dict,))
    if raw is None:
        return WorkerConfig()
    table = _Table(raw, "[worker]", top.file)
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


def _entries(top: _Table, key: str) -> list[_Table]:
    raw = top.get(key, (list, dict), [])
    tables = []
    for index, item in enumerate(raw if isinstance(raw, list) else [raw], start=1):
        if isinstance(raw, dict) or not isinstance(item, dict):
            raise top.error(f"'{key}' must be an array of tables: write [[{key}]] sections")
        tables.append(_Table(item, f"[[{key}]] #{index}", top.file))
    return tables


def load_app_config(path: Path) -> AppConfig:
    """Read and check an app's config.

    Args:
        path: The app directory, or its ``app.toml``.

    Returns:
        The config. Handlers are not imported (see :func:`resolve_handler`).

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
    _check_integers(file, data, "")
    top = _Table(data, "top level", file)
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


def _is_module_path(text: object) -> bool:
    return isinstance(text, str) and all(part.isidentifier() for part in text.split("."))


def _allow_external(top: _Table) -> tuple[str, ...]:
    raw: list[Any] = top.get("allow_external_handlers", (list,), [])
    for item in raw:
        if not _is_module_path(item):
            raise top.error(
                f"'allow_external_handlers' must list module names such as 'mylib.tasks', "
                f"got {item!r}"
            )
    return tuple(raw)


def _check_integers(file: Path, value: Any, where: str) -> None:
    """Refuse integers outside TOML's 64-bit range, naming their key."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_integers(file, item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_integers(file, item, f"{where}[{index}]")
    elif isinstance(value, int) and not _TOML_INT_MIN <= value <= _TOML_INT_MAX:
        digits = str(value) if len(str(value)) <= 30 else f"of {len(str(value))} digits"
        raise ConfigError(
            f"{file}: {where}: the integer {digits} is outside TOML's 64-bit range "
            f"({_TOML_INT_MIN} to {_TOML_INT_MAX})"
        )


def _check_names_and_queues(
    top: _Table,
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


def _app_package(config: AppConfig) -> str:
    """Register (once) and return the private package whose path is the app directory."""
    if _APPS_PACKAGE not in sys.modules:
        root = types.ModuleType(_APPS_PACKAGE, "Handler modules of taskbus apps.")
        root.__path__ = []
        sys.modules[_APPS_PACKAGE] = root
    directory = str(config.directory.resolve())
    name = f"{_APPS_PACKAGE}.{config.name}"
    existing = sys.modules.get(name)
    if existing is not None and list(getattr(existing, "__path__", [])) != [directory]:
        # Another directory holds an app of the same name in this process (tests
        # do this): keep both apart with a name derived from the directory.
        digest = hashlib.sha256(directory.encode()).hexdigest()[:10]
        name = f"{name}_{digest}"
        existing = sys.modules.get(name)
    if existing is None:
        package = types.ModuleType(name, f"Handler modules of the app in {directory}.")
        package.__path__ = [directory]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = [directory]
        sys.modules[name] = package
    return name


def _is_local(config: AppConfig, module: str) -> bool:
    top = config.directory / module.split(".")[0]
    return top.with_suffix(".py").is_file() or (top / "__init__.py").is_file()


def _is_allowed(config: AppConfig, module: str) -> bool:
    # Prefixes match whole module-path parts: "mylib.tasks" is not "mylib.tasksevil".
    return any(module == p or module.startswith(p + ".") for p in config.allow_external_handlers)


def _confined(config: AppConfig, ref: str, where: str) -> tuple[str, str, bool]:
    """Split a ref into module, function and whether the module is the app's own.

    Raises:
        ConfigError: The ref is not ``module:function`` of identifiers, names a
            dunder attribute, or names a module outside the app directory
            that ``allow_external_handlers`` does not list.
    """
    module, _, function = ref.rpartition(":")
    module = module or config.handlers
    # Configs built in code skip the parser's checks: no relative (".x") or
    # path-like ("../x", "/x") module gets as far as the import system.
    if not _is_module_path(module) or not function.isidentifier():
        raise ConfigError(f"{where}: must be 'module:function' or 'function' of Python names")
    if function.startswith("__") and function.endswith("__"):
        raise ConfigError(f"{where}: {function!r} is a special attribute, not a handler")
    if _is_local(config, module):
        return module, function, True
    if _is_allowed(config, module):
        return module, function, False
    first = module.split(".")[0]
    raise ConfigError(
        f"{where}: module {module!r} is not in the app directory {config.directory} "
        f"(no {first}.py or {first}/__init__.py there) and allow_external_handlers does not "
        f"list it. Handlers run only the app's own code unless app.toml opts in: "
        f'add allow_external_handlers = ["{module}"] (a package name allows its submodules too)'
    )


def resolve_handler(config: AppConfig, ref: str) -> Callable[..., Any]:
    """Import the handler named by ``ref`` for an app.

    ``module`` is looked up in the app's directory (as ``<module>.py`` or a
    package ``<module>/__init__.py``), imported as
    ``taskbus_apps.<app>.<module>`` so apps need neither ``__init__.py`` nor
    ``sys.path`` changes, and may use relative imports between their modules
    (an app's ``os.py`` is the app's, never the standard library's). A module
    the directory does not have is imported from the import path only if
    ``config.allow_external_handlers`` lists it or a package above it.

    Args:
        config: The app's config.
        ref: ``"module:function"``, or ``"function"`` in the app's default
            ``handlers`` module.

    Returns:
        The handler.

    Raises:
        ConfigError: The ref names a module outside the app directory that
            ``allow_external_handlers`` does not list, or is not a
            ``module:function`` ref. Nothing is imported.
        HandlerImportError: The module cannot be imported (the message has
            the underlying error), has no such attribute, or it is not callable.
    """
    where = f"{config.file}: handler {ref!r}"
    module, function, local = _confined(config, ref, where)
    try:
        if local:
            importlib.invalidate_caches()  # the files may be newer than the finder's cache
            loaded = importlib.import_module(f"{_app_package(config)}.{module}")
        else:
            loaded = importlib.import_module(module)
    except Exception as exc:
        raise HandlerImportError(
            f"{where}: cannot import module {module!r}: {type(exc).__name__}: {exc}"
        ) from exc
    source = getattr(loaded, "__file__", None) or module
    if not hasattr(loaded, function):
        names = [n for n in dir(loaded) if not n.startswith("_") and callable(getattr(loaded, n))]
        close = get_close_matches(function, names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise HandlerImportError(f"{where}: {source} has no function {function!r}.{hint}")
    target = getattr(loaded, function)
    if not callable(target):
        raise HandlerImportError(
            f"{where}: {function!r} in {source} is a {type(target).__name__}, not a function"
        )
    handler: Callable[..., Any] = target
    return handler
