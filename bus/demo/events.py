"""The demo's event stream: sign-ups, orders and failed payments, and one poison order.

:func:`plan_events` is pure: the same arguments give the same events at the
same offsets, so the demo and its tests see one fixed story. The mix:

* ``user.signed_up`` with mixed plans (billing opens an account for ``pro`` and
  ``enterprise``) and, for some, a ``referrer`` (analytics counts those twice);
* ``order.placed``, one in five of them above billing's decline threshold, so
  billing publishes a follow-up ``payment.failed``;
* ``payment.failed`` with every reason (email skips ``fraud_suspected``,
  billing retries only ``card_declined`` and ``insufficient_funds``);
* one ``order.placed`` with ``"poison": true`` a quarter of the way in: billing's
  handler fails on it until the fix is deployed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

__all__ = ["LARGE_ORDER_CENTS", "POISON_ORDER_ID", "PlannedEvent", "plan_events"]

#: Orders above this are declined by billing's pretend card processor
#: (``apps/billing/handlers.py``), which publishes a payment.failed for them.
LARGE_ORDER_CENTS = 100_000
#: The order id of the poison order.
POISON_ORDER_ID = "o-poison"

_PLANS = ("free", "free", "free", "pro", "pro", "enterprise")
_COUNTRIES = ("DE", "FR", "GB", "US", "NL", "ES", "SE")
_CURRENCIES = ("EUR", "USD", "GBP")
_REFERRERS = ("newsletter", "partner-blog", "friend")
_REASONS = ("card_declined", "insufficient_funds", "expired_card", "fraud_suspected")
_SKUS = ("book", "mug", "poster", "lamp", "chair")


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One event of the stream and when to publish it.

    Attributes:
        at_s: Seconds after the start of publishing.
        type: The event type.
        payload: The payload (valid against ``schemas/<type>.json``).
        poison: This is the poison order.
    """

    at_s: float
    type: str
    payload: dict[str, Any]
    poison: bool = False


def plan_events(count: int, duration_s: float, *, seed: int = 7) -> list[PlannedEvent]:
    """Plan ``count`` events spread evenly over ``duration_s``, the poison among them.

    Args:
        count: How many events, the poison order included (at least 1).
        duration_s: Publishing time; event ``i`` is due at ``i * duration_s / count``.
        seed: Seed of the choices (plans, amounts, reasons).

    Returns:
        The events in publishing order; exactly one has ``poison`` set.

    Raises:
        ValueError: ``count`` is below 1 or ``duration_s`` is negative.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    rng = random.Random(seed)
    poison_index = count // 4
    users: list[str] = []
    orders = 0
    events: list[PlannedEvent] = []
    for i in range(count):
        at_s = round(i * duration_s / count, 3)
        if i == poison_index:
            user = users[-1] if users else "u-poison"
            events.append(PlannedEvent(at_s, "order.placed", _poison(user), poison=True))
            continue
        roll = rng.random()
        if roll < 0.45 or not users:
            user = f"u{len(users) + 1}"
            users.append(user)
            events.append(PlannedEvent(at_s, "user.signed_up", _signup(rng, user)))
        elif roll < 0.85:
            orders += 1
            # Every fifth order, starting with the second, is declined.
            large = orders % 5 == 2
            payload = _order(rng, f"o{orders}", rng.choice(users), large)
            events.append(PlannedEvent(at_s, "order.placed", payload))
        else:
            events.append(PlannedEvent(at_s, "payment.failed", _failure(rng, users)))
    return events


def _signup(rng: random.Random, user: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "user_id": user,
        "email": f"{user}@example.com",
        "plan": rng.choice(_PLANS),
        "country": rng.choice(_COUNTRIES),
    }
    if rng.random() < 0.3:
        payload["referrer"] = rng.choice(_REFERRERS)
    return payload


def _order(rng: random.Random, order_id: str, user: str, large: bool) -> dict[str, Any]:
    quantity = rng.randint(1, 3)
    if large:
        unit = rng.randint(LARGE_ORDER_CENTS // quantity + 1, 2 * LARGE_ORDER_CENTS)
    else:
        unit = rng.randint(300, 9_000)
    return {
        "order_id": order_id,
        "user_id": user,
        "amount_cents": unit * quantity,
        "currency": rng.choice(_CURRENCIES),
        "items": [{"sku": rng.choice(_SKUS), "quantity": quantity, "unit_price_cents": unit}],
    }


def _poison(user: str) -> dict[str, Any]:
    return {
        "order_id": POISON_ORDER_ID,
        "user_id": user,
        "amount_cents": 4_200,
        "currency": "EUR",
        "items": [{"sku": "book", "quantity": 1, "unit_price_cents": 4_200}],
        "poison": True,
    }


def _failure(rng: random.Random, users: list[str]) -> dict[str, Any]:
    return {
        "order_id": f"o-ext-{rng.randint(1000, 9999)}",
        "user_id": rng.choice(users),
        "amount_cents": rng.randint(500, 50_000),
        "reason": rng.choice(_REASONS),
    }
