"""App config: ``apps/<app>/app.toml``, parsed strictly into frozen dataclasses.

Format (every key optional unless marked; unknown keys are an error naming the
key, the table and the file)::

    name = "billing"                  # required; must equal the directory name
    description = "..."
    handlers = "handlers"             # module for handler refs without "module:"

    [worker]
    queues = ["critical", "default"]  # serve order; "*" = all queues (default ["*"])
    concurrency = 16                  # default 10

    [[subscriptions]]
    name = "charge_order"             # required, unique in the app: [a-z0-9_-]+
    events = "order.placed"           # required: a pattern or a list (docs/matching.md)
    handler = "handlers:charge_order" # required: "module:function" or "function"
    where = { currency = "EUR" }      # payload filter (docs/matching.md)
    # task options, shared by subscriptions, tasks and recurring tasks:
    queue = "default"                 # default "default"
    max_attempts = 5                  # default 5
    backoff = { base_s = 1.0, max_s = 300.0, jitter = 0.2 }   # or a list [1, 5, 30]
    timeout_s = 60                    # default 60
    delay_s = 0                       # default 0 (subscriptions: delay every event)
    scope = "any"                     # "any" (one worker) or "all" (every node)

    [[tasks]]                         # tasks enqueued by name from code
    name = "send_invoice"
    handler = "handlers:send_invoice"

    [[recurring]]
    name = "hourly_report"
    handler = "handlers:hourly_report"
    every = "1h"                      # exactly one of every / cron
    cron = "0 3 * * *"                # five fields
    timezone = "Europe/Berlin"        # with cron only; default "UTC"
    catch_up = 1                      # most missed slots run on return; default 1

Handler modules are found first in the app's directory (loaded under a private
module name, so apps need no ``__init__.py`` and no ``sys.path`` changes), then
on the import path. They are imported when a worker starts
(:func:`resolve_handler`), not when the config is read.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from bus.errors import ConfigError
from bus.keys import validate_app_name, validate_queue_name
from bus.matching import FilterError, PatternError, compile_filter, compile_pattern

__all__ = [
    "AppConfig",
    "HandlerImportError",
    "RecurringConfig",
    "SubscriptionConfig",
    "TaskConfig",
    "TaskOptions",
    "WorkerConfig",
    "load_all_apps",
    "load_app_config",
    "parse_duration",
    "resolve_handler",
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class HandlerImportError(ConfigError):
    """A handler named in an app config cannot be imported or is not callable."""


def parse_duration(text: str) -> int:
    """Parse ``30s``, ``5m``, ``1h30m``, ``250ms``, ``1d`` into milliseconds.

    Raises:
        ValueError: Not a positive duration in that form.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid duration {text!r}: use e.g. '30s', '5m', '1h30m', '250ms'")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or total <= 0:
        raise ValueError(f"invalid duration {text!r}: use e.g. '30s', '5m', '1h30m', '250ms'")
    return int(total)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs: queue, attempts, back-off, timeout, delay and scope."""

    queue: str = "default"
    max_attempts: int = 5
    backoff: dict[str, float] | list[float] | None = None
    timeout_s: float = 60.0
    delay_s: float = 0.0
    scope: str = "any"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Worker defaults of an app (the CLI flags override them)."""

    queues: tuple[str, ...] = ("*",)
    concurrency: int = 10


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """A subscription: which events, which handler, which filter, which options."""

    name: str
    events: tuple[str, ...]
    handler: str
    where: dict[str, Any] | None = None
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """A task enqueued by name, and its handler."""

    name: str
    handler: str
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class RecurringConfig:
    """A recurring task: ``every_ms`` or ``cron`` (+ ``timezone``)."""

    name: str
    handler: str
    every_ms: int | None = None
    cron: str | None = None
    timezone: str = "UTC"
    catch_up: int = 1
    options: TaskOptions = field(default_factory=TaskOptions)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """A whole ``app.toml``."""

    name: str
    directory: Path
    description: str = ""
    handlers: str = "handlers"
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    tasks: tuple[TaskConfig, ...] = ()
    recurring: tuple[RecurringConfig, ...] = ()

    @property
    def file(self) -> Path:
        """The ``app.toml`` file."""
        return self.directory / "app.toml"


class _Table:
    """Typed, strict access to one TOML table; every key must be consumed."""

    def __init__(self, data: Mapping[str, Any], where: str, file: Path) -> None:
        self.data, self.where, self.file = data, where, file
        self.used: set[str] = set()

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}: {message}")

    def get(
        self, key: str, kinds: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.fail(f"missing required key {key!r}")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        ):
            raise self.fail(f"{key!r} must be {_kind_names(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(f"{key!r} must be {_kind_names(kinds)}, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(
                f"unknown key {unknown[0]!r}"
                + (f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            )


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _name(table: _Table, what: str) -> str:
    name = table.get("name", str, required=True)
    if not _NAME_RE.match(name):
        raise table.fail(f"{what} name {name!r} must be [a-z0-9_-]+ (starting with a letter/digit)")
    return str(name)


def _options(table: _Table, *, allow_delay: bool) -> TaskOptions:
    queue = table.get("queue", str, "default")
    try:
        validate_queue_name(queue)
    except ValueError as exc:
        raise table.fail(str(exc)) from exc
    max_attempts = table.get("max_attempts", int, 5)
    if max_attempts < 1:
        raise table.fail(f"'max_attempts' must be >= 1, got {max_attempts}")
    timeout_s = float(table.get("timeout_s", (int, float), 60.0))
    if timeout_s <= 0:
        raise table.fail(f"'timeout_s' must be > 0, got {timeout_s}")
    delay_s = float(table.get("delay_s", (int, float), 0.0)) if allow_delay else 0.0
    if delay_s < 0:
        raise table.fail(f"'delay_s' must be >= 0, got {delay_s}")
    scope = table.get("scope", str, "any")
    if scope not in ("any", "all"):
        raise table.fail(f"'scope' must be 'any' or 'all', got {scope!r}")
    return TaskOptions(queue, max_attempts, _backoff(table), timeout_s, delay_s, scope)


def _backoff(table: _Table) -> dict[str, float] | list[float] | None:
    raw = table.get("backoff", (dict, list))
    if raw is None:
        return None
    if isinstance(raw, list):
        if not raw or not all(
            isinstance(d, int | float) and not isinstance(d, bool) and d >= 0 for d in raw
        ):
            raise table.fail(
                "'backoff' as a list must hold delays in seconds >= 0, e.g. [1, 5, 30]"
            )
        return [float(d) for d in raw]
    sub = _Table(raw, f"{table.where}.backoff", table.file)
    spec = {
        "base_s": float(sub.get("base_s", (int, float), 1.0)),
        "max_s": float(sub.get("max_s", (int, float), 300.0)),
        "jitter": float(sub.get("jitter", (int, float), 0.2)),
    }
    sub.done()
    if spec["base_s"] <= 0 or spec["max_s"] < spec["base_s"] or not 0 <= spec["jitter"] <= 1:
        raise table.fail("'backoff' needs base_s > 0, max_s >= base_s and 0 <= jitter <= 1")
    return spec


def _handler_ref(table: _Table, default_module: str) -> str:
    ref = table.get("handler", str, required=True)
    module, _, func = ref.rpartition(":")
    if not func.isidentifier() or (module and not all(p.isidentifier() for p in module.split("."))):
        raise table.fail(f"'handler' must be 'module:function' or 'function', got {ref!r}")
    return f"{module or default_module}:{func}"


def _subscription(table: _Table, handlers: str) -> SubscriptionConfig:
    name = _name(table, "subscription")
    raw = table.get("events", (str, list), required=True)
    events = (raw,) if isinstance(raw, str) else tuple(raw)
    if not events or not all(isinstance(e, str) for e in events):
        raise table.fail("'events' must be a pattern or a non-empty list of patterns")
    try:
        for pattern in events:
            compile_pattern(pattern)
        where = table.get("where", dict)
        if where is not None:
            compile_filter(where)
    except (PatternError, FilterError) as exc:
        raise table.fail(str(exc)) from exc
    handler = _handler_ref(table, handlers)
    return SubscriptionConfig(name, events, handler, where, _options(table, allow_delay=True))


def _recurring(table: _Table, handlers: str) -> RecurringConfig:
    name = _name(table, "recurring task")
    handler = _handler_ref(table, handlers)
    every = table.get("every", str)
    cron = table.get("cron", str)
    zone = table.get("timezone", str)
    if (every is None) == (cron is None):
        raise table.fail("give exactly one of 'every' and 'cron'")
    every_ms = None
    if every is not None:
        if zone is not None:
            raise table.fail("'timezone' goes with 'cron' only")
        try:
            every_ms = parse_duration(every)
        except ValueError as exc:
            raise table.fail(str(exc)) from exc
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise table.fail(
            f"'cron' must be five valid fields (minute hour day month weekday), got {cron!r}"
        )
    zone = zone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise table.fail(f"unknown time zone {zone!r}") from exc
    catch_up = table.get("catch_up", int, 1)
    if catch_up < 1:
        raise table.fail(f"'catch_up' must be >= 1, got {catch_up}")
    return RecurringConfig(
        name, handler, every_ms, cron, zone, catch_up, _options(table, allow_delay=False)
    )


def load_app_config(path: Path) -> AppConfig:
    """Read and check an ``app.toml`` (``path`` is the app directory or the file).

    Raises:
        ConfigError: Unreadable file, bad TOML (with its line), unknown key,
            wrong type, invalid pattern, filter, duration, cron or zone,
            duplicate names, or a name that differs from the directory.
    """
    path = Path(path)
    file = path if path.suffix == ".toml" else path / "app.toml"
    directory = file.parent
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such file (an app needs an app.toml)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from exc
    top = _Table(data, "top level", file)
    name = top.get("name", str, required=True)
    try:
        validate_app_name(name)
    except ValueError as exc:
        raise top.fail(str(exc)) from exc
    if name != directory.name:
        raise top.fail(f"name {name!r} must equal the app's directory name {directory.name!r}")
    description = top.get("description", str, "")
    handlers = top.get("handlers", str, "handlers")
    worker = WorkerConfig()
    raw_worker = top.get("worker", dict)
    if raw_worker is not None:
        wt = _Table(raw_worker, "[worker]", file)
        queues = tuple(wt.get("queues", list, ["*"]))
        for q in queues:
            if q != "*":
                try:
                    validate_queue_name(q)
                except (ValueError, TypeError) as exc:
                    raise wt.fail(str(exc)) from exc
        concurrency = wt.get("concurrency", int, 10)
        if concurrency < 1:
            raise wt.fail(f"'concurrency' must be >= 1, got {concurrency}")
        wt.done()
        worker = WorkerConfig(queues or ("*",), concurrency)

    def tables(key: str) -> list[_Table]:
        raw = top.get(key, list, [])
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise top.fail(f"[[{key}]] entries must be tables")
            out.append(_Table(item, f"[[{key}]] #{i + 1}", file))
        return out

    subs, tasks, recurring = [], [], []
    for t in tables("subscriptions"):
        subs.append(_subscription(t, handlers))
        t.done()
    for t in tables("tasks"):
        tasks.append(
            TaskConfig(_name(t, "task"), _handler_ref(t, handlers), _options(t, allow_delay=False))
        )
        t.done()
    for t in tables("recurring"):
        recurring.append(_recurring(t, handlers))
        t.done()
    top.done()
    for kind, items in (("subscription", subs), ("task", tasks), ("recurring task", recurring)):
        names = [i.name for i in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise top.fail(f"{kind} name {dupes[0]!r} is used twice")
    return AppConfig(
        name, directory, description, handlers, worker, tuple(subs), tuple(tasks), tuple(recurring)
    )


def load_all_apps(apps_dir: Path) -> dict[str, AppConfig]:
    """Load every ``<apps_dir>/*/app.toml``, by app name."""
    return {
        cfg.name: cfg
        for cfg in (load_app_config(p.parent) for p in sorted(Path(apps_dir).glob("*/app.toml")))
    }


def _load_module(config: AppConfig, module: str) -> ModuleType:
    base = config.directory.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            private = f"taskbus_apps.{config.name.replace('-', '_')}.{module}"
            if private in sys.modules:
                return sys.modules[private]
            spec = importlib.util.spec_from_file_location(
                private,
                candidate,
                submodule_search_locations=[str(base)] if candidate.name == "__init__.py" else None,
            )
            if spec is None or spec.loader is None:
                break
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[private] = loaded
            try:
                spec.loader.exec_module(loaded)
            except BaseException:
                del sys.modules[private]
                raise
            return loaded
    return importlib.import_module(module)


def resolve_handler(config: AppConfig, ref: str) -> Callable[..., Any]:
    """Import the handler ``module:function`` of an app.

    Raises:
        HandlerImportError: The module cannot be imported (with the cause) or
            has no such callable.
    """
    module, _, func = ref.rpartition(":")
    module = module or config.handlers
    try:
        loaded = _load_module(config, module)
    except Exception as exc:
        raise HandlerImportError(
            f"{config.file}: handler {ref!r}: cannot import module {module!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target = getattr(loaded, func, None)
    if not callable(target):
        raise HandlerImportError(
            f"{config.file}: handler {ref!r}: module {module!r} has no function {func!r}"
        )
    return target  # type: ignore[no-any-return]
