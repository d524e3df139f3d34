"""The producer-side commands end to end: publish and subscriptions."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from bus.cli import main
from bus.config.settings import Settings
from bus.store.keys import AppKeys, BusKeys
from bus.worker.__main__ import main as worker_main
from tests.conftest import raw
from tests.test_cli_ops import cli_env, on_redis

__all__ = ["cli_env"]

USER = '{"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}'


def task_count(settings: Settings, app: str) -> int:
    """How many tasks an app has."""

    async def go(client: Redis) -> int:
        return int(await client.hlen(AppKeys("bus", app).state))

    return on_redis(settings, go)


def test_publish_from_argument_file_and_stdin(
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The payload can be an argument, a file or standard input; each prints the key."""
    assert main(["subscriptions", "sync", "--app", "email"]) == 0
    capsys.readouterr()
    assert main(["publish", "user.signed_up", USER]) == 0
    payload_file = tmp_path / "p.json"
    payload_file.write_text(USER)
    assert main(["publish", "user.signed_up", "--file", str(payload_file)]) == 0
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(USER.encode())))
    assert main(["publish", "user.signed_up", "-"]) == 0
    keys = capsys.readouterr().out.split()
    assert len(set(keys)) == 3
    assert task_count(cli_env, "email") == 3


def test_publish_refuses_bad_json_bad_payload_and_unknown_type(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad input exits 2 with a clear message and writes nothing."""
    assert main(["publish", "user.signed_up", "{not json"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["publish", "user.signed_up", '{"plan": "gold"}']) == 2
    err = capsys.readouterr().err
    assert "$.plan: 'gold' is not one of" in err
    assert "'user_id' is a required property" in err
    assert main(["publish", "user.sigend_up", USER]) == 2
    assert "Did you mean: user.signed_up" in capsys.readouterr().err

    async def size(client: Redis) -> int:
        return int(await client.dbsize())

    assert on_redis(cli_env, size) == 0


def test_publish_with_the_same_id_twice_routes_once(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """--id makes a repeated publish return the first key and add nothing."""
    assert main(["subscriptions", "sync", "--app", "email"]) == 0
    assert main(["publish", "user.signed_up", USER, "--id", "signup-1"]) == 0
    assert main(["publish", "user.signed_up", USER, "--id", "signup-1"]) == 0
    out = capsys.readouterr().out.split()
    assert out[-1] == out[-2]
    assert task_count(cli_env, "email") == 1


def test_subscriptions_sync_list_and_unregister(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync prints the diff, list shows the registry (table and JSON), unregister removes."""
    assert main(["subscriptions", "sync", "--app", "billing"]) == 0
    assert "added: charge_order, open_pro_account, retry_payment" in capsys.readouterr().out
    assert main(["subscriptions", "sync", "--app", "billing"]) == 0
    assert "no changes" in capsys.readouterr().out
    assert main(["subscriptions", "list"]) == 0
    table = capsys.readouterr().out
    assert "open_pro_account" in table
    assert '{"plan":["pro","enterprise"]}' in table
    assert main(["subscriptions", "list", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["apps"] == ["billing"]
    assert {s["name"] for s in doc["subscriptions"]} == {
        "charge_order",
        "open_pro_account",
        "retry_payment",
    }
    assert main(["subscriptions", "unregister", "--app", "billing", "--yes"]) == 0
    assert main(["subscriptions", "list"]) == 0
    assert "no apps registered" in capsys.readouterr().out


def test_sync_that_drops_subscriptions_needs_the_flag(
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Removing a subscription shows the diff and changes nothing without --allow-removal."""
    apps = tmp_path / "apps"
    shutil.copytree(cli_env.apps_dir / "email", apps / "email")
    monkeypatch.setenv("BUS_APPS_DIR", str(apps))
    assert main(["subscriptions", "sync", "--app", "email"]) == 0
    toml = apps / "email" / "app.toml"
    text = toml.read_text()
    toml.write_text(text[: text.index('[[subscriptions]]\nname = "payment_problem"')])
    capsys.readouterr()
    assert main(["subscriptions", "sync", "--app", "email", "--dry-run"]) == 2
    assert "would remove subscriptions payment_problem" in capsys.readouterr().err
    assert main(["subscriptions", "sync", "--app", "email", "--allow-removal", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out

    async def names(client: Redis) -> list[str]:
        entry = raw(await client.hget(BusKeys("bus").subs, "email"))
        return sorted(s["name"] for s in orjson.loads(entry))

    assert on_redis(cli_env, names) == ["payment_problem", "welcome"]
    assert main(["subscriptions", "sync", "--app", "email", "--allow-removal"]) == 0
    assert on_redis(cli_env, names) == ["welcome"]


def test_unknown_app_names_the_apps_there_are(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An app without a directory is an error listing the known apps."""
    assert main(["subscriptions", "sync", "--app", "shipping"]) == 2
    err = capsys.readouterr().err
    assert "no app 'shipping'" in err
    assert "analytics, billing, email" in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on the main CLI, each group and the worker."""
    for argv in (
        ["--help"],
        ["publish", "--help"],
        ["subscriptions", "sync", "--help"],
        ["subscriptions", "list", "--help"],
        ["redis", "--help"],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        worker_main(["--help"])
    assert done.value.code == 0
    assert "--concurrency" in capsys.readouterr().out
