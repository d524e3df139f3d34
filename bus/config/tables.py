"""Strict reading of TOML tables: typed keys, unknown keys refused, 64-bit integers.

This module owns how a config file's tables are read: :class:`Table` gives
typed access to one table and :meth:`Table.done` rejects keys nobody read (a
setting is never silently ignored); :func:`check_integers` refuses integers
outside TOML's 64-bit range, which :mod:`tomllib` accepts at any size. Every
error is a :class:`~bus.errors.ConfigError` naming the file and the table.
:mod:`bus.config.apptoml` reads ``app.toml`` with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bus.errors import ConfigError

__all__ = ["Table", "check_integers"]

_TOML_INT_MIN, _TOML_INT_MAX = -(2**63), 2**63 - 1  # TOML's integers; tomllib takes any size

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


class Table:
    """Strict, typed access to one TOML table; :meth:`done` rejects unread keys."""

    def __init__(self, data: Mapping[str, Any], where: str, file: Path) -> None:
        self.data, self.where, self.file = data, where, file
        self.read: set[str] = set()

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}: {message}")

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
        """Return the value of ``key`` (``default`` if absent) after a type check."""
        self.read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python, never in TOML.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise self.error(f"{key!r} must be {expected}, got {value!r}")
        return value

    def require(self, key: str, kinds: tuple[type, ...]) -> Any:
        """Like :meth:`get`, for a key that must be present."""
        if key not in self.data:
            raise self.error(f"missing required key {key!r}")
        return self.get(key, kinds)

    def done(self, hint: Mapping[str, str] | None = None) -> None:
        """Raise if the table has keys nobody read, naming the first one."""
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            why = (hint or {}).get(unknown[0], "")
            raise self.error(f"unknown key {unknown[0]!r}{why}")


def check_integers(file: Path, value: Any, where: str) -> None:
    """Refuse integers outside TOML's 64-bit range, naming their key."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_integers(file, item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_integers(file, item, f"{where}[{index}]")
    elif isinstance(value, int) and not _TOML_INT_MIN <= value <= _TOML_INT_MAX:
        digits = str(value) if len(str(value)) <= 30 else f"of {len(str(value))} digits"
        raise ConfigError(
            f"{file}: {where}: the integer {digits} is outside TOML's 64-bit range "
            f"({_TOML_INT_MIN} to {_TOML_INT_MAX})"
        )
