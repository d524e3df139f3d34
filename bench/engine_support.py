"""Plumbing for bench/engine.py: a private redis-server, child processes, statistics.

Every process started here is recorded in a :class:`Children` registry and ended
by its pid when the registry closes, whatever happened (error, Ctrl-C, SIGTERM).
On Linux the children also ask the kernel to SIGTERM them if the benchmark
itself dies without a chance to clean up (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as redis_py

__all__ = [
    "Children",
    "RedisServer",
    "machine_info",
    "percentile",
    "summarize",
]

# prctl(2) option number of PR_SET_PDEATHSIG, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
# How long a child gets to exit after SIGTERM before it is SIGKILLed.
_TERM_GRACE_S = 5.0
# How long a fresh redis-server may take to accept connections.
_REDIS_START_TIMEOUT_S = 10.0


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM me when my parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """The processes this benchmark started; :meth:`close` ends each one by pid."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a child process and record it."""
        proc = subprocess.Popen(list(args), preexec_fn=_die_with_parent, **popen)
        self._procs.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[bytes]) -> None:
        """End one child by its pid: SIGTERM, then SIGKILL after a grace period."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        """End every recorded child that is still running, newest first."""
        for proc in reversed(list(self._procs)):
            self.end(proc)


@dataclass
class RedisServer:
    """A private redis-server on a unix socket in ``directory``, no persistence."""

    directory: Path
    children: Children
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        """Path of the server's unix socket."""
        return str(self.directory / "redis.sock")

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; install Redis 7 to run the benchmark")
        self.proc = self.children.start(
            [
                binary,
                "--port", "0",
                "--unixsocket", self.socket,
                "--unixsocketperm", "700",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _REDIS_START_TIMEOUT_S
        while True:
            try:
                with redis_py.Redis(unix_socket_path=self.socket) as client:
                    client.ping()
                return
            except (redis_py.ConnectionError, FileNotFoundError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start; see {self.directory / 'redis.log'}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        """End the server by its pid."""
        if self.proc is not None:
            self.children.end(self.proc)
            self.proc = None


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile of ``values`` (linear interpolation)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Return the median, min, max and the values of repeated runs."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_info(command: str) -> dict[str, Any]:
    """Describe the machine and versions the figures were measured on."""
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "redis_server": redis_version.split(" sha=")[0],
        "python": platform.python_version(),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "command": command,
    }
