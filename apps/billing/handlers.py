"""Billing's handlers: charge orders, retry failed payments, open pro accounts."""

from __future__ import annotations

import os

from bus import Event, TaskContext

# Orders above this amount are declined by the (pretend) card processor, which
# makes billing publish a follow-up payment.failed event.
DECLINE_ABOVE_CENTS = 100_000


async def charge_order(event: Event, ctx: TaskContext) -> None:
    """Charge an order; a declined card becomes a payment.failed event."""
    order = event.data
    if order.get("poison") and os.environ.get("BILLING_POISON_FIXED") != "1":
        # The demo's poison message: fails every attempt until the operator
        # "deploys the fix" (sets BILLING_POISON_FIXED=1) and replays it.
        raise ValueError(f"card processor rejected order {order['order_id']}: malformed token")
    if order["amount_cents"] > DECLINE_ABOVE_CENTS:
        await ctx.publish(
            "payment.failed",
            {
                "order_id": order["order_id"],
                "user_id": order["user_id"],
                "amount_cents": order["amount_cents"],
                "reason": "card_declined",
            },
        )
        return
    ctx.log.info("order_charged", order_id=order["order_id"], amount_cents=order["amount_cents"])


async def retry_payment(event: Event, ctx: TaskContext) -> None:
    """Schedule another charge for a payment that may go through later."""
    ctx.log.info("payment_retry_scheduled", order_id=event.data["order_id"])


def open_pro_account(event: Event, ctx: TaskContext) -> None:
    """Open the billing account of a paying user (sync: runs in a thread)."""
    ctx.log.info("pro_account_opened", user_id=event.data["user_id"], plan=event.data["plan"])


async def send_invoice(payload: dict[str, str], ctx: TaskContext) -> None:
    """Send an invoice (a task enqueued by name, not an event)."""
    ctx.log.info("invoice_sent", order_id=payload.get("order_id"))
