"""Human CLI output escapes control characters from Redis; ``--json`` keeps them exact.

A handler error, a payload, a task id or an app-provided string holding an
escape sequence once retitled the terminal and cleared the screen when `dead
list`, `dead show` or `task show` printed it. Every human-readable path goes
through :mod:`bus.text` now; these tests plant hostile strings everywhere a
command reads and assert that no raw control character reaches standard output
or standard error.
"""

from __future__ import annotations

import io
import unicodedata
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from bus import App, Fail, Worker
from bus.config.settings import Settings
from bus.core import clock
from bus.core.task import TaskRecord
from bus.events.registry import SubscriptionSpec
from bus.logs import configure_logging
from bus.store import engine
from bus.store.keys import AppKeys, BusKeys
from bus.text import escape, escape_lines
from tests.test_cli_ops import cli_env, on_redis, run
from tests.test_inspect import beat, register

__all__ = ["cli_env"]  # the fixture, imported for the tests below

APP = "shop"
KEYS = AppKeys("bus", APP)
# Sets the window title to "pwned", then clears the screen.
EVIL = "\x1b]0;pwned\x07\x1b[2J"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"
# A C1 CSI, a right-to-left override, a carriage return and a backspace.
SNEAKY = "\x9b31m\u202eoops\r\x08"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x08")


def assert_clean(text: str) -> None:
    """No raw control character of the planted ones is in ``text``."""
    found = [hex(ord(c)) for c in RAW if c in text]
    assert not found, f"raw control characters in the output: {found}"


# -- the escaping rule ---------------------------------------------------------------------


def test_escape_shows_control_characters_as_escapes_and_leaves_text_alone() -> None:
    """ESC, BEL, CR, backspace, DEL, C1 and bidi overrides become escapes; accents do not."""
    assert escape(EVIL) == SHOWN
    assert escape("a\rb\x08c\x7fd\x85e\u202ef\u2066g\ufeff") == (
        "a\\rb\\x08c\\x7fd\\x85e\\u202ef\\u2066g\\ufeff"
    )
    assert escape("tab\there\nline") == "tab\\there\\nline"
    assert escape("Zoë orders 3 🍕, 東京") == "Zoë orders 3 🍕, 東京"
    assert escape("\udcff") == "\\udcff"  # a lone surrogate would make print() raise
    assert escape(42) == "42"


def test_escape_lines_keeps_newlines_and_escapes_the_rest() -> None:
    """A traceback stays multi-line; a CR inside one of its lines is shown."""
    assert escape_lines("Traceback:\n  boom\r\x1b[2K") == ["Traceback:", "  boom\\r\\x1b[2K"]


@given(st.text())
def test_escaped_text_never_holds_a_control_character(text: str) -> None:
    """For every string, the escaped form has no character of an escaped category."""
    escaped = escape(text)
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in escaped)
    if text.isprintable():
        assert escaped == text


# -- every command that prints what it read ------------------------------------------------


def plant_dead(settings: Settings) -> str:
    """A dead task whose id, payload and handler error all hold escape sequences."""
    task_id = f"t-{EVIL}"
    record = TaskRecord(
        id=task_id, app=APP, name="job", queue="default", payload={"note": EVIL + SNEAKY}
    )
    app = App(APP)

    @app.task(max_attempts=1)
    async def job(payload: Any) -> None:
        raise Fail(f"cannot handle {payload['note']}")

    async def go(client: Redis) -> None:
        new = engine.NewTask(task_id, record.encode(), 1, 0)
        await engine.enqueue(client, KEYS, "default", clock.now_ms(), [new])
        await Worker(app, client, burst=True).run()

    on_redis(settings, go)
    return task_id


def test_terminal_logs_escape_logged_text(request: pytest.FixtureRequest) -> None:
    """On a terminal, a logged handler error cannot retitle the window or clear it."""
    out = io.StringIO()
    configure_logging("info", json=False, stream=out)
    request.addfinalizer(structlog.reset_defaults)
    try:
        raise ValueError(EVIL)
    except ValueError:
        structlog.get_logger("test").exception("task_failed", error=EVIL + SNEAKY)
    text = out.getvalue()
    # The renderer's own colours are ESC sequences: look for the planted ones.
    assert EVIL not in text
    assert all(c not in text for c in RAW[1:])
    assert SHOWN in text


def test_dead_list_show_and_task_show_escape_ids_payloads_and_errors(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Human output shows the escapes; --json round-trips the exact stored strings."""
    task_id = plant_dead(cli_env)
    capsys.readouterr()  # the worker's own log lines
    for argv in (
        ("dead", "list", "--app", APP),
        ("dead", "show", task_id, "--app", APP),
        ("task", "show", task_id, "--app", APP),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        assert_clean(out + err)
        assert f"t-{SHOWN}" in out
        if argv[0] != "dead" or argv[1] != "list":  # the list clips the error column
            assert "\\x9b31m\\u202eoops\\r\\x08" in out

    code, out, _ = run(capsys, "dead", "list", "--app", APP, "--json")
    [doc] = orjson.loads(out)["tasks"]
    assert doc["id"] == task_id
    assert doc["last_error"]["message"] == f"cannot handle {EVIL}{SNEAKY}"
    for command in (("dead", "show"), ("task", "show")):
        code, out, _ = run(capsys, *command, task_id, "--app", APP, "--json")
        doc = orjson.loads(out)
        assert doc["record"]["payload"] == {"note": EVIL + SNEAKY}
        assert doc["errors"][0]["message"] == f"cannot handle {EVIL}{SNEAKY}"


def test_event_show_escapes_the_envelope_it_read(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An envelope's source, id and data from Redis are escaped; --json is exact."""
    envelope = {
        "id": f"e-{EVIL}",
        "buskey": "EVT1",
        "type": "order.placed",
        "source": f"shop{SNEAKY}",
        "time": "2026-12-04T10:00:00Z",
        "data": {"note": EVIL + SNEAKY},
    }

    async def plant(client: Redis) -> None:
        await register(client, APP, SubscriptionSpec(APP, "on-order", ("order.placed",)))
        await client.hset(BusKeys("bus").events, "EVT1", orjson.dumps(envelope))

    on_redis(cli_env, plant)
    code, out, err = run(capsys, "event", "show", "EVT1")
    assert code == 0, err
    assert_clean(out + err)
    assert f"e-{SHOWN}" in out
    assert "shop\\x9b31m\\u202eoops\\r\\x08" in out
    code, out, _ = run(capsys, "event", "show", "EVT1", "--json")
    assert orjson.loads(out)["envelope"] == envelope


def test_status_escapes_worker_records(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker id and host from the heartbeat records are escaped in the tables."""

    async def plant(client: Redis) -> None:
        await register(client, APP)
        await beat(client, APP, f"w-{EVIL}", clock.now_ms(), host=SNEAKY)

    on_redis(cli_env, plant)
    code, out, err = run(capsys, "status")
    assert code == 0, err
    assert_clean(out + err)
    assert f"w-{SHOWN}" in out
    code, out, _ = run(capsys, "status", "--json")
    [worker] = orjson.loads(out)["apps"][0]["workers"]
    assert (worker["id"], worker["host"]) == (f"w-{EVIL}", SNEAKY)


def test_subscriptions_list_escapes_registered_filters(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filter value in the registry with C1 and bidi characters is escaped in the table."""
    spec = SubscriptionSpec(APP, "on-order", ("order.placed",), where={"note": SNEAKY})
    on_redis(cli_env, lambda client: register(client, APP, spec))
    code, out, err = run(capsys, "subscriptions", "list")
    assert code == 0, err
    assert_clean(out + err)
    assert "\\x9b31m\\u202eoops" in out
    code, out, _ = run(capsys, "subscriptions", "list", "--json")
    assert orjson.loads(out)["subscriptions"][0]["where"] == {"note": SNEAKY}


def test_error_lines_escape_what_they_quote(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error message that quotes an id prints it escaped on standard error."""
    # Known to the registry, so the command gets as far as quoting the id.
    spec = SubscriptionSpec(app=APP, name="welcome", events=("user.signed_up",))
    on_redis(cli_env, lambda client: register(client, APP, spec))
    code, out, err = run(capsys, "dead", "replay", "--app", APP, "--id", EVIL)
    assert code == 2
    assert_clean(out + err)
    assert SHOWN in err
