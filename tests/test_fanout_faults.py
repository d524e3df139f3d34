"""A fan-out that fails for one app: the event stays pending until every task exists."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from bus import Bus, EventNotRecorded, EventSpec, RoutingIncomplete, Settings
from bus.core import clock
from bus.events.registry import SubscriptionSpec
from bus.events.registry_sync import sync_subscriptions
from bus.events.router import task_id_for
from bus.events.sweep import PendingSweep, sweep_pending
from bus.store import engine, scripts, transport
from bus.store.keys import AppKeys, BusKeys, app_keys
from tests.conftest import Logs, raw, scored, text, texts
from tests.redis_server import MakeRedisServer, RedisServer
from tests.test_registry_watch import next_millisecond

USER = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}
ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}
APPS = ("analytics", "billing", "email")
PREFIX = "bus"
KEYS = BusKeys(PREFIX)


async def register_three(client: Redis) -> None:
    """Register three apps that all subscribe to user.signed_up."""
    for app in APPS:
        spec = SubscriptionSpec(app=app, name=f"on_{app}", events=("user.signed_up",))
        await sync_subscriptions(client, KEYS, app, [spec], allow_removal=True)


async def tasks_of(client: Redis, app: str) -> set[str]:
    """The ids in an app's state hash (a task exists iff its state does)."""
    return set(texts(await client.hkeys(app_keys(PREFIX, app).state)))


async def pending(client: Redis) -> list[str]:
    """The event keys still pending."""
    return texts(await client.zrange(KEYS.pending, 0, -1))


async def publish_with_analytics_broken(bus: Bus, aredis: Redis, **kwargs: Any) -> str:
    """Register the three apps, damage analytics' tasks hash, publish: the event's key.

    The publish must raise RoutingIncomplete for exactly that one event.
    """
    await register_three(aredis)
    await aredis.set(app_keys(PREFIX, "analytics").tasks, "notahash")
    with pytest.raises(RoutingIncomplete) as caught:
        await bus.apublish("user.signed_up", USER, **kwargs)
    [key] = caught.value.event_keys
    return key


async def test_one_app_failing_leaves_the_event_pending_and_raises_naming_it(
    bus: Bus, aredis: Redis
) -> None:
    """A damaged tasks hash of one app: error names it, event pending, others have tasks."""
    await register_three(aredis)
    await aredis.set(app_keys(PREFIX, "analytics").tasks, "notahash")
    with pytest.raises(RoutingIncomplete) as caught:
        await bus.apublish("user.signed_up", USER)
    err = caught.value
    assert set(err.apps) == {"analytics"}
    assert "analytics" in str(err)
    assert "pending" in str(err)
    assert "sweep" in str(err)
    assert isinstance(err.__cause__, redis.ResponseError)
    [key] = err.event_keys
    assert await pending(aredis) == [key]
    assert await tasks_of(aredis, "billing") == {task_id_for(key, "on_billing")}
    assert await tasks_of(aredis, "email") == {task_id_for(key, "on_email")}
    # Nothing half-written: no state entry that would make the task "known".
    assert await tasks_of(aredis, "analytics") == set()


async def test_the_sweep_delivers_the_event_once_the_cause_is_fixed(
    bus: Bus, aredis: Redis
) -> None:
    """After the damaged key is repaired, the sweep gives the app its task and clears pending."""
    key = await publish_with_analytics_broken(bus, aredis)
    far = 10**15
    # Still damaged: the sweep leaves it pending.
    assert await sweep_pending(aredis, PREFIX, now_ms=far, grace_ms=0) == 0
    assert await pending(aredis) == [key]
    await aredis.delete(app_keys(PREFIX, "analytics").tasks)
    assert await sweep_pending(aredis, PREFIX, now_ms=far, grace_ms=0) == 1
    assert await pending(aredis) == []
    for app in APPS:
        assert await tasks_of(aredis, app) == {task_id_for(key, f"on_{app}")}
    ready = await aredis.lrange(app_keys(PREFIX, "analytics").queue("default").ready, 0, -1)
    assert ready == [task_id_for(key, "on_analytics").encode()]


async def test_a_retry_with_the_same_id_makes_no_duplicate(bus: Bus, aredis: Redis) -> None:
    """A retry with the same id fails again while the cause stands, then delivers, once each."""
    key = await publish_with_analytics_broken(bus, aredis, id="signup-u1")
    # Not fixed yet: the retry is no false success.
    with pytest.raises(RoutingIncomplete) as again:
        await bus.apublish("user.signed_up", USER, id="signup-u1")
    assert again.value.event_keys == [key]
    await aredis.delete(app_keys(PREFIX, "analytics").tasks)
    # Fixed: the retry itself delivers the first event, no sweep needed.
    assert await bus.apublish("user.signed_up", USER, id="signup-u1") == key
    assert await pending(aredis) == []
    assert await bus.apublish("user.signed_up", USER, id="signup-u1") == key
    for app in APPS:
        assert await tasks_of(aredis, app) == {task_id_for(key, f"on_{app}")}
        assert await aredis.llen(app_keys(PREFIX, app).queue("default").ready) == 1


async def test_a_failed_record_writes_no_event_and_names_the_apps_given_tasks(
    bus: Bus, aredis: Redis
) -> None:
    """record.lua undoes its writes; the error says which apps got a task anyway."""
    await register_three(aredis)
    await aredis.set(KEYS.pending, "notazset")
    with pytest.raises(EventNotRecorded) as caught:
        await bus.apublish("user.signed_up", USER)
    err = caught.value
    assert err.apps == sorted(APPS)
    assert "second one" in str(err)
    assert isinstance(err.__cause__, redis.ResponseError)
    assert await aredis.hlen(KEYS.events) == 0
    assert await aredis.zcard(KEYS.events_t) == 0


async def test_a_failed_record_of_a_batch_undoes_every_event_of_it(aredis: Redis) -> None:
    """The second event's dedup lookup fails: the first event's writes are undone too."""
    await aredis.set(KEYS.dedup, "notahash")
    call = (
        scripts.RECORD,
        (KEYS.events, KEYS.events_t, KEYS.pending, KEYS.dedup, KEYS.dedup_t, KEYS.subs_version),
        [1_000, 86_400_000, 86_400_000, "k1", b"{}", "", "k2", b"{}", "src\x1fid"],
    )
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await transport.run_calls(aredis, [call])
    assert await aredis.hlen(KEYS.events) == 0
    assert await aredis.zcard(KEYS.pending) == 0
    assert await aredis.zcard(KEYS.events_t) == 0


async def test_a_sync_batch_leaves_the_damaged_apps_events_pending(
    settings: Settings, redis_url: str, aredis: Redis
) -> None:
    """publish_many from sync code: every event stays pending; the error names the app."""
    await register_three(aredis)
    await aredis.set(app_keys(PREFIX, "email").queue("default").ready, "notalist")
    client = redis.Redis.from_url(redis_url)
    try:
        bus = Bus(settings, sync_redis=client, source="tests")
        with pytest.raises(RoutingIncomplete) as caught:
            bus.publish_many([EventSpec("user.signed_up", USER) for _ in range(3)])
    finally:
        client.close()
    assert set(caught.value.apps) == {"email"}
    assert len(caught.value.event_keys) == 3
    assert sorted(caught.value.event_keys) == sorted(await pending(aredis))
    email = app_keys(PREFIX, "email")
    assert await aredis.hlen(email.state) == 0
    assert await aredis.hlen(email.tasks) == 0
    assert await aredis.hlen(app_keys(PREFIX, "billing").state) == 3


@pytest.mark.parametrize("damaged", ["delayed", "wake", "app_wake", "queues"])
async def test_enqueue_writes_nothing_when_a_later_write_fails(aredis: Redis, damaged: str) -> None:
    """A wrong-typed key met after the first writes: every write of the call is undone."""
    keys = AppKeys(PREFIX, "shop")
    q = keys.queue("default")
    target = {"delayed": q.delayed, "wake": q.wake, "app_wake": keys.wake, "queues": keys.queues}
    await aredis.set(target[damaged], "damaged")
    tasks = [
        engine.NewTask("t-now", b'{"id":"t-now"}', 3, 0),
        engine.NewTask("t-later", b'{"id":"t-later"}', 3, 10**15),
    ]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await transport.run_calls(aredis, [engine.enqueue_call(keys, "default", 1_000, tasks)])
    assert await aredis.hlen(keys.state) == 0
    assert await aredis.hlen(keys.tasks) == 0
    assert await aredis.llen(q.ready) == 0
    if damaged != "delayed":
        assert await aredis.zcard(q.delayed) == 0
    if damaged != "queues":
        assert await aredis.scard(keys.queues) == 0
    # Repaired, the same call adds both tasks: nothing was left "already known".
    await aredis.delete(target[damaged])
    replies = await transport.run_calls(
        aredis, [engine.enqueue_call(keys, "default", 1_000, tasks)]
    )
    assert replies == [[1, 1]]
    assert await aredis.lrange(q.ready, 0, -1) == [b"t-now"]
    assert await aredis.zrange(q.delayed, 0, -1) == [b"t-later"]


@pytest.fixture
def acl_server(make_redis_server: MakeRedisServer) -> RedisServer:
    """A private server with a user that may write every app's keys but analytics'."""
    server = make_redis_server(appendonly=False)
    with server.client() as admin:
        admin.execute_command(
            "ACL",
            "SETUSER",
            "publisher",
            "on",
            ">secret",
            "~bus:bus:*",
            "~bus:app:{billing}:*",
            "~bus:app:{email}:*",
            "+@all",
        )
    return server


async def test_noperm_for_one_app_leaves_the_event_pending(
    settings: Settings, acl_server: RedisServer
) -> None:
    """Under an ACL user barred from one app's keys, that app's tasks fail and the event waits."""
    admin = Redis.from_url(acl_server.url)
    url = acl_server.url.replace("://", "://publisher:secret@", 1)
    client = Redis.from_url(url)
    try:
        await register_three(admin)
        bus = Bus(settings.replace(redis_url=url), redis=client, source="tests")
        with pytest.raises(RoutingIncomplete) as caught:
            await bus.apublish("user.signed_up", USER)
        assert set(caught.value.apps) == {"analytics"}
        assert "NOPERM" in str(caught.value) or "permission" in str(caught.value).lower()
        [key] = caught.value.event_keys
        assert await pending(admin) == [key]
        assert await tasks_of(admin, "billing") == {task_id_for(key, "on_billing")}
        # An operator's sweep (full rights) delivers it.
        assert await sweep_pending(admin, PREFIX, now_ms=10**15, grace_ms=0) == 1
        assert await tasks_of(admin, "analytics") == {task_id_for(key, "on_analytics")}
    finally:
        await client.aclose()
        await admin.aclose()


async def test_the_sweep_moves_past_events_that_keep_failing(bus: Bus, aredis: Redis) -> None:
    """Stale events failing for a damaged app do not hold back the events behind them."""
    await register_three(aredis)
    orders = SubscriptionSpec(app="billing", name="on_order", events=("order.placed",))
    signups = SubscriptionSpec(app="billing", name="on_billing", events=("user.signed_up",))
    await sync_subscriptions(aredis, KEYS, "billing", [signups, orders], allow_removal=True)
    await aredis.set(app_keys(PREFIX, "analytics").tasks, "notahash")
    stuck = []
    for _ in range(2):
        with pytest.raises(RoutingIncomplete) as caught:
            await bus.apublish("user.signed_up", USER)
        stuck += caught.value.event_keys
    # Two events behind them whose publisher died before marking them routed.
    behind = [await bus.apublish("order.placed", ORDER) for _ in range(2)]
    last = max(
        score for _, score in scored(await aredis.zrange(KEYS.pending, 0, -1, withscores=True))
    )
    await aredis.zadd(KEYS.pending, {key: last + 1 + i for i, key in enumerate(behind)})
    sweep = PendingSweep(PREFIX, grace_ms=0, limit=2)
    first = await sweep.sweep(aredis, now_ms=10**15)
    assert (first.routed, first.left) == (0, 2)
    second = await sweep.sweep(aredis, now_ms=10**15)
    assert (second.routed, second.left) == (2, 0)
    assert sorted(await pending(aredis)) == sorted(stuck)
    # Back to the head: the stuck ones are tried again, and delivered once repaired.
    assert (await sweep.sweep(aredis, now_ms=10**15)).left == 2
    await aredis.delete(app_keys(PREFIX, "analytics").tasks)
    assert (await sweep.sweep(aredis, now_ms=10**15)).routed == 2
    assert await pending(aredis) == []


async def test_a_damaged_registry_entry_keeps_events_pending_until_repaired(
    bus: Bus, aredis: Redis
) -> None:
    """The healthy apps get the event at once; it stays pending until the entry is repaired."""
    await register_three(aredis)
    await aredis.hset(KEYS.subs, "analytics", b"\xff not json")
    await aredis.incr(KEYS.subs_version)
    key = await bus.apublish("user.signed_up", USER)
    assert await tasks_of(aredis, "billing") == {task_id_for(key, "on_billing")}
    assert await tasks_of(aredis, "email") == {task_id_for(key, "on_email")}
    assert await pending(aredis) == [key]
    # The sweep routes it again (no-ops) but may not mark it while the entry is damaged.
    report = await PendingSweep(PREFIX, grace_ms=0).sweep(aredis, now_ms=10**15)
    assert (report.routed, report.left) == (0, 1)
    assert await pending(aredis) == [key]
    spec = SubscriptionSpec(app="analytics", name="on_analytics", events=("user.signed_up",))
    await sync_subscriptions(aredis, KEYS, "analytics", [spec], allow_removal=True)
    report = await PendingSweep(PREFIX, grace_ms=0).sweep(aredis, now_ms=10**15)
    assert (report.routed, report.left) == (1, 0)
    assert await pending(aredis) == []
    assert await tasks_of(aredis, "analytics") == {task_id_for(key, "on_analytics")}
    assert await aredis.llen(app_keys(PREFIX, "billing").queue("default").ready) == 1


async def test_a_registry_made_afresh_never_reuses_a_version(aredis: Redis) -> None:
    """After Redis lost the registry, the new versions differ from every old one."""
    await register_three(aredis)
    old = int(raw(await aredis.get(KEYS.subs_version)))
    await aredis.flushall()
    seen = set()
    for _ in range(4):
        await next_millisecond()
        await register_three(aredis)
        seen.add(int(raw(await aredis.get(KEYS.subs_version))))
        await aredis.delete(KEYS.subs)
    assert old not in seen
    assert all(v > old for v in seen)


async def test_a_publisher_routes_normally_again_once_the_entry_is_repaired(
    bus: Bus, aredis: Redis
) -> None:
    """The same Bus sees the repair: its next events reach the app and leave pending."""
    await register_three(aredis)
    await aredis.hset(KEYS.subs, "analytics", b"\xff not json")
    await aredis.incr(KEYS.subs_version)
    held = await bus.apublish("user.signed_up", USER)
    assert await pending(aredis) == [held]
    spec = SubscriptionSpec(app="analytics", name="on_analytics", events=("user.signed_up",))
    await sync_subscriptions(aredis, KEYS, "analytics", [spec], allow_removal=True)
    after = [await bus.apublish("user.signed_up", USER) for _ in range(3)]
    assert await pending(aredis) == [held]
    assert await tasks_of(aredis, "analytics") == {task_id_for(k, "on_analytics") for k in after}


async def test_a_sweep_whose_registry_keeps_changing_reports_nothing_routed(
    bus: Bus, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not current after its tries: every event is counted as left, none as routed."""
    await register_three(aredis)
    await aredis.zadd(KEYS.pending, {"0" * 26: 1})
    await aredis.hset(KEYS.events, "0" * 26, b'{"type": "user.signed_up", "data": {}}')
    real = transport.run_calls

    async def moving(client: Any, calls: Any, **kwargs: Any) -> Any:
        await aredis.incr(KEYS.subs_version)  # another sync lands each time
        return await real(client, calls, **kwargs)

    monkeypatch.setattr(transport, "run_calls", moving)
    report = await PendingSweep(PREFIX, grace_ms=0).sweep(aredis, now_ms=10**15)
    assert (report.routed, report.left) == (0, 1)
    assert await pending(aredis) == ["0" * 26]


async def test_a_damaged_registry_version_keeps_events_pending_without_looping(
    bus: Bus, aredis: Redis, logs: Logs
) -> None:
    """A version key that is not an integer: publish works, logs it, and marks nothing."""
    await register_three(aredis)
    await aredis.set(KEYS.subs_version, b"\xff\xfe")
    key = await asyncio.wait_for(bus.apublish("user.signed_up", USER), 5)
    report = await PendingSweep(PREFIX, grace_ms=0).sweep(aredis, now_ms=10**15)
    assert await pending(aredis) == [key]
    assert (report.routed, report.left) == (0, 1)
    for app in APPS:
        assert await tasks_of(aredis, app) == {task_id_for(key, f"on_{app}")}
    assert [e["event"] for e in logs].count("registry_version_damaged") == 1


async def prune(client: Redis, app: str, task_id: str) -> None:
    """Remove a task as retention does once it finished: record, state, queue entry."""
    keys = app_keys(PREFIX, app)
    await client.hdel(keys.tasks, task_id)
    await client.hdel(keys.state, task_id)
    await client.lrem(keys.queue("default").ready, 0, task_id)


async def test_a_re_route_never_gives_a_second_task_to_an_app_confirmed_before(
    bus: Bus, aredis: Redis
) -> None:
    """Billing's task ran and was pruned while the event waited: sweep and retry skip billing."""
    key = await publish_with_analytics_broken(bus, aredis, id="signup-9")
    confirmed = await aredis.hget(KEYS.confirmed, key)
    assert sorted(text(confirmed).split()) == ["billing", "email"]
    await prune(aredis, "billing", task_id_for(key, "on_billing"))
    # The sweep while still broken, a retry with the same id, then the repair.
    await sweep_pending(aredis, PREFIX, now_ms=10**15, grace_ms=0)
    with pytest.raises(RoutingIncomplete):
        await bus.apublish("user.signed_up", USER, id="signup-9")
    await aredis.delete(app_keys(PREFIX, "analytics").tasks)
    assert await sweep_pending(aredis, PREFIX, now_ms=10**15, grace_ms=0) == 1
    assert await tasks_of(aredis, "billing") == set()  # never re-enqueued
    assert await tasks_of(aredis, "analytics") == {task_id_for(key, "on_analytics")}
    assert await pending(aredis) == []
    assert not await aredis.exists(KEYS.confirmed)


async def test_a_dedup_entry_outlives_its_window_while_the_event_is_pending(
    bus: Bus, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry after the dedup window, of an event still pending, finds the first event."""
    key = await publish_with_analytics_broken(bus, aredis, id="late-retry")
    later = clock.now_ms() + 2 * 86_400_000  # two dedup windows on
    monkeypatch.setattr(clock, "now_ms", lambda: later)
    await aredis.delete(app_keys(PREFIX, "analytics").tasks)
    assert await bus.apublish("user.signed_up", USER, id="late-retry") == key
    assert await pending(aredis) == []
    assert await aredis.hlen(app_keys(PREFIX, "billing").state) == 1
