"""A damaged registry entry costs that app's entry only (issue 13, point 5, registry part).

The registry is read by every publish, the sweep and ``subscriptions list``: one
app's entry that is not UTF-8, not JSON or of the wrong shape must be skipped,
named with its reason and logged once per registry version, never raised.
"""

from __future__ import annotations

import re
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st
from redis.asyncio import Redis

from bus import Bus, Settings
from bus.cli import main
from bus.events.registry import Registry, SubscriptionSpec, load_registry
from bus.events.registry_specs import app_name_of
from bus.events.registry_sync import sync_subscriptions
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import Logs, raw
from tests.test_cli_ops import cli_env, on_redis

__all__ = ["cli_env"]

KEYS = BusKeys("bus")
USER = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}


def _sub(app: str, **fields: Any) -> dict[str, Any]:
    return {**SubscriptionSpec(app, "welcome", ("user.signed_up",)).to_doc(), **fields}


def _entry(*docs: Any) -> bytes:
    return orjson.dumps(list(docs))


# (case, app name as stored, entry as stored, words the reason must contain)
DAMAGE = [
    ("value not utf-8", b"crm", b'[{"app": "crm\xff"}]', "not UTF-8"),
    ("not json", b"crm", b'[{"app": "crm",', "not JSON"),
    ("an object, not a list", b"crm", orjson.dumps(_sub("crm")), "expected a JSON list"),
    ("an item that is a string", b"crm", _entry("welcome"), "is a string, not an object"),
    ("no events", b"crm", _entry({"app": "crm", "name": "welcome"}), "'events' is missing"),
    ("unknown field", b"crm", _entry(_sub("crm", colour="red")), "unknown field 'colour'"),
    ("events not a list", b"crm", _entry(_sub("crm", events="user.*")), "'events' must be"),
    ("attempts a string", b"crm", _entry(_sub("crm", max_attempts="5")), "'max_attempts'"),
    ("bad scope", b"crm", _entry(_sub("crm", scope="some")), "'scope' must be"),
    ("bad backoff", b"crm", _entry(_sub("crm", backoff="fast")), "a back-off is"),
    ("names another app", b"crm", _entry(_sub("billing")), "names app 'billing'"),
    ("pattern", b"crm", _entry(_sub("crm", events=["user**"])), "no longer compiles"),
    ("filter", b"crm", _entry(_sub("crm", where={"plan": {"$gt": 1}})), "no longer compiles"),
    ("name not utf-8", b"cr\xe9m", _entry(_sub("crm")), "app name is not UTF-8"),
    ("name invalid", b"CRM!", _entry(_sub("CRM!")), "invalid app name"),
]


@pytest.fixture(autouse=True)
def _fresh_damage_log() -> None:
    """Each test sees the first report of its damage (the log dedups per version)."""
    from bus.events import registry

    registry._DAMAGE_LOG.reset()


async def _healthy_and(aredis: Redis, app: bytes, entry: bytes) -> None:
    """Register 'email' properly, then store one damaged entry beside it."""
    await sync_subscriptions(aredis, KEYS, "email", [SubscriptionSpec.from_doc(_sub("email"))])
    await aredis.hset(KEYS.subs, app, entry)
    await aredis.incr(KEYS.subs_version)


@pytest.mark.parametrize(
    ("app", "entry", "reason"), [c[1:] for c in DAMAGE], ids=[c[0] for c in DAMAGE]
)
async def test_a_damaged_entry_is_skipped_and_named_the_others_still_route(
    aredis: Redis, logs: Logs, app: bytes, entry: bytes, reason: str
) -> None:
    """parse never raises: the damaged app is listed with its reason, the others route."""
    await _healthy_and(aredis, app, entry)
    registry = await load_registry(aredis, KEYS)
    shown = app.decode("utf-8", "backslashreplace")
    assert registry.damaged == (shown,)
    assert reason in registry.damage[shown]
    assert [s.app for s in registry.route("user.signed_up", USER)] == ["email"]
    assert shown in registry.apps
    damaged = [e for e in logs if e["event"] == "registry_entry_damaged"]
    assert [(e["app"], e["entry"], e["log_level"]) for e in damaged] == [
        (shown, "subscriptions", "error")
    ]


async def test_damage_is_logged_once_per_registry_version(aredis: Redis, logs: Logs) -> None:
    """Reloading the same version does not log again; a new version does."""
    await _healthy_and(aredis, b"crm", b"\xff")
    first = int(raw(await aredis.get(KEYS.subs_version)))
    for _ in range(3):
        await load_registry(aredis, KEYS)
    await aredis.incr(KEYS.subs_version)
    await load_registry(aredis, KEYS)
    assert [e["registry_version"] for e in logs if e["event"] == "registry_entry_damaged"] == [
        str(first),
        str(first + 1),
    ]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = list(_sub("crm"))


@st.composite
def stored_entries(draw: st.DrawFn) -> bytes:
    """Whatever may be in a registry field: raw bytes, any JSON, a sound entry with one
    field replaced or dropped."""
    kind = draw(st.sampled_from(["bytes", "json", "field", "drop"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "json":
        return orjson.dumps(draw(JSON))
    doc = _sub("crm")
    name = draw(st.sampled_from(FIELDS))
    if kind == "drop":
        del doc[name]
    else:
        doc[name] = draw(JSON)
    return _entry(doc)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(name=st.binary(min_size=1, max_size=12) | st.just(b"crm"), entry=stored_entries())
def test_parse_never_raises_and_the_sound_entry_still_routes(name: bytes, entry: bytes) -> None:
    """For any stored field beside a sound one: parse returns, the sound app routes, and
    the other is either sound too or named in damaged with a reason."""
    raw = {b"email": _entry(_sub("email")), name: entry}
    if name == b"email":
        return
    registry = Registry.parse(b"1", raw)
    routed = {s.app for s in registry.route("user.signed_up", USER)}
    assert "email" in routed
    shown = app_name_of(name)[0]
    assert len(registry.apps) == 2
    if shown in registry.damaged:
        assert registry.damage[shown]
    else:
        assert shown == name.decode()


def test_parse_of_a_registry_written_by_the_previous_version() -> None:
    """A plain list of subscriptions per app, no task declarations: parsed as before."""
    raw = {b"email": _entry(_sub("email")), b"crm": _entry(_sub("crm", where={"plan": "pro"}))}
    registry = Registry.parse(b"7", raw)
    assert (registry.version, registry.apps, registry.damaged) == ("7", ("crm", "email"), ())
    assert sorted(s.app for s in registry.route("user.signed_up", USER)) == ["crm", "email"]


async def test_a_sync_repairs_a_damaged_entry_and_says_so(aredis: Redis) -> None:
    """The damaged entry routes nothing, so a sync replaces it without --allow-removal."""
    await _healthy_and(aredis, b"crm", b"\xff\xfe")
    spec = SubscriptionSpec.from_doc(_sub("crm"))
    result = await sync_subscriptions(aredis, KEYS, "crm", [spec])
    assert result.applied
    assert "replaced a damaged entry (subscriptions: not UTF-8" in result.describe()
    registry = await load_registry(aredis, KEYS)
    assert registry.damaged == ()
    assert sorted(s.app for s in registry.route("user.signed_up", USER)) == ["crm", "email"]


async def test_publish_still_reaches_the_healthy_apps(settings: Settings, aredis: Redis) -> None:
    """A non-UTF-8 entry of one app no longer makes every publish fail."""
    await _healthy_and(aredis, b"crm", b'[{"app": "crm\xff"}]')
    bus = Bus(settings, redis=aredis, source="tests")
    key = await bus.apublish("user.signed_up", USER)
    assert await aredis.hexists(AppKeys("bus", "email").tasks, f"{key}.welcome")


def test_subscriptions_list_flags_a_damaged_entry_and_lists_the_rest(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table and the JSON show the damaged app with its reason, escaped; exit 0."""
    assert main(["subscriptions", "sync", "--app", "email"]) == 0

    async def damage(client: Redis) -> None:
        await client.hset(KEYS.subs, b"crm", b'[{"app": "crm\xff"}]')
        await client.hset(KEYS.subs, b"\x1b]0;owned\x07", b"[]")
        await client.incr(KEYS.subs_version)

    on_redis(cli_env, damage)
    capsys.readouterr()
    assert main(["subscriptions", "list"]) == 0
    table = capsys.readouterr().out
    assert "welcome" in table
    assert re.search(r"\ncrm +DAMAGED subscriptions entry: not UTF-8", table)
    assert "\\x1b]0;owned\\x07" in table
    assert "\x1b" not in table
    assert "repair app crm: python -m bus subscriptions sync --app crm" in table
    assert "remove \\x1b]0;owned\\x07: no app can have this name" in table
    assert main(["subscriptions", "list", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert "welcome" in {s["name"] for s in doc["subscriptions"]}
    flagged = {d["app"]: d for d in doc["damaged"]}
    assert flagged["crm"]["entry"] == "subscriptions"
    assert flagged["crm"]["reason"].startswith("not UTF-8")
    assert "invalid app name" in flagged["\\x1b]0;owned\\x07"]["reason"]
    assert main(["subscriptions", "list", "--app", "crm"]) == 0
    only = capsys.readouterr().out
    assert "DAMAGED" in only
    assert "welcome" not in only
