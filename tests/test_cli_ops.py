"""The operator commands end to end: dead, status, task show, event show."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import orjson
import pytest
import structlog
from redis.asyncio import Redis

from bus import App, Fail, Worker
from bus.cli import main
from bus.client import Bus
from bus.config.settings import ENV_PREFIX, TEST_ENV_PREFIX, Settings
from bus.core.enqueue import EnqueueItem
from bus.events.registry import SubscriptionSpec
from bus.logs import CurrentStderr
from bus.store.keys import AppKeys
from tests.conftest import raw_or_none
from tests.test_inspect import ORDER, publish, register

T = TypeVar("T")
APP = "shop"
KEYS = AppKeys("bus", APP)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI's environment: the settings fixture's values, nothing from the real one."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) and not name.startswith(TEST_ENV_PREFIX):
            monkeypatch.delenv(name)
    assert settings.redis_url is not None
    monkeypatch.setenv("BUS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BUS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("BUS_SCHEMAS_DIR", str(settings.schemas_dir))
    monkeypatch.setenv("BUS_APPS_DIR", str(settings.apps_dir))
    # main() configures structlog once per process with cached loggers bound to
    # the current stderr, which pytest closes after each test: later tests that
    # log (the workers run here) would write to a closed file.
    monkeypatch.setattr("bus.cli.configure_logging", lambda *args, **kwargs: None)
    # Logs go to standard error, as main() would send them, so that standard
    # output holds only what the command prints (keys, JSON); not cached, and
    # structlog's defaults come back after the test.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(cast(TextIO, CurrentStderr())))
    yield settings
    structlog.reset_defaults()


def on_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``work`` against the test's private Redis, from synchronous test code."""

    async def go() -> T:
        client = Redis.from_url(str(settings.redis_url))
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def kill(settings: Settings, items: list[EnqueueItem]) -> list[str]:
    """Enqueue tasks and run them dead (their handler fails them for good)."""
    app = App(APP)

    @app.task(max_attempts=3)
    async def job(payload: Any) -> None:
        raise Fail(f"cannot handle {payload}")

    async def go(client: Redis) -> list[str]:
        refs = await Bus(redis=client).enqueue_many(APP, items)
        await Worker(app, client, burst=True).run()
        return [ref.id for ref in refs]

    return on_redis(settings, go)


def state(settings: Settings, task_id: str) -> str | None:
    async def go(client: Redis) -> bytes | None:
        return raw_or_none(await client.hget(KEYS.state, task_id))

    raw = on_redis(settings, go)
    return None if raw is None else str(orjson.loads(raw)["s"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI; return its exit status, standard output and standard error."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeTerminal(io.StringIO):
    """Standard input that claims to be a terminal and holds the typed answer."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def dead3(cli_env: Settings) -> list[str]:
    """Three dead tasks of app shop."""
    return kill(cli_env, [EnqueueItem("job", i) for i in range(3)])


# -- dead list / show ----------------------------------------------------------------------


def test_dead_list_shows_a_table_and_documented_json(
    dead3: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table lists every dead task; --json gives total and one document per task."""
    code, out, _ = run(capsys, "dead", "list", "--app", APP)
    assert code == 0
    assert all(task_id in out for task_id in dead3)
    assert "failed by handler" in out
    assert "3 shown; 3 dead in app shop" in out

    code, out, _ = run(
        capsys, "dead", "list", "--app", APP, "--type", "job", "--since", "1h", "--json"
    )
    doc = orjson.loads(out)
    assert code == 0
    assert doc["total"] == 3
    assert sorted(t["id"] for t in doc["tasks"]) == sorted(dead3)
    first = doc["tasks"][0]
    assert (first["state"], first["dead_reason"], first["type"]) == (
        "dead",
        "failed by handler",
        "job",
    )
    assert first["last_error"]["type"] == "Fail"


def test_dead_list_of_an_app_without_dead_letters_says_so(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty dead set of a known app is a normal answer, exit 0."""
    on_redis(cli_env, lambda client: register(client, APP))
    assert run(capsys, "dead", "list", "--app", APP)[:2] == (0, "no dead tasks in app shop\n")


def test_bad_times_and_app_names_are_clear_errors(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A time that is neither ISO 8601 nor an age, or a bad app name, exits 2 with why."""
    code, _, err = run(capsys, "dead", "list", "--app", APP, "--since", "last tuesday")
    assert code == 2
    assert "--since 'last tuesday' is not a time" in err
    code, _, err = run(capsys, "dead", "list", "--app", "Shop!")
    assert code == 2
    assert "invalid app name" in err
    code, _, err = run(capsys, "dead", "list", "--app", APP, "--since", "1h", "--until", "2h")
    assert code == 2
    assert "is after --until" in err


def test_dead_show_prints_errors_and_history_or_refuses_other_ids(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead task is shown in full; unknown and living ids exit 2 with the reason."""
    code, out, _ = run(capsys, "dead", "show", dead3[0], "--app", APP)
    assert code == 0
    assert "dead (failed by handler)" in out
    assert "attempt_failed" in out
    assert "Fail: cannot handle" in out

    code, out, _ = run(capsys, "dead", "show", dead3[0], "--app", APP, "--json")
    doc = orjson.loads(out)
    assert (doc["id"], doc["state"]) == (dead3[0], "dead")
    assert [h["event"] for h in doc["history"]][-1] == "dead"

    code, _, err = run(capsys, "dead", "show", "nope", "--app", APP)
    assert code == 2
    assert "app 'shop' has no task 'nope'" in err
    run(capsys, "dead", "replay", "--app", APP, "--id", dead3[0])
    code, _, err = run(capsys, "dead", "show", dead3[0], "--app", APP)
    assert code == 2
    assert "is not dead (state queued)" in err


# -- dead replay --------------------------------------------------------------------------


def test_dead_replay_by_id_requeues_the_task(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--id moves exactly that task back; the others stay dead."""
    code, out, _ = run(capsys, "dead", "replay", "--app", APP, "--id", dead3[1])
    assert code == 0
    assert out == "replayed 1 task of app shop (default: 1)\n"
    assert [state(cli_env, i) for i in dead3] == ["dead", "queued", "dead"]


def test_dead_replay_with_an_unknown_id_changes_nothing(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """One unknown id among good ones: exit 2, named, and no task moved."""
    code, _, err = run(capsys, "dead", "replay", "--app", APP, "--id", dead3[0], "typo")
    assert code == 2
    assert "typo: unknown task" in err
    assert "Nothing was changed" in err
    assert [state(cli_env, i) for i in dead3] == ["dead", "dead", "dead"]


def test_dead_replay_needs_exactly_one_selector(
    dead3: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No selector, or --all with --type, is refused rather than guessed."""
    for extra in ([], ["--all", "--type", "job"], ["--id", "x", "--since", "1h"]):
        code, _, err = run(capsys, "dead", "replay", "--app", APP, *extra)
        assert code == 2
        assert "exactly one of these" in err


def test_dead_replay_dry_run_json_and_rate(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run reports without moving; --rate paces a real replay; a bad rate exits 2."""
    code, out, _ = run(capsys, "dead", "replay", "--app", APP, "--all", "--dry-run", "--json")
    doc = orjson.loads(out)
    assert code == 0
    assert (doc["dry_run"], doc["replayed"], doc["queues"]) == (True, 3, {"default": 3})
    assert sorted(doc["ids"]) == sorted(dead3)
    assert [state(cli_env, i) for i in dead3] == ["dead", "dead", "dead"]

    code, _, err = run(capsys, "dead", "replay", "--app", APP, "--all", "--rate", "fast")
    assert code == 2
    assert "--rate 'fast' is not a rate" in err
    code, out, _ = run(capsys, "dead", "replay", "--app", APP, "--type", "job", "--rate", "20/s")
    assert code == 0
    assert out.startswith("replayed 3 tasks")
    assert [state(cli_env, i) for i in dead3] == ["queued", "queued", "queued"]


# -- dead purge ---------------------------------------------------------------------------


def test_dead_purge_refuses_without_yes_when_stdin_is_not_a_terminal(
    dead3: list[str],
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A script that forgot --yes gets exit 2 and nothing is deleted."""
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, _, err = run(capsys, "dead", "purge", "--app", APP, "--all")
    assert code == 2
    assert "standard input is not a terminal" in err
    assert [state(cli_env, i) for i in dead3] == ["dead", "dead", "dead"]


def test_dead_purge_asks_on_a_terminal_and_respects_the_answer(
    dead3: list[str],
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'n' keeps everything (exit 1); 'y' deletes the selected tasks."""
    monkeypatch.setattr("sys.stdin", FakeTerminal("n\n"))
    code, out, _ = run(capsys, "dead", "purge", "--app", APP, "--id", dead3[0])
    assert code == 1
    assert "Delete 1 dead task of app shop for good?" in out
    assert state(cli_env, dead3[0]) == "dead"

    monkeypatch.setattr("sys.stdin", FakeTerminal("y\n"))
    code, out, _ = run(capsys, "dead", "purge", "--app", APP, "--id", dead3[0])
    assert code == 0
    assert "purged 1 dead task of app shop" in out
    assert state(cli_env, dead3[0]) is None


def test_dead_purge_with_yes_deletes_the_selection(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--yes purges without asking; --json reports selected and purged counts."""
    code, out, _ = run(capsys, "dead", "purge", "--app", APP, "--all", "--yes", "--json")
    assert code == 0
    assert orjson.loads(out) == {"app": APP, "selected": 3, "purged": 3}
    assert [state(cli_env, i) for i in dead3] == [None, None, None]


# -- status, task show, event show ---------------------------------------------------------------


def test_status_shows_apps_queues_and_flags_apps_without_workers(
    dead3: list[str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Human and JSON status agree: shop has 3 dead, mail is registered with no worker."""
    on_redis(cli_env, lambda client: register(client, "mail"))
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "app mail (registered): 0 dead, 0 live workers" in out
    assert "WARNING: never seen a worker" in out
    assert "app shop (not registered): 3 dead" in out

    code, out, _ = run(capsys, "status", "--json", "--app", APP)
    doc = orjson.loads(out)
    assert [a["app"] for a in doc["apps"]] == [APP]
    assert (doc["apps"][0]["dead"], doc["apps"][0]["queues"][0]["queue"]) == (3, "default")

    code, _, err = run(capsys, "status", "--stale-after", "soon")
    assert code == 2
    assert "--stale-after 'soon' is not a duration" in err


def test_task_show_prints_history_and_unknown_ids_exit_2(
    dead3: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """task show gives the record and history; an unknown id is a clear error."""
    code, out, _ = run(capsys, "task", "show", dead3[0], "--app", APP, "--json")
    doc = orjson.loads(out)
    assert code == 0
    assert [h["event"] for h in doc["history"]] == ["created", "started", "attempt_failed", "dead"]
    assert doc["record"]["name"] == "job"

    code, out, _ = run(capsys, "task", "show", dead3[0], "--app", APP)
    assert code == 0
    assert "history" in out
    assert "payload" in out

    code, _, err = run(capsys, "task", "show", "nope", "--app", APP)
    assert code == 2
    assert "app 'shop' has no task 'nope'" in err


def test_event_show_follows_the_event_to_each_app(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """event show lists each subscription's task state; an unknown key exits 2."""

    async def setup(client: Redis) -> str:
        await register(client, APP, SubscriptionSpec(APP, "on-order", ("order.placed",)))
        await register(client, "mail", SubscriptionSpec("mail", "welcome", ("user.signed_up",)))
        return await publish(client, "order.placed", ORDER)

    key = on_redis(cli_env, setup)
    code, out, _ = run(capsys, "event", "show", key)
    assert code == 0
    assert f"event {key} (order.placed)" in out
    assert "https://taskbus.example/schemas/order.placed/1 (version 1)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("shop", "mail"))]
    assert rows[0][:5] == ["mail", "welcome", f"{key}.welcome", "no", "task"]
    assert rows[1][:4] == ["shop", "on-order", f"{key}.on-order", "queued"]

    code, out, _ = run(capsys, "event", "show", key, "--json")
    assert [d["state"] for d in orjson.loads(out)["deliveries"]] == [None, "queued"]

    code, _, err = run(capsys, "event", "show", "EVT404")
    assert code == 2
    assert "no event 'EVT404'" in err


def test_unreachable_redis_is_a_clear_error(
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A server that is not there gives exit 2 and a message, not a traceback."""
    monkeypatch.setenv("BUS_REDIS_URL", f"unix://{tmp_path}/absent.sock")
    code, _, err = run(capsys, "status")
    assert code == 2
    assert f"cannot reach the Redis server at unix://{tmp_path}/absent.sock (BUS_REDIS_URL)" in err
    assert "Traceback" not in err
