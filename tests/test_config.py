"""Tests of bus.config (apptoml, model, handlers): app.toml parsing, every error path, handlers."""

from __future__ import annotations

import itertools
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.config.apptoml import load_all_apps, load_app_config, parse_duration
from bus.config.handlers import HandlerImportError, resolve_handler
from bus.config.model import (
    AppConfig,
    RecurringConfig,
    SubscriptionConfig,
    TaskConfig,
    WorkerConfig,
)
from bus.core.options import Backoff, TaskOptions
from bus.errors import ConfigError

REPO_APPS = Path(__file__).resolve().parent.parent / "apps"
_app_numbers = itertools.count()

MakeApp = Callable[..., Path]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """Write an app directory: app.toml (``name`` line added) plus extra files.

    Each call gets a fresh app name unless one is given, so handler modules
    of different tests never share a private package name.
    """

    def make(
        body: str = "",
        *,
        name: str | None = None,
        files: dict[str, str] | None = None,
        root: Path | None = None,
    ) -> Path:
        name = name or f"app{next(_app_numbers)}"
        directory = (root or tmp_path) / name
        directory.mkdir(parents=True)
        header = f'name = "{name}"\n'
        (directory / "app.toml").write_text(header + textwrap.dedent(body))
        for relative, text in (files or {}).items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return directory

    return make


# -- happy paths -------------------------------------------------------------------------------

FULL = """
description = "Everything at once."
handlers = "jobs"

[worker]
queues = ["critical", "*"]
concurrency = 16
prefetch = 4

[[subscriptions]]
name = "charge_order"
events = ["order.placed", "order.*"]
handler = "jobs:charge"
where = { currency = "EUR", "user.plan" = { in = ["pro", "enterprise"] } }
queue = "critical"
max_attempts = 3
backoff = [1, 5, 30]
timeout_s = 30
delay_s = 2.5
scope = "all"

[[subscriptions]]
name = "welcome"
events = "user.signed_up"
handler = "welcome"

[[tasks]]
name = "send_invoice"
handler = "billing_jobs:send_invoice"
backoff = { base_s = 2, max_s = 60, jitter = 0 }

[[recurring]]
name = "hourly_report"
handler = "report"
every = "1h30m"

[[recurring]]
name = "nightly"
handler = "jobs:nightly"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
catch_up = 0
queue = "low"
"""


def test_full_config_parses_into_frozen_dataclasses(make_app: MakeApp) -> None:
    """Every key of the format lands in its field, defaults fill the rest."""
    directory = make_app(FULL, name="shop")
    assert load_app_config(directory) == AppConfig(
        name="shop",
        directory=directory,
        file=directory / "app.toml",
        description="Everything at once.",
        handlers="jobs",
        worker=WorkerConfig(("critical", "*"), 16, 4),
        subscriptions=(
            SubscriptionConfig(
                "charge_order",
                ("order.placed", "order.*"),
                "jobs:charge",
                {"currency": "EUR", "user.plan": {"in": ["pro", "enterprise"]}},
                TaskOptions("critical", 3, Backoff(delays_s=(1, 5, 30)), 30, 2.5, "all"),
            ),
            SubscriptionConfig("welcome", ("user.signed_up",), "jobs:welcome"),
        ),
        tasks=(
            TaskConfig(
                "send_invoice",
                "billing_jobs:send_invoice",
                TaskOptions(backoff=Backoff(base_s=2, max_s=60, jitter=0)),
            ),
        ),
        recurring=(
            RecurringConfig("hourly_report", "jobs:report", every_ms=5_400_000),
            RecurringConfig(
                "nightly",
                "jobs:nightly",
                cron="0 3 * * *",
                timezone="Europe/Berlin",
                catch_up=0,
                options=TaskOptions(queue="low"),
            ),
        ),
    )


def test_minimal_config_gets_the_documented_defaults(make_app: MakeApp) -> None:
    """An app.toml with only a name serves all queues with 10 slots and declares nothing."""
    config = load_app_config(make_app(name="bare"))
    assert (config.worker, config.handlers, config.subscriptions, config.tasks) == (
        WorkerConfig(("*",), 10),
        "handlers",
        (),
        (),
    )


def test_config_loads_from_the_file_path_too(make_app: MakeApp) -> None:
    """The path may be the app directory or its app.toml."""
    directory = make_app()
    assert load_app_config(directory / "app.toml") == load_app_config(directory)


def test_repository_apps_load_and_every_handler_they_name_resolves() -> None:
    """The example apps are valid and name only handlers that exist."""
    apps = load_all_apps(REPO_APPS)
    refs = [
        (config, ref)
        for config in apps.values()
        for ref in [
            *(s.handler for s in config.subscriptions),
            *(t.handler for t in config.tasks),
            *(r.handler for r in config.recurring),
        ]
    ]
    assert (sorted(apps), all(callable(resolve_handler(c, ref)) for c, ref in refs)) == (
        ["analytics", "billing", "email"],
        True,
    )


def test_load_all_apps_skips_directories_without_app_toml(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """Only subdirectories with an app.toml are apps; results are keyed by name."""
    root = tmp_path / "apps"
    make_app(name="one", root=root)
    make_app(name="two", root=root)
    (root / "__pycache__").mkdir()
    assert list(load_all_apps(root)) == ["one", "two"]


def test_load_all_apps_needs_the_directory(tmp_path: Path) -> None:
    """A missing apps directory is an error naming it."""
    with pytest.raises(ConfigError, match="no such apps directory"):
        load_all_apps(tmp_path / "nowhere")


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("1m30s", 90_000),
        ("2d3h4m5s6ms", 183_845_006),
        ("90m", 5_400_000),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    """Units d, h, m, s, ms, largest first, add up to milliseconds."""
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text", ["", "1", "s", "1.5h", "1h 30m", "30m1h", "1h1h", "-5m", "1H", "5 m", "ms", "1hm"]
)
def test_invalid_durations_raise_config_error(text: str) -> None:
    """Anything but whole numbers with ordered units is refused with an example."""
    with pytest.raises(ConfigError, match=f"invalid duration {text!r}.*'1h30m'"):
        parse_duration(text)


# -- errors ------------------------------------------------------------------------------------

SUB = '[[subscriptions]]\nname = "s"\nevents = "user.signed_up"\nhandler = "handlers:f"\n'
TASK = '[[tasks]]\nname = "t"\nhandler = "handlers:f"\n'
EVERY = '[[recurring]]\nname = "r"\nhandler = "handlers:f"\nevery = "1h"\n'
CRON = '[[recurring]]\nname = "r"\nhandler = "handlers:f"\ncron = "0 3 * * *"\n'

ERROR_CASES = [
    # TOML and top level
    ("bad TOML", "x = \n", r"invalid TOML: .*line 2"),
    ("unknown top key", 'nmae = "x"\n', r"top level: unknown key 'nmae'"),
    ("wrong type", "description = 3\n", r"'description' must be a string, got 3"),
    ("bad handlers", 'handlers = "my handlers"\n', r"'handlers' must be a module name"),
    ("single table", '[subscriptions]\nname = "s"\n', r"write \[\[subscriptions\]\] sections"),
    ("not tables", "tasks = [1]\n", r"'tasks' must be an array of tables"),
    # [worker]
    ("worker key", "[worker]\nthreads = 4\n", r"\[worker\]: unknown key 'threads'"),
    ("concurrency type", "[worker]\nconcurrency = 1.5\n", r"'concurrency' must be an integer"),
    ("concurrency 0", "[worker]\nconcurrency = 0\n", r"'concurrency' must be >= 1"),
    ("prefetch type", "[worker]\nprefetch = 1.5\n", r"'prefetch' must be an integer"),
    ("prefetch < 0", "[worker]\nprefetch = -1\n", r"'prefetch' must be 0\.\.10000, got -1"),
    ("prefetch huge", "[worker]\nprefetch = 10001\n", r"'prefetch' must be 0\.\.10000"),
    ("queues empty", "[worker]\nqueues = []\n", r"'queues' must name at least one queue"),
    ("queues twice", '[worker]\nqueues = ["a", "a"]\n', r"'queues' names 'a' twice"),
    ("queue name", '[worker]\nqueues = ["a b"]\n', r"'queues': invalid queue name 'a b'"),
    ("queue type", "[worker]\nqueues = [1]\n", r"'queues' must hold strings"),
    (
        "queue unserved",
        '[worker]\nqueues = ["critical"]\n' + SUB,
        r"\[\[subscriptions\]\] 's' uses queue 'default', which \[worker\] queues",
    ),
    # [[subscriptions]]
    ("sub key", SUB + "prio = 1\n", r"\[\[subscriptions\]\] #1 \('s'\): unknown key 'prio'"),
    ("sub no events", SUB.replace('events = "user.signed_up"\n', ""), r"missing required key"),
    ("sub no name", SUB.replace('name = "s"\n', ""), r"#1: missing required key 'name'"),
    (
        "sub no handler",
        SUB.replace('handler = "handlers:f"\n', ""),
        r"missing required key 'handler'",
    ),
    ("sub bad name", SUB.replace('"s"', '"S!"'), r"subscription name 'S!' must be"),
    ("events type", SUB.replace('"user.signed_up"', "5"), r"'events' must be a string or an"),
    ("events empty", SUB.replace('"user.signed_up"', "[]"), r"non-empty array of patterns"),
    ("bad pattern", SUB.replace("user.signed_up", "user*"), r"invalid event pattern 'user\*'"),
    ("bad filter", SUB + "where = { plan = { gt = 1 } }\n", r"unknown operator 'gt'"),
    ("dotted filter", SUB + 'where = { user.plan = "pro" }\n', r"quote the whole path"),
    ("where type", SUB + 'where = "plan = pro"\n', r"'where' must be a table"),
    ("handler ref", SUB.replace("handlers:f", "handlers:"), r"'handler' must be 'module:function'"),
    (
        "handler ref 2",
        SUB.replace("handlers:f", "my mod:f"),
        r"'handler' must be 'module:function'",
    ),
    ("attempts type", SUB + 'max_attempts = "5"\n', r"'max_attempts' must be an integer, got '5'"),
    ("attempts 0", SUB + "max_attempts = 0\n", r"'max_attempts' must be >= 1"),
    ("timeout bool", SUB + "timeout_s = true\n", r"'timeout_s' must be an integer or a number"),
    ("timeout 0", SUB + "timeout_s = 0\n", r"'timeout_s' must be > 0"),
    ("delay < 0", SUB + "delay_s = -1\n", r"'delay_s' must be >= 0"),
    ("scope", SUB + 'scope = "some"\n', r"'scope' must be 'any' or 'all'"),
    ("queue", SUB + 'queue = "a b"\n', r"'queue': invalid queue name"),
    ("backoff type", SUB + 'backoff = "fast"\n', r"'backoff' must be a table or an array"),
    ("backoff empty", SUB + "backoff = []\n", r"at least one delay"),
    ("backoff key", SUB + "backoff = { base = 1 }\n", r"unknown back-off key 'base'"),
    ("backoff range", SUB + "backoff = { base_s = 0 }\n", r"'base_s' must be > 0"),
    # [[tasks]]
    ("task key", TASK + "every = 1\n", r"\[\[tasks\]\] #1 \('t'\): unknown key 'every'"),
    ("task delay", TASK + "delay_s = 5\n", r"unknown key 'delay_s' \('delay_s' is for subscr"),
    # [[recurring]]
    ("bad duration", EVERY.replace('"1h"', '"1x"'), r"'every': invalid duration '1x'"),
    ("zero every", EVERY.replace('"1h"', '"0s"'), r"'every' must be longer than zero"),
    ("bad cron", CRON.replace("0 3", "61 3"), r"'cron' must be five valid fields"),
    ("six fields", CRON.replace("0 3", "0 0 3"), r"'cron' must be five valid fields"),
    ("cron alias", CRON.replace("0 3 * * *", "@hourly"), r"'cron' must be five valid fields"),
    ("bad zone", CRON + 'timezone = "Mars/Base"\n', r"unknown time zone 'Mars/Base'"),
    ("zone dir", CRON + 'timezone = "America"\n', r"unknown time zone 'America'"),
    ("zone path", CRON + 'timezone = "../etc"\n', r"unknown time zone '../etc'"),
    ("empty zone", CRON + 'timezone = ""\n', r"unknown time zone ''"),
    ("zone with every", EVERY + 'timezone = "UTC"\n', r"'timezone' goes with 'cron' only"),
    ("both", EVERY + 'cron = "0 3 * * *"\n', r"exactly one of 'every' .* and 'cron'"),
    ("neither", TASK.replace("tasks", "recurring"), r"exactly one of 'every'"),
    ("catch_up", EVERY + "catch_up = -1\n", r"'catch_up' must be >= 0"),
    ("recurring delay", EVERY + "delay_s = 5\n", r"unknown key 'delay_s'"),
    # names
    ("duplicate sub", SUB + SUB, r"the name 's' is used by \[\[subscriptions\]\] and by \[\[sub"),
    (
        "sub and task",
        SUB + TASK.replace('"t"', '"s"'),
        r"the name 's' is used by \[\[subscriptions\]\] and by \[\[tasks\]\]",
    ),
    (
        "task and recurring",
        TASK + EVERY.replace('"r"', '"t"'),
        r"the name 't' is used by \[\[tasks\]\] and by \[\[recurring\]\]",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_config_errors_name_the_file_and_the_problem(
    make_app: MakeApp, body: str, message: str
) -> None:
    """Each mistake in an app.toml is a ConfigError with the file and a precise message."""
    directory = make_app(body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_app_config(directory)
    assert str(caught.value).startswith(f"{directory / 'app.toml'}: ")


def test_app_name_must_equal_the_directory_name(tmp_path: Path) -> None:
    """name = "billing" in apps/payments is refused."""
    directory = tmp_path / "payments"
    directory.mkdir()
    (directory / "app.toml").write_text('name = "billing"\n')
    with pytest.raises(ConfigError, match="must equal the app's directory name 'payments'"):
        load_app_config(directory)


@pytest.mark.parametrize("body", ['name = "Bad Name"\n', "name = 5\n", 'description = "x"\n'])
def test_app_name_must_be_present_and_valid(tmp_path: Path, body: str) -> None:
    """The app name is required, a string, and a valid app name."""
    directory = tmp_path / "x"
    directory.mkdir()
    (directory / "app.toml").write_text(body)
    with pytest.raises(ConfigError, match="name"):
        load_app_config(directory)


def test_missing_app_toml_is_a_config_error(tmp_path: Path) -> None:
    """A directory without app.toml says what is missing."""
    with pytest.raises(ConfigError, match=r"app\.toml: no such file"):
        load_app_config(tmp_path)


def test_config_load_does_not_import_handlers(make_app: MakeApp) -> None:
    """Reading the config never runs handler code (the worker resolves handlers at start)."""
    directory = make_app(SUB, files={"handlers.py": "raise RuntimeError('imported')\n"})
    assert load_app_config(directory).subscriptions[0].handler == "handlers:f"


# -- handler resolution ------------------------------------------------------------------------


def test_handler_is_found_in_the_app_directory_under_a_private_package(
    make_app: MakeApp,
) -> None:
    """handlers:f loads apps/<app>/handlers.py without sys.path changes or __init__.py."""
    directory = make_app(SUB, files={"handlers.py": "def f(event):\n    return 'local'\n"})
    config = load_app_config(directory)
    handler = resolve_handler(config, "handlers:f")
    assert (handler(None), handler.__module__) == ("local", f"taskbus_apps.{config.name}.handlers")


def test_bare_function_refs_use_the_apps_default_module(make_app: MakeApp) -> None:
    """With handlers = "jobs", handler = "f" means jobs:f."""
    body = 'handlers = "jobs"\n' + SUB.replace("handlers:f", "f")
    directory = make_app(body, files={"jobs.py": "def f(event):\n    return 'jobs'\n"})
    config = load_app_config(directory)
    assert resolve_handler(config, config.subscriptions[0].handler)(None) == "jobs"


def test_packages_and_relative_imports_work_inside_an_app(make_app: MakeApp) -> None:
    """A package in the app directory can import its sibling modules relatively."""
    files = {
        "tasks/__init__.py": "",
        "tasks/mail.py": "from ..helpers import greet\n\ndef send(p):\n    return greet(p)\n",
        "helpers.py": "def greet(p):\n    return f'hi {p}'\n",
    }
    config = load_app_config(make_app(files=files))
    assert resolve_handler(config, "tasks.mail:send")("ada") == "hi ada"


def test_modules_outside_the_app_directory_are_imported_when_allowed(make_app: MakeApp) -> None:
    """A module app.toml lists in allow_external_handlers comes from the import path."""
    config = load_app_config(make_app('allow_external_handlers = ["json"]\n'))
    assert config.allow_external_handlers == ("json",)
    assert resolve_handler(config, "json:dumps") is json.dumps


@pytest.mark.parametrize("ref", ["os:system", "subprocess:run", "bus.core.verdict:judge"])
def test_a_handler_outside_the_app_directory_is_refused_by_default(
    make_app: MakeApp, ref: str
) -> None:
    """os:system and any other module the app directory lacks: a ConfigError naming file and ref."""
    config = load_app_config(make_app())
    with pytest.raises(ConfigError, match=r"allow_external_handlers") as caught:
        resolve_handler(config, ref)
    assert str(caught.value).startswith(f"{config.file}: handler {ref!r}: ")


def test_a_refused_handler_stops_the_app_build(make_app: MakeApp) -> None:
    """build_app (the worker's start) refuses an app.toml whose handler is os:system."""
    from bus.config.apps import build_app

    config = load_app_config(make_app(SUB.replace("handlers:f", "os:system")))
    with pytest.raises(ConfigError, match=r"handler 'os:system'.*not in the app directory"):
        build_app(config)


@pytest.mark.parametrize(
    ("allowed", "ref", "ok"),
    [
        ("mylib_xyz.tasks", "mylib_xyz.tasks:f", True),
        ("mylib_xyz.tasks", "mylib_xyz.tasks.x:f", True),
        ("mylib_xyz.tasks", "mylib_xyz.tasksevil:f", False),
        ("mylib_xyz.tasks", "mylib_xyz:f", False),
        ("mylib_xyz", "mylib_xyz.tasks.x:f", True),
    ],
)
def test_allowed_prefixes_match_on_module_path_boundaries(
    make_app: MakeApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    allowed: str,
    ref: str,
    ok: bool,
) -> None:
    """mylib.tasks allows mylib.tasks and mylib.tasks.x, never mylib.tasksevil or mylib."""
    lib = tmp_path / "lib" / "mylib_xyz"
    for package in (lib, lib / "tasks"):
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("def f(p):\n    return __name__\n")
    (lib / "tasksevil.py").write_text("def f(p):\n    return 'evil'\n")
    (lib / "tasks" / "x.py").write_text("def f(p):\n    return __name__\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    config = load_app_config(make_app(f'allow_external_handlers = ["{allowed}"]\n'))
    if ok:
        assert resolve_handler(config, ref)(None) == ref.partition(":")[0]
    else:
        with pytest.raises(ConfigError, match=r"not in the app directory"):
            resolve_handler(config, ref)


def test_an_app_module_named_like_the_stdlib_stays_the_apps(make_app: MakeApp) -> None:
    """apps/<app>/os.py is the app's own module: os:system runs it, never the stdlib's."""
    config = load_app_config(make_app(files={"os.py": "def system(p):\n    return 'mine'\n"}))
    handler = resolve_handler(config, "os:system")
    assert (handler(None), handler.__module__) == ("mine", f"taskbus_apps.{config.name}.os")


@pytest.mark.parametrize(
    "ref",
    [
        "..handlers:f",
        ".handlers:f",
        "/etc/passwd:f",
        "handlers/../x:f",
        "handlers:__class__",
        "os:",
    ],
)
def test_handler_refs_that_are_not_module_paths_are_refused(make_app: MakeApp, ref: str) -> None:
    """Relative, path-like, dunder and empty refs given in code: a ConfigError, nothing imported."""
    config = load_app_config(make_app(files={"handlers.py": "def f(p):\n    return 1\n"}))
    with pytest.raises(ConfigError, match=r"handler .*: "):
        resolve_handler(config, ref)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('allow_external_handlers = "mylib"\n', r"'allow_external_handlers' must be an array"),
        ('allow_external_handlers = ["my lib"]\n', r"module names such as 'mylib.tasks'"),
        ('allow_external_handlers = [""]\n', r"module names such as 'mylib.tasks'"),
        ("allow_external_handlers = [1]\n", r"module names such as 'mylib.tasks'"),
    ],
)
def test_bad_allow_external_handlers_is_a_config_error(
    make_app: MakeApp, body: str, message: str
) -> None:
    """allow_external_handlers must be a list of dotted module names."""
    with pytest.raises(ConfigError, match=message):
        load_app_config(make_app(body))


def test_two_apps_of_the_same_name_keep_their_own_handlers(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """The same app name in two directories resolves each directory's module."""
    configs = [
        load_app_config(
            make_app(
                name="twin",
                root=tmp_path / str(i),
                files={"handlers.py": f"def f(e):\n    return {i}\n"},
            )
        )
        for i in range(2)
    ]
    assert [resolve_handler(c, "handlers:f")(None) for c in configs] == [0, 1]


@pytest.mark.parametrize(
    ("files", "ref", "message"),
    [
        ({"handlers.py": "1 / 0\n"}, "handlers:f", r"cannot import .*ZeroDivisionError"),
        ({"handlers.py": "def f(:\n"}, "handlers:f", r"cannot import .*SyntaxError"),
        ({"handlers.py": "import no_such_dep_xyz\n"}, "handlers:f", r"no_such_dep_xyz"),
        ({"handlers.py": "def fetch(e): ...\n"}, "handlers:fetc", r"no function 'fetc'.*fetch"),
        ({"handlers.py": "f = 3\n"}, "handlers:f", r"'f' in .*handlers\.py is a int, not a"),
    ],
)
def test_handlers_that_cannot_be_used_raise_handler_import_error(
    make_app: MakeApp, files: dict[str, str], ref: str, message: str
) -> None:
    """Import failures, missing and non-callable handlers name the ref, the file and the cause."""
    config = load_app_config(make_app(files=files))
    with pytest.raises(HandlerImportError, match=message) as caught:
        resolve_handler(config, ref)
    assert str(caught.value).startswith(f"{config.file}: handler {ref!r}: ")


def test_an_allowed_external_module_that_is_missing_raises_handler_import_error(
    make_app: MakeApp,
) -> None:
    """An allowed module that cannot be imported is reported with its cause."""
    config = load_app_config(make_app('allow_external_handlers = ["nowhere_module_xyz"]\n'))
    with pytest.raises(HandlerImportError, match=r"cannot import module 'nowhere_module_xyz': Mod"):
        resolve_handler(config, "nowhere_module_xyz:f")


def test_handler_import_error_is_a_config_error() -> None:
    """Callers that catch ConfigError catch handler problems too."""
    assert issubclass(HandlerImportError, ConfigError)
