"""A worker process for engine tests: handlers that leave evidence in Redis.

Run: python -m tests.procs.engine_worker --url URL [--concurrency N] [--lease-s S]
[--queues a,b] [--burst] [--app NAME]

Handlers (payloads are dicts):
  record   HINCRBY runs <task id> 1; RPUSH order <payload["n"]>
  slow     sleeps payload["s"] seconds, then records like ``record``
  started  RPUSH started <task id>:<pid>, sleeps payload["s"] on the first attempt
           (payload["then"] on later ones), then records
The process prints "ready <pid>" on stdout once the worker runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from redis.asyncio import Redis

from bus import App, TaskContext, Worker
from bus.logs import configure_logging


def build_app(name: str, redis: Redis) -> App:
    """Build the test app whose handlers write to ``redis``."""
    app = App(name)

    async def record(payload: dict[str, Any], ctx: TaskContext) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(f"test:{name}:runs", ctx.task_id, 1)
            pipe.rpush(f"test:{name}:order", str(payload.get("n", "")))
            await pipe.execute()

    @app.task()
    async def noted(payload: dict[str, Any], ctx: TaskContext) -> None:
        await record(payload, ctx)

    @app.task()
    async def slow(payload: dict[str, Any], ctx: TaskContext) -> None:
        await asyncio.sleep(float(payload["s"]))
        await record(payload, ctx)

    @app.task(timeout_s=120)
    async def started(payload: dict[str, Any], ctx: TaskContext) -> None:
        await redis.rpush(f"test:{name}:started", f"{ctx.task_id}:{os.getpid()}")
        await asyncio.sleep(float(payload["s"] if ctx.attempt == 1 else payload.get("then", 0)))
        await record(payload, ctx)

    return app


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--app", default="eng")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=15.0)
    parser.add_argument("--grace-s", type=float, default=10.0)
    parser.add_argument("--queues", default="*")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json=True)
    redis = Redis.from_url(args.url)
    app = build_app(args.app, redis)
    worker = Worker(
        app,
        redis,
        queues=args.queues.split(","),
        concurrency=args.concurrency,
        lease_s=args.lease_s,
        grace_s=args.grace_s,
        burst=args.burst,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    print(f"ready {os.getpid()}", flush=True)
    try:
        await worker.run()
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
