"""Analytics' handlers: count events, report every minute, drop cached queries."""

from __future__ import annotations

from bus import Event, TaskContext


async def count(event: Event, ctx: TaskContext) -> None:
    """Count one event (a real app would write to its warehouse here)."""
    ctx.log.debug("event_counted", type=event.type, correlation_id=event.correlation_id)


async def minute_report(payload: dict[str, int], ctx: TaskContext) -> None:
    """Report the minute that ended at this occurrence's slot (recurring, every minute).

    The payload's ``slot_ms`` is the slot, not the time the run started, so a
    late run still reports the right minute.
    """
    ctx.log.info("minute_report_sent", minute_end_ms=payload["slot_ms"])


#: Report queries this instance has answered, by cache key.
QUERY_CACHE: dict[str, object] = {}


async def drop_cached_queries(event: Event, ctx: TaskContext) -> None:
    """Forget invalidated entries in this instance's query cache (runs on every node)."""
    dropped = [key for key in event.data["keys"] if QUERY_CACHE.pop(key, None) is not None]
    ctx.log.info("cached_queries_dropped", keys=event.data["keys"], dropped=len(dropped))
