"""Task options declared in app.toml reach tasks enqueued by app name (issue 13, point 2).

A producer in another service has no App object, only the app's name: the
declarations travel through the registry (synced with the subscriptions) and
are resolved at enqueue time from a cached snapshot.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bus import App, Bus, Settings
from bus.cli import main
from bus.config.apps import task_specs
from bus.config.apptoml import load_app_config
from bus.core import clock
from bus.core.enqueue import EnqueueItem, TaskRef
from bus.events.declarations import CHECK_EVERY_S, TaskNotDeclared
from bus.events.registry import SubscriptionSpec, TaskSpec, load_registry
from bus.events.registry_sync import sync_subscriptions, unregister_app
from bus.store.keys import AppKeys, BusKeys
from bus.worker.__main__ import main as worker_main
from tests.conftest import Logs, raw
from tests.test_cli_ops import cli_env, on_redis

__all__ = ["cli_env"]

APP = "support"
KEYS = AppKeys("bus", APP)
BUS_KEYS = BusKeys("bus")

DIGEST = TaskSpec("digest", queue="low", max_attempts=3, timeout_s=7.0, backoff=[1, 5], scope="all")

APP_TOML = """\
name = "support"

[worker]
queues = ["low"]

[[tasks]]
name = "digest"
handler = "handlers:digest"
queue = "low"
max_attempts = 3
backoff = [1, 5]
timeout_s = 7
"""

HANDLERS = """\
import os
from pathlib import Path


def digest(payload):
    Path(os.environ["SUPPORT_DIGEST_OUT"]).write_text(payload["week"])
"""


@pytest.fixture
def producer(aredis: Redis, sync_client: redis.Redis) -> Bus:
    """A producer's Bus: it has the app's name, not its code."""
    return Bus(redis=aredis, sync_redis=sync_client)


async def declare(aredis: Redis, *tasks: TaskSpec, app: str = APP) -> None:
    """Register an app with these task declarations (as its worker's sync does)."""
    await sync_subscriptions(aredis, BUS_KEYS, app, [], tasks=list(tasks), allow_removal=True)


async def record(aredis: Redis, ref: TaskRef) -> dict[str, Any]:
    """The stored record of a task (``max`` is max_attempts)."""
    doc: dict[str, Any] = orjson.loads(raw(await aredis.hget(KEYS.tasks, ref.id)))
    return doc


async def enqueue_one(bus: Bus, how: str, name: str, **options: Any) -> TaskRef:
    """Enqueue one task by app name through one of the four producer calls."""
    if how == "enqueue":
        return await bus.enqueue(APP, name, {"week": 48}, **options)
    if how == "enqueue_sync":
        return bus.enqueue_sync(APP, name, {"week": 48}, **options)
    item = EnqueueItem(name, {"week": 48}, **options)
    if how == "enqueue_many":
        return (await bus.enqueue_many(APP, [item]))[0]
    return bus.enqueue_many_sync(APP, [item])[0]


CALLS = ["enqueue", "enqueue_sync", "enqueue_many", "enqueue_many_sync"]


@pytest.mark.parametrize("how", CALLS)
async def test_declared_options_reach_a_task_enqueued_by_app_name(
    producer: Bus, aredis: Redis, how: str
) -> None:
    """queue, max_attempts, backoff, timeout_s and scope come from the registry."""
    await declare(aredis, DIGEST)
    ref = await enqueue_one(producer, how, "digest")
    doc = await record(aredis, ref)
    assert {k: doc.get(k) for k in ("queue", "max", "timeout_s", "backoff", "scope")} == {
        "queue": "low",
        "max": 3,
        "timeout_s": 7.0,
        "backoff": [1, 5],
        "scope": "all",
    }
    assert await aredis.lrange(KEYS.queue("low").ready, 0, -1) == [ref.id.encode()]
    assert await aredis.llen(KEYS.queue("default").ready) == 0


@pytest.mark.parametrize("how", CALLS)
async def test_explicit_options_override_the_declared_ones(
    producer: Bus, aredis: Redis, how: str
) -> None:
    """Options the caller gives win; the declaration fills in the others."""
    await declare(aredis, DIGEST)
    ref = await enqueue_one(producer, how, "digest", queue="high", max_attempts=9, scope="any")
    doc = await record(aredis, ref)
    assert (doc["queue"], doc["max"], doc["timeout_s"], doc["backoff"]) == (
        "high",
        9,
        7.0,
        [1, 5],
    )
    assert doc.get("scope", "any") == "any"


@pytest.mark.parametrize("how", CALLS)
async def test_an_undeclared_name_is_refused_naming_the_app_and_its_tasks(
    producer: Bus, aredis: Redis, how: str
) -> None:
    """A typo'd task name raises, lists what the app declares, and writes nothing."""
    await declare(aredis, DIGEST, TaskSpec("weekly"))
    with pytest.raises(TaskNotDeclared, match=r"app 'support' declares no task 'digets'") as caught:
        await enqueue_one(producer, how, "digets")
    assert "declared tasks: digest, weekly" in str(caught.value)
    assert caught.value.declared == ["digest", "weekly"]
    assert await aredis.exists(KEYS.tasks) == 0


async def test_an_undeclared_name_goes_through_with_explicit_options_or_an_app(
    producer: Bus, aredis: Redis
) -> None:
    """The caller who gives options, or the App itself, takes responsibility for them."""
    await declare(aredis, DIGEST)
    ref = await producer.enqueue(APP, "adhoc", None, queue="low")
    assert (await record(aredis, ref))["queue"] == "low"
    app = App(APP)

    @app.task(queue="bulk")
    async def adhoc2(payload: Any) -> None:
        pass

    ref = producer.enqueue_sync(app, "adhoc2")
    assert (await record(aredis, ref))["queue"] == "bulk"


async def test_a_task_declared_after_the_snapshot_was_cached_is_found_by_one_reload(
    producer: Bus, aredis: Redis
) -> None:
    """A name missing from the cached snapshot is looked up again before it is refused."""
    await declare(aredis, DIGEST)
    await producer.enqueue(APP, "digest")
    await declare(aredis, DIGEST, TaskSpec("weekly", queue="bulk"))
    ref = await producer.enqueue(APP, "weekly")
    assert (await record(aredis, ref))["queue"] == "bulk"


async def test_a_changed_declaration_reaches_a_producer_at_its_next_version_check(
    producer: Bus, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is trusted for CHECK_EVERY_S, then its version is checked and it reloads."""
    now = [1000.0]
    monkeypatch.setattr(clock, "monotonic_s", lambda: now[0])
    await declare(aredis, DIGEST)
    await producer.enqueue(APP, "digest")
    await declare(aredis, TaskSpec("digest", queue="bulk"))
    now[0] += CHECK_EVERY_S + 0.01
    ref = await producer.enqueue(APP, "digest")
    assert (await record(aredis, ref))["queue"] == "bulk"


def _registry_reads(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "hgetall"))


@pytest.mark.parametrize("how", CALLS)
async def test_enqueue_by_app_name_reads_no_registry_while_the_snapshot_is_fresh(
    producer: Bus,
    aredis: Redis,
    sync_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """Once cached, the declarations cost no round trip; a stale one costs one GET."""
    now = [1000.0]
    monkeypatch.setattr(clock, "monotonic_s", lambda: now[0])
    await declare(aredis, DIGEST)
    await enqueue_one(producer, how, "digest")
    sync_client.config_resetstat()
    for _ in range(20):
        await enqueue_one(producer, how, "digest")
    assert _registry_reads(sync_client) == 0
    now[0] += CHECK_EVERY_S + 0.01
    await enqueue_one(producer, how, "digest")
    assert sync_client.info("commandstats")["cmdstat_get"]["calls"] == 1
    assert "cmdstat_hgetall" not in sync_client.info("commandstats")


async def test_an_app_the_registry_declares_nothing_for_gets_the_defaults_with_a_warning(
    producer: Bus, aredis: Redis, logs: Logs
) -> None:
    """An entry written by the previous version (subscriptions only) still parses, and
    its tasks enqueue with the defaults as before, saying why once."""
    sub = SubscriptionSpec(APP, "welcome", ("user.signed_up",))
    await aredis.hset(BUS_KEYS.subs, APP, orjson.dumps([sub.to_doc()]))
    await aredis.incr(BUS_KEYS.subs_version)
    registry = await load_registry(aredis, BUS_KEYS)
    assert [s.spec for s in registry.subscriptions] == [sub]
    assert (registry.apps, registry.damaged, dict(registry.tasks)) == ((APP,), (), {})
    first = await producer.enqueue(APP, "digest")
    producer.enqueue_sync(APP, "digest")
    assert (await record(aredis, first))["queue"] == "default"
    warned = [e for e in logs if e["event"] == "task_declarations_unknown"]
    assert len(warned) == 1
    assert warned[0]["app"] == APP
    assert "did not store task declarations" in warned[0]["reason"]


async def test_a_damaged_declarations_entry_refuses_names_but_not_explicit_options(
    producer: Bus, aredis: Redis
) -> None:
    """The error says the entry is damaged and how to repair it; options still work."""
    await declare(aredis, DIGEST)
    await aredis.hset(BUS_KEYS.task_decls, APP, b'[{"name": "digest", "queue": 7}]')
    await aredis.incr(BUS_KEYS.subs_version)
    with pytest.raises(TaskNotDeclared, match=r"declarations of app 'support' are damaged"):
        await producer.enqueue(APP, "digest")
    ref = await producer.enqueue(APP, "digest", queue="low")
    assert (await record(aredis, ref))["queue"] == "low"


async def test_sync_reports_task_changes_and_unregister_drops_the_declarations(
    aredis: Redis,
) -> None:
    """A sync diffs the declarations too; unregistering the app removes them."""
    first = await sync_subscriptions(aredis, BUS_KEYS, APP, [], tasks=[DIGEST])
    assert (first.applied, first.tasks_added) == (True, ["digest"])
    again = await sync_subscriptions(aredis, BUS_KEYS, APP, [], tasks=[DIGEST])
    assert (again.applied, again.describe()) == (False, "app support: no changes")
    moved = TaskSpec("digest", queue="bulk")
    changed = await sync_subscriptions(aredis, BUS_KEYS, APP, [], tasks=[moved])
    assert (changed.applied, changed.tasks_changed) == (True, ["digest"])
    assert (await load_registry(aredis, BUS_KEYS)).tasks[APP] == {"digest": moved}
    assert await unregister_app(aredis, BUS_KEYS, APP)
    assert await aredis.hget(BUS_KEYS.task_decls, APP) is None


@pytest.mark.parametrize("call", [Bus.enqueue, Bus.enqueue_sync])
def test_enqueue_and_enqueue_sync_take_every_option_an_enqueue_item_has(
    call: Callable[..., Any],
) -> None:
    """Nothing EnqueueItem can say is missing from the one-task calls (scope included)."""
    params = set(inspect.signature(call).parameters)
    assert {f.name for f in fields(EnqueueItem)} <= params


async def test_enqueue_sync_takes_scope(producer: Bus, aredis: Redis) -> None:
    """scope='all' given to enqueue_sync reaches the record."""
    ref = producer.enqueue_sync("fleet", "wipe", scope="all")
    doc = orjson.loads(raw(await aredis.hget(AppKeys("bus", "fleet").tasks, ref.id)))
    assert doc["scope"] == "all"


def test_the_apps_config_declarations_are_what_a_sync_stores(tmp_path: Path) -> None:
    """Named and recurring tasks of app.toml become the registry's declarations."""
    directory = tmp_path / APP
    directory.mkdir()
    (directory / "app.toml").write_text(
        APP_TOML
        + textwrap.dedent(
            """
            [[recurring]]
            name = "sweep"
            handler = "handlers:digest"
            every = "1m"
            queue = "low"
            scope = "all"
            """
        )
    )
    (directory / "handlers.py").write_text(HANDLERS)
    specs = task_specs(load_app_config(directory))
    assert specs == [
        TaskSpec("digest", queue="low", max_attempts=3, timeout_s=7.0, backoff=[1.0, 5.0]),
        TaskSpec(
            "sweep",
            queue="low",
            backoff={"base_s": 1.0, "max_s": 300.0, "jitter": 0.2},
            scope="all",
        ),
    ]


def test_a_task_enqueued_by_name_reaches_the_worker_that_serves_only_its_declared_queue(
    cli_env: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: declared queue "low", worker queues ["low"]; the task runs."""
    apps = tmp_path / "apps"
    (apps / APP).mkdir(parents=True)
    (apps / APP / "app.toml").write_text(APP_TOML)
    (apps / APP / "handlers.py").write_text(HANDLERS)
    out = tmp_path / "digest.out"
    monkeypatch.setenv("BUS_APPS_DIR", str(apps))
    monkeypatch.setenv("SUPPORT_DIGEST_OUT", str(out))
    assert main(["subscriptions", "sync", "--app", APP]) == 0
    assert "tasks added: digest" in capsys.readouterr().out
    producer = Bus(Settings.from_env())
    try:
        ref = producer.enqueue_sync(APP, "digest", {"week": "48"})
    finally:
        producer.close_sync()
    assert worker_main(["--app", APP, "--burst", "--no-sync"]) == 0
    assert out.read_text() == "48"
    assert ref.app == APP


def test_a_worker_start_stores_its_apps_task_declarations(cli_env: Settings) -> None:
    """The sync a worker makes at start carries [[tasks]] and [[recurring]] with it."""
    assert worker_main(["--app", "billing", "--burst"]) == 0

    async def declared(client: Redis) -> dict[str, TaskSpec]:
        return dict((await load_registry(client, BUS_KEYS)).tasks["billing"])

    tasks = on_redis(cli_env, declared)
    assert tasks == {
        "send_invoice": TaskSpec(
            "send_invoice",
            max_attempts=10,
            backoff={"base_s": 2.0, "max_s": 600.0, "jitter": 0.3},
        )
    }
