"""The store's reads for the layers above, and the rule that those layers send no command."""

from __future__ import annotations

import ast
from pathlib import Path

from redis.asyncio import Redis

from bus.store import reads
from bus.store.admin import clear_prefix
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import REPO_ROOT
from tests.redis_server import RedisServer

# Names a client or pipeline is held under in bus/; closing one is no command.
# (bus.local's PING and SHUTDOWN go over a plain socket, ``conn``, on purpose:
# they probe the server process before any client can connect.)
_CLIENT_NAMES = {"client", "pipe", "redis"}
_NOT_COMMANDS = {"aclose", "close"}
_ABOVE_THE_STORE = ("inspect", "cli", "demo", "local")


def _commands_sent(path: Path) -> list[str]:
    """``line: receiver.method`` for every method called on a client-named object."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in _CLIENT_NAMES
            and node.func.attr not in _NOT_COMMANDS
        ):
            found.append(f"{path.name}:{node.lineno}: {node.func.value.id}.{node.func.attr}")
    return found


def test_inspect_cli_demo_and_local_send_no_redis_command_of_their_own() -> None:
    """bus.inspect, bus.cli, bus.demo and bus.local send every Redis command through the store."""
    sent = {
        str(path.relative_to(REPO_ROOT)): _commands_sent(path)
        for package in _ABOVE_THE_STORE
        for path in sorted((REPO_ROOT / "bus" / package).rglob("*.py"))
    }
    assert {where: calls for where, calls in sent.items() if calls} == {}


def test_the_command_finder_sees_the_stores_own_commands() -> None:
    """The rule above would be hollow if the finder missed ``pipe.hgetall(...)``."""
    calls = _commands_sent(REPO_ROOT / "bus" / "store" / "reads" / "inspection.py")
    assert any(c.endswith("pipe.hgetall") for c in calls)
    assert any(c.endswith("client.scan_iter") for c in calls)


async def test_apps_with_queues_finds_apps_by_their_queues_set_and_skips_foreign_keys(
    aredis: Redis,
) -> None:
    """SCAN finds each app with a queues set; a key that only looks like one is left out."""
    await aredis.sadd(AppKeys("bus", "shop").queues, "default")
    await aredis.sadd(AppKeys("bus", "billing").queues, "default")
    await aredis.sadd(AppKeys("other", "mail").queues, "default")
    await aredis.set("bus:app:{Not An App}:queues", "x")
    assert await reads.apps_with_queues(aredis, "bus") == {"billing", "shop"}


async def test_tasks_reads_state_record_errors_and_dead_score_in_one_go(aredis: Redis) -> None:
    """One entry per id, None where there is no state; errors left out on request."""
    keys = AppKeys("bus", "shop")
    await aredis.hset(keys.state, mapping={"a": b'{"s":"dead"}', "b": b'{"s":"queued"}'})
    await aredis.hset(keys.tasks, "a", b"record-a")
    await aredis.hset(keys.errors, "a", b"[]")
    await aredis.zadd(keys.dead, {"a": 42})
    a, b, missing = await reads.tasks(aredis, keys, ["a", "b", "c"])
    assert a == reads.StoredTask(b'{"s":"dead"}', b"record-a", b"[]", 42.0)
    assert b == reads.StoredTask(b'{"s":"queued"}', None, None, None)
    assert missing is None
    assert (await reads.tasks(aredis, keys, ["a"], errors=False))[0] == a._replace(errors=None)


async def test_event_entry_reports_a_missing_event_as_no_envelope(aredis: Redis) -> None:
    """An unknown key is an entry without envelope, time or pending mark, not an error."""
    assert await reads.event_entry(aredis, BusKeys("bus"), "nope") == (None, None, False)


async def test_clear_prefix_deletes_the_prefix_and_no_other_key(aredis: Redis) -> None:
    """Only keys under ``<prefix>:`` go, glob characters in the prefix taken literally."""
    await aredis.set("d*mo:a", 1)
    await aredis.set("d*mo:b", 1)
    await aredis.set("demo:c", 1)
    await aredis.set("d*mox", 1)
    assert await clear_prefix(aredis, "d*mo", batch=1) == 2
    assert sorted(await aredis.keys("*")) == [b"d*mox", b"demo:c"]


def test_server_info_sync_reads_info_server_or_none_when_nothing_answers(
    redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A running server gives its INFO; an absent socket gives None, never an error."""
    info = reads.server_info_sync(redis_server.socket)
    assert info is not None
    assert info["process_id"] == redis_server.pid
    assert reads.server_info_sync(tmp_path / "absent.sock", timeout_s=0.2) is None
