"""The producer side of one measurement, run as a subprocess of the harness.

Usage (the harness calls it; the environment carries the URL and the row)::

    python -m bench.peers.phase describe
    python -m bench.peers.phase enqueue --n N [--batch B]
    python -m bench.peers.phase fill --n N
    python -m bench.peers.phase latency --rate R --duration-s D

Each process imports one library only, and prints its result as one line
``PEERS-RESULT {json}`` on stdout (libraries may print other lines).

* ``enqueue``: figure A. One producer; N jobs, one enqueue call each (or N/B
  calls of the bulk API with ``--batch``); no worker runs. A short untimed
  warm-up opens connections and loads scripts first.
* ``fill``: the 20,000 jobs of figure B, enqueued before the worker starts
  (bulk API where there is one; the time is not a figure).
* ``latency``: figure C. The worker is already started; warm-up jobs wait for
  it to be ready, then jobs go out at a fixed rate, each carrying
  ``time.time_ns()`` taken just before its enqueue call; the handler records
  its start minus that time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from importlib import metadata
from typing import Any

import redis.asyncio

from bench.peers.adapters import load_module
from bench.peers.adapters.base import LATENCY_KEY, Peer, env_row, env_url

RESULT_PREFIX = "PEERS-RESULT "
# Untimed enqueues before figure A's clock starts (connections, Lua loading).
ENQUEUE_WARMUP = 200
# Figure B's fill uses the bulk API in batches of this size where there is one.
FILL_BATCH = 1000
# Latency warm-up: jobs sent this far apart until the worker has run them all.
WARMUP_JOBS = 20
WARMUP_GAP_S = 0.05


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def wait_for_len(client: redis.asyncio.Redis, key: str, n: int, timeout_s: float) -> int:
    """Wait until the list ``key`` holds ``n`` items or the time runs out."""
    deadline = time.monotonic() + timeout_s
    length = 0
    while time.monotonic() < deadline:
        length = int(await client.llen(key))
        if length >= n:
            break
        await asyncio.sleep(0.01)  # measurement polling, not part of any figure
    return length


async def phase_enqueue(peer: Peer, n: int, batch: int | None) -> dict[str, Any]:
    """Figure A: enqueue rate of one producer."""
    if batch:
        await peer.enqueue_noop_bulk(0, min(batch, ENQUEUE_WARMUP))
        calls = n // batch
        started = time.perf_counter()
        for c in range(calls):
            await peer.enqueue_noop_bulk(ENQUEUE_WARMUP + c * batch, batch)
        elapsed = time.perf_counter() - started
        return {
            "jobs": calls * batch,
            "calls": calls,
            "elapsed_s": elapsed,
            "rate": calls * batch / elapsed,
        }
    for i in range(ENQUEUE_WARMUP):
        await peer.enqueue_noop(i)
    started = time.perf_counter()
    for i in range(ENQUEUE_WARMUP, ENQUEUE_WARMUP + n):
        await peer.enqueue_noop(i)
    elapsed = time.perf_counter() - started
    return {"jobs": n, "calls": n, "elapsed_s": elapsed, "rate": n / elapsed}


async def phase_fill(peer: Peer, n: int) -> dict[str, Any]:
    """Figure B's jobs, enqueued before the worker starts."""
    started = time.perf_counter()
    if peer.variant.bulk_api:
        for start in range(0, n, FILL_BATCH):
            await peer.enqueue_noop_bulk(start, min(FILL_BATCH, n - start))
    else:
        for i in range(n):
            await peer.enqueue_noop(i)
    return {"jobs": n, "elapsed_s": time.perf_counter() - started}


async def phase_latency(
    peer: Peer, rate: float, duration_s: float, ready_timeout_s: float, drain_timeout_s: float
) -> dict[str, Any]:
    """Figure C: enqueue-to-handler-start latency at a fixed rate."""
    client = redis.asyncio.Redis.from_url(env_url())
    try:
        ready_started = time.monotonic()
        for _ in range(WARMUP_JOBS):
            await peer.enqueue_latency(time.time_ns())
            await asyncio.sleep(WARMUP_GAP_S)
        got = await wait_for_len(client, LATENCY_KEY, WARMUP_JOBS, ready_timeout_s)
        if got < WARMUP_JOBS:
            raise RuntimeError(
                f"worker ran {got}/{WARMUP_JOBS} warm-up jobs in {ready_timeout_s} s; "
                "see its log under bench/peers/results/logs/"
            )
        ready_s = time.monotonic() - ready_started
        await client.delete(LATENCY_KEY)
        count = round(rate * duration_s)
        max_lag_s = 0.0
        started = time.perf_counter()
        for k in range(count):
            due = started + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                max_lag_s = max(max_lag_s, -wait)
            await peer.enqueue_latency(time.time_ns())
        send_s = time.perf_counter() - started
        got = await wait_for_len(client, LATENCY_KEY, count, drain_timeout_s)
        values_ms = sorted(int(v) / 1e6 for v in await client.lrange(LATENCY_KEY, 0, -1))
    finally:
        await client.aclose()
    if got < count:
        raise RuntimeError(f"only {got}/{count} latency jobs ran within {drain_timeout_s} s")
    return {
        "jobs": count,
        "rate": rate,
        "send_s": send_s,
        "max_send_lag_ms": max_lag_s * 1000,
        "ready_s": ready_s,
        "p50_ms": percentile(values_ms, 50),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": values_ms[-1],
    }


def describe(row: str, peer: Peer) -> dict[str, Any]:
    """The row's metadata, its library's version and its worker command."""
    v = peer.variant
    return {
        "row": v.row,
        "library": v.library,
        "version": metadata.version(v.library),
        "mode": v.mode,
        "semantics": v.semantics,
        "concurrency": v.concurrency,
        "bulk_api": v.bulk_api,
        "worker_argv": peer.worker_argv(),
    }


async def main(argv: list[str]) -> dict[str, Any]:
    """Run one phase for the row in ``PEERS_ROW``; return its result."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers.phase", description=__doc__)
    sub = parser.add_subparsers(dest="phase", required=True)
    sub.add_parser("describe")
    enqueue = sub.add_parser("enqueue")
    enqueue.add_argument("--n", type=int, required=True)
    enqueue.add_argument("--batch", type=int, default=None)
    fill = sub.add_parser("fill")
    fill.add_argument("--n", type=int, required=True)
    latency = sub.add_parser("latency")
    latency.add_argument("--rate", type=float, required=True)
    latency.add_argument("--duration-s", type=float, required=True)
    latency.add_argument("--ready-timeout-s", type=float, default=60.0)
    latency.add_argument("--drain-timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)

    row = env_row("")
    module = load_module(row)
    peer: Peer = module.PEER(module.VARIANTS[row], env_url())
    if args.phase == "describe":
        return describe(row, peer)
    await peer.open()
    try:
        if args.phase == "enqueue":
            return await phase_enqueue(peer, args.n, args.batch)
        if args.phase == "fill":
            return await phase_fill(peer, args.n)
        return await phase_latency(
            peer, args.rate, args.duration_s, args.ready_timeout_s, args.drain_timeout_s
        )
    finally:
        await peer.close()


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1:]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
