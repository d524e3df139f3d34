"""Bad input is refused whole: a clear, specific error, and Redis exactly as it was.

Property tests drive every publish path (``Bus.publish``, ``Bus.apublish``,
``publish_many``, ``apublish_many`` with the event in the middle of a batch, and
the module-level ``bus.default.publish``) with payloads, types and attributes on both
sides of the rules. A valid event is returned, recorded and routed; anything
else raises the documented :class:`bus.events.schemas.SchemaError` subclass naming
what was wrong, and a dump of every key (type, DUMP bytes, expiry) taken before
equals the one taken after.

The other tests are the malformed inputs (app configs, schemas, CLI arguments)
that ``test_config.py``, ``test_schemas.py``, ``test_bus.py`` and
``test_cli_bus.py`` do not already cover.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import itertools
import os
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import orjson
import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

import bus
from bus import Bus, EventSpec, Settings, default
from bus.cli import main
from bus.config.apptoml import load_app_config
from bus.errors import ConfigError
from bus.events.envelope import InvalidEventAttribute
from bus.events.payload import PayloadNotSerializable, PayloadTooLarge
from bus.events.registry import SubscriptionSpec
from bus.events.registry_sync import sync_subscriptions
from bus.events.schemas import (
    PayloadInvalid,
    SchemaError,
    SchemaRegistry,
    UnknownEventType,
)
from bus.store import keys
from bus.store.keys import AppKeys, BusKeys
from tests.test_cli_ops import cli_env, on_redis
from tests.test_schemas import JSON_VALUES, NEAR_JSON_VALUES, same_json

__all__ = ["cli_env"]

E = TypeVar("E", bound=SchemaError)

REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
KNOWN_TYPES = frozenset(SchemaRegistry.load(REPO_SCHEMAS).types)
LIMIT = 4096  # BUS_MAX_PAYLOAD_BYTES of every Bus here: big payloads stay cheap
SOURCE = "tests"
HOST = os.uname().nodename  # the default Bus's source
KEYS = BusKeys("bus")
AUDIT = AppKeys("bus", "audit")  # an app subscribed to every event ("*")

PATHS = ("sync", "async", "batch", "async_batch", "default")
BATCH_PATHS = ("batch", "async_batch")
SOURCE_PATHS = ("sync", "async", "default")  # a batch takes no per-event source

# The documented rules, written out independently of bus/.
ID_RULE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
TYPE_RULE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

USER = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}
ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}

PROPERTY_SETTINGS = hypothesis.settings(
    max_examples=20,
    deadline=None,  # Redis round trips; a slow CI box is no failure
    # One harness (server, clients, loop) serves every example: each check is
    # relative to a dump taken just before the call, so examples may share it.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the whole of Redis, before and after -----------------------------------------------------

Dump = dict[bytes, tuple[bytes, bytes, int]]


def dump_all(client: redis.Redis) -> Dump:
    """Every key (SCAN): its TYPE, its DUMP bytes and its PTTL (-1: no expiry)."""
    keys = sorted(client.scan_iter(count=1000))
    with client.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.type(key)
            pipe.dump(key)
            pipe.pttl(key)
        replies = pipe.execute()
    return {
        key: (replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]) for i, key in enumerate(keys)
    }


def assert_unchanged(before: Dump, after: Dump) -> None:
    """Same keys, types and serialised values; no expiry added, dropped or refreshed."""
    assert sorted(after) == sorted(before)
    for key, (kind, value, pttl) in before.items():
        kind_after, value_after, pttl_after = after[key]
        assert (kind_after, value_after) == (kind, value), key
        assert (pttl_after == -1) == (pttl == -1), key
        assert pttl_after <= pttl, key  # a TTL only runs down unless something wrote


# -- the harness: every publish path on one private server ------------------------------------


@dataclass
class Harness:
    """Publishes through each path and checks what a publish left in Redis."""

    client: redis.Redis
    aclient: redis.asyncio.Redis
    runner: asyncio.Runner
    sync_bus: Bus
    async_bus: Bus
    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    companions: list[str] = field(default_factory=list)
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def publish(
        self,
        path: str,
        event_type: Any,
        payload: Any,
        *,
        id: Any = None,
        source: Any = None,
        correlation_id: Any = None,
    ) -> str:
        """Publish one event by ``path``; in a batch it is the middle one of three."""
        self.companions = []
        if path == "sync":
            return self.sync_bus.publish(
                event_type, payload, id=id, source=source, correlation_id=correlation_id
            )
        if path == "async":
            return self.runner.run(
                self.async_bus.apublish(
                    event_type, payload, id=id, source=source, correlation_id=correlation_id
                )
            )
        if path == "default":
            # bus.default.publish, which `import bus; bus.publish(...)` is meant to
            # reach (see test_bus_publish_is_the_default_publish_function).
            return default.publish(
                event_type, payload, id=id, source=source, correlation_id=correlation_id
            )
        assert path in BATCH_PATHS
        assert source is None
        batch = [
            EventSpec("user.signed_up", {**USER, "user_id": f"before{next(self._numbers)}"}),
            EventSpec(event_type, payload, id=id, correlation_id=correlation_id),
            EventSpec("order.placed", {**ORDER, "order_id": f"after{next(self._numbers)}"}),
        ]
        if path == "batch":
            keys = self.sync_bus.publish_many(batch)
        else:
            keys = self.runner.run(self.async_bus.apublish_many(batch))
        assert len(keys) == 3
        self.companions = [keys[0], keys[2]]
        return keys[1]

    def attempt(self, path: str, event_type: Any, payload: Any, **attrs: Any) -> str | SchemaError:
        """Publish; return the key (checked as recorded) or the error (checked as harmless)."""
        before = dump_all(self.client)
        try:
            key = self.publish(path, event_type, payload, **attrs)
        except SchemaError as exc:
            assert_unchanged(before, dump_all(self.client))
            if path in BATCH_PATHS:
                notes = getattr(exc, "__notes__", [])
                assert "in event #1 of a batch of 3; none was published" in notes
            return exc
        self.check_recorded(path, key, event_type, payload, **attrs)
        return key

    def check_recorded(
        self,
        path: str,
        key: str,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """The event is in the log with its payload and attributes, and routed."""
        for other in self.companions:
            assert self.client.hexists(AUDIT.state, f"{other}.every")
        source = source or (HOST if path == "default" else SOURCE)
        if id is not None:
            first = self.seen.get((source, id))
            if first is not None:
                assert key == first  # a repeated source + id: the first event's key
                return
            self.seen[(source, id)] = key
        raw = self.client.hget(KEYS.events, key)
        assert raw is not None
        doc = orjson.loads(raw)
        assert (doc["buskey"], doc["type"], doc["source"]) == (key, event_type, source)
        assert doc["id"] == (id if id is not None else key)
        assert doc.get("correlationid") == correlation_id
        assert same_json(doc["data"], payload)
        assert self.client.zscore(KEYS.pending, key) is None
        assert self.client.hexists(AUDIT.state, f"{key}.every")


@pytest.fixture
def harness(cli_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """Every publish path on the private server, with events and tasks already in it."""
    assert cli_env.redis_url is not None
    monkeypatch.setenv("BUS_MAX_PAYLOAD_BYTES", str(LIMIT))
    default.reset()
    settings = cli_env.replace(max_payload_bytes=LIMIT)
    client = redis.Redis.from_url(cli_env.redis_url)
    aclient = redis.asyncio.Redis.from_url(cli_env.redis_url)
    runner = asyncio.Runner()
    try:
        audit = SubscriptionSpec(app="audit", name="every", events=("*",))
        runner.run(sync_subscriptions(aclient, KEYS, "audit", [audit], allow_removal=True))
        h = Harness(
            client,
            aclient,
            runner,
            Bus(settings, sync_redis=client, source=SOURCE),
            Bus(settings, redis=aclient, source=SOURCE),
        )
        # Something of every kind to leave untouched: events, tasks, a dedup entry.
        h.seen[(SOURCE, "seed")] = h.publish("sync", "user.signed_up", USER, id="seed")
        h.publish("batch", "order.placed", ORDER)
        client.set("other:expiring", b"x", px=3_600_000)  # so expiries are compared too
        kinds = {kind for kind, _, _ in dump_all(client).values()}
        assert kinds >= {b"hash", b"zset", b"list", b"set", b"string"}
        yield h
    finally:
        default.reset()
        runner.run(aclient.aclose())
        runner.close()
        client.close()


# -- strategies -------------------------------------------------------------------------------

Expected = list[tuple[str, str]]  # (JSON path, fragment of its violation message)

TEXT = st.text(max_size=20)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
NOT_STRINGS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(min_value=0, max_value=9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(min_value=0, max_value=9), max_size=2),
)
RFC3339 = st.datetimes(timezones=st.just(datetime.UTC)).map(
    lambda moment: moment.isoformat().replace("+00:00", "Z")
)

VALID_USER = st.fixed_dictionaries(
    {
        "user_id": st.text(min_size=1, max_size=64),
        "email": st.builds(lambda local, domain: f"{local}@{domain}", TEXT, TEXT),
        "plan": st.sampled_from(["free", "pro", "enterprise"]),
        "country": st.from_regex(r"[A-Z]{2}", fullmatch=True),
    },
    optional={"signed_up_at": RFC3339, "referrer": st.text(min_size=1, max_size=200)},
)
VALID_ITEM = st.fixed_dictionaries(
    {
        "sku": st.text(min_size=1, max_size=20),
        "quantity": st.integers(min_value=1, max_value=2**63 - 1),
    },
    optional={"unit_price_cents": st.integers(min_value=0, max_value=2**63 - 1)},
)
VALID_ORDER = st.fixed_dictionaries(
    {
        "order_id": st.text(min_size=1, max_size=64),
        "user_id": st.text(min_size=1, max_size=64),
        "amount_cents": st.integers(min_value=0, max_value=2**64 - 1),
        "currency": st.sampled_from(["EUR", "USD", "GBP"]),
        "items": st.lists(VALID_ITEM, min_size=1, max_size=3).map(
            lambda items: items if len(items) != 2 else tuple(items)  # a tuple is an array
        ),
    },
    optional={"placed_at": RFC3339, "poison": st.booleans()},
)
VALID_EVENTS = st.one_of(
    VALID_USER.map(lambda p: ("user.signed_up", p)),
    VALID_ORDER.map(lambda p: ("order.placed", p)),
)

USER_PROPERTIES = {"user_id", "email", "plan", "country", "signed_up_at", "referrer"}
ITEM_PROPERTIES = {"sku", "quantity", "unit_price_cents"}
BAD_COUNTRIES = st.one_of(
    st.sampled_from(["DE\n", "\nDE", "de", "D", "DEU", "D E", "١٢", "\uff24\uff25"]),
    st.text(max_size=4),
).filter(lambda text: re.fullmatch(r"[A-Z]{2}", text) is None)
BAD_DATE_TIMES = st.sampled_from(
    [
        "2024-13-01T00:00:00Z",
        "2023-02-29T12:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00Z\n",
        "2024-01-01 00:00:00Z",
        "yesterday",
        "",
    ]
)


@st.composite
def user_one_mistake(draw: st.DrawFn) -> tuple[str, dict[str, Any], Expected]:
    """A valid user.signed_up payload with one mistake, and the violations it gives."""
    payload: dict[str, Any] = dict(draw(VALID_USER))
    kind = draw(
        st.sampled_from(
            ["type", "enum", "missing", "extra", "email", "country", "short", "long", "date"]
        )
    )
    expected: Expected
    if kind == "type":
        name = draw(st.sampled_from(["user_id", "email", "country", "signed_up_at", "referrer"]))
        payload[name] = draw(NOT_STRINGS)
        expected = [(f"$.{name}", "is not of type 'string'")]
    elif kind == "enum":
        payload["plan"] = draw(
            JSON_SCALARS.filter(lambda v: v not in ("free", "pro", "enterprise"))
        )
        expected = [("$.plan", "is not one of ['free', 'pro', 'enterprise']")]
    elif kind == "missing":
        dropped = draw(
            st.sets(st.sampled_from(["user_id", "email", "plan", "country"]), min_size=1)
        )
        for name in dropped:
            del payload[name]
        expected = [("$", f"{name!r} is a required property") for name in dropped]
    elif kind == "extra":
        extra = draw(st.text(max_size=10).filter(lambda k: k not in USER_PROPERTIES))
        payload[extra] = draw(JSON_SCALARS)
        expected = [("$", f"Additional properties are not allowed ({extra!r} was unexpected)")]
    elif kind == "email":
        payload["email"] = draw(st.text(max_size=30).filter(lambda text: "@" not in text))
        expected = [("$.email", "is not a 'email'")]
    elif kind == "country":
        payload["country"] = draw(BAD_COUNTRIES)
        expected = [("$.country", "does not match '^[A-Z]{2}$'")]
    elif kind == "short":
        payload["user_id"] = ""
        expected = [("$.user_id", "should be non-empty")]
    elif kind == "long":
        payload["user_id"] = draw(st.text(min_size=65, max_size=300))
        expected = [("$.user_id", "is too long")]
    else:
        payload["signed_up_at"] = draw(BAD_DATE_TIMES)
        expected = [("$.signed_up_at", "is not a 'date-time'")]
    return "user.signed_up", payload, expected


@st.composite
def order_one_mistake(draw: st.DrawFn) -> tuple[str, dict[str, Any], Expected]:
    """A valid order.placed payload with one mistake, and the violations it gives."""
    payload: dict[str, Any] = dict(draw(VALID_ORDER))
    items = [dict(item) for item in payload["items"]]
    payload["items"] = items
    i = draw(st.integers(min_value=0, max_value=len(items) - 1))
    kind = draw(
        st.sampled_from(["quantity", "amount", "integer", "empty", "item_extra", "sku", "currency"])
    )
    expected: Expected
    if kind == "quantity":
        items[i]["quantity"] = draw(st.integers(min_value=-(2**63), max_value=0))
        expected = [(f"$.items[{i}].quantity", "is less than the minimum of 1")]
    elif kind == "amount":
        payload["amount_cents"] = draw(st.integers(min_value=-(2**63), max_value=-1))
        expected = [("$.amount_cents", "is less than the minimum of 0")]
    elif kind == "integer":
        payload["amount_cents"] = draw(
            st.one_of(
                st.booleans(),
                TEXT,
                st.floats(min_value=0, max_value=1e9).filter(lambda x: not x.is_integer()),
            )
        )
        expected = [("$.amount_cents", "is not of type 'integer'")]
    elif kind == "empty":
        payload["items"] = []
        expected = [("$.items", "should be non-empty")]
    elif kind == "item_extra":
        extra = draw(st.text(max_size=10).filter(lambda k: k not in ITEM_PROPERTIES))
        items[i][extra] = draw(JSON_SCALARS)
        expected = [(f"$.items[{i}]", f"({extra!r} was unexpected)")]
    elif kind == "sku":
        del items[i]["sku"]
        expected = [(f"$.items[{i}]", "'sku' is a required property")]
    else:
        payload["currency"] = draw(TEXT.filter(lambda c: c not in ("EUR", "USD", "GBP")))
        expected = [("$.currency", "is not one of ['EUR', 'USD', 'GBP']")]
    return "order.placed", payload, expected


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _cycle() -> Any:
    loop: list[Any] = []
    loop.append(loop)
    return loop


class Opaque:
    """An arbitrary object: no JSON form."""


# (value, where in the value the walk stops, fragment of the problem). A
# ``None`` stop means "somewhere below the value" (deep nesting, cycles).
POISONS: list[tuple[Any, str | None, str]] = [
    (float("nan"), "", "is nan (JSON has no NaN or infinity)"),
    (float("inf"), "", "is inf"),
    (float("-inf"), "", "is -inf"),
    ({"a", "b"}, "", "is a set"),
    (frozenset(), "", "is a frozenset"),
    (b"bytes", "", "is a bytes"),
    (bytearray(b"x"), "", "is a bytearray"),
    (Opaque(), "", "is a Opaque"),
    (decimal.Decimal("1.10"), "", "is a Decimal"),
    (datetime.datetime(2024, 1, 1), "", "is a datetime"),
    ({1: "one"}, "", "has a key 1 of type int; keys must be str"),
    ({None: "none"}, "", "has a key None of type NoneType"),
    ([1, {("a",): 2}], "[1]", "has a key ('a',) of type tuple"),
    (2**64, "", "is an integer outside the 64-bit range"),
    (-(2**63) - 1, "", "is an integer outside the 64-bit range"),
    ([0, 10**30], "[1]", "is an integer outside the 64-bit range"),
    ("lone \ud800 surrogate", "", "is a string with lone surrogates"),
    (_deep(300), None, "is nested deeper than 254 levels"),
    (_cycle(), None, "part of a cycle"),
]
# Where a poison goes in a valid payload, and that spot's JSON path.
SPOTS = [
    ("user.signed_up", ("user_id",), "$.user_id"),
    ("user.signed_up", ("referrer",), "$.referrer"),
    ("user.signed_up", ("not an identifier",), "$['not an identifier']"),
    ("order.placed", ("items", 0, "sku"), "$.items[0].sku"),
    ("order.placed", ("items", 0), "$.items[0]"),
]


def _put(payload: Any, spot: tuple[Any, ...], value: Any) -> None:
    target = payload
    for step in spot[:-1]:
        target = target[step]
    target[spot[-1]] = value


# -- properties: every publish path -----------------------------------------------------------


def refused(kind: type[E], outcome: str | SchemaError) -> E:
    """The outcome is an error of ``kind`` (a SchemaError, as Bus.publish documents)."""
    assert isinstance(outcome, kind), f"expected {kind.__name__}, got {outcome!r}"
    return outcome


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(event=VALID_EVENTS)
def test_valid_events_are_accepted_recorded_and_routed(
    harness: Harness, path: str, event: tuple[str, Any]
) -> None:
    """Any payload valid for its schema returns a key; the log holds it exactly."""
    event_type, payload = event
    outcome = harness.attempt(path, event_type, payload)
    assert isinstance(outcome, str), outcome


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(case=st.one_of(user_one_mistake(), order_one_mistake()))
def test_one_mistake_in_a_valid_payload_is_refused_naming_its_path(
    harness: Harness, path: str, case: tuple[str, Any, Expected]
) -> None:
    """A wrong type, missing or extra field, bad format or pattern: PayloadInvalid at that path."""
    event_type, payload, expected = case
    exc = refused(PayloadInvalid, harness.attempt(path, event_type, payload))
    assert exc.event_type == event_type
    assert len(exc.violations) == len(expected), exc.violations
    for where, fragment in expected:
        assert any(v.startswith(f"{where}: ") and fragment in v for v in exc.violations), (
            where,
            fragment,
            exc.violations,
        )
    assert all(f"  - {v}" in str(exc) for v in exc.violations)
    assert f"payload of {event_type!r} violates its schema" in str(exc)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(payload=JSON_VALUES)
def test_arbitrary_json_is_refused_with_the_root_problem(
    harness: Harness, path: str, payload: Any
) -> None:
    """Random JSON is no user.signed_up: not an object, or 'country' (never drawn) is missing."""
    exc = refused(PayloadInvalid, harness.attempt(path, "user.signed_up", payload))
    if isinstance(payload, dict):
        assert "$: 'country' is a required property" in exc.violations
    else:
        assert len(exc.violations) == 1
        assert exc.violations[0].startswith("$: ")
        assert exc.violations[0].endswith("is not of type 'object'")


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(payload=NEAR_JSON_VALUES, event_type=st.sampled_from(sorted(KNOWN_TYPES)))
def test_anything_json_like_is_published_or_refused_without_a_trace(
    harness: Harness, path: str, payload: Any, event_type: str
) -> None:
    """Whatever the payload: a recorded event, or a payload error and Redis untouched."""
    outcome = harness.attempt(path, event_type, payload)
    if not isinstance(outcome, str):
        assert isinstance(outcome, PayloadInvalid | PayloadNotSerializable | PayloadTooLarge)
        if isinstance(outcome, PayloadNotSerializable):
            assert outcome.path.startswith("$")
            assert f"not JSON-serialisable: {outcome.path} " in str(outcome)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(
    poison=st.sampled_from(POISONS),
    spot=st.sampled_from(SPOTS),
    user=VALID_USER,
    order=VALID_ORDER,
)
def test_a_value_json_cannot_carry_is_refused_with_its_path(
    harness: Harness,
    path: str,
    poison: tuple[Any, str | None, str],
    spot: tuple[str, tuple[Any, ...], str],
    user: dict[str, Any],
    order: dict[str, Any],
) -> None:
    """NaN, sets, bytes, objects, bad keys, huge ints, surrogates, deep nesting: named by path."""
    value, stop, fragment = poison
    event_type, where, spot_path = spot
    payload: Any = dict(user) if event_type == "user.signed_up" else dict(order)
    if event_type == "order.placed":
        payload["items"] = [dict(item) for item in payload["items"]]
    _put(payload, where, value)
    exc = refused(PayloadNotSerializable, harness.attempt(path, event_type, payload))
    if stop is None:
        assert exc.path.startswith(spot_path)
    else:
        assert exc.path == spot_path + stop
    assert f"the payload is not JSON-serialisable: {exc.path} " in str(exc)
    assert fragment in str(exc)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(
    order=VALID_ORDER,
    extra_items=st.integers(min_value=1, max_value=400),
    sku=st.text(min_size=1, max_size=40),
)
def test_a_payload_over_the_limit_is_refused_with_both_sizes(
    harness: Harness, path: str, order: dict[str, Any], extra_items: int, sku: str
) -> None:
    """Over BUS_MAX_PAYLOAD_BYTES: PayloadTooLarge with the encoded size; under it: accepted."""
    payload = {**order, "items": [*order["items"], *[{"sku": sku, "quantity": 1}] * extra_items]}
    size = len(orjson.dumps(payload))
    outcome = harness.attempt(path, "order.placed", payload)
    if size <= LIMIT:
        assert isinstance(outcome, str), outcome
        return
    exc = refused(PayloadTooLarge, outcome)
    assert (exc.size, exc.limit) == (size, LIMIT)
    assert f"is {size} bytes encoded, over the limit of {LIMIT}" in str(exc)
    assert "BUS_MAX_PAYLOAD_BYTES" in str(exc)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(chunk=st.text(min_size=1, max_size=8), extra=st.integers(min_value=0, max_value=50))
def test_size_is_checked_before_the_schema(
    harness: Harness, path: str, chunk: str, extra: int
) -> None:
    """A huge string breaks both the limit and maxLength; the limit is what is reported."""
    payload = {**USER, "user_id": chunk * (LIMIT + extra)}
    exc = refused(PayloadTooLarge, harness.attempt(path, "user.signed_up", payload))
    assert exc.size == len(orjson.dumps(payload)) > LIMIT


EVENT_TYPE_NAMES = st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}", fullmatch=True)
MALFORMED_TYPE_NAMES = st.one_of(
    st.sampled_from(["", "User.Signed_Up", "user..signed_up", "user.signed_up\n", "user.*", "*"]),
    st.sampled_from([".user", "user.", "user signed up", "a" * 201, "user/signed_up"]),
    st.text(max_size=20),
).filter(lambda name: TYPE_RULE.fullmatch(name) is None or len(name) > 200)
NOT_STR_TYPES = st.one_of(
    st.none(),
    st.integers(),
    st.binary(max_size=20),
    st.lists(st.sampled_from(sorted(KNOWN_TYPES)), max_size=2),
)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(name=st.one_of(EVENT_TYPE_NAMES, MALFORMED_TYPE_NAMES, NOT_STR_TYPES))
def test_an_unknown_event_type_is_refused_and_named(harness: Harness, path: str, name: Any) -> None:
    """No schema, malformed name or not a str at all: UnknownEventType naming it."""
    hypothesis.assume(not (isinstance(name, str) and name in KNOWN_TYPES))
    exc = refused(UnknownEventType, harness.attempt(path, name, USER))
    message = str(exc)
    assert message.startswith(f"unknown event type {name!r}: ")
    assert set(exc.close_matches) <= KNOWN_TYPES
    if not isinstance(name, str):
        assert f"an event type is a str such as 'user.signed_up', not a {type(name).__name__}" in (
            message
        )
    else:
        assert f"there is no schema {name}.json in {REPO_SCHEMAS}" in message
        well_formed = TYPE_RULE.fullmatch(name) is not None and len(name) <= 200
        assert ("nor is it a valid event type name" in message) == (not well_formed)


BAD_IDS = st.one_of(
    st.sampled_from(["", "a b", "x" * 129, "abc\n", "\nabc", "é", "a\x1fb", "tab\t", "a#b"]),
    st.text(max_size=140),
    st.integers(),
    st.just(b"bytes-id"),
).filter(lambda value: not isinstance(value, str) or ID_RULE.fullmatch(value) is None)
BAD_SOURCES = st.one_of(
    st.sampled_from(["", "x" * 257, "line\nbreak", "a\x1fb", "tab\t", "\x00", "a\ud800"]),
    st.integers(),
    st.text(max_size=10).map(lambda text: text + "\n"),
)
GOOD_IDS = st.from_regex(ID_RULE, fullmatch=True)
GOOD_SOURCES = st.text(
    st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"]),
    min_size=1,
    max_size=256,
).filter(str.isprintable)


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(value=BAD_IDS, attribute=st.sampled_from(["id", "correlation_id"]))
def test_a_bad_id_or_correlation_id_is_refused_naming_which(
    harness: Harness, path: str, value: Any, attribute: str
) -> None:
    """An id or correlation id outside 1-128 of [A-Za-z0-9._:@/+=-] is named with its value."""
    outcome = harness.attempt(path, "user.signed_up", USER, **{attribute: value})
    exc = refused(InvalidEventAttribute, outcome)
    assert isinstance(exc, ValueError)
    assert exc.attribute == attribute
    what = "event id" if attribute == "id" else "correlation id"
    assert str(exc).startswith(f"invalid {what} {value!r}: use 1-128 characters")


@pytest.mark.parametrize("path", SOURCE_PATHS)
@PROPERTY_SETTINGS
@given(value=BAD_SOURCES)
def test_a_bad_source_is_refused_with_its_value(harness: Harness, path: str, value: Any) -> None:
    """A source that is empty, over 256 characters or not printable is named with its value."""
    exc = refused(
        InvalidEventAttribute, harness.attempt(path, "user.signed_up", USER, source=value)
    )
    assert exc.attribute == "source"
    assert str(exc) == f"invalid event source {value!r}: use 1-256 printable characters"


@pytest.mark.parametrize("path", PATHS)
@PROPERTY_SETTINGS
@given(
    event_id=st.one_of(st.none(), GOOD_IDS, st.sampled_from(["seed", "dup-1", "dup-1"])),
    correlation_id=st.one_of(st.none(), GOOD_IDS),
    source=st.one_of(st.none(), GOOD_SOURCES),
)
def test_valid_attributes_are_carried_by_the_envelope(
    harness: Harness,
    path: str,
    event_id: str | None,
    correlation_id: str | None,
    source: str | None,
) -> None:
    """Valid id, correlation id and source are recorded; a repeated source + id: the first key."""
    if path not in SOURCE_PATHS:
        source = None
    outcome = harness.attempt(
        path, "user.signed_up", USER, id=event_id, correlation_id=correlation_id, source=source
    )
    assert isinstance(outcome, str), outcome


# -- the fixes these properties found -----------------------------------------------------------


def write_schema(directory: Path, name: str, doc: dict[str, Any]) -> None:
    """Write one schema file with $id and version filled in."""
    full = {"$id": f"urn:test:{name}", "version": 1, **doc}
    (directory / f"{name}.json").write_bytes(orjson.dumps(full))


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("^[A-Z]{2}$", "DE\n"),  # Python's '$' matches before a final newline
        (r"^\d+$", "١٢"),  # Python's \d matches Arabic-Indic digits
        (r"^\w+$", "é"),  # Python's \w matches any letter
    ],
)
def test_patterns_follow_ecma_262_in_both_validators(
    tmp_path: Path, pattern: str, value: str
) -> None:
    """A value only Python's re would match is refused, with the pattern in the message."""
    write_schema(tmp_path, "thing.happened", {"properties": {"v": {"pattern": pattern}}})
    registry = SchemaRegistry.load(tmp_path)
    with pytest.raises(PayloadInvalid) as caught:
        registry.validate("thing.happened", {"v": value})
    assert caught.value.violations == [f"$.v: {value!r} does not match {pattern!r}"]


def test_country_with_a_trailing_newline_is_not_published(harness: Harness) -> None:
    """'DE\\n' is no ISO country code: user.signed_up refuses it and writes nothing."""
    exc = refused(
        PayloadInvalid, harness.attempt("sync", "user.signed_up", {**USER, "country": "DE\n"})
    )
    assert exc.violations == ["$.country: 'DE\\n' does not match '^[A-Z]{2}$'"]


def test_a_tuple_is_an_array_in_violation_reports_too() -> None:
    """A tuple where an array goes is no violation, also when another field is wrong."""
    registry = SchemaRegistry.load(REPO_SCHEMAS)
    payload = {**ORDER, "items": ({"sku": "a", "quantity": 1},), "placed_at": "soon"}
    with pytest.raises(PayloadInvalid) as caught:
        registry.validate("order.placed", payload)
    assert caught.value.violations == ["$.placed_at: 'soon' is not a 'date-time'"]


def test_bus_publish_is_the_default_publish_function() -> None:
    """`import bus; bus.publish(...)`, the README's first example, reaches the default Bus."""
    assert bus.publish is default.publish


def test_an_unhashable_event_type_is_an_unknown_type_not_a_type_error(harness: Harness) -> None:
    """A list as the type (a common slip) raises UnknownEventType, not TypeError."""
    exc = refused(UnknownEventType, harness.attempt("sync", ["user.signed_up"], USER))
    assert "not a list" in str(exc)


def test_an_id_with_a_trailing_newline_is_refused(harness: Harness) -> None:
    """'abc\\n' is not 1-128 of the allowed characters, whatever '$' thinks."""
    exc = refused(InvalidEventAttribute, harness.attempt("sync", "user.signed_up", USER, id="a\n"))
    assert exc.attribute == "id"


def test_a_bad_correlation_id_is_called_a_correlation_id(harness: Harness) -> None:
    """The message names the argument that was wrong, not 'event id'."""
    outcome = harness.attempt("async", "user.signed_up", USER, correlation_id="a b")
    assert str(refused(InvalidEventAttribute, outcome)).startswith("invalid correlation id 'a b'")


def test_a_batch_error_says_which_event_of_the_batch(harness: Harness) -> None:
    """The error of the third of four events carries a note with its index."""
    batch = [EventSpec("user.signed_up", USER)] * 2 + [
        EventSpec("user.signed_up", {**USER, "plan": "gold"}),
        EventSpec("user.signed_up", USER),
    ]
    before = dump_all(harness.client)
    with pytest.raises(PayloadInvalid) as caught:
        harness.sync_bus.publish_many(batch)
    assert caught.value.__notes__ == ["in event #2 of a batch of 4; none was published"]
    assert_unchanged(before, dump_all(harness.client))


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--id", "a b", "invalid event id 'a b'"),
        ("--correlation-id", "x" * 129, "invalid correlation id"),
        ("--source", "tab\there", "invalid event source 'tab\\there'"),
    ],
)
def test_cli_publish_with_a_bad_attribute_exits_2_with_the_message(
    cli_env: Settings, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    """A bad --id, --correlation-id or --source is a usage error, not a traceback."""
    user = orjson.dumps(USER).decode()
    assert main(["publish", "user.signed_up", user, flag, value]) == 2
    assert f"error: {message}" in capsys.readouterr().err

    async def size(client: redis.asyncio.Redis) -> int:
        return int(await client.dbsize())

    assert on_redis(cli_env, size) == 0


# -- malformed app configs not covered by test_config.py ----------------------------------------

SUB = '[[subscriptions]]\nname = "s"\nevents = "user.signed_up"\nhandler = "handlers:f"\n'


def write_app(tmp_path: Path, body: str | bytes) -> Path:
    """Write apps/shop/app.toml (``name`` line first); return the app directory."""
    directory = tmp_path / "shop"
    directory.mkdir()
    raw = body if isinstance(body, bytes) else ('name = "shop"\n' + textwrap.dedent(body)).encode()
    (directory / "app.toml").write_bytes(raw)
    return directory


CONFIG_CASES = [
    # integers TOML cannot hold (tomllib takes any size)
    (
        "int over 64 bits",
        SUB + "max_attempts = 99999999999999999999\n",
        r"subscriptions\[0\]\.max_attempts: the integer 99999999999999999999 is outside "
        r"TOML's 64-bit range \(-9223372036854775808 to 9223372036854775807\)",
    ),
    (
        "int of 401 digits",
        SUB + f"backoff = [1, {10**400}]\n",
        r"subscriptions\[0\]\.backoff\[1\]: the integer of 401 digits is outside",
    ),
    (
        "int under 64 bits",
        "[worker]\nconcurrency = -9223372036854775809\n",
        r"worker\.concurrency: the integer",
    ),
    ("int of 5000 digits", f"huge = {'9' * 5000}\n", r"invalid TOML: Exceeds the limit"),
    # seconds no due time can hold
    (
        "delay 1e300",
        SUB + "delay_s = 1e300\n",
        r"'delay_s' must be at most 3153600000 seconds \(100 years\), got 1e\+300",
    ),
    ("timeout 1e20", SUB + "timeout_s = 1e20\n", r"'timeout_s' must be at most 3153600000"),
    ("backoff list", SUB + "backoff = [1, 4e9]\n", r"'backoff' must be at most 3153600000"),
    ("backoff max_s", SUB + "backoff = { max_s = 1e12 }\n", r"'backoff' must be at most"),
    # not numbers at all
    ("timeout nan", SUB + "timeout_s = nan\n", r"'timeout_s' must be a finite number, got nan"),
    ("delay inf", SUB + "delay_s = inf\n", r"'delay_s' must be a finite number, got inf"),
    ("backoff -inf", SUB + "backoff = [1, -inf]\n", r"'delays_s' must be a finite number"),
    # patterns and filters of the wrong kind
    (
        "pattern int",
        SUB.replace('"user.signed_up"', '["user.signed_up", 5]'),
        r"invalid event pattern 5: it must be a non-empty string",
    ),
    (
        "pattern list",
        SUB.replace('"user.signed_up"', '[["user.*"]]'),
        r"invalid event pattern \['user\.\*'\]",
    ),
    (
        "filter datetime",
        SUB + "where = { at = 1979-05-27T07:32:00Z }\n",
        r"filter on 'at': value .* is a datetime",
    ),
    ("filter nan", SUB + "where = { n = nan }\n", r"filter on 'n': value nan is not a JSON"),
    ("queue control", SUB + 'queue = "a\\u0000"\n', r"'queue': invalid queue name"),
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_out_of_range_and_wrongly_typed_config_values_are_named(
    tmp_path: Path, body: str, message: str
) -> None:
    """Numbers out of range or NaN, patterns and filters of the wrong kind: named ConfigErrors."""
    directory = write_app(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_app_config(directory)
    assert str(caught.value).startswith(f"{directory / 'app.toml'}: ")


def test_an_app_toml_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported as unreadable, with the file."""
    directory = write_app(tmp_path, b'name = "shop"\ndescription = "\xff"\n')
    with pytest.raises(ConfigError, match=r"app\.toml: cannot be read: 'utf-8' codec"):
        load_app_config(directory)


def test_an_app_toml_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory named app.toml cannot be read; the message says so and names it."""
    (tmp_path / "shop" / "app.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"app\.toml: cannot be read"):
        load_app_config(tmp_path / "shop")


def test_the_longest_allowed_delay_still_routes(harness: Harness, tmp_path: Path) -> None:
    """At the 100-year cap a subscription's delayed task is still stored and due later."""
    directory = write_app(tmp_path, SUB + "delay_s = 3153600000\n")
    options = load_app_config(directory).subscriptions[0].options
    spec = SubscriptionSpec(
        app="late", name="s", events=("user.signed_up",), delay_s=options.delay_s
    )
    harness.runner.run(
        sync_subscriptions(harness.aclient, KEYS, "late", [spec], allow_removal=True)
    )
    key = harness.sync_bus.publish("user.signed_up", USER)
    assert harness.client.hget(AppKeys("bus", "late").state, f"{key}.s") is not None


@pytest.mark.parametrize(
    ("validate", "name"),
    [(keys.validate_app_name, "billing\n"), (keys.validate_queue_name, "default\n")],
)
def test_names_with_a_trailing_newline_are_refused(validate: Any, name: str) -> None:
    """An app or queue name ending in a newline is invalid ($ alone would let it through)."""
    with pytest.raises(ValueError, match="invalid"):
        validate(name)
