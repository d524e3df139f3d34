"""The embedded server's data dir: its files, its socket, its pidfile and its lock.

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

Starting, stopping and asking the server is :mod:`bus.local.embedded`'s; this
module only reads and writes those files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bus.config.settings import Settings
from bus.core import clock
from bus.errors import RedisSetupError

__all__ = [
    "CONF_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "PID_FILE",
    "SOCKET_FILE",
    "SOCKET_RECORD",
    "is_our_server",
    "locked",
    "log_tail",
    "new_socket_path",
    "read_pid",
    "remove_stale",
    "socket_path",
    "write_config",
]

CONF_FILE = "redis.conf"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
LOCK_FILE = "redis.lock"
SOCKET_FILE = "redis.sock"
SOCKET_RECORD = "socket-path"

_MAX_SOCKET_BYTES = 107 if sys.platform.startswith("linux") else 103


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


def new_socket_path(data_dir: Path) -> Path:
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


def write_config(settings: Settings, sock: Path) -> Path:
    """Write the data dir's ``redis.conf`` for a server on ``sock``; return its path."""
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


def read_pid(pidfile: Path) -> int | None:
    """Return the pid in ``pidfile``, None if it is missing or unreadable."""
    try:
        return int(pidfile.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def is_our_server(pid: int, data_dir: Path) -> bool:
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


def remove_stale(data_dir: Path, sock: Path) -> None:
    """Remove the pidfile and socket a server that no longer runs left behind."""
    (data_dir / PID_FILE).unlink(missing_ok=True)
    try:
        if stat.S_ISSOCK(sock.lstat().st_mode):
            sock.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


@contextlib.contextmanager
def locked(data_dir: Path, deadline: float) -> Iterator[None]:
    """Hold the data dir's ``flock`` (waiting until ``deadline``) around a start or stop."""
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


def log_tail(log: Path, offset: int, lines: int = 20) -> str:
    """Return the server log's last ``lines`` written after ``offset``, for error messages."""
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


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_SOCKET_BYTES


def _short_socket_dir(data_dir: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    name = f"taskbus-{os.getuid()}-{digest}"
    base = Path(tempfile.gettempdir())
    if not _fits(base / name / SOCKET_FILE):
        base = Path("/tmp")
    return base / name


def _quote(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise RedisSetupError(f"path {value!r} cannot be written to a redis config file")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
