"""The default Bus behind ``bus.publish(...)``: built lazily, resettable.

``import bus; bus.publish("user.signed_up", payload)`` uses a :class:`Bus`
built from the environment on the first call, never at import time. Tests (and
programs that change their environment) call :func:`reset` to drop it.
"""

from __future__ import annotations

import threading
from typing import Any

from bus.client import Bus

__all__ = ["apublish", "get_default", "publish", "reset"]

_lock = threading.Lock()
_default: Bus | None = None


def get_default() -> Bus:
    """Return the default Bus, building it from the environment on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Bus()
        return _default


def reset() -> None:
    """Close and forget the default Bus; the next call builds a new one."""
    global _default
    with _lock:
        bus, _default = _default, None
    if bus is not None:
        bus.close_sync()


def publish(event_type: str, payload: Any, **kwargs: Any) -> str:
    """Publish an event through the default Bus (see :meth:`bus.Bus.publish`).

    Returns:
        The event key, once the event is durably recorded.

    Raises:
        bus.errors.RedisUnavailable: Redis cannot be reached or used (the
            redis-py error chained); see :mod:`bus.errors` for the family.
    """
    return get_default().publish(event_type, payload, **kwargs)


async def apublish(event_type: str, payload: Any, **kwargs: Any) -> str:
    """Async :func:`publish`. The default Bus's asyncio client belongs to the
    event loop that first used it; programs with several loops should build
    their own :class:`bus.Bus`."""
    return await get_default().apublish(event_type, payload, **kwargs)
