"""Tests of bus.events.schemas and payload: loading schema files, validating, encoding payloads."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import math
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.events.payload import PayloadNotSerializable, PayloadTooLarge, encode_payload
from bus.events.schemas import (
    DRAFT_2020_12,
    InvalidEventType,
    PayloadInvalid,
    SchemaError,
    SchemaLoadError,
    SchemaRegistry,
    UnknownEventType,
    validate_event_type,
)

REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

SIGNED_UP = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "GB"}
PLACED = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1250,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}


def schema(**fields: Any) -> dict[str, Any]:
    """A minimal valid schema document with ``fields`` added or overridden."""
    return {"$schema": DRAFT_2020_12, "$id": "urn:test:a", "version": 1, **fields}


def write(directory: Path, name: str, content: Any) -> Path:
    """Write one schema file (a document as JSON, or raw text) and return its path."""
    path = directory / name
    path.write_text(content if isinstance(content, str) else orjson.dumps(content).decode())
    return path


@pytest.fixture(scope="module")
def repo_registry() -> SchemaRegistry:
    """The registry of the repository's own ``schemas/``."""
    return SchemaRegistry.load(REPO_SCHEMAS)


def load_one(tmp_path: Path, doc: Any) -> SchemaRegistry:
    """Load a directory holding only ``thing.happened.json`` with ``doc``."""
    write(tmp_path, "thing.happened.json", doc)
    return SchemaRegistry.load(tmp_path)


# -- the repository's schemas --------------------------------------------------------------------


def test_repo_schemas_load_one_type_per_file(repo_registry: SchemaRegistry) -> None:
    """Every file of schemas/ loads, named after its event type."""
    files = sorted(p.name.removesuffix(".json") for p in REPO_SCHEMAS.glob("*.json"))
    assert repo_registry.types == files
    assert {"user.signed_up", "order.placed", "payment.failed"} <= set(files)


def test_repo_schemas_have_distinct_ids_and_versions(repo_registry: SchemaRegistry) -> None:
    """Each repo schema has its own $id, a version >= 1 and its file recorded."""
    infos = [repo_registry.info(t) for t in repo_registry.types]
    assert len({i.schema_id for i in infos}) == len(infos)
    assert all(i.version >= 1 for i in infos)
    assert [i.path.name for i in infos] == [f"{t}.json" for t in repo_registry.types]


@pytest.mark.parametrize(
    ("event_type", "payload"), [("user.signed_up", SIGNED_UP), ("order.placed", PLACED)]
)
def test_repo_schema_accepts_a_valid_payload(
    repo_registry: SchemaRegistry, event_type: str, payload: dict[str, Any]
) -> None:
    """A conforming payload validates and reports the schema it used."""
    info = repo_registry.validate(event_type, payload)
    assert (info.event_type, info.path) == (event_type, REPO_SCHEMAS / f"{event_type}.json")


def test_repo_schema_refuses_a_payload_with_an_extra_field(repo_registry: SchemaRegistry) -> None:
    """The example schemas forbid unknown fields."""
    with pytest.raises(PayloadInvalid, match="'nickname' was unexpected"):
        repo_registry.validate("user.signed_up", {**SIGNED_UP, "nickname": "ada"})


# -- loading: every error path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"$id": "urn:x", "version": 1,}', "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "a schema must be a JSON object"),
        ('"a string"', "a schema must be a JSON object"),
        ("true", "a schema must be a JSON object"),
        ({"version": 1}, 'needs an "$id"'),
        ({"$id": "", "version": 1}, 'needs an "$id"'),
        ({"$id": 7, "version": 1}, 'needs an "$id"'),
        ({"$id": "urn:x"}, '"version" >= 1, got None'),
        ({"$id": "urn:x", "version": 0}, '"version" >= 1, got 0'),
        ({"$id": "urn:x", "version": -3}, '"version" >= 1, got -3'),
        ({"$id": "urn:x", "version": "1"}, "\"version\" >= 1, got '1'"),
        ({"$id": "urn:x", "version": 1.0}, '"version" >= 1, got 1.0'),
        ({"$id": "urn:x", "version": True}, '"version" >= 1, got True'),
        (schema(type="strng"), "not a valid draft 2020-12 schema at $.type"),
        (schema(minLength=-1), "not a valid draft 2020-12 schema at $.minLength"),
        (schema(required="id"), "not a valid draft 2020-12 schema at $.required"),
        (
            schema(properties={"a": {"type": 5}}),
            "not a valid draft 2020-12 schema at $.properties.a.type",
        ),
        (schema(**{"$schema": "http://json-schema.org/draft-07/schema#"}), "draft-07"),
        (schema(**{"$schema": 2020}), "taskbus validates with"),
        (schema(format="uri"), "format 'uri' at $ is not checked"),
        (
            schema(properties={"site": {"type": "string", "format": "hostname"}}),
            "format 'hostname' at $.properties['site'] is not checked",
        ),
        (schema(**{"$ref": "#/$defs/nope"}), "$ref '#/$defs/nope' at $ does not resolve"),
        (schema(**{"$ref": "urn:test:other"}), "$ref 'urn:test:other' at $ does not resolve"),
        (
            schema(properties={"a": {"$ref": "https://example.com/remote.json"}}),
            "does not resolve",
        ),
    ],
)
def test_unusable_schema_file_is_a_load_error_naming_the_file(
    tmp_path: Path, content: Any, fragment: str
) -> None:
    """Each kind of broken schema file raises SchemaLoadError with its path and problem."""
    path = write(tmp_path, "thing.happened.json", content)
    with pytest.raises(SchemaLoadError) as info:
        SchemaRegistry.load(tmp_path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "name", ["User.signed_up.json", "user..x.json", "user signed.json", ".json", "user.*.json"]
)
def test_file_name_that_is_not_an_event_type_is_a_load_error(tmp_path: Path, name: str) -> None:
    """A schema file must be named <event type>.json."""
    path = write(tmp_path, name, schema())
    with pytest.raises(SchemaLoadError, match="the file name must be an event type") as info:
        SchemaRegistry.load(tmp_path)
    assert info.value.path == path


def test_duplicate_id_names_both_files(tmp_path: Path) -> None:
    """Two files with one $id are refused; the message names both."""
    first = write(tmp_path, "a.one.json", schema())
    second = write(tmp_path, "a.two.json", schema())
    with pytest.raises(SchemaLoadError) as info:
        SchemaRegistry.load(tmp_path)
    assert info.value.path == second
    assert f"$id 'urn:test:a' is also the $id of {first}" in str(info.value)


def test_missing_directory_is_a_load_error(tmp_path: Path) -> None:
    """Loading a directory that does not exist says so and names it."""
    with pytest.raises(SchemaLoadError, match="no such schema directory") as info:
        SchemaRegistry.load(tmp_path / "nowhere")
    assert info.value.path == tmp_path / "nowhere"


def test_other_files_and_subdirectories_are_ignored(tmp_path: Path) -> None:
    """Only top-level *.json files are schemas."""
    write(tmp_path, "thing.happened.json", schema())
    write(tmp_path, "README.md", "not a schema")
    write(tmp_path, "notes.json.bak", "{")
    (tmp_path / "old").mkdir()
    write(tmp_path / "old", "broken.json", "{")
    (tmp_path / "dir.json").mkdir()
    assert SchemaRegistry.load(tmp_path).types == ["thing.happened"]


def test_empty_directory_loads_no_types(tmp_path: Path) -> None:
    """A directory without schema files gives a registry that knows no type."""
    assert SchemaRegistry.load(tmp_path).types == []


def test_ref_into_another_schema_of_the_directory_resolves(tmp_path: Path) -> None:
    """A $ref may name another schema's $id, pointer included, and validates through it."""
    write(
        tmp_path,
        "money.defined.json",
        schema(**{"$id": "urn:test:money", "$defs": {"cents": {"type": "integer", "minimum": 0}}}),
    )
    write(
        tmp_path,
        "order.paid.json",
        schema(
            **{"$id": "urn:test:paid"},
            type="object",
            properties={"amount": {"$ref": "urn:test:money#/$defs/cents"}},
        ),
    )
    registry = SchemaRegistry.load(tmp_path)
    registry.validate("order.paid", {"amount": 5})
    with pytest.raises(PayloadInvalid, match=r"\$\.amount: -5 is less than the minimum of 0"):
        registry.validate("order.paid", {"amount": -5})


def test_schema_without_dollar_schema_defaults_to_2020_12(tmp_path: Path) -> None:
    """$schema may be omitted (or end in '#'); the draft is 2020-12 either way."""
    doc = {"$id": "urn:x", "version": 3, "$schema": DRAFT_2020_12 + "#"}
    assert load_one(tmp_path, doc).info("thing.happened").version == 3
    del doc["$schema"]
    assert load_one(tmp_path, doc).info("thing.happened").schema_id == "urn:x"


# -- unknown types -------------------------------------------------------------------------------


def test_unknown_type_suggests_close_matches_and_names_the_directory(
    repo_registry: SchemaRegistry,
) -> None:
    """A misspelt type gets a 'did you mean' and the directory searched."""
    with pytest.raises(UnknownEventType) as info:
        repo_registry.validate("user.signedup", SIGNED_UP)
    message = str(info.value)
    assert "Did you mean: user.signed_up?" in message
    assert str(REPO_SCHEMAS) in message
    assert "user.signedup.json" in message
    assert info.value.close_matches == ["user.signed_up"]
    assert info.value.directory == REPO_SCHEMAS


def test_unknown_type_without_close_match_has_no_hint(repo_registry: SchemaRegistry) -> None:
    """No suggestion is made when nothing is similar."""
    with pytest.raises(UnknownEventType) as info:
        repo_registry.info("zzz")
    assert "Did you mean" not in str(info.value)
    assert info.value.close_matches == []


def test_unknown_type_that_is_not_even_a_name_says_so(repo_registry: SchemaRegistry) -> None:
    """An invalid type name is reported as unknown and as invalid."""
    with pytest.raises(UnknownEventType, match="nor is it a valid event type name"):
        repo_registry.validate("User.Signed_Up", SIGNED_UP)


@pytest.mark.parametrize("name", ["user.signed_up", "a", "a-b.c_d.9"])
def test_validate_event_type_returns_valid_names(name: str) -> None:
    """Valid names come back unchanged."""
    assert validate_event_type(name) == name


@pytest.mark.parametrize("name", ["", "User", "a..b", "a.", "a*", "a" * 201])
def test_validate_event_type_refuses_invalid_names(name: str) -> None:
    """Invalid names raise InvalidEventType, a ValueError and a SchemaError."""
    with pytest.raises(InvalidEventType, match="invalid event type") as info:
        validate_event_type(name)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SchemaError)


# -- validation ----------------------------------------------------------------------------------


def test_every_violation_is_listed_with_its_json_path(repo_registry: SchemaRegistry) -> None:
    """All violations are reported at once, each with its path, sorted by path."""
    payload = {
        "user_id": "",
        "email": "no-at-sign",
        "plan": "gold",
        "country": "gb",
        "nickname": "x",
    }
    with pytest.raises(PayloadInvalid) as info:
        repo_registry.validate("user.signed_up", payload)
    violations = info.value.violations
    assert [v.split(":")[0] for v in violations] == [
        "$",
        "$.country",
        "$.email",
        "$.plan",
        "$.user_id",
    ]
    assert "(5 problems)" in str(info.value)
    assert all(f"  - {v}" in str(info.value) for v in violations)
    assert info.value.event_type == "user.signed_up"


def test_nested_violations_have_array_indexes_in_numeric_order(tmp_path: Path) -> None:
    """Paths into arrays show indexes, ordered as numbers (2 before 10)."""
    items = {"type": "array", "items": {"type": "object", "required": ["sku"]}}
    registry = load_one(tmp_path, schema(type="object", properties={"items": items}))
    payload: dict[str, list[dict[str, Any]]] = {"items": [{"sku": "x"}] * 11}
    payload["items"] = [*payload["items"][:2], {}, *payload["items"][3:10], {"n": 1}]
    with pytest.raises(PayloadInvalid) as info:
        registry.validate("thing.happened", payload)
    assert info.value.violations == [
        "$.items[2]: 'sku' is a required property",
        "$.items[10]: 'sku' is a required property",
    ]


def test_keys_that_are_not_identifiers_are_quoted_in_paths(tmp_path: Path) -> None:
    """A property such as 'first-name' appears as ['first-name'] in the path."""
    props = {"first-name": {"type": "string"}, "2nd": {"type": "string"}}
    registry = load_one(tmp_path, schema(type="object", properties=props))
    with pytest.raises(PayloadInvalid) as info:
        registry.validate("thing.happened", {"first-name": 1, "2nd": 2})
    assert [v.split(":")[0] for v in info.value.violations] == ["$['2nd']", "$['first-name']"]


def test_one_violation_is_counted_in_the_singular(repo_registry: SchemaRegistry) -> None:
    """The message counts problems correctly for a single violation."""
    with pytest.raises(PayloadInvalid, match=r"\(1 problem\)"):
        repo_registry.validate("user.signed_up", {**SIGNED_UP, "plan": "gold"})


def test_payload_of_the_wrong_shape_is_one_violation_at_the_root(
    repo_registry: SchemaRegistry,
) -> None:
    """A non-object payload is reported at '$'."""
    with pytest.raises(PayloadInvalid) as info:
        repo_registry.validate("user.signed_up", ["not", "an", "object"])
    assert info.value.violations == ["$: ['not', 'an', 'object'] is not of type 'object'"]


@pytest.mark.parametrize(
    ("fmt", "value", "valid"),
    [
        ("email", "ada@example.com", True),
        ("email", "ada", False),
        ("date-time", "2024-02-29T12:00:00Z", True),
        ("date-time", "2024-01-01T00:00:00.123456+02:00", True),
        ("date-time", "2016-12-31t23:59:60z", True),
        ("date-time", "2023-02-29T12:00:00Z", False),
        ("date-time", "2024-01-01T24:00:00Z", False),
        ("date-time", "2024-01-01T00:60:00Z", False),
        ("date-time", "2024-01-01T00:00:00", False),
        ("date-time", "2024-01-01T00:00:00+24:00", False),
        ("date-time", "2024-01-01", False),
        ("date-time", "yesterday", False),
        ("date", "2024-02-29", True),
        ("date", "2024-02-30", False),
        ("uuid", "1b4e28ba-2fa1-11d2-883f-0060b0c0c0c0", True),
        ("uuid", "1b4e28ba", False),
        ("ipv4", "192.0.2.1", True),
        ("ipv4", "192.0.2.256", False),
    ],
)
def test_formats_are_enforced(tmp_path: Path, fmt: str, value: str, valid: bool) -> None:
    """Checked formats reject malformed strings instead of only annotating them."""
    registry = load_one(tmp_path, schema(properties={"v": {"type": "string", "format": fmt}}))
    if valid:
        registry.validate("thing.happened", {"v": value})
    else:
        with pytest.raises(PayloadInvalid, match=rf"\$\.v: .* is not a '{fmt}'"):
            registry.validate("thing.happened", {"v": value})


def test_repo_email_format_is_enforced(repo_registry: SchemaRegistry) -> None:
    """user.signed_up refuses an email without '@'."""
    with pytest.raises(PayloadInvalid, match=r"\$\.email: 'ada' is not a 'email'"):
        repo_registry.validate("user.signed_up", {**SIGNED_UP, "email": "ada"})


# -- encoding ------------------------------------------------------------------------------------


class Colour(enum.Enum):
    """A plain enum: not a JSON value."""

    RED = "red"


class Key(enum.StrEnum):
    """A str enum: usable as a value, not as a key orjson accepts."""

    A = "a"


class Ratio(float):
    """A float subclass, like numpy.float64."""


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    ("payload", "path", "fragment"),
    [
        (float("nan"), "$", "is nan (JSON has no NaN or infinity)"),
        ({"a": [1, {"b": float("inf")}]}, "$.a[1].b", "is inf"),
        ({"a": [float("-inf")]}, "$.a[0]", "is -inf"),
        ({"a": {1: "x"}}, "$.a", "has a key 1 of type int; keys must be str"),
        ({None: 1}, "$", "has a key None of type NoneType"),
        ({("a", "b"): 1}, "$", "of type tuple"),
        ({"tags": {"a", "b"}}, "$.tags", "is a set"),
        ({"tags": frozenset()}, "$.tags", "is a frozenset"),
        ({"blob": b"\x00"}, "$.blob", "is a bytes"),
        ({"at": datetime.datetime(2024, 1, 1)}, "$.at", "is a datetime"),
        ({"id": uuid.UUID(int=1)}, "$.id", "is a UUID"),
        ({"price": decimal.Decimal("1.10")}, "$.price", "is a Decimal"),
        ({"colour": Colour.RED}, "$.colour", "is a Colour"),
        ({"x": object()}, "$.x", "is a object"),
        ({"n": 2**64}, "$.n", "outside the 64-bit range"),
        ({"n": -(2**63) - 1}, "$.n", "outside the 64-bit range"),
        ({"s": "a\ud800b"}, "$.s", "lone surrogates"),
        ({"first-name": [{"x": {1}}]}, "$['first-name'][0].x", "is a set"),
        ({"ratio": Ratio(0.5)}, "$.ratio", "Ratio"),
        ({"at": Point(1, 2)}, "$.at", "Point"),
        ({Key.A: 1}, "$", "Key"),
    ],
)
def test_values_json_cannot_carry_are_refused_with_their_path(
    payload: Any, path: str, fragment: str
) -> None:
    """encode_payload raises PayloadNotSerializable naming the value's path and problem."""
    with pytest.raises(PayloadNotSerializable) as info:
        encode_payload(payload, 1_000_000)
    assert info.value.path == path
    assert f"{path} " in str(info.value)
    assert fragment in str(info.value)


def test_nesting_deeper_than_orjson_allows_is_refused() -> None:
    """254 levels encode; a 255th is refused rather than failing inside orjson."""
    ok: Any = 1
    for _ in range(254):
        ok = [ok]
    assert encode_payload(ok, 10_000) == b"[" * 254 + b"1" + b"]" * 254
    with pytest.raises(PayloadNotSerializable, match="nested deeper than 254 levels"):
        encode_payload([ok], 10_000)


def test_a_cycle_is_refused_not_looped_on() -> None:
    """A self-containing list is refused with a path, not a hang or a crash."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(PayloadNotSerializable, match="part of a cycle"):
        encode_payload({"loop": loop}, 10_000)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"a": 1, "b": [True, None, 1.5, "é"]}, b'{"a":1,"b":[true,null,1.5,"\xc3\xa9"]}'),
        ((1, 2), b"[1,2]"),
        ([], b"[]"),
        ("text", b'"text"'),
        (None, b"null"),
        (2**64 - 1, b"18446744073709551615"),
        (-(2**63), b"-9223372036854775808"),
        (collections.OrderedDict(a=1), b'{"a":1}'),
        ({"k": Key.A}, b'{"k":"a"}'),
    ],
)
def test_json_values_encode_compactly(payload: Any, expected: bytes) -> None:
    """Plain JSON values (tuples as arrays) encode to compact UTF-8 JSON."""
    assert encode_payload(payload, 1_000) == expected


def test_payload_at_the_limit_passes_and_one_byte_over_fails() -> None:
    """The size limit is inclusive; over it, both sizes are in the message."""
    payload = {"a": "x" * 10}  # {"a":"xxxxxxxxxx"} is 18 bytes
    assert len(encode_payload(payload, 18)) == 18
    with pytest.raises(PayloadTooLarge) as info:
        encode_payload(payload, 17)
    assert (info.value.size, info.value.limit) == (18, 17)
    assert "is 18 bytes encoded, over the limit of 17" in str(info.value)


# -- encoding: properties ------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=15,
)
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
NEAR_JSON_SCALARS = st.one_of(
    JSON_SCALARS,
    st.floats(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.text(st.one_of(st.characters(), SURROGATES), max_size=4),
    st.binary(max_size=3),
    st.sets(st.integers(), max_size=2),
    st.just(Colour.RED),
    st.just(Key.A),
    st.floats(allow_nan=False).map(Ratio),
    st.builds(Point, st.integers(), st.integers()),
    st.just(datetime.date(2024, 1, 1)),
)
NEAR_JSON_KEYS = st.one_of(
    st.text(max_size=4), st.integers(), st.none(), st.just(Key.A), st.booleans()
)
NEAR_JSON_VALUES = st.recursive(
    NEAR_JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner),
        st.dictionaries(NEAR_JSON_KEYS, inner, max_size=3),
    ),
    max_leaves=12,
)


def same_json(decoded: Any, original: Any) -> bool:
    """True if ``decoded`` is ``original`` as JSON: same types (tuples as lists), same values."""
    if isinstance(original, tuple):
        original = list(original)
    if isinstance(original, bool) or isinstance(decoded, bool):
        return type(decoded) is type(original) and decoded == original
    if isinstance(original, list):
        return (
            isinstance(decoded, list)
            and len(decoded) == len(original)
            and all(same_json(d, o) for d, o in zip(decoded, original, strict=True))
        )
    if isinstance(original, dict):
        return (
            isinstance(decoded, dict)
            and decoded.keys() == original.keys()
            and all(same_json(decoded[k], original[k]) for k in original)
        )
    for kind in (float, int, str):  # subclasses (IntEnum, StrEnum) decode as the base type
        if isinstance(original, kind):
            return type(decoded) is kind and decoded == original
    return decoded is None and original is None


@settings(deadline=None)  # recursive values; a slow CI box is no failure
@given(JSON_VALUES)
def test_json_values_round_trip_exactly(payload: Any) -> None:
    """Any JSON value encodes, and decodes to an equal value of the same JSON types."""
    assert same_json(orjson.loads(encode_payload(payload, 1_000_000)), payload)


@settings(deadline=None)  # recursive values; a slow CI box is no failure
@given(JSON_VALUES, st.integers(min_value=0, max_value=300))
def test_size_limit_refuses_exactly_the_oversized(payload: Any, limit: int) -> None:
    """PayloadTooLarge is raised iff the encoding is longer than the limit."""
    size = len(encode_payload(payload, 1_000_000))
    if size > limit:
        with pytest.raises(PayloadTooLarge):
            encode_payload(payload, limit)
    else:
        assert len(encode_payload(payload, limit)) == size


@settings(deadline=None)  # recursive values; a slow CI box is no failure
@given(NEAR_JSON_VALUES, st.integers(min_value=0, max_value=300))
def test_encode_round_trips_or_raises_a_payload_error(payload: Any, limit: int) -> None:
    """For anything JSON-like, encoding round-trips or raises one of the payload errors."""
    outcome: bytes | PayloadTooLarge | PayloadNotSerializable
    try:
        outcome = encode_payload(payload, limit)
    except (PayloadTooLarge, PayloadNotSerializable) as exc:
        outcome = exc
    if isinstance(outcome, PayloadTooLarge):
        assert outcome.size > outcome.limit == limit
    elif isinstance(outcome, PayloadNotSerializable):
        assert outcome.path.startswith("$")
    else:
        assert len(outcome) <= limit
        assert same_json(orjson.loads(outcome), payload)


def test_finite_floats_keep_their_exact_value() -> None:
    """Floats survive encoding bit for bit (no rounding through text)."""
    for value in (0.1, 1e-320, 1.7976931348623157e308, -0.0, math.pi):
        decoded = orjson.loads(encode_payload(value, 100))
        assert decoded == value
        assert math.copysign(1, decoded) == math.copysign(1, value)
