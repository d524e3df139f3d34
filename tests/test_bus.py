"""The event bus in one process: validation, routing, dedup, registry, catch-up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from bus import (
    App,
    Bus,
    Event,
    EventSpec,
    Settings,
    TaskContext,
    TaskDef,
    TaskState,
    Worker,
)
from bus.config.apps import event_adapter
from bus.core.context import follow_up_id
from bus.events.envelope import validate_event_id
from bus.events.payload import PayloadNotSerializable, PayloadTooLarge
from bus.events.registry import SubscriptionSpec
from bus.events.registry_sync import RemovalRefused, sync_subscriptions, unregister_app
from bus.events.schemas import (
    PayloadInvalid,
    SchemaRegistry,
    UnknownEventType,
)
from bus.events.sweep import sweep_pending
from bus.store import transport
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import raw, texts

USER = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}
ORDER = {
    "order_id": "o1",
    "user_id": "u1",
    "amount_cents": 1200,
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 1}],
}


async def register(aredis: Redis, app: str, *specs: tuple[str, str | tuple[str, ...], Any]) -> None:
    """Register subscriptions (name, events, where) for an app."""
    subs = [
        SubscriptionSpec(app=app, name=name, events=(ev,) if isinstance(ev, str) else ev, where=w)
        for name, ev, w in specs
    ]
    await sync_subscriptions(aredis, BusKeys("bus"), app, subs, allow_removal=True)


async def task_ids(aredis: Redis, app: str) -> set[str]:
    """Ids of every task the app has."""
    return set(texts(await aredis.hkeys(AppKeys("bus", app).state)))


async def test_unknown_type_raises_and_writes_nothing(bus: Bus, aredis: Redis) -> None:
    """Publishing a type without a schema names it and the directory; Redis stays empty."""
    with pytest.raises(UnknownEventType, match=r"user\.signed_upp.*schemas.*Did you mean"):
        await bus.apublish("user.signed_upp", USER)
    assert await aredis.dbsize() == 0


async def test_invalid_payload_lists_every_violation_and_writes_nothing(
    bus: Bus, aredis: Redis
) -> None:
    """Each violation is reported with its JSON path; nothing is written."""
    bad = {"user_id": "", "email": "no", "plan": "gold"}
    with pytest.raises(PayloadInvalid) as caught:
        await bus.apublish("user.signed_up", bad)
    paths = [v.split(":")[0] for v in caught.value.violations]
    assert paths == ["$", "$.email", "$.plan", "$.user_id"]
    assert await aredis.dbsize() == 0


async def test_oversized_and_unserialisable_payloads_are_refused(
    settings: Settings, aredis: Redis
) -> None:
    """Payloads over the limit or not JSON raise before any write."""
    small = Bus(settings.replace(max_payload_bytes=64), redis=aredis)
    with pytest.raises(PayloadTooLarge, match="over the limit of 64"):
        await small.apublish("user.signed_up", {**USER, "referrer": "x" * 100})
    with pytest.raises(PayloadNotSerializable, match=r"\$\.items\[0\]\.quantity"):
        await small.apublish(
            "order.placed", {**ORDER, "items": [{"sku": "a", "quantity": float("nan")}]}
        )
    assert await aredis.dbsize() == 0


async def test_publish_makes_one_task_per_matching_subscription(bus: Bus, aredis: Redis) -> None:
    """Each matching subscription gets one task with id <key>.<subscription>; filters hold."""
    await register(aredis, "billing", ("open_pro", "user.signed_up", {"plan": ["pro"]}))
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    await register(aredis, "analytics", ("users", "user.*", None), ("all", "*", None))
    await register(aredis, "shipping", ("ship", "order.placed", None))
    pro = await bus.apublish("user.signed_up", USER)
    free = await bus.apublish("user.signed_up", {**USER, "plan": "free"})
    assert await task_ids(aredis, "billing") == {f"{pro}.open_pro"}
    assert await task_ids(aredis, "email") == {f"{pro}.welcome", f"{free}.welcome"}
    assert await task_ids(aredis, "analytics") == {
        f"{k}.{s}" for k in (pro, free) for s in ("users", "all")
    }
    assert await task_ids(aredis, "shipping") == set()
    assert await aredis.zcard(BusKeys("bus").pending) == 0


async def test_same_source_and_id_within_window_is_routed_once(bus: Bus, aredis: Redis) -> None:
    """A repeated publish with the same id returns the first key and adds no task."""
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    first = await bus.apublish("user.signed_up", USER, id="signup-u1")
    again = await bus.apublish("user.signed_up", USER, id="signup-u1")
    other_source = await bus.apublish("user.signed_up", USER, id="signup-u1", source="elsewhere")
    assert again == first
    assert other_source != first
    assert await task_ids(aredis, "email") == {f"{first}.welcome", f"{other_source}.welcome"}


async def test_sync_publish_and_publish_many(
    settings: Settings, aredis: Redis, redis_url: str
) -> None:
    """The synchronous API and batches route like apublish."""
    import redis

    await register(aredis, "email", ("welcome", "user.signed_up", None))
    sync_client = redis.Redis.from_url(redis_url)
    bus = Bus(settings, sync_redis=sync_client)
    try:
        one = await asyncio.to_thread(bus.publish, "user.signed_up", USER)
        many = await asyncio.to_thread(
            bus.publish_many,
            [EventSpec("user.signed_up", {**USER, "user_id": f"u{i}"}) for i in range(50)],
        )
    finally:
        sync_client.close()
    assert len(set(many)) == 50
    assert await task_ids(aredis, "email") == {f"{k}.welcome" for k in [one, *many]}


async def test_publish_many_validates_every_event_before_writing(bus: Bus, aredis: Redis) -> None:
    """One bad event in a batch fails the whole batch with nothing written."""
    events = [EventSpec("user.signed_up", USER), EventSpec("user.signed_up", {"plan": "x"})]
    with pytest.raises(PayloadInvalid):
        await bus.apublish_many(events)
    assert await aredis.dbsize() == 0


async def test_registry_change_reaches_a_publisher_with_a_cached_copy(
    bus: Bus, aredis: Redis
) -> None:
    """An app registered after the publisher cached the registry gets later events."""
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    before = await bus.apublish("user.signed_up", USER)
    await register(aredis, "crm", ("lead", "user.signed_up", None))
    after = await bus.apublish("user.signed_up", USER)
    assert await task_ids(aredis, "crm") == {f"{after}.lead"}
    assert f"{before}.lead" not in await task_ids(aredis, "crm")


async def test_sync_refuses_removal_without_the_flag_and_unregister_works(aredis: Redis) -> None:
    """Dropping a subscription needs allow_removal; unregistering removes the app."""
    keys = BusKeys("bus")
    specs = [SubscriptionSpec("email", n, ("user.signed_up",)) for n in ("a", "b")]
    await sync_subscriptions(aredis, keys, "email", specs)
    with pytest.raises(RemovalRefused, match="would remove subscriptions b"):
        await sync_subscriptions(aredis, keys, "email", specs[:1])
    result = await sync_subscriptions(aredis, keys, "email", specs[:1], allow_removal=True)
    assert (result.removed, result.applied) == (["b"], True)
    assert await unregister_app(aredis, keys, "email") is True
    assert await aredis.hget(keys.subs, "email") is None


async def test_offline_app_receives_everything_when_it_starts(bus: Bus, aredis: Redis) -> None:
    """Events published while no worker of an app runs wait in its queue and all arrive."""
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    keys = [await bus.apublish("user.signed_up", {**USER, "user_id": f"u{i}"}) for i in range(30)]
    got: list[Event] = []
    app = App("email")

    async def welcome(event: Event, ctx: TaskContext) -> None:
        got.append(event)
        assert ctx.event_id == event.key

    app.add(TaskDef("welcome", welcome, kind="event"))
    await Worker(app, aredis, burst=True, payload_adapter=event_adapter()).run()
    assert sorted(e.key for e in got) == sorted(keys)
    assert {e.data["user_id"] for e in got} == {f"u{i}" for i in range(30)}
    assert all(e.type == "user.signed_up" and e.source == "tests" for e in got)


async def test_follow_up_events_carry_the_correlation_id(bus: Bus, aredis: Redis) -> None:
    """ctx.publish from a handler marks the follow-up with the trigger's correlation id."""
    await register(aredis, "billing", ("charge", "order.placed", None))
    await register(aredis, "email", ("problem", "payment.failed", None))
    seen: list[Event] = []
    billing = App("billing")

    async def charge(event: Event, ctx: TaskContext) -> None:
        await ctx.publish(
            "payment.failed",
            {"order_id": "o1", "user_id": "u1", "amount_cents": 5, "reason": "card_declined"},
        )

    billing.add(TaskDef("charge", charge, kind="event"))
    email = App("email")

    async def problem(event: Event, ctx: TaskContext) -> None:
        seen.append(event)

    email.add(TaskDef("problem", problem, kind="event"))
    key = await bus.apublish("order.placed", ORDER, correlation_id="checkout-9")
    await Worker(
        billing, aredis, burst=True, payload_adapter=event_adapter(), publisher=bus.apublish
    ).run()
    await Worker(email, aredis, burst=True, payload_adapter=event_adapter()).run()
    assert len(seen) == 1
    assert seen[0].correlation_id == "checkout-9"
    assert seen[0].key != key


PAYMENT_FAILED = {"order_id": "o1", "user_id": "u1", "amount_cents": 5, "reason": "card_declined"}


async def run_charge_twice(
    bus: Bus, aredis: Redis, publish: Callable[[TaskContext], Awaitable[list[str]]]
) -> tuple[list[list[str]], int]:
    """Run a billing handler that publishes, fails on attempt 1 and succeeds on attempt 2.

    Returns the ids each attempt's publish calls returned and the number of
    payment.failed tasks email was given.
    """
    # The retry is due at once, so one burst worker runs both attempts.
    charge_spec = SubscriptionSpec("billing", "charge", ("order.placed",), backoff=[0])
    await sync_subscriptions(aredis, BusKeys("bus"), "billing", [charge_spec])
    await register(aredis, "email", ("problem", "payment.failed", None))
    returned: list[list[str]] = []
    billing = App("billing")

    async def charge(event: Event, ctx: TaskContext) -> None:
        returned.append(await publish(ctx))
        if ctx.attempt == 1:
            raise RuntimeError("card processor timed out after the follow-ups went out")

    billing.add(TaskDef("charge", charge, kind="event"))
    await bus.apublish("order.placed", ORDER, correlation_id="checkout-9")
    await Worker(
        billing, aredis, burst=True, payload_adapter=event_adapter(), publisher=bus.apublish
    ).run()
    assert len(returned) == 2  # both attempts ran
    return returned, len(await task_ids(aredis, "email"))


async def test_a_retried_handler_publishes_its_follow_up_once(bus: Bus, aredis: Redis) -> None:
    """A follow-up published before a failure is not published again by the retry."""

    async def publish(ctx: TaskContext) -> list[str]:
        return [await ctx.publish("payment.failed", PAYMENT_FAILED)]

    returned, email_tasks = await run_charge_twice(bus, aredis, publish)
    assert returned[0] == returned[1]
    assert (email_tasks, await aredis.hlen(BusKeys("bus").events)) == (1, 2)


async def test_follow_ups_of_one_attempt_get_distinct_ids(bus: Bus, aredis: Redis) -> None:
    """Two ctx.publish calls in one attempt are two events, each published once across attempts."""

    async def publish(ctx: TaskContext) -> list[str]:
        return [
            await ctx.publish("payment.failed", PAYMENT_FAILED),
            await ctx.publish("payment.failed", {**PAYMENT_FAILED, "amount_cents": 6}),
        ]

    returned, email_tasks = await run_charge_twice(bus, aredis, publish)
    assert returned[0] == returned[1]
    assert len(set(returned[0])) == 2
    assert (email_tasks, await aredis.hlen(BusKeys("bus").events)) == (2, 3)


async def test_an_explicit_follow_up_id_overrides_the_derived_one(bus: Bus, aredis: Redis) -> None:
    """ctx.publish(id=...) dedups on the caller's id: a new id each attempt is a new event."""

    async def publish(ctx: TaskContext) -> list[str]:
        return [await ctx.publish("payment.failed", PAYMENT_FAILED, id=f"try-{ctx.attempt}")]

    returned, email_tasks = await run_charge_twice(bus, aredis, publish)
    assert returned[0] != returned[1]
    assert (email_tasks, await aredis.hlen(BusKeys("bus").events)) == (2, 3)


@pytest.mark.parametrize("task_id", ["x" * 200, "order 7 ✓", "a/b:c", "t" * 126])
def test_derived_follow_up_ids_are_valid_event_ids_for_any_task_id(task_id: str) -> None:
    """Long task ids and characters event ids do not allow still give valid, stable ids."""
    ids = [follow_up_id("billing", task_id, n) for n in (1, 2, 1000)]
    assert [validate_event_id(i) for i in ids] == ids
    assert len(set(ids)) == 3
    assert ids == [follow_up_id("billing", task_id, n) for n in (1, 2, 1000)]
    assert follow_up_id("billing", task_id + "y", 1) != ids[0]
    assert follow_up_id("shipping", task_id, 1) != ids[0]


async def test_two_apps_tasks_of_one_id_publish_both_follow_ups_through_one_bus(
    bus: Bus, aredis: Redis
) -> None:
    """Same subscription name in two apps (so the same task id): both follow-ups recorded."""
    await register(aredis, "billing", ("on_order", "order.placed", None))
    await register(aredis, "shipping", ("on_order", "order.placed", None))
    await register(aredis, "email", ("payment_problem", "payment.failed", None))
    key = await bus.apublish("order.placed", ORDER)
    for app in ("billing", "shipping"):
        ctx = TaskContext(
            app=app,
            task_id=f"{key}.on_order",
            name="on_order",
            queue="default",
            attempt=1,
            max_attempts=3,
            publisher=bus.apublish,
        )
        await ctx.publish("payment.failed", {**PAYMENT_FAILED, "order_id": f"{app}-1"})
    assert await aredis.hlen(AppKeys("bus", "email").state) == 2


async def test_consumer_side_schema_check_dead_letters_a_bad_event(
    bus: Bus, aredis: Redis, settings: Settings
) -> None:
    """An event whose payload fails the consumer's schema is dead at once with the reason."""
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    key = await bus.apublish("user.signed_up", USER)
    # Corrupt the stored event as a buggy or malicious writer could.
    keys = AppKeys("bus", "email")
    record = raw(await aredis.hget(keys.tasks, f"{key}.welcome"))
    await aredis.hset(
        keys.tasks, f"{key}.welcome", record.replace(b'"plan":"pro"', b'"plan":"gold"')
    )
    app = App("email")
    calls: list[Event] = []

    async def welcome(event: Event) -> None:
        calls.append(event)

    app.add(TaskDef("welcome", welcome, kind="event"))
    schemas = SchemaRegistry.load(settings.schemas_dir)
    await Worker(app, aredis, burst=True, payload_adapter=event_adapter(schemas)).run()
    info = await bus.get_task("email", f"{key}.welcome")
    assert info is not None
    assert info.state is TaskState.DEAD
    assert info.dead_reason == "schema check failed"
    assert "'gold' is not one of" in info.errors[-1].message
    assert calls == []


async def test_sweep_routes_events_a_publisher_recorded_but_never_routed(
    bus: Bus, aredis: Redis
) -> None:
    """An event left pending is routed by the sweep, once, however many sweep it."""
    await register(aredis, "email", ("welcome", "user.signed_up", None))
    publisher = bus.publisher
    prepared = publisher.prepare("user.signed_up", USER, now_ms=1_000)
    await transport.run_calls(aredis, [publisher._record_call([prepared], 1_000)])
    assert await task_ids(aredis, "email") == set()
    routed = await asyncio.gather(
        *(sweep_pending(aredis, "bus", now_ms=10_000, grace_ms=5_000) for _ in range(3))
    )
    assert sum(routed) >= 1
    assert await task_ids(aredis, "email") == {f"{prepared.event.key}.welcome"}
    assert await aredis.zcard(BusKeys("bus").pending) == 0
    info = await bus.get_task("email", f"{prepared.event.key}.welcome")
    assert info is not None
    assert info.state is TaskState.QUEUED


async def test_sweep_leaves_recent_pending_events_to_their_publisher(
    bus: Bus, aredis: Redis
) -> None:
    """Events younger than the grace period are not swept."""
    publisher = bus.publisher
    prepared = publisher.prepare("user.signed_up", USER, now_ms=9_000)
    await transport.run_calls(aredis, [publisher._record_call([prepared], 9_000)])
    assert await sweep_pending(aredis, "bus", now_ms=10_000, grace_ms=5_000) == 0
    assert await aredis.zcard(BusKeys("bus").pending) == 1
