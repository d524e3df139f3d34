"""Tests of bus.events.matching: event type names, type patterns and payload filters."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bus.errors import BusError
from bus.events.matching import (
    MAX_EVENT_TYPE_LENGTH,
    OPERATORS,
    FilterError,
    PatternError,
    compile_filter,
    compile_pattern,
    is_event_type,
    json_equal,
)

# -- strategies ----------------------------------------------------------------------------------

# A small alphabet makes equal segments (and so matches) common.
SEGMENTS = st.sampled_from(["a", "b", "c", "order", "user", "x_1", "signed-up"])
EVENT_TYPES = st.lists(SEGMENTS, min_size=1, max_size=5).map(".".join)
ANY_SEGMENT = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
ANY_EVENT_TYPES = st.lists(ANY_SEGMENT, min_size=1, max_size=6).map(".".join)
PATTERN_SEGMENTS = st.one_of(SEGMENTS, st.just("*"))
PATTERNS = st.lists(PATTERN_SEGMENTS, min_size=1, max_size=5).map(".".join)

KEYS = st.sampled_from(["a", "b", "plan", "user", "id", "x-y", "n_1"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)


# Recursive values are costly to generate: fewer examples, and no per-example
# deadline, so a loaded CI machine cannot turn slowness into a failure.
RECURSIVE = settings(max_examples=50, deadline=None)


def payloads(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Objects keyed by dot-free names, nested up to ``depth`` levels."""
    values: st.SearchStrategy[Any] = JSON_VALUES
    for _ in range(depth):
        values = st.one_of(JSON_VALUES, st.dictionaries(KEYS, values, min_size=1, max_size=3))
    return st.dictionaries(KEYS, values, max_size=4)


def reference_match(pattern: str, event_type: str) -> bool:
    """The pattern rule spelled out segment by segment, as docs/matching.md states it."""
    wanted, parts = pattern.split("."), event_type.split(".")
    if wanted[-1] == "*":
        head = wanted[:-1]
        if len(parts) <= len(head):
            return False
    else:
        head = wanted
        if len(parts) != len(head):
            return False
    return all(w in ("*", p) for w, p in zip(head, parts, strict=False))


# -- event type names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("user", True),
        ("user.signed_up", True),
        ("order.line-item.added", True),
        ("a1.2b.3", True),
        ("_.-", True),
        ("", False),
        ("User.signed_up", False),
        ("user..x", False),
        (".user", False),
        ("user.", False),
        ("user.*", False),
        ("user signed", False),
        ("user.signed_up\n", False),
        ("usér", False),
        ("a" * MAX_EVENT_TYPE_LENGTH, True),
        ("a" * (MAX_EVENT_TYPE_LENGTH + 1), False),
        (None, False),
        (b"user", False),
    ],
)
def test_is_event_type_accepts_only_lowercase_dotted_names(text: Any, valid: bool) -> None:
    """Event types are lowercase dot-separated [a-z0-9_-] segments of bounded length."""
    assert is_event_type(text) is valid


# -- patterns: table -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        # a segment without '*' matches itself only
        ("user.signed_up", "user.signed_up", True),
        ("user.signed_up", "user.signed_upx", False),
        ("user.signed_up", "user.signed", False),
        ("user.signed_up", "user", False),
        ("user.signed_up", "user.signed_up.v2", False),
        ("user.signed_up", "admin.user.signed_up", False),
        ("user", "user", True),
        ("user", "users", False),
        # '*' last: one or more remaining segments
        ("user.*", "user.signed_up", True),
        ("user.*", "user.email.changed", True),
        ("user.*", "user", False),
        ("user.*", "users.signed_up", False),
        ("user.*", "userx.signed_up", False),
        ("user.*", "admin.user.signed_up", False),
        ("a.b.*", "a.b.c", True),
        ("a.b.*", "a.bc", False),
        ("a.b.*", "a.b", False),
        # '*' elsewhere: exactly one segment
        ("*.failed", "payment.failed", True),
        ("*.failed", "a.b.failed", False),
        ("*.failed", "failed", False),
        ("*.failed", "payment.failed.twice", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        ("a.*.c", "a.b.d", False),
        ("*.*", "a", False),
        ("*.*", "a.b", True),
        ("*.*", "a.b.c", True),
        ("*.b.*", "a.b.c.d", True),
        ("*.b.*", "a.c.c", False),
        ("*.b.*", "a.b", False),
        # '*' alone: every type
        ("*", "user", True),
        ("*", "user.signed_up", True),
        ("*", "a.b.c.d.e", True),
    ],
)
def test_pattern_matches_by_its_rule(pattern: str, event_type: str, expected: bool) -> None:
    """Each pattern rule decides the types it matches."""
    assert compile_pattern(pattern).matches(event_type) is expected


def test_compiled_pattern_keeps_its_text_and_segments() -> None:
    """A compiled pattern exposes what was written, split into segments."""
    pattern = compile_pattern("user.*")
    assert (pattern.text, pattern.segments) == ("user.*", ("user", "*"))


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "must be a non-empty string"),
        ("user..x", "segment ''"),
        (".user", "segment ''"),
        ("user.", "segment ''"),
        ("**", "segment '**'"),
        ("user.**", "segment '**'"),
        ("user*", "segment 'user*'"),
        ("*user", "segment '*user'"),
        ("User.x", "segment 'User'"),
        ("user.signed up", "segment 'signed up'"),
        ("user.x?", "segment 'x?'"),
        ("user.[ab]", "segment '[ab]'"),
        (None, "must be a non-empty string"),
        (["user.*"], "must be a non-empty string"),
    ],
)
def test_invalid_pattern_raises_naming_the_pattern_and_segment(pattern: Any, fragment: str) -> None:
    """A bad pattern raises PatternError quoting the pattern and the offending segment."""
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert fragment in str(info.value)
    assert repr(pattern) in str(info.value)


def test_pattern_error_is_a_bus_error() -> None:
    """PatternError belongs to the library's error family."""
    with pytest.raises(BusError):
        compile_pattern("**")


# -- patterns: properties ------------------------------------------------------------------------


@given(ANY_EVENT_TYPES)
def test_star_alone_matches_every_valid_type(event_type: str) -> None:
    """The pattern '*' matches every valid event type."""
    assert compile_pattern("*").matches(event_type)


@given(EVENT_TYPES, EVENT_TYPES)
def test_exact_pattern_matches_exactly_itself(written: str, event_type: str) -> None:
    """A pattern without '*' matches a type if and only if it is that type."""
    assert compile_pattern(written).matches(event_type) is (written == event_type)


@given(st.lists(SEGMENTS, min_size=1, max_size=3), EVENT_TYPES)
def test_prefix_star_matches_longer_types_under_the_prefix(
    head: list[str], event_type: str
) -> None:
    """'a.*' matches t iff t starts with 'a.' and has more segments than the prefix."""
    prefix = ".".join(head)
    expected = event_type.startswith(prefix + ".") and event_type.count(".") >= len(head)
    assert compile_pattern(prefix + ".*").matches(event_type) is expected


@given(SEGMENTS, EVENT_TYPES)
def test_leading_star_matches_exactly_two_segments_ending_in_the_name(
    name: str, event_type: str
) -> None:
    """'*.x' matches t iff t has two segments and the second is x."""
    parts = event_type.split(".")
    expected = len(parts) == 2 and parts[1] == name
    assert compile_pattern(f"*.{name}").matches(event_type) is expected


@given(PATTERNS, EVENT_TYPES)
def test_every_pattern_follows_the_segment_rule(pattern: str, event_type: str) -> None:
    """Any pattern matches exactly the types the segment-by-segment rule accepts."""
    assert compile_pattern(pattern).matches(event_type) is reference_match(pattern, event_type)


@given(PATTERNS, EVENT_TYPES)
def test_star_last_never_matches_fewer_segments_than_the_pattern(
    pattern: str, event_type: str
) -> None:
    """A type shorter than the pattern never matches it, whatever the wildcards."""
    if event_type.count(".") < pattern.count("."):
        assert not compile_pattern(pattern).matches(event_type)


# -- filters: table ------------------------------------------------------------------------------

PAYLOAD = {
    "plan": "pro",
    "amount": 10,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "empty": "",
    "tags": ["a", "b"],
    "user": {"plan": "free", "address": {"country": "DE"}, "age": 0},
    "items": [{"sku": "x", "n": 1}, {"sku": "y", "n": 2.0}],
}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        # empty filter
        ({}, True),
        # scalar equality
        ({"plan": "pro"}, True),
        ({"plan": "free"}, False),
        ({"plan": "Pro"}, False),
        ({"plan": "pro "}, False),
        ({"empty": ""}, True),
        ({"amount": 10}, True),
        ({"amount": 10.0}, True),
        ({"amount": 11}, False),
        ({"amount": "10"}, False),
        ({"ratio": 0.5}, True),
        ({"flag": True}, True),
        ({"flag": 1}, False),
        ({"flag": 1.0}, False),
        ({"flag": "true"}, False),
        ({"nothing": None}, True),
        ({"nothing": False}, False),
        ({"nothing": 0}, False),
        ({"nothing": ""}, False),
        ({"user.age": False}, False),
        ({"user.age": 0}, True),
        # several conditions: all must hold
        ({"plan": "pro", "amount": 10}, True),
        ({"plan": "pro", "amount": 11}, False),
        # list: one of
        ({"plan": ["free", "pro"]}, True),
        ({"plan": ["free", "enterprise"]}, False),
        ({"amount": ["10", 10.0]}, True),
        ({"amount": [True, "10"]}, False),
        ({"flag": [1, "true"]}, False),
        ({"flag": [1, True]}, True),
        ({"nothing": [None]}, True),
        ({"tags": ["a", "b"]}, False),
        ({"tags": [["a", "b"]]}, True),
        # nested paths
        ({"user.plan": "free"}, True),
        ({"user.plan": "pro"}, False),
        ({"user.address.country": "DE"}, True),
        ({"user.address.country": ["FR", "DE"]}, True),
        ({"user.address.city": {"exists": False}}, True),
        ({"plan.x": {"exists": False}}, True),
        ({"tags.0": {"exists": False}}, True),
        ({"items.sku": {"exists": False}}, True),
        # eq with arrays and objects: JSON equality, deep
        ({"tags": {"eq": ["a", "b"]}}, True),
        ({"tags": {"eq": ["b", "a"]}}, False),
        ({"tags": {"eq": ["a"]}}, False),
        ({"tags": {"eq": ("a", "b")}}, True),
        ({"items": {"eq": [{"sku": "x", "n": 1.0}, {"sku": "y", "n": 2}]}}, True),
        ({"items": {"eq": [{"sku": "x", "n": True}, {"sku": "y", "n": 2}]}}, False),
        ({"items": {"eq": [{"sku": "x"}, {"sku": "y", "n": 2}]}}, False),
        ({"user.address": {"eq": {"country": "DE"}}}, True),
        ({"user.address": {"eq": {"country": "DE", "city": None}}}, False),
        ({"user.address": {"eq": {}}}, False),
        # eq / ne
        ({"plan": {"eq": "pro"}}, True),
        ({"plan": {"ne": "pro"}}, False),
        ({"plan": {"ne": "free"}}, True),
        ({"amount": {"ne": 10.0}}, False),
        ({"flag": {"ne": 1}}, True),
        ({"nothing": {"ne": None}}, False),
        # in / not_in
        ({"plan": {"in": ["pro", "free"]}}, True),
        ({"plan": {"in": ["free"]}}, False),
        ({"plan": {"not_in": ["free"]}}, True),
        ({"plan": {"not_in": ["pro", "free"]}}, False),
        ({"amount": {"not_in": [10.0]}}, False),
        ({"flag": {"not_in": [1, 0]}}, True),
        # exists
        ({"plan": {"exists": True}}, True),
        ({"plan": {"exists": False}}, False),
        ({"nothing": {"exists": True}}, True),
        ({"empty": {"exists": True}}, True),
        ({"user.age": {"exists": True}}, True),
        # several operators in one table: all must hold
        ({"plan": {"exists": True, "ne": ""}}, True),
        ({"empty": {"exists": True, "ne": ""}}, False),
        ({"amount": {"in": [10, 11], "ne": 11}}, True),
        ({"amount": {"in": [10, 11], "ne": 10}}, False),
        ({"amount": {"eq": 10, "not_in": [10.0]}}, False),
    ],
)
def test_filter_conditions_on_present_fields(where: dict[str, Any], expected: bool) -> None:
    """Each filter form and operator decides on fields the payload has."""
    assert compile_filter(where).matches(PAYLOAD) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("pro", False),
        (None, False),
        (["pro", None], False),
        ({"eq": None}, False),
        ({"eq": "pro"}, False),
        ({"in": ["pro"]}, False),
        ({"exists": True}, False),
        ({"ne": "pro"}, True),
        ({"ne": None}, True),
        ({"not_in": ["pro", None]}, True),
        ({"exists": False}, True),
        ({"exists": False, "ne": "pro"}, True),
        ({"exists": True, "ne": "pro"}, False),
    ],
)
def test_missing_field_passes_only_negations_and_exists_false(
    condition: Any, expected: bool
) -> None:
    """A missing field fails eq, in, scalars, lists and exists=true; passes ne, not_in."""
    assert compile_filter({"missing": condition}).matches(PAYLOAD) is expected
    assert compile_filter({"user.missing": condition}).matches(PAYLOAD) is expected


@pytest.mark.parametrize("payload", [None, "pro", 3, [1, 2], ["plan"], True])
def test_non_object_payload_has_no_fields(payload: Any) -> None:
    """A payload that is not an object has no fields: only exists=false holds."""
    assert not compile_filter({"plan": {"exists": True}}).matches(payload)
    assert compile_filter({"plan": {"exists": False}}).matches(payload)


def test_path_with_a_dot_reaches_into_objects_never_dotted_keys() -> None:
    """'a.b' names key b inside a, not a top-level key spelled 'a.b'."""
    where = compile_filter({"a.b": 1})
    assert not where.matches({"a.b": 1})
    assert where.matches({"a": {"b": 1}})


def test_compiled_filter_keeps_the_spec_as_written() -> None:
    """A compiled filter exposes the table it was built from."""
    spec = {"plan": ["pro"], "user.age": {"ne": 0}}
    assert compile_filter(spec).spec == spec


def test_compiled_filter_is_independent_of_later_changes_to_its_input() -> None:
    """Mutating the input table after compiling changes neither spec nor behaviour."""
    options = ["pro"]
    spec: dict[str, Any] = {"plan": options}
    compiled = compile_filter(spec)
    options.append("free")
    spec["user.plan"] = "nobody"
    assert "user.plan" not in compiled.spec
    assert compiled.matches({"plan": "pro"})
    assert not compiled.matches({"plan": "free"})


# -- json_equal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1.0, True),
        (0, -0.0, True),
        (1, 2, False),
        (True, 1, False),
        (False, 0, False),
        (1.0, True, False),
        (True, True, True),
        (False, True, False),
        (None, None, True),
        (None, False, False),
        (None, 0, False),
        (None, "", False),
        ("", "", True),
        ("a", "A", False),
        ("1", 1, False),
        ([], [], True),
        ([], {}, False),
        ([1, 2], (1.0, 2.0), True),
        ([1, 2], [2, 1], False),
        ([1], [1, 1], False),
        ([[True]], [[1]], False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ({"a": 1}, {"b": 1}, False),
        ({"a": [{"b": False}]}, {"a": [{"b": False}]}, True),
        ({"a": [{"b": False}]}, {"a": [{"b": 0}]}, False),
        ({"a": {"b": {"c": [1, {"d": "x"}]}}}, {"a": {"b": {"c": [1.0, {"d": "x"}]}}}, True),
    ],
)
def test_json_equal_compares_as_json_does(a: Any, b: Any, expected: bool) -> None:
    """Booleans equal only booleans; numbers by value; containers element by element."""
    assert json_equal(a, b) is expected
    assert json_equal(b, a) is expected


@RECURSIVE
@given(JSON_VALUES)
def test_json_equal_is_reflexive(value: Any) -> None:
    """Every JSON value equals itself."""
    assert json_equal(value, value)


@RECURSIVE
@given(JSON_VALUES, JSON_VALUES)
def test_json_equal_is_symmetric(a: Any, b: Any) -> None:
    """Equality does not depend on the order of its arguments."""
    assert json_equal(a, b) is json_equal(b, a)


@given(st.booleans(), NUMBERS)
def test_bool_never_equals_a_number(flag: bool, number: float) -> None:
    """true/false never equal a number, in eq, in scalar equality or in one-of."""
    assert not json_equal(flag, number)
    assert not compile_filter({"x": flag}).matches({"x": number})
    assert not compile_filter({"x": number}).matches({"x": flag})
    assert not compile_filter({"x": [number]}).matches({"x": flag})
    assert not compile_filter({"x": {"in": [flag]}}).matches({"x": number})
    assert compile_filter({"x": {"ne": number}}).matches({"x": flag})


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_integer_equals_the_same_float(number: int) -> None:
    """An integer equals the float of the same value (1 == 1.0)."""
    assert compile_filter({"x": number}).matches({"x": float(number)})
    assert compile_filter({"x": float(number)}).matches({"x": number})


# -- filters: properties -------------------------------------------------------------------------


def equalities(payload: Any, prefix: str = "") -> dict[str, Any]:
    """A filter demanding every leaf of ``payload``, and every sub-object, as it is."""
    where: dict[str, Any] = {}
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(k and "." not in k for k in value):
            where.update(equalities(value, path + "."))
            where[path] = {"eq": value}
        elif isinstance(value, list | dict):
            where[path] = {"eq": value}  # a bare list would mean "one of"
        else:
            where[path] = value
    return where


@RECURSIVE
@given(payloads())
def test_filter_of_a_payloads_own_fields_matches_it(payload: dict[str, Any]) -> None:
    """Equalities built from a payload's own fields all hold for that payload."""
    assert compile_filter(equalities(payload)).matches(payload)


@RECURSIVE
@given(payloads(), st.data())
def test_changing_one_demanded_field_breaks_the_match(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    """Replacing a demanded top-level value by a JSON-unequal one makes the filter fail."""
    if not payload:
        return
    key = data.draw(st.sampled_from(sorted(payload)))
    other = data.draw(JSON_VALUES)
    assume(not json_equal(other, payload[key]))
    where = compile_filter({key: {"eq": payload[key]}})
    assert not where.matches({**payload, key: other})


@RECURSIVE
@given(JSON_VALUES, JSON_VALUES)
def test_ne_is_the_negation_of_eq_for_present_fields(value: Any, operand: Any) -> None:
    """For a present field, ne holds exactly when eq does not."""
    payload = {"x": value}
    eq = compile_filter({"x": {"eq": operand}}).matches(payload)
    ne = compile_filter({"x": {"ne": operand}}).matches(payload)
    assert eq is json_equal(value, operand)
    assert ne is (not eq)


@RECURSIVE
@given(JSON_VALUES, st.lists(JSON_VALUES, min_size=1, max_size=4))
def test_not_in_is_the_negation_of_in_for_present_fields(value: Any, options: list[Any]) -> None:
    """For a present field, not_in holds exactly when in does not; in means any eq."""
    payload = {"x": value}
    one_of = compile_filter({"x": {"in": options}}).matches(payload)
    none_of = compile_filter({"x": {"not_in": options}}).matches(payload)
    assert one_of is any(json_equal(value, option) for option in options)
    assert none_of is (not one_of)


@given(st.text(max_size=6), st.text(max_size=6))
def test_strings_compare_exactly(value: str, operand: str) -> None:
    """String conditions hold only for the identical string."""
    assert compile_filter({"x": operand}).matches({"x": value}) is (value == operand)


# -- invalid filters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "path", "fragment"),
    [
        ({"plan": {"like": "p%"}}, "plan", "unknown operator 'like'"),
        ({"plan": {"eq": 1, "gt": 0}}, "plan", "unknown operator 'gt'"),
        ({"user": {"plan": "pro"}}, "user", 'quote the whole path: "user.plan"'),
        ({"plan": {"in": "pro"}}, "plan", "'in' takes a list, got 'pro'"),
        ({"plan": {"not_in": "pro"}}, "plan", "'not_in' takes a list, got 'pro'"),
        ({"plan": {"in": {"a": 1}}}, "plan", "'in' takes a list"),
        ({"plan": {"in": []}}, "plan", "needs at least one value"),
        ({"plan": {"not_in": []}}, "plan", "needs at least one value"),
        ({"plan": []}, "plan", "needs at least one value"),
        ({"plan": {"exists": 1}}, "plan", "'exists' takes true or false, got 1"),
        ({"plan": {"exists": "yes"}}, "plan", "'exists' takes true or false"),
        ({"plan": {"exists": None}}, "plan", "'exists' takes true or false"),
        ({"plan": {"exists": False, "eq": "pro"}}, "plan", "can never match"),
        ({"plan": {"exists": False, "in": ["pro"]}}, "plan", "can never match"),
        ({"plan": {}}, "plan", "an empty table has no condition"),
        ({"ratio": float("nan")}, "ratio", "is not a JSON number"),
        ({"ratio": {"eq": float("inf")}}, "ratio", "is not a JSON number"),
        ({"ratio": {"in": [1, float("-inf")]}}, "ratio", "is not a JSON number"),
        ({"when": {"eq": {1: "x"}}}, "when", "non-string key 1"),
        ({"when": {1, 2}}, "when", "is a set"),
        ({"when": {"ne": b"x"}}, "when", "is a bytes"),
        ({"when": object()}, "when", "which no JSON payload holds"),
        ({"": 1}, "", "none of them empty"),
        ({"user..plan": 1}, "user..plan", "none of them empty"),
        ({".plan": 1}, ".plan", "none of them empty"),
        ({"plan.": 1}, "plan.", "none of them empty"),
    ],
)
def test_invalid_filter_raises_naming_the_path(where: Any, path: str | None, fragment: str) -> None:
    """A bad filter raises FilterError with the bad path quoted and in ``.path``."""
    with pytest.raises(FilterError) as info:
        compile_filter(where)
    assert fragment in str(info.value)
    assert info.value.path == path
    if path is not None:
        assert repr(path) in str(info.value)


def test_unknown_operator_error_lists_the_operators() -> None:
    """The unknown-operator message says which operators exist."""
    with pytest.raises(FilterError) as info:
        compile_filter({"plan": {"neq": "pro"}})
    assert all(op in str(info.value) for op in OPERATORS)


@pytest.mark.parametrize("where", [None, [("plan", "pro")], "plan=pro"])
def test_filter_that_is_not_a_table_is_refused(where: Any) -> None:
    """A filter must be a mapping of paths to conditions."""
    with pytest.raises(FilterError, match="a filter must be a table"):
        compile_filter(where)


def test_non_string_path_is_refused() -> None:
    """Field paths must be strings."""
    with pytest.raises(FilterError, match="invalid filter path 1: it must be a string"):
        compile_filter({1: "x"})  # type: ignore[dict-item]


@RECURSIVE
@given(JSON_VALUES, payloads())
def test_matching_never_raises(operand: Any, payload: dict[str, Any]) -> None:
    """A compiled filter answers True or False for any decoded payload."""
    conditions: list[Any] = [{"eq": operand}, {"ne": operand}, {"exists": True}]
    if not isinstance(operand, list | dict):
        conditions.append(operand)
    for condition in conditions:
        for path in ("a", "a.b", "user.plan.x"):
            assert compile_filter({path: condition}).matches(payload) in (True, False)


# -- the examples of docs/matching.md ------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "matching.md"
_EXAMPLE_ROW = re.compile(r"\| `(?P<rule>[^`]+)` \| `(?P<subject>[^`]+)` \| (?P<answer>yes|no)\b")


def doc_examples() -> list[tuple[str, str, bool]]:
    """The rows of the Examples table: (events or where, type or payload, matches)."""
    examples = DOCS.read_text().split("## Examples", 1)[1]
    rows = [m.groups() for m in _EXAMPLE_ROW.finditer(examples)]
    return [(rule, subject, answer == "yes") for rule, subject, answer in rows]


def test_docs_examples_table_is_there() -> None:
    """The docs keep an examples table of patterns and filters, both outcomes shown."""
    examples = doc_examples()
    assert len(examples) >= 10
    assert {matches for _, _, matches in examples} == {True, False}


@pytest.mark.parametrize(("rule", "subject", "matches"), doc_examples())
def test_docs_examples_hold(rule: str, subject: str, matches: bool) -> None:
    """Every example row of docs/matching.md is what the code does."""
    value = tomllib.loads(f"rule = {rule}")["rule"]
    if isinstance(value, str):
        assert compile_pattern(value).matches(subject) is matches
    else:
        assert compile_filter(value).matches(json.loads(subject)) is matches
