"""Analytics' handler: counts every user, order and payment event."""

from __future__ import annotations

from bus import Event, TaskContext


async def count(event: Event, ctx: TaskContext) -> None:
    """Count one event (a real app would write to its warehouse here)."""
    ctx.log.debug("event_counted", type=event.type, correlation_id=event.correlation_id)
