"""Hooks the layers above give the worker (the bus's sweep, recurring chains).

Their errors are logged and never end the worker: a hook is an addition to
the worker's job, not part of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

__all__ = ["Hook", "run_hooks"]

log = structlog.get_logger("bus.worker")

#: A coroutine function the worker calls (with or without arguments).
Hook = Callable[..., Awaitable[object]]


async def run_hooks(app_name: str, failed: str, hooks: Sequence[Hook], *args: Any) -> None:
    """Run ``hooks`` in order with ``args``; log an error as ``failed``, go on."""
    for hook in hooks:
        try:
            await hook(*args)
        except Exception as exc:
            log.error(
                failed,
                app=app_name,
                hook=getattr(hook, "__name__", "?"),
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
