"""``python -m bus.demo.feed``: publish the demo's event stream at a steady rate.

The publisher of ``docker-compose.yml``: unlike ``python -m bus demo``, which
runs its own workers under its own key prefix, the feed publishes under the
configured prefix (``BUS_PREFIX``, default ``bus``), so the app workers
running elsewhere (the compose services) receive the events. It publishes
rounds of :func:`bus.demo.events.plan_events`; only the first round holds the
poison order (``--no-poison`` leaves it out), which billing's worker
dead-letters until it runs with ``BILLING_POISON_FIXED=1``.

With ``--sync`` it first stores the subscriptions of every app in
``BUS_APPS_DIR``, as deploying them would, so no event published before the
workers start is routed to nobody. It stops after ``--count`` events, or on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType

import structlog

from bus.client import Bus
from bus.config.apps import load_app_config_named, subscription_specs, task_specs
from bus.config.settings import Settings
from bus.demo.events import PlannedEvent, plan_events
from bus.errors import BusError
from bus.events.registry_sync import sync_subscriptions
from bus.logs import configure_logging
from bus.store.connection import connect
from bus.store.keys import BusKeys

__all__ = ["build_parser", "main", "rounds"]

log = structlog.get_logger("bus.demo.feed")

ROUND_EVENTS = 100
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The feed's command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bus.demo.feed",
        description=(
            "Publish the demo's stream of events (sign-ups, orders, failed payments, one "
            "poison order) at a steady rate to the configured bus. Settings come from BUS_* "
            "environment variables."
        ),
    )
    parser.add_argument(
        "--rate", type=float, default=5.0, help="events per second (default: %(default)s)"
    )
    parser.add_argument(
        "--count", type=int, default=0, help="stop after this many events (default: 0, never)"
    )
    parser.add_argument("--no-poison", action="store_true", help="leave the poison order out")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="store the subscriptions of every app in BUS_APPS_DIR before publishing",
    )
    return parser


def rounds(rate: float, *, poison: bool = True) -> Iterator[PlannedEvent]:
    """Yield the stream, round after round, with ``at_s`` counted from the first event.

    Args:
        rate: Events per second.
        poison: Include the poison order (first round only).
    """
    round_s = ROUND_EVENTS / rate
    number = 0
    while True:
        for event in plan_events(ROUND_EVENTS, round_s, seed=number):
            if event.poison and (number > 0 or not poison):
                continue
            yield PlannedEvent(
                number * round_s + event.at_s, event.type, event.payload, event.poison
            )
        number += 1


def _sync_all(settings: Settings) -> list[str]:
    names = sorted(p.parent.name for p in settings.apps_dir.glob("*/app.toml"))

    async def go() -> None:
        client = await connect(settings)
        try:
            for name in names:
                config = load_app_config_named(settings, name)
                await sync_subscriptions(
                    client,
                    BusKeys(settings.prefix),
                    name,
                    subscription_specs(config),
                    tasks=task_specs(config),
                )
        finally:
            await client.aclose()

    asyncio.run(go())
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bus.demo.feed``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.count < 0:
        print("error: --rate must be > 0 and --count >= 0", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        if args.sync:
            log.info("subscriptions_synced", apps=_sync_all(settings))
        bus = Bus(settings, source="demo-feed")
        try:
            published = _feed(bus, args.rate, args.count, not args.no_poison, stop)
        finally:
            bus.close_sync()
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.info("feed_stopped", published=published)
    return 0


def _feed(bus: Bus, rate: float, count: int, poison: bool, stop: threading.Event) -> int:
    started = time.monotonic()
    published = 0
    for event in rounds(rate, poison=poison):
        if stop.wait(max(started + event.at_s - time.monotonic(), 0)):
            break
        key = bus.publish(event.type, event.payload)
        published += 1
        if event.poison:
            log.info("poison_order_published", event_key=key)
        if published % 100 == 0:
            log.info("events_published", count=published)
        if count and published >= count:
            break
    return published


if __name__ == "__main__":
    sys.exit(main())
