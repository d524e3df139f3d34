"""The compiled fast path of validation gives the same verdicts as jsonschema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.events.schemas import PayloadInvalid, SchemaRegistry

REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
REGISTRY = SchemaRegistry.load(REPO_SCHEMAS)

# Values that sit on both sides of the schemas' rules: formats, enums, patterns,
# bounds, types.
PLAUSIBLE = st.one_of(
    st.sampled_from(
        [
            "ada@example.com",
            "not-an-email",
            "a@b",
            "DE",
            "de",
            "Germany",
            "pro",
            "gold",
            "free",
            "EUR",
            "XXX",
            "card_declined",
            "hourly",
            "2026-11-28T10:00:00Z",
            "2026-11-28T25:00:00Z",
            "2026-02-30T10:00:00+01:00",
            "2026-11-28",
            "123e4567-e89b-12d3-a456-426614174000",
            "123e4567",
            "",
            "o1",
            "u1",
        ]
    ),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)


VALID: dict[str, dict[str, Any]] = {
    "user.signed_up": {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"},
    "order.placed": {
        "order_id": "o1",
        "user_id": "u1",
        "amount_cents": 5,
        "currency": "EUR",
        "items": [{"sku": "b", "quantity": 1}],
    },
    "payment.failed": {
        "order_id": "o1",
        "user_id": "u1",
        "amount_cents": 5,
        "reason": "card_declined",
    },
    "cache.invalidated": {"keys": ["a", "b"]},
    "report.generated": {
        "report_id": "123e4567-e89b-12d3-a456-426614174000",
        "kind": "hourly",
        "period_start": "2026-11-28T10:00:00Z",
        "period_end": "2026-11-28T11:00:00Z",
        "counts": {"x": 1},
    },
}


@st.composite
def payloads(draw: st.DrawFn, event_type: str) -> Any:
    """A valid payload with zero to three fields replaced, removed or added."""
    payload = dict(VALID[event_type])
    names = [*payload, "extra"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(names))
        if draw(st.booleans()) or name not in payload:
            payload[name] = draw(
                st.one_of(
                    PLAUSIBLE,
                    st.lists(PLAUSIBLE, max_size=2),
                    st.dictionaries(st.sampled_from(["sku", "quantity"]), PLAUSIBLE, max_size=2),
                )
            )
        else:
            del payload[name]
    return payload


@pytest.mark.parametrize("event_type", REGISTRY.types)
def test_every_repository_schema_has_a_fast_path(event_type: str) -> None:
    """Each example schema compiles with the fast validator."""
    assert REGISTRY._entries[event_type].fast is not None


@pytest.mark.parametrize("event_type", REGISTRY.types)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_and_full_validators_agree(event_type: str, data: st.DataObject) -> None:
    """For any payload the compiled and the pure-Python validator give one verdict."""
    payload = data.draw(payloads(event_type))
    entry = REGISTRY._entries[event_type]
    assert entry.fast.is_valid(payload) == entry.validator.is_valid(payload), payload


def test_an_invalid_payload_still_lists_every_violation() -> None:
    """A rejection by the fast path still reports each violation with its path."""
    with pytest.raises(PayloadInvalid) as caught:
        REGISTRY.validate("user.signed_up", {"email": "nope", "plan": "gold"})
    assert len(caught.value.violations) >= 4
