"""Lateness of recurring occurrences against their slots, on an idle worker.

Run: python bench/recurring.py [--every 100ms] [--count 300] [--warmup 5] [--json FILE]

It starts its own redis-server on a unix socket in a temporary directory (no
persistence), never touches any other server, and ends that server by its pid,
on errors and Ctrl-C too. One worker (in this process, lease 15 s, nothing
else to do) runs a recurring task on an ``every`` schedule; each run notes
how late its handler started: the worker's clock at handler start minus the
occurrence's slot. The path measured is the whole chain: the previous
occurrence settles, the next one is added as a delayed task by ``recur.lua``,
the idle worker's timer fires at the slot, it claims (promoting the due task)
and starts the handler.

Prints p50, p90, p99 and max lateness in ms, and how many slots were skipped
(there should be none). Target: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bus import App, TaskContext, Worker
from bus.core.schedule import every
from bus.logs import configure_logging
from bus.recurring import Recurring

TARGET_P99_MS = 50.0


class RedisServer:
    """A private redis-server on a unix socket in a temp dir; ended by its pid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = str(directory / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; install Redis 7 to run the benchmark")
        args = [binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        log = (self.directory / "redis.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.directory}/redis.log")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of ``values`` (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


async def measure(socket: str, period: str, count: int, warmup: int) -> dict[str, Any]:
    """Run the recurring task until ``count + warmup`` occurrences ran; return figures."""
    redis = Redis(unix_socket_path=socket)
    app = App("bench")
    runs: list[tuple[int, float]] = []
    done = asyncio.Event()

    @app.task(max_attempts=1)
    async def tick(payload: dict[str, int], ctx: TaskContext) -> None:
        runs.append((payload["slot_ms"], time.time_ns() / 1e6))
        if len(runs) >= count + warmup:
            done.set()

    worker = Worker(
        app,
        redis,
        recurring=[Recurring("tick", every(period))],
        concurrency=4,
        lease_s=15,
        retention_s=60,
    )
    try:
        async with worker:
            await done.wait()
    finally:
        await redis.aclose()
    measured = runs[warmup : warmup + count]
    late = [ran - slot for slot, ran in measured]
    period_ms = every(period).every_ms or 1
    slots = [slot for slot, _ in measured]
    skipped = sum((b - a) // period_ms - 1 for a, b in itertools.pairwise(slots))
    return {
        "every": period,
        "occurrences": len(late),
        "p50_ms": round(percentile(late, 50), 2),
        "p90_ms": round(percentile(late, 90), 2),
        "p99_ms": round(percentile(late, 99), 2),
        "max_ms": round(max(late), 2),
        "min_ms": round(min(late), 2),
        "skipped_slots": int(skipped),
        "target_p99_ms": TARGET_P99_MS,
        "met": percentile(late, 99) < TARGET_P99_MS and skipped == 0,
    }


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", default="100ms", help="the schedule (default: %(default)s)")
    parser.add_argument("--count", type=int, default=300, help="occurrences measured")
    parser.add_argument("--warmup", type=int, default=5, help="occurrences not measured")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    configure_logging("warning")
    with tempfile.TemporaryDirectory(prefix="bench-recurring-", dir="/tmp") as tmp:
        server = RedisServer(Path(tmp))
        try:
            server.start()
            print(f"measuring {args.count} occurrences every {args.every} ...", file=sys.stderr)
            figures = asyncio.run(measure(server.socket, args.every, args.count, args.warmup))
        finally:
            server.stop()
    figures["machine"] = (
        f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("| schedule | occurrences | p50 ms | p90 ms | p99 ms | max ms | skipped | p99 < 50 ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| every {figures['every']} | {figures['occurrences']} | {figures['p50_ms']:.1f} "
        f"| {figures['p90_ms']:.1f} | {figures['p99_ms']:.1f} | {figures['max_ms']:.1f} "
        f"| {figures['skipped_slots']} | {'met' if figures['met'] else 'MISSED'} |"
    )
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
