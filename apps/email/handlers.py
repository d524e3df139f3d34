"""Email's handlers: the welcome mail, the payment-problem mail, the spool cleanup."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bus import Event, TaskContext

#: How old a spooled mail must be before the nightly cleanup deletes it.
SPOOL_MAX_AGE_S = 86_400


async def welcome(event: Event, ctx: TaskContext) -> None:
    """Send the welcome mail of a new user."""
    ctx.log.info("welcome_mail_sent", to=event.data["email"])


async def payment_problem(event: Event, ctx: TaskContext) -> None:
    """Tell a user their payment failed."""
    ctx.log.info(
        "payment_problem_mail_sent", user_id=event.data["user_id"], reason=event.data["reason"]
    )


def clean_spool(payload: dict[str, int], ctx: TaskContext) -> None:
    """Delete this instance's stale spooled mails (every night, on every node).

    Sync, so it runs in the worker's thread pool. The spool is local to the
    host (``EMAIL_SPOOL_DIR``, default a directory in the temp dir), which is
    why the task has scope ``all``: each node cleans its own.
    """
    spool = Path(os.environ.get("EMAIL_SPOOL_DIR") or Path(tempfile.gettempdir()) / "email-spool")
    cutoff = time.time() - SPOOL_MAX_AGE_S
    removed = 0
    for path in spool.glob("*.eml") if spool.is_dir() else ():
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    ctx.log.info("spool_cleaned", queue=ctx.queue, spool=str(spool), removed=removed)
