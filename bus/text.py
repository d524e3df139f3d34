"""Human-readable output that the terminal cannot be steered by: the one escaping rule.

Everything the CLI prints for a human goes through here. Text the CLI did not
write itself (handler errors, payloads, ids, app names and anything else read
from Redis) may hold control characters: an ESC or a C1 control starts a
terminal escape sequence (retitle the window, clear the screen, fake a line), a
CR or backspace overwrites what was printed, a bidi override reorders it. Such
characters are shown as escapes (``\\x1b``, ``\\r``, ``\\u202e``), as Python's
``repr`` would; ordinary text, accents and emoji included, is left alone.

A backslash is not doubled, so ``\\x1b`` typed into a payload and a real ESC look
alike: ``--json`` output is exact JSON and the way to see the stored bytes.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterable
from typing import TextIO

__all__ = ["emit", "emit_block", "escape", "escape_lines"]

# Unicode categories escaped: controls (C0, DEL, C1), format characters (bidi
# overrides and isolates, zero-width characters, BOM), surrogates (unprintable:
# they would make print() raise), and the line and paragraph separators.
_ESCAPED = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED:
        return char
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(value: object) -> str:
    """Return ``str(value)`` with every control character shown as an escape.

    Newlines are escaped too: use :func:`escape_lines` for multi-line text.
    """
    text = value if isinstance(value, str) else str(value)
    # Almost every string is printable: one C-level scan and no copy.
    if text.isprintable():
        return text
    return "".join(_escape_char(char) for char in text)


def escape_lines(text: str) -> list[str]:
    """Split multi-line text (a traceback, a raw record) on newlines, each line escaped."""
    return [escape(line) for line in text.split("\n")]


def emit(*parts: object, file: TextIO | None = None) -> None:
    """Print one line made of ``parts`` (joined by spaces), escaped.

    The CLI's own text holds no control characters, so escaping the whole line
    escapes exactly what came from elsewhere; a newline inside a value is shown
    as ``\\n`` and cannot start a line that looks like the CLI's.
    """
    print(escape(" ".join(p if isinstance(p, str) else str(p) for p in parts)), file=file)


def emit_block(lines: Iterable[str] | str, indent: str = "", file: TextIO | None = None) -> None:
    """Print multi-line text (or lines) under ``indent``; each line escaped, newlines kept."""
    out = file if file is not None else sys.stdout
    for line in escape_lines(lines) if isinstance(lines, str) else (escape(x) for x in lines):
        print(indent + line, file=out)
