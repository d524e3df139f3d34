"""The event bus with real processes: workers per app, a publisher that dies
mid-fan-out, thousands of events across three apps."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import orjson
import pytest
import redis

from bus import Bus, EventSpec, Settings
from tests.conftest import raw, text, texts
from tests.procs.runner import Proc, wait_until
from tests.redis_server import MakeRedisServer

# Copied into each temporary app dir as handlers.py; app.toml names handlers:record.
HANDLERS = Path(__file__).parent / "handlers" / "evidence.py"

APPS: dict[str, list[tuple[str, str, dict[str, str] | None]]] = {
    "billing": [("charge", "order.placed", None), ("pro", "user.signed_up", {"plan": "pro"})],
    "email": [("welcome", "user.signed_up", None), ("problem", "payment.failed", None)],
    "analytics": [("everything", "*", None)],
}


def write_apps(root: Path) -> Path:
    """Write three test apps whose handlers count deliveries."""
    for app, subs in APPS.items():
        directory = root / app
        directory.mkdir(parents=True)
        (directory / "handlers.py").write_bytes(HANDLERS.read_bytes())
        lines = [f'name = "{app}"', ""]
        for name, events, where in subs:
            lines += [
                "[[subscriptions]]",
                f'name = "{name}"',
                f'events = "{events}"',
                'handler = "handlers:record"',
            ]
            if where:
                lines.append(
                    "where = { " + ", ".join(f'{k} = "{v}"' for k, v in where.items()) + " }"
                )
            lines.append("")
        (directory / "app.toml").write_text("\n".join(lines))
    return root


@pytest.fixture
def bus_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment for child processes: the private server and the test apps."""
    apps_dir = write_apps(tmp_path / "apps")
    env = {
        "BUS_REDIS_URL": str(settings.redis_url),
        "BUS_SCHEMAS_DIR": str(settings.schemas_dir),
        "BUS_APPS_DIR": str(apps_dir),
        "BUS_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(env)


def start_worker(procs: Callable[..., Proc], app: str, *extra: str, lease_s: str = "10") -> Proc:
    # Leases only matter to the tests that kill something; a short one on a
    # loaded 2-core machine would expire under a busy worker and duplicate work.
    proc = procs(
        "-m",
        "bus.worker",
        "--app",
        app,
        "--lease-s",
        lease_s,
        "--log-level",
        "info",
        *extra,
        name=f"worker-{app}",
    )
    wait_until(
        lambda: "worker_started" in proc.output() or proc.popen.poll() is not None,
        20,
        f"{app} worker to start",
    )
    assert proc.popen.poll() is None, proc.output()
    return proc


def sync(procs: Callable[..., Proc], app: str) -> None:
    proc = procs("-m", "bus", "subscriptions", "sync", "--app", app, name=f"sync-{app}")
    assert proc.wait(30) == 0, proc.output()


def got(client: redis.Redis, app: str) -> dict[str, int]:
    return {text(k): int(v) for k, v in client.hgetall(f"test:got:{app}").items()}


def test_publisher_killed_between_record_and_route_loses_nothing(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """A publisher that dies after recording an event: a worker's sweep routes it to every app."""
    for app in APPS:
        sync(procs, app)
    publisher = procs("-m", "tests.procs.publisher", "--crash-after-record", name="publisher")
    assert publisher.wait(30) == 86, publisher.output()
    client = redis.Redis.from_url(str(bus_env.redis_url))
    (key,) = texts(client.zrange("bus:bus:{.bus}:pending", 0, -1))
    assert got(client, "email") == {}
    for app in APPS:
        start_worker(procs, app, "--sweep-grace-s", "0.5", lease_s="1")
    for app in APPS:
        got_it = partial(lambda app: got(client, app) == {key: 1}, app)
        wait_until(got_it, 15, f"{app} to get the event")
    assert client.zcard("bus:bus:{.bus}:pending") == 0
    client.close()


def test_three_apps_thousands_of_events_each_gets_its_share_once(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """3,000 mixed events, one app started late: each app gets exactly its events, once."""
    for app in APPS:
        sync(procs, app)
    start_worker(procs, "billing", "--concurrency", "50")
    start_worker(procs, "email", "--concurrency", "50")
    rng = random.Random(11)
    specs: list[EventSpec] = []
    for i in range(3000):
        kind = rng.choice(["user", "order", "payment"])
        if kind == "user":
            payload = {
                "user_id": f"u{i}",
                "email": f"u{i}@example.com",
                "plan": rng.choice(["free", "pro"]),
                "country": "FR",
            }
            specs.append(EventSpec("user.signed_up", payload))
        elif kind == "order":
            specs.append(
                EventSpec(
                    "order.placed",
                    {
                        "order_id": f"o{i}",
                        "user_id": "u",
                        "amount_cents": i,
                        "currency": "EUR",
                        "items": [{"sku": "s", "quantity": 1}],
                    },
                )
            )
        else:
            specs.append(
                EventSpec(
                    "payment.failed",
                    {
                        "order_id": f"o{i}",
                        "user_id": "u",
                        "amount_cents": i,
                        "reason": "expired_card",
                    },
                )
            )
    bus = Bus(bus_env)
    keys: list[str] = []
    try:
        for start in range(0, len(specs), 500):
            keys += bus.publish_many(specs[start : start + 500])
    finally:
        bus.close_sync()
    by_key = dict(zip(keys, specs, strict=True))
    expected = {
        "billing": {
            k
            for k, s in by_key.items()
            if s.type == "order.placed"
            or (s.type == "user.signed_up" and s.payload["plan"] == "pro")
        },
        "email": {k for k, s in by_key.items() if s.type in ("user.signed_up", "payment.failed")},
        "analytics": set(keys),
    }
    start_worker(procs, "analytics", "--concurrency", "50")  # offline until now
    client = redis.Redis.from_url(str(bus_env.redis_url))
    for app, want in expected.items():
        wait_until(
            partial(lambda app, want: len(got(client, app)) >= len(want), app, want),
            60,
            f"{app} to get {len(want)} events",
        )
    for app, want in expected.items():
        deliveries = got(client, app)
        assert set(deliveries) == want, app
        assert set(deliveries.values()) == {1}, app
    client.close()


def test_worker_refuses_to_start_with_a_missing_handler(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """A handler named in config that cannot be imported stops the start with a clear error."""
    toml = bus_env.apps_dir / "email" / "app.toml"
    toml.write_text(toml.read_text().replace("handlers:record", "handlers:nowhere", 1))
    proc = procs("-m", "bus.worker", "--app", "email", name="bad-worker")
    assert proc.wait(30) == 2
    out = proc.output()
    assert "handler 'handlers:nowhere'" in out
    assert "has no function 'nowhere'" in out
    assert str(toml) in out


# -- a Redis that comes back empty --------------------------------------------

SIGNUP = {"user_id": "u1", "email": "ada@example.com", "plan": "free", "country": "FR"}


def log_events(proc: Proc, event: str) -> list[dict[str, object]]:
    """The JSON log lines of ``proc`` whose event is ``event``."""
    lines = []
    for line in proc.output().splitlines():
        if f'"{event}"' in line:
            doc = orjson.loads(line)
            if doc.get("event") == event:
                lines.append(doc)
    return lines


def publish_signup(settings: Settings) -> str:
    bus = Bus(settings)
    try:
        return bus.publish("user.signed_up", SIGNUP)
    finally:
        bus.close_sync()


def assert_delivered_after_loss(
    proc: Proc,
    client: redis.Redis,
    settings: Settings,
    lose: Callable[[], object],
    *,
    within_s: float = 10,
) -> None:
    """Deliver one event, lose Redis' data, and check the worker puts email back in time."""
    first = publish_signup(settings)
    wait_until(lambda: first in got(client, "email"), 15, "email to get the first event")
    lose()
    wait_until(
        lambda: client.hexists("bus:bus:{.bus}:subs", "email"),
        within_s,
        "email to be registered again",
    )
    second = publish_signup(settings)
    wait_until(lambda: second in got(client, "email"), 15, "email to get an event after the loss")
    (lost,) = log_events(proc, "registry_lost")
    assert (lost["level"], lost["app"], lost["resync"]) == ("error", "email", True)


def test_a_worker_re_registers_its_app_when_redis_is_flushed(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """After FLUSHALL a worker notices at a heartbeat, logs registry_lost and re-syncs its app."""
    # Heartbeats come every third of the 1 s lease: the wait is a few of them.
    proc = start_worker(procs, "email", lease_s="1")
    client = redis.Redis.from_url(str(bus_env.redis_url))
    assert_delivered_after_loss(proc, client, bus_env, client.flushall)
    client.close()


def test_a_worker_re_registers_its_app_after_redis_restarts_empty(
    procs: Callable[..., Proc],
    bus_env: Settings,
    make_redis_server: MakeRedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Redis restarted without its data: the reconnected worker re-syncs its app at once."""
    server = make_redis_server(appendonly=False)
    monkeypatch.setenv("BUS_REDIS_URL", server.url)
    settings = replace(bus_env, redis_url=server.url)
    # Heartbeats every 20 s: only the beat a reconnect triggers is in time.
    proc = start_worker(procs, "email", lease_s="60")
    client = server.client()
    assert_delivered_after_loss(proc, client, settings, server.restart, within_s=8)
    assert "redis_reconnected" in proc.output()
    client.close()


def test_a_no_sync_worker_reports_a_lost_registry_without_writing_it(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """With --no-sync the loss is logged once as registry_lost and the registry stays empty."""
    sync(procs, "email")
    proc = start_worker(procs, "email", "--no-sync", lease_s="1")
    client = redis.Redis.from_url(str(bus_env.redis_url))
    client.flushall()
    wait_until(lambda: log_events(proc, "registry_lost"), 10, "registry_lost to be logged")
    # Three more heartbeats (each rewrites the worker's status record).
    for _ in range(3):
        seen = client.zrange("bus:app:{email}:beats", 0, -1, withscores=True)
        wait_until(
            partial(
                lambda seen: (
                    client.zrange("bus:app:{email}:beats", 0, -1, withscores=True) not in ([], seen)
                ),
                seen,
            ),
            10,
            "another heartbeat",
        )
    assert not client.exists("bus:bus:{.bus}:subs", "bus:bus:{.bus}:subs:version")
    (lost,) = log_events(proc, "registry_lost")
    assert (lost["level"], lost["resync"]) == ("error", False)
    client.close()


def test_a_worker_leaves_its_app_unregistered_after_an_operator_removed_it(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """An unregister is not a loss: the worker logs app_unregistered and writes nothing."""
    proc = start_worker(procs, "email", lease_s="1")
    sync(procs, "billing")  # another app keeps the registry non-empty
    unregister = procs(
        "-m", "bus", "subscriptions", "unregister", "--app", "email", "--yes", name="unregister"
    )
    assert unregister.wait(30) == 0, unregister.output()
    wait_until(lambda: log_events(proc, "app_unregistered"), 10, "app_unregistered to be logged")
    client = redis.Redis.from_url(str(bus_env.redis_url))
    beats = client.zrange("bus:app:{email}:beats", 0, -1, withscores=True)
    wait_until(
        lambda: client.zrange("bus:app:{email}:beats", 0, -1, withscores=True) != beats,
        10,
        "another heartbeat",
    )
    assert not client.hexists("bus:bus:{.bus}:subs", "email")
    assert log_events(proc, "registry_lost") == []
    client.close()


def test_a_worker_puts_its_recurring_chains_back_after_redis_is_flushed(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """The lost registry also means lost recurring chains: the worker re-runs their boot check."""
    directory = bus_env.apps_dir / "reports"
    directory.mkdir()
    (directory / "handlers.py").write_bytes(HANDLERS.read_bytes())
    (directory / "app.toml").write_text(
        'name = "reports"\n\n[[recurring]]\nname = "hourly"\nhandler = "handlers:record"\n'
        'every = "1h"\n'
    )
    start_worker(procs, "reports", lease_s="1")
    client = redis.Redis.from_url(str(bus_env.redis_url))
    chains = "bus:app:{reports}:recurring"
    wait_until(lambda: client.hexists(chains, "hourly"), 10, "the chain to be created")
    client.flushall()
    wait_until(lambda: client.hexists(chains, "hourly"), 10, "the chain to be created again")
    occurrence = orjson.loads(raw(client.hget(chains, "hourly")))["id"]
    assert client.hexists("bus:app:{reports}:state", occurrence)
    client.close()
