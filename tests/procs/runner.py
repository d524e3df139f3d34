"""Start and end test subprocesses by pid, always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process started by a test; output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.popen.pid

    def output(self) -> str:
        """Everything the child wrote so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until the child prints ``ready``; fail with its output if it dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "ready" in self.output():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output()}")
            time.sleep(0.02)
        raise AssertionError(f"process not ready in {timeout_s}s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        """Send a signal to the child if it is still running."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout_s: float = 20.0) -> int:
        """Wait for the child to exit; return its exit code."""
        return self.popen.wait(timeout=timeout_s)

    def end(self) -> None:
        """End the child by pid (SIGCONT first in case it is stopped)."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._log.close()


@contextmanager
def processes(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Yield a factory of child processes; every one is ended on exit."""
    started: list[Proc] = []

    def start(*args: str, name: str = "proc") -> Proc:
        proc = Proc(list(args), tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.end()


def wait_until(check: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> object:
    """Poll ``check`` every 10 ms until it returns a truthy value or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(0.01)
