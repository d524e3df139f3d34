"""Command-line interface of taskbus: ``python -m bus COMMAND ...``.

Each command group lives in its own module with a ``register(subparsers)``
function; every leaf command sets ``handler(args, settings) -> int``. This
module builds the parser, reads the settings once, configures logging and maps
taskbus's errors, and redis-py's (through ``bus.store.redis_errors``), to a one-line
message and exit status 2 (bad input or setup) instead of a traceback.

No command sends a Redis command of its own: ``status``, ``task``, ``event``
and ``dead`` call the inspection API (:mod:`bus.inspect`, which a dashboard
shares), ``subscriptions`` the registry (:mod:`bus.events`), ``redis`` the
embedded server (:mod:`bus.local`); the reads under them are
:mod:`bus.store.reads`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from bus.config.settings import Settings
from bus.errors import BusError
from bus.logs import configure_logging
from bus.store.redis_errors import redis_errors
from bus.text import emit_block

__all__ = ["build_parser", "main", "package_version"]

EXIT_USAGE = 2


def package_version() -> str:
    """The installed taskbus's version (package metadata), or why it is unknown."""
    try:
        return metadata.version("taskbus")
    except metadata.PackageNotFoundError:
        return "(unknown: the taskbus package is not installed, only imported from source)"


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every command group registered."""
    from bus.cli import dead_cmd, demo_cmd, publish_cmd, redis_cmd, status_cmd, subscriptions_cmd

    parser = argparse.ArgumentParser(
        prog="python -m bus",
        description=(
            "taskbus: a multi-app event bus on Redis. Settings come from BUS_* environment "
            "variables (see the README's configuration reference). Workers run with "
            "'python -m bus.worker --app NAME'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"taskbus {package_version()}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: BUS_LOG_LEVEL, else info)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    publish_cmd.register(commands)
    subscriptions_cmd.register(commands)
    redis_cmd.register(commands)
    status_cmd.register(commands)
    dead_cmd.register(commands)
    demo_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level or settings.log_level)
    try:
        # The one place a command's Redis trouble (unreachable, login, NOPERM,
        # TLS) becomes one line and exit status 2, whichever command hit it.
        with redis_errors(settings):
            return int(args.handler(args, settings))
    except BusError as exc:
        # Messages quote ids and names read from Redis: escaped, newlines kept.
        emit_block(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
