"""taskbus itself, driven through its public API like any peer.

Producer: :class:`bus.client.Bus`. One job per call uses ``enqueue_sync``, the
call for code outside asyncio, as the huey, RQ, Dramatiq and Celery rows use
their blocking calls (the harness's producer is a plain loop; an awaited
``enqueue`` costs an event-loop turn per round trip on top, measured in
docs/benchmarks.md); bulk uses ``enqueue_many_sync`` likewise. Worker:
this module run as a script (``python -m bench.peers.adapters.taskbus``), which
builds an :class:`bus.App` with the two shared handlers and runs one
:class:`bus.Worker` at its defaults (concurrency 10, prefetch = concurrency) on
the event loop ``python -m bus.worker`` runs on (:func:`bus.eventloop.run`:
uvloop where installed). It does not use the CLI itself, which would add the
app-config and subscription machinery the peers do not have.

Semantics: at-least-once (its only mode). A claim is a lease renewed by the
worker's heartbeat; a task whose worker dies is claimed again once the lease
(15 s by default) runs out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_url,
    latency_async,
    noop_async,
    variants_by_row,
)
from bus import App, EnqueueItem, Worker
from bus.client import Bus
from bus.eventloop import run
from bus.logs import configure_logging

APP_NAME = "peers"
QUEUE = "default"
# Worker's own default (bus.worker.loop.Worker); stated so the row says it.
CONCURRENCY = 10

VARIANTS = variants_by_row(
    [
        Variant(
            row="taskbus",
            library="taskbus",
            mode="default",
            semantics="at-least-once (lease + heartbeat; recovered when the lease expires)",
            concurrency=f"1 process, asyncio on uvloop, concurrency={CONCURRENCY}, "
            "prefetch 10 (defaults)",
            bulk_api="Bus.enqueue_many_sync",
        )
    ]
)


def build_app() -> App:
    """The benchmark app: the two shared job bodies as taskbus handlers."""
    app = App(APP_NAME)

    @app.task(name="noop", queue=QUEUE)
    async def noop(payload: Any) -> None:
        await noop_async()

    @app.task(name="latency", queue=QUEUE)
    async def latency(payload: Any) -> None:
        await latency_async(payload["t"])

    return app


class TaskbusPeer(Peer):
    """taskbus's producer side."""

    async def open(self) -> None:
        """Connect the Bus."""
        self.redis = Redis.from_url(self.redis_url)
        self.sync_redis = SyncRedis.from_url(self.redis_url)
        self.bus = Bus(redis=self.redis, sync_redis=self.sync_redis)

    async def close(self) -> None:
        """Close the Bus and its clients."""
        await self.bus.aclose()
        await self.redis.aclose()
        self.sync_redis.close()

    async def enqueue_noop(self, i: int) -> None:
        """One ``Bus.enqueue_sync`` call."""
        self.bus.enqueue_sync(APP_NAME, "noop", {"i": i}, queue=QUEUE)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``Bus.enqueue_sync`` call carrying the enqueue time."""
        self.bus.enqueue_sync(APP_NAME, "latency", {"t": sent_ns}, queue=QUEUE)

    async def enqueue_noop_bulk(self, start: int, n: int) -> None:
        """One ``Bus.enqueue_many_sync`` call."""
        items = [EnqueueItem("noop", {"i": i}, queue=QUEUE) for i in range(start, start + n)]
        self.bus.enqueue_many_sync(APP_NAME, items)

    def worker_argv(self) -> list[str]:
        """This module as a script."""
        # -P: no working directory on sys.path, so PYTHONPATH decides which `bus`
        # is measured (see run.py --taskbus-ref).
        return [sys.executable, "-P", "-m", "bench.peers.adapters.taskbus"]


PEER = TaskbusPeer


async def run_worker() -> None:
    """Run one taskbus worker until SIGTERM or SIGINT."""
    configure_logging("info")
    redis = Redis.from_url(env_url())
    worker = Worker(build_app(), redis, concurrency=CONCURRENCY, queues=[QUEUE])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    print(f"ready {os.getpid()}", flush=True)
    try:
        await worker.run()
    finally:
        await redis.aclose()


if __name__ == "__main__":
    # The event loop `python -m bus.worker` runs on (uvloop where installed).
    run(run_worker())
