"""Every process the harness starts, and how each one is ended by its id.

* :class:`RedisServer`: a private ``redis-server`` on a free TCP port on
  127.0.0.1, no persistence, in a temporary directory; never the shared
  server on 6379.
* :class:`ProcessGroup`: a worker (or phase) subprocess in a session of its
  own, so that its children (celery's prefork child, dramatiq's and taskiq's
  worker processes, RQ's work horses) are ended with it: SIGTERM to the group
  whose id is the leader's pid, SIGKILL after a grace period.

Each object is a context manager, so the harness ends everything it started
on success, on error and on Ctrl-C (SIGTERM is turned into the same path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

__all__ = ["ProcessGroup", "RedisServer", "find_redis_server", "free_port"]

# How long a fresh redis-server may take to answer PING.
REDIS_START_TIMEOUT_S = 10.0
# How long a process group gets after SIGTERM before SIGKILL; celery's and
# dramatiq's warm shutdowns take a few seconds even when idle.
STOP_GRACE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """The system's ``redis-server``, skipping copies bundled in a venv.

    Raises:
        FileNotFoundError: None is on PATH.
    """
    venv_bin = Path(sys.prefix) / "bin"
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d) != venv_bin]
    found = shutil.which("redis-server", path=os.pathsep.join(dirs))
    if found is None:
        raise FileNotFoundError("redis-server is not on PATH (apt-get install redis-server)")
    return found


class ProcessGroup:
    """A subprocess that leads a process group of its own.

    Args:
        argv: The command.
        env: Its environment.
        cwd: Its working directory.
        log: Where its stdout and stderr go (None: captured as a pipe).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: IO[bytes] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        """Whether the leader still runs."""
        return self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM the group, SIGKILL it after ``grace_s``; return the exit code."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        # Children that outlived their leader (a prefork child, a work horse).
        self._signal(signal.SIGKILL)
        return int(self.proc.returncode)

    def _signal(self, sig: signal.Signals) -> None:
        # The group's id is the leader's pid; a group already gone is fine.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer:
    """A private redis-server for one harness run.

    Args:
        binary: The ``redis-server`` to run.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.dir = tempfile.mkdtemp(prefix="peers-redis-")
        self.port = 0
        self.group: ProcessGroup | None = None

    @property
    def url(self) -> str:
        """The server's URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: It did not come up (the port race is retried).
        """
        attempts = 3  # another process may take the free port before we bind it
        for _ in range(attempts):
            self.port = free_port()
            log = open(Path(self.dir) / "redis.log", "ab")  # noqa: SIM115 - lives with the server
            self.group = ProcessGroup(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                ],
                env=dict(os.environ),
                cwd=Path(self.dir),
                log=log,
            )
            log.close()
            if self._wait_ready():
                return self
            self.group.stop()
        raise RuntimeError(f"{self.binary} did not start; see {self.dir}/redis.log")

    def _wait_ready(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.group is not None and not self.group.alive():
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def version(self) -> str:
        """The server's version string."""
        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def stop(self) -> None:
        """End the server by its pid and remove its directory."""
        if self.group is not None:
            self.group.stop()
            self.group = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
