"""Connections to Redis, and the check that a server is safe to run taskbus on.

:func:`connect` (asyncio) and :func:`connect_sync` (CLI, publishing from sync
code) open a client on ``settings.redis_url``, or on the embedded server of
``settings.data_dir`` when no URL is set. Clients return bytes
(``decode_responses=False``); payloads are JSON encoded by taskbus itself.

:func:`check_server` (and :func:`check_server_sync`) refuses a server that would
lose tasks (an eviction policy other than ``noeviction``, or a Redis older than
6.2) and flags one that keeps nothing across a restart. ``connect(settings,
check=True)`` runs it on the new client and logs the flag as the warning
``redis_not_persistent``: the worker connects that way, and so should every
process that writes tasks or events.

Connections and replies time out after ``BUS_REDIS_TIMEOUT_S`` (default 5 s).
The clients built here note which command a server refused, for the message
of :class:`bus.errors.RedisPermissionError` (see :mod:`bus.store.redis_errors`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import structlog
from redis.exceptions import ResponseError

from bus.config.settings import Settings
from bus.errors import RedisSetupError
from bus.local.binaries import MIN_REDIS_VERSION, parse_version
from bus.local.embedded import ensure_embedded
from bus.store.redis_errors import NotingClient, NotingSyncClient

__all__ = [
    "ServerInfo",
    "check_server",
    "check_server_sync",
    "connect",
    "connect_sync",
    "require_min_version",
    "warn_if_not_persistent",
]

log = structlog.get_logger("bus.connection")


@dataclass(frozen=True)
class ServerInfo:
    """What :func:`check_server` learned about a Redis server.

    Attributes:
        version: ``(major, minor, patch)`` from ``INFO server``.
        maxmemory_policy: The eviction policy (always ``noeviction`` once checked).
        aof_enabled: The append-only file is on.
        save_points: The RDB ``save`` config (``""``: no snapshots), or None when
            ``CONFIG GET`` is disabled and it could not be read.
        persistence_warning: Why the server may lose everything on restart; None
            when it persists, when that is unknown, or for the embedded server.
            The caller logs it.
    """

    version: tuple[int, int, int]
    maxmemory_policy: str
    aof_enabled: bool
    save_points: str | None
    persistence_warning: str | None


async def connect(settings: Settings, *, check: bool = False) -> redis.asyncio.Redis:
    """Open an asyncio client on the configured server, starting the embedded one if needed.

    Args:
        settings: ``redis_url`` if set, else ``data_dir`` for the embedded server.
        check: Check the server first (:func:`check_server`): refuse one that
            is unsafe, log ``redis_not_persistent`` for one that keeps nothing
            across a restart. Without it no I/O happens until the first command.

    Returns:
        A client returning bytes; the caller closes it with ``aclose()``.

    Raises:
        RedisSetupError: The embedded server could not be started, or (with
            ``check``) the server is unsafe.
        redis.exceptions.RedisError: With ``check``: the server cannot be reached.
    """
    # One setting for connecting and for replies: a server that does not accept
    # a connection within it is as unreachable as one that does not answer. The
    # worker's blocking wait reads with its own, longer, timeout.
    url = settings.redis_url
    if url is None:
        # Starting the server blocks for a few milliseconds; keep the loop free.
        url = await asyncio.to_thread(ensure_embedded, settings)
    client: redis.asyncio.Redis = NotingClient.from_url(
        url,
        decode_responses=False,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    if check:
        try:
            info = await check_server(client, embedded=settings.redis_url is None)
        except BaseException:
            await client.aclose()
            raise
        warn_if_not_persistent(info)
    return client


def connect_sync(settings: Settings, *, check: bool = False) -> redis.Redis:
    """Open a blocking client on the configured server (see :func:`connect`).

    Args:
        settings: ``redis_url`` if set, else ``data_dir`` for the embedded server.
        check: Check the server first (:func:`check_server_sync`), as
            :func:`connect` does.

    Returns:
        A client returning bytes; the caller closes it with ``close()``.

    Raises:
        RedisSetupError: The embedded server could not be started, or (with
            ``check``) the server is unsafe.
        redis.exceptions.RedisError: With ``check``: the server cannot be reached.
    """
    url = settings.redis_url if settings.redis_url is not None else ensure_embedded(settings)
    client: redis.Redis = NotingSyncClient.from_url(
        url,
        decode_responses=False,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    if check:
        try:
            info = check_server_sync(client, embedded=settings.redis_url is None)
        except BaseException:
            client.close()
            raise
        warn_if_not_persistent(info)
    return client


def warn_if_not_persistent(info: ServerInfo) -> None:
    """Log ``redis_not_persistent`` (a warning) when the checked server keeps nothing."""
    if info.persistence_warning:
        log.warning("redis_not_persistent", detail=info.persistence_warning)


def require_min_version(version: tuple[int, int, int], where: str) -> None:
    """Refuse a Redis older than :data:`~bus.local.binaries.MIN_REDIS_VERSION`.

    Args:
        version: The server's version.
        where: Which server, for the message (e.g. its redacted URL).

    Raises:
        RedisSetupError: The server is too old.
    """
    if version < MIN_REDIS_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_REDIS_VERSION[:2]))
        raise RedisSetupError(
            f"{where} runs Redis {have}, but taskbus needs {need} or newer (it uses "
            "BLMOVE, GETDEL and ZRANGE ... LIMIT): upgrade the server, or unset "
            "BUS_REDIS_URL to use the embedded server"
        )


async def check_server(client: redis.asyncio.Redis, *, embedded: bool) -> ServerInfo:
    """Check that the server behind ``client`` can hold taskbus's state safely.

    Args:
        client: A connected client.
        embedded: The server is taskbus's embedded one (AOF on by construction),
            so no persistence warning is given for it.

    Returns:
        The server's version and persistence settings.

    Raises:
        RedisSetupError: The server is older than 6.2, or may evict keys.
    """
    server = await client.info("server")
    config = await _config_get(client, "maxmemory-policy", "save")
    memory = await client.info("memory") if "maxmemory-policy" not in config else None
    persistence = await client.info("persistence")
    return _assess(server, config, memory, persistence, embedded=embedded)


def check_server_sync(client: redis.Redis, *, embedded: bool) -> ServerInfo:
    """Blocking :func:`check_server`, for clients of sync code (publishers, CLI)."""
    server = client.info("server")
    config = _config_get_sync(client, "maxmemory-policy", "save")
    memory = client.info("memory") if "maxmemory-policy" not in config else None
    persistence = client.info("persistence")
    return _assess(server, config, memory, persistence, embedded=embedded)


def _assess(
    server: Mapping[str, Any],
    config: Mapping[str, str],
    memory: Mapping[str, Any] | None,
    persistence: Mapping[str, Any],
    *,
    embedded: bool,
) -> ServerInfo:
    """Judge a server from its INFO sections and config (see :func:`check_server`)."""
    where = "the embedded Redis server" if embedded else "the Redis server at BUS_REDIS_URL"
    version = parse_version(str(server["redis_version"]))
    require_min_version(version, where)

    policy = config.get("maxmemory-policy")
    if policy is None:
        if memory is None or "maxmemory_policy" not in memory:
            raise RedisSetupError(
                f"cannot read the maxmemory-policy of {where} (CONFIG GET is disabled and "
                "INFO memory lacks it); taskbus needs noeviction, as evicted keys are lost tasks"
            )
        policy = str(memory["maxmemory_policy"])
    if policy != "noeviction":
        raise RedisSetupError(
            f"{where} has maxmemory-policy {policy}: it may evict keys when memory is full, "
            "and an evicted key is a lost task or event; run "
            "`CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf)"
        )

    aof_enabled = int(persistence.get("aof_enabled", 0)) == 1
    save_points = config.get("save")
    warning = None
    if not embedded and not aof_enabled and save_points == "":
        warning = (
            f"{where} has neither AOF nor RDB snapshots, so a restart loses every task "
            "and event; enable `appendonly yes` (see `appendfsync`) for durability"
        )
    return ServerInfo(
        version=version,
        maxmemory_policy=policy,
        aof_enabled=aof_enabled,
        save_points=save_points,
        persistence_warning=warning,
    )


async def _config_get(client: redis.asyncio.Redis, *names: str) -> Mapping[str, str]:
    """Return the named config values; empty when CONFIG is renamed or forbidden."""
    values: dict[str, str] = {}
    for name in names:
        try:
            reply = await client.config_get(name)
        except ResponseError:
            # Managed services rename or deny CONFIG; callers fall back to INFO.
            return {}
        for key, value in reply.items():
            values[_text(key)] = _text(value)
    return values


def _config_get_sync(client: redis.Redis, *names: str) -> Mapping[str, str]:
    """Blocking :func:`_config_get`."""
    values: dict[str, str] = {}
    for name in names:
        try:
            reply = client.config_get(name)
        except ResponseError:
            return {}
        for key, value in reply.items():
            values[_text(key)] = _text(value)
    return values


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
