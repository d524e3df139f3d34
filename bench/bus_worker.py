"""The worker process of bench/bus_bench.py: one subscribing app, a probe handler, samples.

Run: python bench/bus_worker.py --socket PATH --out FILE [--prefix P]

The app ``latency`` has one subscription handler, ``on_probe``, for the event
type ``bench.probe``. The worker is wired as ``python -m bus.worker`` wires it:
events reach the handler as :class:`bus.Event` objects through
``bus.config.apps.event_adapter()``, and the heartbeat sweeps unrouted events. Logs
are JSON lines at level info written to /dev/null. The handler records
``time.time_ns() - event.data["sent_ns"]``: the publisher takes ``sent_ns``
just before it calls ``apublish``, so a sample is the whole way from the
publish call to the handler's start (both processes read the same clock).
Events with ``warm`` set are not recorded (warm-up).

The worker works until SIGTERM or SIGINT, then writes the samples (ns) to
``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

import orjson
from redis.asyncio import Redis

from bus import App, Event, TaskDef, Worker
from bus.config.apps import event_adapter
from bus.core.clock import now_ms
from bus.events.sweep import sweep_pending
from bus.logs import configure_logging
from bus.store.scripts import ALL_SCRIPTS

APP_NAME = "latency"
SUBSCRIPTION = "on_probe"
EVENT_TYPE = "bench.probe"
# The worker CLI's default grace before a pending event is swept (ms).
SWEEP_GRACE_MS = 5_000


def build_app(samples: list[int]) -> App:
    """The benchmark's subscribing app; its handler appends latencies to ``samples``."""
    app = App(APP_NAME)

    async def on_probe(event: Event) -> None:
        started_ns = time.time_ns()
        if not event.data.get("warm"):
            samples.append(started_ns - event.data["sent_ns"])

    app.add(TaskDef(name=SUBSCRIPTION, fn=on_probe, kind="event"))
    return app


async def work(args: argparse.Namespace) -> list[int]:
    """Run the worker until SIGTERM or SIGINT; return the samples."""
    samples: list[int] = []
    redis = Redis(unix_socket_path=args.socket)
    await redis.ping()
    for script in ALL_SCRIPTS:
        await redis.script_load(script.source)

    async def sweep() -> None:
        await sweep_pending(redis, args.prefix, now_ms=now_ms(), grace_ms=SWEEP_GRACE_MS)

    worker = Worker(
        build_app(samples),
        redis,
        prefix=args.prefix,
        worker_id=f"bench-{os.getpid()}",
        payload_adapter=event_adapter(),
        on_beat=[sweep],
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await redis.aclose()
    return samples


def main() -> None:
    """Parse the arguments, run the worker, write the samples."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", required=True, help="unix socket of the redis-server")
    parser.add_argument("--out", required=True, help="where to write the samples (JSON)")
    parser.add_argument("--prefix", default="bus", help="the key prefix of the bus")
    args = parser.parse_args()
    with open(os.devnull, "w") as sink:
        configure_logging("info", json=True, stream=sink)
        samples = asyncio.run(work(args))
    with open(args.out, "wb") as out:
        out.write(orjson.dumps({"latency_ns": samples}))


if __name__ == "__main__":
    main()
