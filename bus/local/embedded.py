"""The embedded local Redis server: one per data dir, shared by every process.

When no ``BUS_REDIS_URL`` is configured, taskbus runs its own ``redis-server``
(the one :func:`bus.local.binaries.find_redis_server` picks). The server
listens on a unix socket only, keeps an AOF, never evicts keys, and is
daemonized, so it outlives the process that started it and is shared by every
process using the same data dir. This module starts it, stops it and reports
its status; the files it keeps in the data dir (config, pidfile, lock, socket
record) are :mod:`bus.local.datadir`'s. PING and SHUTDOWN go over the socket
as raw inline commands (no client needed while the server starts or stops);
the status's ``INFO`` is the store's read (:func:`bus.store.reads.server_info_sync`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bus.config.settings import Settings
from bus.core import clock
from bus.errors import RedisSetupError
from bus.local.binaries import check_aof_layout, choose_binary, format_version
from bus.local.datadir import (
    LOG_FILE,
    PID_FILE,
    is_our_server,
    locked,
    log_tail,
    new_socket_path,
    read_pid,
    remove_stale,
    socket_path,
    write_config,
)
from bus.store.reads import server_info_sync

__all__ = [
    "EmbeddedStatus",
    "embedded_status",
    "ensure_embedded",
    "stop_embedded",
]

_PONG = "+PONG"


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


def ensure_embedded(
    settings: Settings, *, binary: Path | None = None, start_timeout_s: float = 30.0
) -> str:
    """Make sure the embedded server of ``settings.data_dir`` runs; start it if not.

    Idempotent and cheap when the server already answers (one PING, no lock).
    Otherwise takes the data dir's lock, so concurrent callers start one server.

    Args:
        settings: The settings (``data_dir`` and ``appendfsync`` are used).
        binary: Run this ``redis-server`` instead of the one
            :func:`~bus.local.binaries.find_redis_server` picks (a running server is
            kept as is).
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
    with locked(data_dir, clock.monotonic_s() + start_timeout_s + 5.0):
        deadline = clock.monotonic_s() + start_timeout_s
        sock = socket_path(settings)
        if _ping(sock, _ping_timeout_s(deadline)) == _PONG:
            return _url(sock)
        pid = read_pid(data_dir / PID_FILE)
        if pid is not None and is_our_server(pid, data_dir):
            # Alive but not answering yet (loading its AOF): starting a second
            # server would unlink its socket and share its AOF, so wait for it.
            _wait_ready(sock, data_dir, deadline, log_offset=0)
            return _url(sock)
        remove_stale(data_dir, sock)
        chosen, version = choose_binary(binary)
        check_aof_layout(data_dir, chosen, version)
        sock = new_socket_path(data_dir)
        conf = write_config(settings, sock)
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
    pid = read_pid(data_dir / PID_FILE)
    live_pid = pid if pid is not None and is_our_server(pid, data_dir) else None
    reply = _ping(sock)
    info = server_info_sync(sock) if reply is not None else None
    if info is not None:
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
        chosen, version = choose_binary(None)
        version_text: str | None = format_version(version)
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
    with locked(data_dir, deadline):
        sock = socket_path(settings)
        pid = read_pid(data_dir / PID_FILE)
        live_pid = pid if pid is not None and is_our_server(pid, data_dir) else None
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
                    f"{log_tail(data_dir / LOG_FILE, 0)}"
                )
        elif live_pid is not None:
            os.kill(live_pid, signal.SIGTERM)
        else:
            remove_stale(data_dir, sock)
            return False

        def exited() -> bool:
            if live_pid is not None:
                return not is_our_server(live_pid, data_dir)
            return _ping(sock) is None

        while not exited():
            if clock.monotonic_s() > deadline:
                raise RedisSetupError(
                    f"the embedded server in {data_dir} (pid {live_pid}) did not exit "
                    f"within {timeout_s}s; see {data_dir / LOG_FILE}"
                )
            time.sleep(0.01)
        remove_stale(data_dir, sock)
        if sock.parent != data_dir:
            with contextlib.suppress(OSError):
                sock.parent.rmdir()
        return True


def _url(sock: Path) -> str:
    return "unix://" + quote(str(sock), safe="/")


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
            f"{log_tail(log, log_offset)}"
        )


def _wait_ready(sock: Path, data_dir: Path, deadline: float, *, log_offset: int) -> None:
    """Wait until the server answers PONG; fail fast if its process died."""
    pause_s = 0.005
    reply: str | None = None
    while True:
        reply = _ping(sock, _ping_timeout_s(deadline))
        if reply == _PONG:
            return
        pid = read_pid(data_dir / PID_FILE)
        if pid is not None and not is_our_server(pid, data_dir):
            problem = f"exited during start (pid {pid})"
            break
        if clock.monotonic_s() > deadline:
            problem = f"did not answer PING on {sock} in time (last reply: {reply or 'none'})"
            break
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.1)
    raise RedisSetupError(
        f"the embedded redis-server in {data_dir} {problem}; fix the cause below, "
        f"or set BUS_REDIS_URL to use another server{log_tail(data_dir / LOG_FILE, log_offset)}"
    )


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
