"""What the operator commands share: time arguments, tables, JSON, the connection.

Used by ``status``, ``task show``, ``event show`` (``status_cmd``) and ``dead``
(``dead_cmd``). Times on the command line are ISO 8601 (``2026-11-28T10:00:00Z``;
no zone means UTC) or an age (``30s``, ``10m``, ``2h``, ``1d``, ``1w``: that
long ago). Human output is a plain table, escaped by :mod:`bus.text`; ``--json``
output is exact JSON, documented in ``docs/operations.md``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import structlog

from bus.config.settings import Settings
from bus.errors import BusError, RedisSetupError
from bus.store.connection import check_server, connect, warn_if_not_persistent
from bus.store.keys import validate_app_name
from bus.store.types import AsyncClient
from bus.text import escape

log = structlog.get_logger("bus.cli")

__all__ = [
    "InputError",
    "app_arg",
    "fmt_age",
    "fmt_time",
    "parse_duration_ms",
    "parse_when_ms",
    "print_json",
    "print_table",
    "with_redis",
]

T = TypeVar("T")

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_TIME_HELP = "an ISO 8601 time such as 2026-11-28T10:00:00Z, or an age such as 30s, 10m, 2h, 1d"


class InputError(BusError):
    """A command-line argument has a value the command cannot use."""


def app_arg(name: str) -> str:
    """Return a valid app name from ``--app``.

    Raises:
        InputError: The name is not a valid app name.
    """
    try:
        return validate_app_name(name)
    except ValueError as exc:
        raise InputError(f"--app: {exc}") from exc


def parse_duration_ms(text: str, option: str) -> int:
    """Parse a duration such as ``45s``, ``5m``, ``2h``, ``1d`` into milliseconds.

    Raises:
        InputError: The text is not a duration; the message names ``option``.
    """
    match = _DURATION_RE.match(text)
    if not match:
        raise InputError(
            f"{option} {text!r} is not a duration: use a number and a unit, e.g. 30s, 10m, 2h, 1d"
        )
    return int(float(match.group(1)) * _UNITS_MS[match.group(2)])


def parse_when_ms(text: str, option: str, now_ms: int) -> int:
    """Parse an ISO 8601 time or an age ("10m" = ten minutes before ``now_ms``).

    Args:
        text: The argument.
        option: The option's name, for the error message.
        now_ms: The current time, which ages count back from.

    Raises:
        InputError: The text is neither.
    """
    if _DURATION_RE.match(text):
        return now_ms - parse_duration_ms(text, option)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{option} {text!r} is not a time: use {_TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def fmt_time(ms: int | None) -> str:
    """Format epoch milliseconds as ISO 8601 UTC (``-`` for None)."""
    if ms is None:
        return "-"
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def fmt_age(ms: int | None) -> str:
    """Format a duration in milliseconds compactly: ``850ms``, ``42s``, ``3m10s``, ``2h5m``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def print_json(doc: Any) -> None:
    """Print a JSON document, indented, keys in the documented order."""
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def print_table(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Print rows as left-aligned columns; the first row is the header.

    Every cell is escaped (:mod:`bus.text`) before the widths are measured.
    """
    if not rows:
        return
    rows = [[escape(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print((indent + "  ".join(cells)).rstrip())


async def _warn_if_unsafe(client: AsyncClient, settings: Settings) -> None:
    # Operator commands warn rather than refuse: on a server that evicts keys
    # or keeps nothing, looking (status, dead list) is exactly what is needed.
    try:
        info = await check_server(client, embedded=settings.redis_url is None)
    except RedisSetupError as exc:
        log.warning("redis_unsafe", detail=str(exc))
        return
    warn_if_not_persistent(info)


def with_redis(settings: Settings, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Connect, run ``work(client)`` in a fresh event loop, close the client.

    ``work`` reads and acts through :mod:`bus.inspect` (or the store's
    functions), never with commands of its own. The store's errors
    (:data:`bus.store.types.STORE_ERRORS`) propagate as raised;
    :func:`bus.cli.main` turns them into one line and exit status 2
    (:mod:`bus.store.redis_errors`).
    """

    async def go() -> T:
        client = await connect(settings)
        try:
            await _warn_if_unsafe(client, settings)
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())
