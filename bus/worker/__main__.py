"""``python -m bus.worker --app NAME``: run the worker of one app.

Loads ``apps/NAME/app.toml``, imports its handlers (a handler that cannot be
imported stops the start with a clear error), waits for the Redis server if it
is not up yet (``redis_unavailable`` with back-off, for ever unless
``--connect-timeout-s``), checks it, syncs
the app's subscriptions to the registry and its recurring tasks' chains (the
boot check, see ``bus.recurring``; both again if Redis comes back without
the registry, see ``bus.events.registry_watch``), and works the app's queues until
SIGTERM or SIGINT (then: no new claims, running tasks get the grace period,
unfinished ones are handed back at once).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from collections.abc import Sequence

import structlog

from bus.cli import package_version
from bus.client import Bus
from bus.config.apps import (
    build_app,
    event_adapter,
    load_app_config_named,
    subscription_specs,
    task_specs,
)
from bus.config.settings import Settings
from bus.core import clock
from bus.core.clock import now_ms
from bus.core.options import MAX_PREFETCH
from bus.errors import BusError, RedisUnavailable
from bus.eventloop import LOOP_CHOICES
from bus.eventloop import run as run_loop
from bus.events.registry_sync import SyncResult, sync_subscriptions
from bus.events.registry_watch import RegistryWatch
from bus.events.sweep import PendingSweep
from bus.logs import configure_logging
from bus.recurring import recurring_from_config
from bus.store.connection import connect
from bus.store.keys import BusKeys
from bus.store.redis_errors import ServerRef, redis_errors, translate
from bus.store.types import AsyncClient, StoreError
from bus.worker.loop import Worker
from bus.worker.watchdog import DEFAULT_BLOCK_WARN_S

log = structlog.get_logger("bus.worker")

EXIT_USAGE = 2
SWEEP_GRACE_MS = 5_000
# Back-off between connection attempts at start: 0.1 s doubling to 5 s, jittered.
CONNECT_FIRST_DELAY_S = 0.1
CONNECT_MAX_DELAY_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    """The worker's command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bus.worker",
        description=(
            "Run the worker of one app: claim its tasks and events, run their handlers. "
            "Settings come from BUS_* environment variables."
        ),
    )
    parser.add_argument("--version", action="version", version=f"taskbus {package_version()}")
    parser.add_argument("--app", required=True, help="the app to run (a directory in BUS_APPS_DIR)")
    parser.add_argument(
        "--queues",
        help="queues in the order to serve them, comma-separated; '*' = all of the app's "
        "queues (default: the app config's [worker] queues, else '*')",
    )
    parser.add_argument(
        "--concurrency", type=int, help="most handlers running at once (default: config, else 10)"
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        help="most claimed tasks held ready beyond the running ones, so a freed slot "
        "starts the next at once; 0 for long tasks shared evenly by several workers "
        "(default: config, else the concurrency)",
    )
    parser.add_argument(
        "--burst", action="store_true", help="exit once no task is due (due delayed ones included)"
    )
    parser.add_argument(
        "--lease-s",
        type=float,
        default=15.0,
        help="lease of a claimed task, renewed by heartbeats every third (default: %(default)s)",
    )
    parser.add_argument(
        "--grace-s",
        type=float,
        default=10.0,
        help="on SIGTERM, how long running tasks may finish before they are handed back "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not sync the app's subscriptions to the registry, at start or when Redis "
        "lost the registry (then it only logs registry_lost)",
    )
    parser.add_argument(
        "--allow-removal",
        action="store_true",
        help="let the start-up sync remove subscriptions that left the config",
    )
    parser.add_argument(
        "--sweep-grace-s",
        type=float,
        default=SWEEP_GRACE_MS / 1000,
        help="route events a publisher left unrouted once they are this old (default: %(default)s)",
    )
    parser.add_argument(
        "--node",
        help="the node this process belongs to: scope 'all' tasks run once per node, so "
        "processes that share a name (e.g. the host's) share their copies "
        "(default: a node of its own)",
    )
    parser.add_argument(
        "--block-warn-s",
        type=float,
        default=DEFAULT_BLOCK_WARN_S,
        help="log event_loop_blocked when the event loop (async handlers, heartbeats) "
        "does not run for this long; 0 turns the watchdog off (default: %(default)s)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop (faster), asyncio, or auto = uvloop where installed "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--connect-timeout-s",
        type=float,
        help="when Redis cannot be reached at start, give up (exit 2) after this long; "
        "until then the worker retries with back-off, logging redis_unavailable "
        "(default: keep waiting)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


async def connect_when_up(settings: Settings, timeout_s: float | None) -> AsyncClient:
    """Connect and check the server, waiting with back-off while it is unreachable.

    A worker is often started beside its Redis (a compose file, a reboot): it
    waits for the server as Celery's broker retry does, logging
    ``redis_unavailable`` at every attempt, instead of exiting with a trace.
    A refused password, ACL or TLS handshake is not waited out: those need
    a change of settings.

    Args:
        settings: Where the server is.
        timeout_s: Give up after this long; None waits for ever.

    Returns:
        A connected, checked client.

    Raises:
        RedisUnavailable: The server stayed unreachable for ``timeout_s``, or
            refused the login, an ACL or TLS (no waiting for those).
        RedisSetupError: The server is unsafe (evicts keys, too old).
    """
    server = ServerRef.of(settings)
    started = clock.monotonic_s()
    delay_s = CONNECT_FIRST_DELAY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect(settings, check=True)
        except StoreError as exc:
            error = translate(exc, server)
            if not isinstance(error, RedisUnavailable) or not error.transient:
                raise error from exc
            waited_s = clock.monotonic_s() - started
            if timeout_s is not None and waited_s >= timeout_s:
                raise RedisUnavailable(
                    f"gave up after {waited_s:.1f}s (--connect-timeout-s {timeout_s:g}): {error}"
                ) from exc
            pause_s = delay_s * (0.5 + random.random())
            if timeout_s is not None:
                pause_s = min(pause_s, max(timeout_s - waited_s, 0.0))
            log.warning(
                "redis_unavailable",
                attempt=attempt,
                retry_in_s=round(pause_s, 3),
                error=str(error),
            )
            await asyncio.sleep(pause_s)
            delay_s = min(delay_s * 2, CONNECT_MAX_DELAY_S)


async def serve(args: argparse.Namespace, settings: Settings, *, install_signals: bool) -> int:
    """Load, check, sync and run; return the exit status."""
    config = load_app_config_named(settings, args.app)
    app = build_app(config)
    queues = args.queues.split(",") if args.queues else list(config.worker.queues)
    concurrency = args.concurrency or config.worker.concurrency
    prefetch = args.prefetch if args.prefetch is not None else config.worker.prefetch
    # Refuses a server that evicts keys; warns (redis_not_persistent) about one
    # that keeps nothing across a restart; waits for one that is not up yet.
    client = await connect_when_up(settings, args.connect_timeout_s)
    bus = Bus(settings, redis=client, source=config.name)
    try:

        async def sync() -> SyncResult:
            # At start, and again whenever the registry watch finds that Redis
            # lost the registry.
            return await sync_subscriptions(
                client,
                BusKeys(settings.prefix),
                config.name,
                subscription_specs(config),
                tasks=task_specs(config),
                allow_removal=args.allow_removal,
            )

        if not args.no_sync:
            result = await sync()
            log.info("subscriptions_synced", app=config.name, diff=result.describe())

        pending = PendingSweep(settings.prefix, grace_ms=int(args.sweep_grace_s * 1000))

        async def sweep() -> None:
            routed = (await pending.sweep(client, now_ms=now_ms())).routed
            if routed:
                log.warning(
                    "pending_events_routed",
                    count=routed,
                    reason="their publisher stopped before routing them",
                )

        async def boot_check_chains() -> None:
            # An empty Redis lost the recurring chains too; heartbeats only
            # repair chains that exist.
            if worker.recurring is not None:
                await worker.recurring.sync(now_ms(), full=True)

        watch = RegistryWatch(
            client,
            BusKeys(settings.prefix),
            config.name,
            resync=None if args.no_sync else sync,
            after_loss=[boot_check_chains],
        )
        await watch.prime()
        worker = Worker(
            app,
            client,
            queues=queues,
            concurrency=concurrency,
            prefetch=prefetch,
            lease_s=args.lease_s,
            grace_s=args.grace_s,
            burst=args.burst,
            prefix=settings.prefix,
            retention_s=settings.retention_s,
            payload_adapter=event_adapter(),
            publisher=bus.apublish,
            on_beat=[sweep, watch.check],
            node=args.node,
            recurring=recurring_from_config(config),
            block_warn_s=args.block_warn_s or None,
        )
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()
        return 0
    finally:
        await bus.aclose()
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bus.worker``."""
    args = build_parser().parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if args.prefetch is not None and not 0 <= args.prefetch <= MAX_PREFETCH:
        print(f"error: --prefetch must be 0..{MAX_PREFETCH}", file=sys.stderr)
        return EXIT_USAGE
    if args.connect_timeout_s is not None and not args.connect_timeout_s >= 0:
        print("error: --connect-timeout-s must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if not args.block_warn_s >= 0:
        print("error: --block-warn-s must be >= 0 (0: no watchdog)", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = Settings.from_env()
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        configure_logging(args.log_level or settings.log_level)
        # Redis failing in a start-up step after connecting (the sync, the boot
        # check) is one line too, as every other start-up error.
        with redis_errors(settings):
            return run_loop(serve(args, settings, install_signals=True), loop=args.loop)
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
