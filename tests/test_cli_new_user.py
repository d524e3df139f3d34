"""What a new user hit on the command line: refusals, unknown apps, a health check, notes."""

from __future__ import annotations

import io
from importlib import metadata

import orjson
import pytest
from redis.asyncio import Redis

from bus import Bus
from bus.cli import main
from bus.config.settings import Settings
from bus.core import clock
from bus.core.enqueue import EnqueueItem
from bus.events.registry import SubscriptionSpec
from bus.store.keys import BusKeys
from tests.conftest import texts
from tests.test_cli_ops import APP, cli_env, kill, on_redis, run  # noqa: F401 - cli_env: fixture
from tests.test_inspect import beat, register

USER = {"user_id": "u1", "email": "a@example.com", "plan": "pro", "country": "DE"}
SIGNUPS = SubscriptionSpec(app=APP, name="welcome", events=("user.signed_up",))
ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}


def registered(settings: Settings) -> list[str]:
    async def go(client: Redis) -> list[str]:
        return sorted(texts(await client.hkeys(BusKeys("bus").subs)))

    return on_redis(settings, go)


# -- subscriptions unregister ------------------------------------------------------


def test_unregister_without_yes_off_a_terminal_refuses_with_exit_2(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off a terminal, unregister without --yes exits 2 (no EOFError) and changes nothing."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "subscriptions", "unregister", "--app", APP)
    assert code == 2
    assert "Refusing to unregister without --yes: standard input is not a terminal" in err
    assert "Traceback" not in err
    assert registered(cli_env) == [APP]


# -- unknown apps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "--app", "nosuchapp"),
        ("dead", "list", "--app", "nosuchapp"),
        ("dead", "replay", "--app", "nosuchapp", "--all"),
        ("dead", "purge", "--app", "nosuchapp", "--all", "--yes"),
    ],
)
def test_an_unknown_app_exits_2_naming_the_known_apps(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
) -> None:
    """A misspelt --app is 'no such app; known apps: ...', exit 2, not an empty answer."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    code, out, err = run(capsys, *argv)
    assert code == 2, out
    assert f"error: no such app: nosuchapp; known apps: {APP}" in err


def test_an_app_known_only_by_its_dead_letters_is_not_unknown(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """dead list works for an unregistered app that has dead tasks."""
    kill(cli_env, [EnqueueItem("job", {"n": 1}, id="t1")])
    code, out, _ = run(capsys, "dead", "list", "--app", APP)
    assert code == 0
    assert "t1" in out


# -- status --check ----------------------------------------------------------------------


def test_status_check_passes_for_a_served_app_without_dead_tasks(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A registered app with a live worker, no dead tasks and nothing pending: exit 0."""

    async def setup(client: Redis) -> None:
        await register(client, APP, SIGNUPS)
        await beat(client, APP, "w1", clock.now_ms())

    on_redis(cli_env, setup)
    code, out, _ = run(capsys, "status", "--check")
    assert code == 0, out
    assert out.rstrip().endswith("check: ok")


def test_status_check_fails_for_dead_tasks_and_no_live_worker(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dead tasks and an app nobody serves each make --check exit 1 with a named problem."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    kill(cli_env, [EnqueueItem("job", {"n": 1}, id="t1")])
    code, out, _ = run(capsys, "status", "--check")
    assert code == 1
    assert f"app {APP}: 1 dead task (python -m bus dead list --app {APP})" in out
    assert f"app {APP}: no live worker" in out

    code, out, _ = run(capsys, "status", "--check", "--json")
    assert code == 1
    check = orjson.loads(out)["check"]
    assert check["ok"] is False
    assert len(check["problems"]) == 2


def test_status_check_fails_for_events_pending_past_the_sweep_grace(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An event pending longer than --pending-after is a problem; a fresh one is not."""
    now = clock.now_ms()

    async def setup(client: Redis) -> None:
        await register(client, APP, SIGNUPS)
        await beat(client, APP, "w1", now)
        await client.zadd(BusKeys("bus").pending, {"EVTOLD": now - 60_000, "EVTNEW": now})

    on_redis(cli_env, setup)
    code, out, _ = run(capsys, "status", "--check")
    assert code == 1
    assert "1 event pending for longer than 15s (oldest 1m)" in out
    code, out, _ = run(capsys, "status", "--check", "--pending-after", "2m")
    assert code == 0, out


# -- publish -------------------------------------------------------------------------------


def test_publish_says_when_an_event_reached_no_app(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no matching subscription, publish prints the key and 'recorded, routed to 0 apps'."""
    code, out, err = run(capsys, "publish", "user.signed_up", orjson.dumps(USER).decode())
    assert code == 0
    assert len(out.split()) == 1
    assert "recorded, routed to 0 apps" in err
    assert "before an app is registered reach nobody" in err

    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    code, out, err = run(capsys, "publish", "user.signed_up", orjson.dumps(USER).decode())
    assert code == 0
    assert "routed to 0 apps" not in err


def test_publish_says_when_an_id_was_a_duplicate(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A second publish with the same --id prints the first key and 'duplicate of KEY'."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    payload = orjson.dumps(USER).decode()
    code, first, err = run(capsys, "publish", "user.signed_up", payload, "--id", "signup-1")
    assert code == 0
    assert "duplicate" not in err
    code, second, err = run(capsys, "publish", "user.signed_up", payload, "--id", "signup-1")
    assert code == 0
    assert second == first
    assert f"duplicate of {first.strip()}" in err


def test_publish_knows_a_duplicate_made_in_the_same_millisecond(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The duplicate note comes from the publish itself, not from comparing clocks."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    monkeypatch.setattr(clock, "now_ms", lambda: 1_800_000_000_000)
    payload = orjson.dumps(USER).decode()
    _, first, err = run(capsys, "publish", "user.signed_up", payload, "--id", "same-ms")
    assert "duplicate" not in err
    _, second, err = run(capsys, "publish", "user.signed_up", payload, "--id", "same-ms")
    assert second == first
    assert f"duplicate of {first.strip()}" in err


def test_publish_says_a_retried_id_routed_its_stuck_event_again(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After a failed fan-out is repaired, a retry with the same --id says it routed it again."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    tasks_key = f"bus:app:{{{APP}}}:tasks"
    on_redis(cli_env, lambda client: client.set(tasks_key, "notahash"))
    payload = orjson.dumps(USER).decode()
    code, _, err = run(capsys, "publish", "user.signed_up", payload, "--id", "stuck-1")
    assert code == 2
    assert APP in err
    on_redis(cli_env, lambda client: client.delete(tasks_key))
    code, _, err = run(capsys, "publish", "user.signed_up", payload, "--id", "stuck-1")
    assert code == 0
    assert f"so it was routed again to {APP}" in err


def test_publish_report_names_the_apps_reached(cli_env: Settings) -> None:  # noqa: F811
    """Bus.publish_report: the apps routed to, sorted; a duplicate reached none anew."""
    on_redis(cli_env, lambda client: register(client, APP, SIGNUPS))
    bus = Bus(cli_env)
    try:
        report = bus.publish_report("user.signed_up", USER, id="r-1")
        assert (report.duplicate, report.apps) == (False, (APP,))
        again = bus.publish_report("user.signed_up", USER, id="r-1")
        assert (again.key, again.duplicate, again.apps) == (report.key, True, ())
        other = bus.publish_report("order.placed", ORDER)
        assert (other.duplicate, other.apps) == (False, ())
    finally:
        bus.close_sync()


def test_publish_says_an_event_waits_for_a_damaged_entry(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With a damaged registry entry the note names it, not 'no subscription matches'."""

    async def damage(client: Redis) -> None:
        await client.hset(BusKeys("bus").subs, "crm", b"\xff")
        await client.incr(BusKeys("bus").subs_version)

    on_redis(cli_env, damage)
    _, _, err = run(capsys, "publish", "user.signed_up", orjson.dumps(USER).decode())
    assert "stays pending while the registry entry of crm is damaged" in err
    assert "no registered subscription" not in err


# -- --version -------------------------------------------------------------------------------


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m bus --version prints taskbus's version from the package metadata."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"taskbus {metadata.version('taskbus')}"
