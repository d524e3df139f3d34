"""The one place taskbus reads the clock.

Everything that schedules takes ``now_ms`` as an argument so tests can pass fixed
times; only the outermost callers (the worker loop, the publisher) call these.
"""

from __future__ import annotations

import time

__all__ = ["monotonic_s", "now_ms"]


def now_ms() -> int:
    """Return wall-clock time in whole milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def monotonic_s() -> float:
    """Return a monotonic clock reading in seconds, for measuring durations."""
    return time.monotonic()
