"""Logging setup: structlog, configured once by the CLI (or by an embedding app).

JSON lines when the output is not a terminal, readable colour when it is, with
control characters in logged text escaped (:mod:`bus.text`).
Events are snake_case past tense with key/value fields; the worker binds
``app``, ``task_id``, ``event_id`` and ``attempt`` through contextvars. Levels
below the configured one cost one method call (structlog's filtering logger),
which keeps per-task debug lines off the hot path.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from bus.text import escape, escape_lines

__all__ = ["LEVELS", "CurrentStderr", "configure_logging"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or repr).decode()


def _escape_for_terminal(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Show control characters in logged text as escapes (a handler's error message
    may hold a terminal escape sequence); a traceback keeps its lines."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = (
                "\n".join(escape_lines(value)) if key == "exception" else escape(value)
            )
    return event_dict


class CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of each write.

    structlog caches loggers with their output on first use; binding to this
    rather than to the stream object keeps them valid when ``sys.stderr`` is
    replaced (by an embedding program, or by pytest's capture per test).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog for taskbus's processes.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        json: JSON lines if True, console colour if False; by default JSON
            unless the stream is a terminal.
        stream: Where to write (default: standard error).

    Raises:
        ValueError: The level is not one of the four.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    out: Any = stream or CurrentStderr()
    as_json = json if json is not None else not out.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    else:
        # JSON lines escape control characters by themselves; a terminal needs it done.
        processors += [
            structlog.processors.format_exc_info,
            _escape_for_terminal,
            structlog.dev.ConsoleRenderer(colors=True),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
