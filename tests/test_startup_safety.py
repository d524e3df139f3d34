"""Start-up safety: no process writes tasks or events to a server that evicts keys,
and each one warns when a server it did not start keeps nothing across a restart.

The tests marked ``xfail(strict=True)`` pin down processes that connect without
the check (``bus/client.py``'s Bus, the operator commands): they fail loudly
once those connect with ``check=True``, and the marker goes with the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from bus.client import Bus
from bus.config.settings import ENV_PREFIX, TEST_ENV_PREFIX, Settings
from bus.errors import RedisSetupError
from bus.store.connection import connect, connect_sync
from tests.conftest import Logs
from tests.procs.runner import Proc
from tests.redis_server import MakeRedisServer, RedisServer

EVICTS = "maxmemory-policy allkeys-lru"
NOT_PERSISTENT = "has neither AOF nor RDB snapshots, so a restart loses every task and event"
ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}


def on(settings: Settings, server: RedisServer) -> Settings:
    """The test's settings, pointed at another private server."""
    return replace(settings, redis_url=server.url)


@pytest.fixture
def run(
    procs: Callable[..., Proc], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str]]:
    """Run ``python ARGS`` as a child with given settings; return its exit status and output."""

    def start(settings: Settings, *args: str) -> tuple[int, str]:
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX) and not name.startswith(TEST_ENV_PREFIX):
                monkeypatch.delenv(name)
        monkeypatch.setenv("BUS_REDIS_URL", str(settings.redis_url))
        monkeypatch.setenv("BUS_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("BUS_SCHEMAS_DIR", str(settings.schemas_dir))
        monkeypatch.setenv("BUS_APPS_DIR", str(settings.apps_dir))
        proc = procs(*args, name=args[1])
        return proc.wait(60), proc.output()

    return start


# -- the worker ---------------------------------------------------------------------


def test_worker_refuses_to_start_on_a_server_that_evicts_keys(
    settings: Settings, make_redis_server: MakeRedisServer, run: Callable[..., tuple[int, str]]
) -> None:
    """python -m bus.worker exits 2 naming the policy and the fix; it claims nothing."""
    evicting = make_redis_server(maxmemory_policy="allkeys-lru")
    status, out = run(on(settings, evicting), "-m", "bus.worker", "--app", "billing")
    assert status == 2, out
    assert EVICTS in out
    assert "CONFIG SET maxmemory-policy noeviction" in out
    with evicting.client() as client:
        assert client.dbsize() == 0  # not even the subscriptions were synced


def test_worker_warns_at_start_when_the_server_keeps_nothing(
    settings: Settings, make_redis_server: MakeRedisServer, run: Callable[..., tuple[int, str]]
) -> None:
    """A server without AOF or snapshots: the worker runs, after a redis_not_persistent warning."""
    volatile = make_redis_server(appendonly=False, save='""')
    args = ("-m", "bus.worker", "--app", "billing", "--burst")
    status, out = run(on(settings, volatile), *args)
    assert status == 0, out
    assert "redis_not_persistent" in out
    assert NOT_PERSISTENT in out


def test_worker_does_not_warn_about_a_server_with_an_append_only_file(
    settings: Settings, make_redis_server: MakeRedisServer, run: Callable[..., tuple[int, str]]
) -> None:
    """With AOF on there is no persistence warning (the warning is not given blindly)."""
    durable = make_redis_server(appendonly=True, save='""')
    args = ("-m", "bus.worker", "--app", "billing", "--burst")
    status, out = run(on(settings, durable), *args)
    assert status == 0, out
    assert "worker_stopped" in out
    assert "redis_not_persistent" not in out


# -- connecting with the check (what publishers and tools build on) ------------------------


async def test_connect_with_check_refuses_a_server_that_evicts_keys(
    settings: Settings, make_redis_server: MakeRedisServer
) -> None:
    """connect(check=True) and connect_sync(check=True) raise RedisSetupError for eviction."""
    evicting = on(settings, make_redis_server(maxmemory_policy="allkeys-lru"))
    with pytest.raises(RedisSetupError, match=EVICTS):
        await connect(evicting, check=True)
    with pytest.raises(RedisSetupError, match=EVICTS):
        connect_sync(evicting, check=True)


async def test_connect_with_check_logs_the_persistence_warning_once_per_client(
    settings: Settings, make_redis_server: MakeRedisServer, logs: Logs
) -> None:
    """Each checked client of a server that keeps nothing logs redis_not_persistent."""
    volatile = on(settings, make_redis_server(appendonly=False, save='""'))
    client = await connect(volatile, check=True)
    await client.aclose()
    connect_sync(volatile, check=True).close()
    assert [e["event"] for e in logs] == ["redis_not_persistent"] * 2
    assert all(NOT_PERSISTENT in e["detail"] for e in logs)
    assert all(e["log_level"] == "warning" for e in logs)


async def test_connect_without_check_does_no_io(settings: Settings) -> None:
    """The default connect() stays lazy: a server that is not there fails only on use."""
    gone = replace(settings, redis_url="unix:///nonexistent/redis.sock")
    client = await connect(gone)
    await client.aclose()
    connect_sync(gone).close()


# -- the publisher and the operator commands ----------------------------------------------


async def test_publisher_refuses_a_server_that_evicts_keys(
    settings: Settings, make_redis_server: MakeRedisServer
) -> None:
    """Bus.apublish on an evicting server raises RedisSetupError and records nothing."""
    server = make_redis_server(maxmemory_policy="allkeys-lru")
    publisher = Bus(on(settings, server))
    try:
        with pytest.raises(RedisSetupError, match=EVICTS):
            await publisher.apublish("order.placed", ORDER)
    finally:
        await publisher.aclose()
    with server.client() as client:
        assert client.dbsize() == 0


def test_sync_publisher_refuses_a_server_that_evicts_keys(
    settings: Settings, make_redis_server: MakeRedisServer
) -> None:
    """Bus.publish (sync) on an evicting server raises RedisSetupError and records nothing."""
    server = make_redis_server(maxmemory_policy="allkeys-lru")
    publisher = Bus(on(settings, server))
    try:
        with pytest.raises(RedisSetupError, match=EVICTS):
            publisher.publish("order.placed", ORDER)
    finally:
        publisher.close_sync()
    with server.client() as client:
        assert client.dbsize() == 0


async def test_publisher_warns_when_the_server_keeps_nothing(
    settings: Settings, make_redis_server: MakeRedisServer, logs: Logs
) -> None:
    """The first publish to a server without AOF or snapshots logs redis_not_persistent."""
    publisher = Bus(on(settings, make_redis_server(appendonly=False, save='""')))
    try:
        await publisher.apublish("order.placed", ORDER)
    finally:
        await publisher.aclose()
    assert [e["event"] for e in logs] == ["redis_not_persistent"]
    assert NOT_PERSISTENT in logs[0]["detail"]


def test_status_command_warns_when_the_server_keeps_nothing(
    settings: Settings, make_redis_server: MakeRedisServer, run: Callable[..., tuple[int, str]]
) -> None:
    """`python -m bus status` on a server without AOF or snapshots prints the warning."""
    volatile = make_redis_server(appendonly=False, save='""')
    status, out = run(on(settings, volatile), "-m", "bus", "status")
    assert status == 0, out
    assert NOT_PERSISTENT in out


def test_status_command_warns_but_still_answers_on_a_server_that_evicts_keys(
    settings: Settings, make_redis_server: MakeRedisServer, run: Callable[..., tuple[int, str]]
) -> None:
    """`python -m bus status` on an evicting server logs redis_unsafe and still shows the state."""
    evicting = make_redis_server(maxmemory_policy="allkeys-lru")
    status, out = run(on(settings, evicting), "-m", "bus", "status")
    assert status == 0, out
    assert "redis_unsafe" in out
    assert re.search(EVICTS, out), out
