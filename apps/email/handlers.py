"""Email's handlers: the welcome mail and the payment-problem mail."""

from __future__ import annotations

from bus import Event, TaskContext


async def welcome(event: Event, ctx: TaskContext) -> None:
    """Send the welcome mail of a new user."""
    ctx.log.info("welcome_mail_sent", to=event.data["email"])


async def payment_problem(event: Event, ctx: TaskContext) -> None:
    """Tell a user their payment failed."""
    ctx.log.info(
        "payment_problem_mail_sent", user_id=event.data["user_id"], reason=event.data["reason"]
    )
