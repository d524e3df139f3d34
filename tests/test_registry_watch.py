"""The registry watch: a loss is told from an operator's removal from the first check on."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bus.core import clock
from bus.events.registry import SubscriptionSpec
from bus.events.registry_sync import SyncResult, sync_subscriptions
from bus.events.registry_watch import RegistryWatch
from bus.store.keys import BusKeys
from tests.conftest import Logs

KEYS = BusKeys("bus")


async def register(client: Redis, app: str) -> SyncResult:
    """Register one subscription for ``app``."""
    spec = SubscriptionSpec(app=app, name="on_signup", events=("user.signed_up",))
    return await sync_subscriptions(client, KEYS, app, [spec], allow_removal=True)


async def next_millisecond() -> None:
    """Wait until the clock has moved on: a registry made afresh takes its epoch from it."""
    start = clock.now_ms()
    for _ in range(1000):
        if clock.now_ms() != start:
            return
        await asyncio.sleep(0.0005)
    raise AssertionError("the clock did not move")


async def test_a_loss_before_the_first_check_is_a_loss_not_a_removal(
    aredis: Redis, logs: Logs
) -> None:
    """Redis emptied and another app re-registered before the first beat: email is re-synced."""
    await register(aredis, "email")
    synced: list[str] = []

    async def resync() -> SyncResult:
        synced.append("email")
        return await register(aredis, "email")

    watch = RegistryWatch(aredis, KEYS, "email", resync=resync)
    await watch.prime()
    await aredis.flushall()
    await next_millisecond()
    await register(aredis, "billing")  # another app's worker got there first
    assert await watch.check() is True
    assert synced == ["email"]
    assert [e["event"] for e in logs] == ["registry_lost", "registry_restored"]
    assert await aredis.hexists(KEYS.subs, "email")


async def test_a_never_registered_app_is_reported_once_not_as_removed(
    aredis: Redis, logs: Logs
) -> None:
    """A --no-sync worker of an app never synced: app_not_registered once, no app_unregistered."""
    await register(aredis, "billing")
    watch = RegistryWatch(aredis, KEYS, "email", resync=None)
    await watch.prime()
    await register(aredis, "crm")  # the registry moves on
    assert await watch.check() is False
    assert await watch.check() is False
    assert [(e["event"], e["log_level"]) for e in logs] == [("app_not_registered", "warning")]


async def test_an_operator_removal_is_still_left_alone(aredis: Redis, logs: Logs) -> None:
    """Same epoch, version up, entry gone: app_unregistered, nothing written."""
    await register(aredis, "email")
    watch = RegistryWatch(aredis, KEYS, "email", resync=None)
    await watch.prime()
    await aredis.hdel(KEYS.subs, "email")
    await aredis.incr(KEYS.subs_version)
    assert await watch.check() is False
    assert [e["event"] for e in logs] == ["app_unregistered"]
