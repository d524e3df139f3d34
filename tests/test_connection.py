"""Tests of bus.store.connection: opening clients and refusing unsafe Redis servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from bus.config.settings import Settings
from bus.errors import RedisSetupError
from bus.local.binaries import MIN_REDIS_VERSION, parse_version
from bus.local.datadir import socket_path
from bus.store.connection import check_server, connect, connect_sync, require_min_version
from tests.redis_server import MakeRedisServer, RedisServer


@pytest.fixture
async def clients() -> AsyncIterator[list[redis.asyncio.Redis]]:
    """Asyncio clients a test opens, closed at teardown."""
    opened: list[redis.asyncio.Redis] = []
    yield opened
    for client in opened:
        await client.aclose()


def _aclient(server: RedisServer, clients: list[redis.asyncio.Redis]) -> redis.asyncio.Redis:
    client = server.aclient()
    clients.append(client)
    return client


# -- connect ------------------------------------------------------------------


async def test_connect_uses_the_configured_url_and_returns_bytes(settings: Settings) -> None:
    """connect() opens an asyncio client on BUS_REDIS_URL that returns bytes."""
    assert settings.redis_url is not None
    client = await connect(settings)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        path = client.connection_pool.connection_kwargs["path"]
        assert f"unix://{path}" == settings.redis_url
    finally:
        await client.aclose()


def test_connect_sync_uses_the_configured_url_and_returns_bytes(settings: Settings) -> None:
    """connect_sync() opens a blocking client on BUS_REDIS_URL that returns bytes."""
    with connect_sync(settings) as client:
        client.set("k", "v")
        assert client.get("k") == b"v"


async def test_connect_without_url_starts_the_embedded_server(
    embedded_settings: Settings,
) -> None:
    """With no BUS_REDIS_URL, connect() starts the embedded server and connects to it."""
    assert not socket_path(embedded_settings).exists()
    client = await connect(embedded_settings)
    try:
        assert await client.ping() is True
        info = await check_server(client, embedded=True)
    finally:
        await client.aclose()
    assert info.aof_enabled is True
    assert info.persistence_warning is None
    with connect_sync(embedded_settings) as sync_client:
        assert sync_client.connection_pool.connection_kwargs["path"] == str(
            socket_path(embedded_settings)
        )


# -- check_server -------------------------------------------------------------


async def test_check_server_accepts_a_durable_noeviction_server(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis]
) -> None:
    """A server with AOF on and noeviction passes, with its version and no warning."""
    server = make_redis_server(appendonly=True)
    info = await check_server(_aclient(server, clients), embedded=False)
    assert info.version >= MIN_REDIS_VERSION
    assert info.maxmemory_policy == "noeviction"
    assert info.aof_enabled is True
    assert info.persistence_warning is None


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_check_server_refuses_a_server_that_evicts_keys(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis], policy: str
) -> None:
    """An eviction policy other than noeviction is refused, saying why and how to fix it."""
    server = make_redis_server(maxmemory_policy=policy)
    with pytest.raises(RedisSetupError) as excinfo:
        await check_server(_aclient(server, clients), embedded=False)
    message = str(excinfo.value)
    assert f"maxmemory-policy {policy}" in message
    assert "lost task" in message
    assert "CONFIG SET maxmemory-policy noeviction" in message


async def test_check_server_warns_when_nothing_survives_a_restart(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis]
) -> None:
    """A server without AOF or RDB save points is accepted with a warning for the caller."""
    server = make_redis_server(appendonly=False, save='""')
    info = await check_server(_aclient(server, clients), embedded=False)
    assert info.aof_enabled is False
    assert info.save_points == ""
    assert info.persistence_warning is not None
    assert "appendonly yes" in info.persistence_warning


async def test_check_server_accepts_rdb_snapshots_as_persistence(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis]
) -> None:
    """RDB save points without AOF count as persistence: no warning."""
    server = make_redis_server(appendonly=False, save="900 1")
    info = await check_server(_aclient(server, clients), embedded=False)
    assert info.save_points == "900 1"
    assert info.persistence_warning is None


async def test_check_server_does_not_warn_about_the_embedded_server(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis]
) -> None:
    """embedded=True suppresses the persistence warning (its AOF is set by taskbus)."""
    server = make_redis_server(appendonly=False, save='""')
    info = await check_server(_aclient(server, clients), embedded=True)
    assert info.persistence_warning is None


async def test_check_server_falls_back_to_info_when_config_is_disabled(
    make_redis_server: MakeRedisServer, clients: list[redis.asyncio.Redis]
) -> None:
    """With CONFIG renamed away, the eviction policy is read from INFO memory."""
    evicting = make_redis_server(maxmemory_policy="allkeys-lru", rename_command='CONFIG ""')
    with pytest.raises(RedisSetupError, match="maxmemory-policy allkeys-lru"):
        await check_server(_aclient(evicting, clients), embedded=False)

    safe = make_redis_server(appendonly=False, rename_command='CONFIG ""')
    info = await check_server(_aclient(safe, clients), embedded=False)
    assert info.maxmemory_policy == "noeviction"
    assert info.save_points is None
    assert info.persistence_warning is None  # unknown save points: no false alarm


# -- versions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7.0.15", (7, 0, 15)), ("6.2", (6, 2, 0)), ("255.255.255-rc1", (255, 255, 255))],
)
def test_parse_version_reads_dotted_versions(text: str, expected: tuple[int, int, int]) -> None:
    """parse_version turns Redis version strings into comparable tuples."""
    assert parse_version(text) == expected


def test_require_min_version_refuses_redis_older_than_6_2() -> None:
    """Redis 6.0 is refused with its version, the minimum and what to do."""
    with pytest.raises(RedisSetupError, match=r"runs Redis 6\.0\.9, but taskbus needs 6\.2"):
        require_min_version((6, 0, 9), "the Redis server at BUS_REDIS_URL")
    require_min_version((6, 2, 0), "the Redis server at BUS_REDIS_URL")
