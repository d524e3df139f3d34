"""The event bus with real processes: workers per app, a publisher that dies
mid-fan-out, thousands of events across three apps."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bus import Bus, EventSpec, Settings
from tests.procs.runner import Proc, processes, wait_until

HANDLERS = '''
"""Test handlers: count every delivery per app and event key in Redis."""
import os

import redis.asyncio

_client = None


async def record(event, ctx):
    global _client
    if _client is None:
        _client = redis.asyncio.Redis.from_url(os.environ["BUS_REDIS_URL"])
    await _client.hincrby(f"test:got:{ctx.app}", event.key, 1)
'''

APPS = {
    "billing": [("charge", "order.placed", None), ("pro", "user.signed_up", {"plan": "pro"})],
    "email": [("welcome", "user.signed_up", None), ("problem", "payment.failed", None)],
    "analytics": [("everything", "*", None)],
}


def write_apps(root: Path) -> Path:
    """Write three test apps whose handlers count deliveries."""
    for app, subs in APPS.items():
        directory = root / app
        directory.mkdir(parents=True)
        (directory / "handlers.py").write_text(HANDLERS)
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
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start processes that are all ended (by pid) after the test."""
    with processes(tmp_path) as start:
        yield start


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
    return {k.decode(): int(v) for k, v in client.hgetall(f"test:got:{app}").items()}


def test_publisher_killed_between_record_and_route_loses_nothing(
    procs: Callable[..., Proc], bus_env: Settings
) -> None:
    """A publisher that dies after recording an event: a worker's sweep routes it to every app."""
    for app in APPS:
        sync(procs, app)
    publisher = procs("-m", "tests.procs.publisher", "--crash-after-record", name="publisher")
    assert publisher.wait(30) == 86, publisher.output()
    client = redis.Redis.from_url(str(bus_env.redis_url))
    (key,) = [k.decode() for k in client.zrange("bus:bus:{.bus}:pending", 0, -1)]
    assert got(client, "email") == {}
    for app in APPS:
        start_worker(procs, app, "--sweep-grace-s", "0.5", lease_s="1")
    for app in APPS:
        wait_until(lambda app=app: got(client, app) == {key: 1}, 15, f"{app} to get the event")
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
            lambda app=app, want=want: len(got(client, app)) >= len(want),
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
