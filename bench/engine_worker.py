"""The worker process of bench/engine.py: one app, three tiny handlers, timestamps.

Run: python bench/engine_worker.py --socket PATH --out FILE [--concurrency N]
[--burst] [--prefix P] [--log-level info|debug] [--profile FILE]

Handlers of the app ``bench`` (every one is ``async`` and does no I/O):
  noop   counts the task and notes the time (drain rate)
  probe  records now - payload["t_ns"] (enqueue-to-start latency);
         a payload with "warm" set is not recorded (warm-up)
  due    records now - payload["due_ms"] (lateness of delayed tasks)

Logs are JSON lines written to /dev/null, so the ``debug`` level pays for
formatting and writing every per-task line but not for a terminal. With
``--burst`` the worker drains the queues and exits; without it, it works until
SIGTERM. Either way it then writes its measurements to ``--out`` as JSON: clock
readings of this process (``time.perf_counter``) for the first task start, the
last task end, the return of the last settle call (the engine's
``bus.store.engine.settle`` is wrapped to note it), task number ``EARLY_MARK`` and
every ``MARK_EVERY`` tasks; the samples of ``probe`` and ``due`` in
nanoseconds; and the process's CPU seconds spent in the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import resource
import signal
import time
from typing import Any

import orjson
from redis.asyncio import Redis

import bus.store.engine
from bus import App, Worker
from bus.logs import configure_logging
from bus.store.scripts import ALL_SCRIPTS

APP_NAME = "bench"
# Record a progress mark every this many noop tasks: on a 1M backlog the marks
# show whether the rate changes as the backlog shrinks.
MARK_EVERY = 100_000
# Also mark the task of this number (the small backlog's size), so the first
# tasks of a large backlog compare with a whole small one under equal conditions.
EARLY_MARK = 1_000


class Evidence:
    """What the handlers observed, in this process's clock."""

    def __init__(self) -> None:
        self.count = 0
        self.first_start: float | None = None
        self.last_end = 0.0
        self.last_settled = 0.0
        self.marks: list[tuple[int, float]] = []
        self.latency_ns: list[int] = []
        self.lateness_ns: list[int] = []


def build_app(evidence: Evidence | None = None) -> App:
    """Build the benchmark app; the producer side passes no evidence."""
    seen = evidence or Evidence()
    app = App(APP_NAME)

    @app.task()
    async def noop(payload: Any) -> None:
        now = time.perf_counter()
        if seen.first_start is None:
            seen.first_start = now
        seen.count += 1
        if seen.count % MARK_EVERY == 0 or seen.count == EARLY_MARK:
            seen.marks.append((seen.count, now))
        seen.last_end = now

    @app.task()
    async def probe(payload: dict[str, Any]) -> None:
        if not payload.get("warm"):
            seen.latency_ns.append(time.time_ns() - payload["t_ns"])

    @app.task()
    async def due(payload: dict[str, Any]) -> None:
        seen.lateness_ns.append(time.time_ns() - payload["due_ms"] * 1_000_000)

    return app


def _note_settles(evidence: Evidence) -> None:
    """Wrap the engine's settle call to note when the last outcome became durable."""
    settle = bus.store.engine.settle

    async def timed_settle(*args: Any, **kwargs: Any) -> list[str]:
        rejected = await settle(*args, **kwargs)
        evidence.last_settled = time.perf_counter()
        return rejected

    bus.store.engine.settle = timed_settle  # type: ignore[assignment]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def work(args: argparse.Namespace) -> dict[str, Any]:
    """Run one worker until it drains (burst) or is told to stop; return the evidence."""
    evidence = Evidence()
    _note_settles(evidence)
    redis = Redis(unix_socket_path=args.socket)
    await redis.ping()
    for script in ALL_SCRIPTS:
        await redis.script_load(script.source)
    worker = Worker(
        build_app(evidence),
        redis,
        concurrency=args.concurrency,
        burst=args.burst,
        prefix=args.prefix,
        worker_id=f"bench-{os.getpid()}",
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    profile = cProfile.Profile() if args.profile else None
    cpu_before = _cpu_s()
    ready = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        await worker.run()
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
    done = time.perf_counter()
    cpu_s = _cpu_s() - cpu_before
    await redis.aclose()
    return {
        "count": evidence.count,
        "ready": ready,
        "first_start": evidence.first_start,
        "last_end": evidence.last_end,
        "last_settled": evidence.last_settled,
        "done": done,
        "marks": evidence.marks,
        "cpu_s": cpu_s,
        "processed": worker.counters.processed,
        "latency_ns": evidence.latency_ns,
        "lateness_ns": evidence.lateness_ns,
    }


def main() -> None:
    """Parse the arguments, run the worker, write the evidence file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", required=True, help="unix socket of the redis-server")
    parser.add_argument("--out", required=True, help="where to write the evidence (JSON)")
    parser.add_argument("--concurrency", type=int, default=50, help="the worker's concurrency")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--prefix", default="bus", help="the key prefix of the bus")
    parser.add_argument("--log-level", default="info", choices=["debug", "info"])
    parser.add_argument("--profile", help="write a cProfile of the worker run to this file")
    args = parser.parse_args()
    with open(os.devnull, "w") as sink:
        configure_logging(args.log_level, json=True, stream=sink)
        evidence = asyncio.run(work(args))
    with open(args.out, "wb") as out:
        out.write(orjson.dumps(evidence))


if __name__ == "__main__":
    main()
