"""The demo's child processes: app workers started with the demo's settings, ended by pid.

Each worker is ``python -m bus.worker --app NAME`` with the demo's settings
passed as ``BUS_*`` variables (every field of :class:`~bus.config.settings.Settings`,
paths made absolute), so a child uses the same Redis and key prefix as the
demo whatever its working directory. Its output goes to ``<log_dir>/<app>.log``
(appended to across restarts), or to the demo's terminal when no log dir is
given.

Ending a child is SIGTERM (the worker stops claiming and hands unfinished
tasks back), then SIGKILL if it has not exited in time; only pids this module
started are ever signalled. Where ``setpriv`` exists (Linux, util-linux), each
child runs under ``setpriv --pdeathsig TERM``, so a demo killed without a
chance to clean up (SIGKILL) still takes its workers with it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bus.config.settings import ENV_VARS, Settings

__all__ = ["Child", "Children", "worker_env"]

_POLL_S = 0.02


def worker_env(
    base: Mapping[str, str], settings: Settings, extra: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """Build a child's environment: ``base`` with ``settings`` written over its ``BUS_*``.

    Args:
        base: The environment to start from (usually ``os.environ``).
        settings: The settings the child must use; each field becomes its
            variable, and an unset ``redis_url`` removes ``BUS_REDIS_URL`` (so
            the child uses the embedded server of the same data dir).
        extra: More variables; a None value removes the variable.

    Returns:
        The environment, with ``PYTHONUNBUFFERED=1`` so logs reach the file at once.
    """
    env = dict(base)
    for name, var in ENV_VARS.items():
        value = getattr(settings, name)
        if value is None:
            env.pop(var, None)
        elif isinstance(value, Path):
            env[var] = str(value.resolve())
        else:
            env[var] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    for var, text in (extra or {}).items():
        if text is None:
            env.pop(var, None)
        else:
            env[var] = text
    return env


@dataclass(eq=False)
class Child:
    """One worker process the demo started.

    Attributes:
        app: The app it works for.
        popen: The process.
        log_path: Where its output goes (None: the demo's terminal).
        label: How the demo names it (``billing``, ``billing (fixed)``).
        stopping: The demo asked it to stop, so its exit is expected.
    """

    app: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    label: str
    stopping: bool = field(default=False)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def exit_code(self) -> int | None:
        """The exit status once it has exited, else None (reaps it)."""
        return self.popen.poll()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its log file ('' when it logs to the terminal)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class Children:
    """Starts worker processes and ends every one of them, by pid.

    Args:
        env: The environment of every child (see :func:`worker_env`).
        worker_args: Options after ``--app NAME`` (``--lease-s 2`` ...).
        log_dir: Directory of the log files; None sends output to the terminal.
    """

    def __init__(self, env: Mapping[str, str], worker_args: Sequence[str], log_dir: Path | None):
        self.env = dict(env)
        self.worker_args = list(worker_args)
        self.log_dir = log_dir
        self.started: list[Child] = []

    def start(self, app: str, *, label: str | None = None, **extra_env: str | None) -> Child:
        """Start ``python -m bus.worker --app APP``.

        Args:
            app: The app.
            label: How to name it in the demo's output (default: the app).
            **extra_env: Variables to set for this child only (None removes one).

        Returns:
            The running child.
        """
        env = dict(self.env)
        for var, text in extra_env.items():
            if text is None:
                env.pop(var, None)
            else:
                env[var] = text
        log_path = None if self.log_dir is None else self.log_dir / f"{app}.log"
        args = [
            *_parent_death_prefix(),
            *[sys.executable, "-m", "bus.worker", "--app", app, *self.worker_args],
        ]
        if log_path is None:
            popen = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
        else:
            with log_path.open("ab") as log:
                popen = subprocess.Popen(
                    args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
        child = Child(app, popen, log_path, label or app)
        self.started.append(child)
        return child

    def crashed(self) -> list[Child]:
        """Children that exited although the demo did not ask them to."""
        return [c for c in self.started if not c.stopping and c.exit_code() is not None]

    def running(self) -> list[Child]:
        """Children that have not exited."""
        return [c for c in self.started if c.exit_code() is None]

    async def stop(self, child: Child, timeout_s: float = 10.0) -> int:
        """SIGTERM one child, SIGKILL it after ``timeout_s``; return its exit status."""
        self._terminate([child])
        await asyncio.to_thread(_wait_exit, [child], timeout_s)
        return self._kill_rest([child])[child]

    def stop_all(self, timeout_s: float = 10.0) -> list[Child]:
        """End every child still running (blocking, so no cancellation cuts it short).

        Returns:
            The children that were running and have now been ended.
        """
        alive = self.running()
        self._terminate(alive)
        _wait_exit(alive, timeout_s)
        self._kill_rest(alive)
        return alive

    def _terminate(self, children: Sequence[Child]) -> None:
        for child in children:
            child.stopping = True
            if child.exit_code() is None:
                os.kill(child.pid, signal.SIGTERM)

    def _kill_rest(self, children: Sequence[Child]) -> dict[Child, int]:
        codes = {}
        for child in children:
            if child.exit_code() is None:
                os.kill(child.pid, signal.SIGKILL)
            codes[child] = child.popen.wait()
        return codes


def _parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM --`` on Linux when available, else nothing.

    setpriv sets the signal, then execs the worker in the same process (so the
    pid the demo holds is the worker's). The signal fires when the thread that
    started the child exits: children are started from the demo's main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


def _wait_exit(children: Sequence[Child], timeout_s: float) -> None:
    """Wait until every child has exited, or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while any(c.exit_code() is None for c in children) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
