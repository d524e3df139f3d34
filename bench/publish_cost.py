"""Where one published event's cost goes, measured steadily on a noisy machine.

Run: python bench/publish_cost.py [--tree DIR] [--events N] [--rounds R]

Wall-clock publish rates on a shared VM swing by 20% from one run to the next
(docs/benchmarks.md), too much to see a change of a few microseconds. This
script measures the two parts that do not depend on the round trip:

  python   us of client CPU per ``Bus.publish`` (sync, one by one, 3
           subscribing apps) with Redis replaced by canned replies: the
           publisher's own work (validation, envelope, routing, packing
           excluded) without the wait for the server.
  redis    us of redis-server CPU per published event (INFO cpu, over N real
           publishes of the same kind, on a private server).

``--tree DIR`` imports ``bus`` from another checkout (e.g. an older commit in
a git worktree), so two trees are compared with the same script:

  git worktree add /tmp/old <commit>
  python bench/publish_cost.py --tree /tmp/old; python bench/publish_cost.py

Each figure is the median of the rounds, with the min-max. It starts its own
redis-server on a unix socket in a temporary directory and ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
USER = {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "country": "DE"}
APPS = ("billing", "email", "analytics")


def main() -> int:
    """Measure and print the two figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout to import bus from")
    parser.add_argument("--events", type=int, default=5000, help="publishes per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the median is shown)")
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))
    sys.path.insert(1, str(REPO))  # tests.redis_server: the private server

    import redis
    import redis.asyncio as aredis

    import bus as bus_pkg
    from bus import Bus, Settings
    from bus.events.registry import SubscriptionSpec

    try:
        from bus.events.registry_sync import sync_subscriptions
    except ImportError:  # a tree from before the registry split
        from bus.events.registry import sync_subscriptions  # type: ignore[attr-defined,no-redef]
    from bus.store.keys import BusKeys
    from tests.redis_server import RedisServer

    server = RedisServer(appendonly=False)
    server.start()
    try:
        settings = Settings.from_env(
            {
                "BUS_REDIS_URL": server.url,
                "BUS_SCHEMAS_DIR": str(REPO / "schemas"),
                "BUS_APPS_DIR": str(REPO / "apps"),
                "BUS_DATA_DIR": str(Path(server.url.removeprefix("unix://")).parent),
            }
        )

        async def register() -> None:
            client = aredis.Redis.from_url(server.url)
            for app in APPS:
                spec = SubscriptionSpec(app=app, name=f"on_{app}", events=("user.signed_up",))
                await sync_subscriptions(client, BusKeys("bus"), app, [spec])
            await client.aclose()

        asyncio.run(register())
        client = redis.Redis.from_url(server.url)
        admin = redis.Redis.from_url(server.url)
        bus = Bus(settings, sync_redis=client, source="bench")
        for _ in range(200):
            bus.publish("user.signed_up", USER)

        def cpu() -> float:
            info = admin.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        redis_us = []
        for _ in range(args.rounds):
            before = cpu()
            for _ in range(args.events):
                bus.publish("user.signed_up", USER)
            redis_us.append((cpu() - before) / args.events * 1e6)

        python_us = _python_only(bus, args.events, args.rounds, sys.modules)
        print(f"bus: {Path(bus_pkg.__file__).parent}")
        print(f"events: user.signed_up routed to {len(APPS)} apps, sync publish one by one")
        for name, values in (("python", python_us), ("redis", redis_us)):
            print(
                f"{name:7s} {statistics.median(values):7.1f} us/event  "
                f"({min(values):.1f}-{max(values):.1f}, {args.rounds} rounds)"
            )
        client.close()
        admin.close()
    finally:
        server.close()
    return 0


def _python_only(bus: Any, events: int, rounds: int, modules: Any) -> list[float]:
    """us per publish with the script calls answered by canned replies."""
    # Where publish looks up run_calls_sync: this tree's transport, or the
    # scripts module of a tree from before the issue-14 moves.
    transport = (
        modules.get("bus.store.transport")
        or modules.get("bus.store.scripts")
        or modules["bus.scripts"]
    )
    router = modules.get("bus.events.router") or modules["bus.router"]
    version = bus.publisher._registry.version.encode()
    # Trees from before issue 13 answer routed.lua with the version alone.
    routed_reply: Any = [version, 0] if hasattr(router, "route_outcome") else version

    def canned(_client: Any, calls: Any, **_kwargs: Any) -> list[Any]:
        out: list[Any] = []
        for script, _keys, call_args in calls:
            if script.name == "record":
                out.append([version, call_args[3].encode(), 1])
            elif script.name == "routed":
                out.append(routed_reply)
            else:
                out.append([1] * ((len(call_args) - 2) // 4))
        return out

    real = transport.run_calls_sync
    transport.run_calls_sync = canned
    try:
        result = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(events):
                bus.publish("user.signed_up", USER)
            result.append((time.perf_counter() - start) / events * 1e6)
        return result
    finally:
        transport.run_calls_sync = real


if __name__ == "__main__":
    sys.exit(main())
