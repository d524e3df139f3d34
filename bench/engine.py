"""The task engine's benchmark: enqueue, drain, latency, lateness, memory, logging.

Run: python bench/engine.py [--quick] [--json FILE] [--only NAME ...] [--runs N]

It starts its own redis-server on a unix socket in a temporary directory (no
persistence), never touches any other server, and ends every process it started,
on errors and Ctrl-C too. Each figure is the median of the runs (full: 3,
``--quick``: 1) with their min-max. The scenarios, by the names ``--only`` takes:

  enqueue_one      Bus.enqueue in a loop (one round trip each), beside a loop of
                   redis-py LPUSH of the same payload: the round-trip ceiling;
                   and Bus.enqueue_sync beside sync redis-py LPUSH calls
  enqueue_batched  Bus.enqueue_many in batches of 500
  drain            one worker process (bench/engine_worker.py, burst mode) drains
                   a backlog of no-op tasks: 1k vs 1M tasks (quick: 1k vs 100k),
                   at concurrency 50 and 200; rate from first task start to last
  latency          enqueue-to-start latency at 200 tasks/s on an idle worker
  delayed          lateness of delayed tasks due 0.05-2 s after enqueue
  memory           used_memory per queued task with a 100-byte payload, and the
                   MEMORY USAGE of each of the app's keys
  logging          drain rate at log level info vs debug (JSON to /dev/null)

Targets are those of the task-engine issue; the table marks each figure met or
MISSED. Progress goes to standard error, the table to standard output.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from bench_cli import bench_main
from engine_report import Figure, print_table
from engine_support import Children, RedisServer, percentile
from engine_worker import APP_NAME, EARLY_MARK, MARK_EVERY, build_app
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bus import EnqueueItem
from bus.client import Bus
from bus.store.keys import AppKeys

SCENARIOS = (
    "enqueue_one",
    "enqueue_batched",
    "drain",
    "latency",
    "delayed",
    "memory",
    "logging",
)
WORKER_SCRIPT = Path(__file__).with_name("engine_worker.py")

# The payload size for the memory figure; every scenario uses it.
PAYLOAD_BYTES = 100
PAYLOAD = {"data": "x" * (PAYLOAD_BYTES - len(orjson.dumps({"data": ""})))}
# The batch size of the batched-enqueue figure (the issue's).
BATCH = 500
# Items per enqueue_many call when filling a backlog: 20 script calls of 500
# tasks in one pipelined round trip.
FILL_CHUNK = 10_000
# Enqueue-to-start latency is measured at this fixed, moderate rate (tasks/s).
LATENCY_RATE = 200
# Tasks run before any sample is taken: the first claims pay for lazy set-up.
WARMUP_TASKS = 20
# Delayed tasks are due uniformly at random this long after enqueue (ms).
DELAY_RANGE_MS = (50, 2000)
# Seed of the delays, so the runs of every invocation schedule the same pattern.
DELAY_SEED = 7
# Concurrency of the worker in the latency and lateness scenarios: the
# Worker's default, since at 200 tasks/s fewer than one slot is busy.
IDLE_CONCURRENCY = 10
# Concurrency of the logging scenario: the larger value of the drain scenario.
LOG_CONCURRENCY = 200
# A drain slower than this (tasks/s) is taken for a hang when sizing timeouts.
MIN_SANE_RATE = 500
# Seconds allowed on top of any wait for processes to start and stop.
SLACK_S = 30.0
# How often the benchmark checks a child's exit or a condition (s); the
# benchmark process is otherwise idle, so polling costs the measured ones nothing.
POLL_S = 0.05

# Targets of the task-engine issue.
DRAIN_TARGET = 20_000
ENQUEUE_ONE_TARGET = 7_000
BATCHED_TARGET = 60_000
LATENCY_P50_TARGET_MS = 1.0
LATENCY_P99_TARGET_MS = 3.0
LATENESS_P99_TARGET_MS = 10.0
BACKLOG_RATIO_TARGET = 0.9
MEMORY_TARGET_BYTES = 400


@dataclass(frozen=True)
class Plan:
    """Sizes of one invocation: the full benchmark or ``--quick``."""

    runs: int
    enqueue_one_n: int
    batched_n: int
    backlogs: tuple[int, int]
    concurrencies: tuple[int, ...]
    latency_s: float
    delayed_n: int
    memory_n: int
    log_backlog: int


FULL = Plan(
    runs=3,
    enqueue_one_n=20_000,
    batched_n=200_000,
    backlogs=(1_000, 1_000_000),
    concurrencies=(50, 200),
    latency_s=10.0,
    delayed_n=400,
    memory_n=100_000,
    log_backlog=100_000,
)
QUICK = Plan(
    runs=1,
    enqueue_one_n=5_000,
    batched_n=50_000,
    backlogs=(1_000, 100_000),
    concurrencies=(50, 200),
    latency_s=3.0,
    delayed_n=150,
    memory_n=100_000,
    log_backlog=20_000,
)


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """The scenarios, run against one private redis-server."""

    def __init__(self, server: RedisServer, children: Children, plan: Plan, tmp: Path) -> None:
        self.socket = server.socket
        self.children = children
        self.plan = plan
        self.tmp = tmp
        self.redis = Redis(unix_socket_path=self.socket)
        self.sync_redis = SyncRedis(unix_socket_path=self.socket)
        self.bus = Bus(redis=self.redis, sync_redis=self.sync_redis)
        self.app = build_app()
        self.keys = AppKeys(self.bus.prefix, APP_NAME)
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.profile_dir: Path | None = None
        self._templates: dict[int, int] = {}
        self._workers = 0

    async def close(self) -> None:
        """Close the benchmark's Redis clients."""
        self.bus.close_sync()
        await self.redis.aclose()
        self.sync_redis.close()

    # -- producer figures ----------------------------------------------------

    async def enqueue_one(self) -> None:
        """Bus.enqueue and Bus.enqueue_sync one by one, each beside a loop of
        redis-py LPUSH of the same payload on the same kind of client.

        The async LPUSH is the asyncio path's ceiling; the sync one is a
        redis-py client call (pool checkout included, as huey's enqueue),
        which enqueue_sync, on connections of its own, can pass."""
        n = self.plan.enqueue_one_n
        raw = orjson.dumps(PAYLOAD)
        rates: dict[str, list[float]] = {}

        async def ceiling() -> None:
            for _ in range(n):
                await self.redis.lpush("bench:ceiling", raw)

        async def enqueue() -> None:
            for _ in range(n):
                await self.bus.enqueue(self.app, "noop", PAYLOAD)

        def sync_ceiling() -> None:
            for _ in range(n):
                self.sync_redis.lpush("bench:ceiling", raw)

        def sync() -> None:
            for _ in range(n):
                self.bus.enqueue_sync(self.app, "noop", PAYLOAD)

        timed: dict[str, Callable[[], Any]] = {
            "ceiling": ceiling,
            "async": enqueue,
            "sync_ceiling": sync_ceiling,
            "sync": sync,
        }
        for run in range(self.plan.runs):
            for _ in range(WARMUP_TASKS):
                await self.redis.lpush("bench:ceiling", raw)
                await self.bus.enqueue(self.app, "noop", PAYLOAD)
                self.sync_redis.lpush("bench:ceiling", raw)
                self.bus.enqueue_sync(self.app, "noop", PAYLOAD)
            # Each loop on an empty database, in an order rotated run by run.
            names = list(timed)
            names = names[run % len(names) :] + names[: run % len(names)]
            for name in names:
                loop = timed[name]
                await self.redis.flushdb()
                start = time.perf_counter()
                result = loop()
                if asyncio.iscoroutine(result):
                    await result
                rates.setdefault(name, []).append(n / (time.perf_counter() - start))
            _progress(
                f"enqueue_one run {run + 1}: {rates['async'][-1]:,.0f}/s "
                f"(LPUSH {rates['ceiling'][-1]:,.0f}/s), sync {rates['sync'][-1]:,.0f}/s "
                f"(LPUSH {rates['sync_ceiling'][-1]:,.0f}/s)"
            )
        self.figures += [
            Figure(
                "enqueue_one",
                "enqueue one by one",
                "tasks/s",
                rates["async"],
                (">=", ENQUEUE_ONE_TARGET),
            ),
            Figure(
                "lpush_ceiling", "  redis-py LPUSH one by one (ceiling)", "ops/s", rates["ceiling"]
            ),
            Figure(
                "enqueue_one_ratio",
                "  enqueue / ceiling",
                "ratio",
                [r / c for r, c in zip(rates["async"], rates["ceiling"], strict=True)],
                decimals=2,
            ),
            Figure("enqueue_one_sync", "enqueue_sync one by one", "tasks/s", rates["sync"]),
            Figure(
                "lpush_ceiling_sync",
                "  sync redis-py LPUSH one by one (client call)",
                "ops/s",
                rates["sync_ceiling"],
            ),
            Figure(
                "enqueue_one_sync_ratio",
                "  enqueue_sync / sync LPUSH",
                "ratio",
                [r / c for r, c in zip(rates["sync"], rates["sync_ceiling"], strict=True)],
                decimals=2,
            ),
        ]

    async def enqueue_batched(self) -> None:
        """Bus.enqueue_many in batches of BATCH, one call in flight."""
        items = [EnqueueItem("noop", PAYLOAD) for _ in range(BATCH)]
        calls = self.plan.batched_n // BATCH
        rates: list[float] = []
        for run in range(self.plan.runs):
            await self.bus.enqueue_many(self.app, items)
            await self.redis.flushdb()
            start = time.perf_counter()
            for _ in range(calls):
                await self.bus.enqueue_many(self.app, items)
            rates.append(calls * BATCH / (time.perf_counter() - start))
            _progress(f"enqueue_batched run {run + 1}: {rates[-1]:,.0f}/s")
        self.figures.append(
            Figure(
                "enqueue_batched",
                f"enqueue_many, batches of {BATCH}",
                "tasks/s",
                rates,
                (">=", BATCHED_TARGET),
            )
        )

    # -- drain figures ---------------------------------------------------------

    async def drain(self) -> None:
        """Drain rates by backlog and concurrency; the 1M/1k ratio; CPU per task."""
        small, large = self.plan.backlogs
        runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for run in range(self.plan.runs):
            for backlog in (small, large):
                for concurrency in self.plan.concurrencies:
                    result = await self._drain_once(backlog, concurrency, "info")
                    runs.setdefault((backlog, concurrency), []).append(result)
                    _progress(
                        f"drain {_size(backlog)} c={concurrency} run {run + 1}: "
                        f"{result['rate']:,.0f}/s"
                    )
        for (backlog, concurrency), results in runs.items():
            self.figures.append(
                Figure(
                    f"drain_{_size(backlog)}_c{concurrency}",
                    f"drain, {_size(backlog)} backlog, concurrency {concurrency}",
                    "tasks/s",
                    [r["rate"] for r in results],
                    (">=", DRAIN_TARGET),
                )
            )
        self.details["drain"] = {f"{_size(b)}_c{c}": r for (b, c), r in runs.items()}
        for concurrency in self.plan.concurrencies:
            pairs = zip(runs[(large, concurrency)], runs[(small, concurrency)], strict=True)
            self.figures.append(
                Figure(
                    f"drain_backlog_ratio_c{concurrency}",
                    f"drain {_size(large)} / {_size(small)} backlog, concurrency {concurrency}",
                    "ratio",
                    [lg["rate"] / sm["rate"] for lg, sm in pairs],
                    (">=", BACKLOG_RATIO_TARGET),
                    decimals=2,
                )
            )
        # The same question asked two ways that a busy machine disturbs less (no
        # verdict: the target is the whole-drain ratio above): the first
        # EARLY_MARK tasks of each backlog (equally short runs), and, within one
        # large drain, the last MARK_EVERY tasks (backlog nearly gone) against
        # the first (backlog full).
        for concurrency in self.plan.concurrencies:
            pairs = list(zip(runs[(large, concurrency)], runs[(small, concurrency)], strict=True))
            if all(lg["early_rate"] and sm["early_rate"] for lg, sm in pairs):
                label = f"  first {_size(EARLY_MARK)} tasks, {_size(large)} / {_size(small)}"
                self.figures.append(
                    Figure(
                        f"drain_early_ratio_c{concurrency}",
                        f"{label} backlog, concurrency {concurrency}",
                        "ratio",
                        [lg["early_rate"] / sm["early_rate"] for lg, sm in pairs],
                        decimals=2,
                    )
                )
            segments = [r["segment_rates"] for r in runs[(large, concurrency)]]
            if all(len(seg) >= 2 for seg in segments):
                self.figures.append(
                    Figure(
                        f"drain_last_first_segment_c{concurrency}",
                        f"  {_size(large)} drain, last / first {_size(MARK_EVERY)} tasks, "
                        f"concurrency {concurrency}",
                        "ratio",
                        [seg[-1] / seg[0] for seg in segments],
                        decimals=2,
                    )
                )
        # CPU per task is steadier than the rate on a shared machine, and shows
        # an O(backlog) cost directly: it would grow with the backlog.
        for backlog, concurrency in itertools.product((small, large), self.plan.concurrencies):
            where = f"{_size(backlog)}, c={concurrency}"
            for side in ("worker", "redis"):
                self.figures.append(
                    Figure(
                        f"{side}_cpu_per_task_{_size(backlog)}_c{concurrency}",
                        f"  {side} CPU per task ({where})",
                        "us",
                        [r[f"{side}_cpu_us"] for r in runs[(backlog, concurrency)]],
                        decimals=1,
                    )
                )

    async def logging(self) -> None:
        """Drain rate with the per-task debug line filtered (info) and written (debug)."""
        backlog = self.plan.log_backlog
        rates: dict[str, list[float]] = {"info": [], "debug": []}
        for run in range(self.plan.runs):
            for level in rates:
                result = await self._drain_once(backlog, LOG_CONCURRENCY, level)
                rates[level].append(result["rate"])
                _progress(f"logging {level} run {run + 1}: {result['rate']:,.0f}/s")
        label = f"{_size(backlog)} backlog, concurrency {LOG_CONCURRENCY}"
        self.figures += [
            Figure("drain_log_info", f"drain, log level info ({label})", "tasks/s", rates["info"]),
            Figure(
                "drain_log_debug", f"drain, log level debug ({label})", "tasks/s", rates["debug"]
            ),
            Figure(
                "drain_log_ratio",
                "  debug / info",
                "ratio",
                [d / i for d, i in zip(rates["debug"], rates["info"], strict=True)],
                decimals=2,
            ),
        ]

    async def _drain_once(self, backlog: int, concurrency: int, log_level: str) -> dict[str, Any]:
        await self._restore(backlog)
        cpu_before = await self._redis_cpu_s()
        proc, out = self._start_worker(concurrency, burst=True, log_level=log_level)
        await self._wait_exit(proc, backlog / MIN_SANE_RATE + SLACK_S)
        redis_cpu_s = await self._redis_cpu_s() - cpu_before
        evidence = orjson.loads(out.read_bytes())
        finished = await self.redis.zcard(self.keys.finished)
        if evidence["count"] != backlog or finished != backlog:
            raise RuntimeError(
                f"drain of {backlog} tasks ran {evidence['count']} handlers and finished "
                f"{finished} tasks; see the worker's output above"
            )
        # The drain ends when the last outcome is durable, not when the last
        # handler returns: on a small backlog the settles would otherwise lag
        # outside the measured span.
        first, last = evidence["first_start"], evidence["last_settled"]
        marks = [(0, first), *((n, t) for n, t in evidence["marks"] if n % MARK_EVERY == 0)]
        early = [t for n, t in evidence["marks"] if n == EARLY_MARK]
        return {
            "rate": backlog / (last - first),
            "handler_rate": backlog / (evidence["last_end"] - first),
            "seconds": last - first,
            "setup_s": first - evidence["ready"],
            "worker_cpu_us": evidence["cpu_s"] / backlog * 1e6,
            "redis_cpu_us": redis_cpu_s / backlog * 1e6,
            # Handler clock for the first EARLY_MARK tasks: equal in length and
            # conditions whatever the backlog behind them.
            "early_rate": EARLY_MARK / (early[0] - first) if early else None,
            "segment_rates": [
                (n1 - n0) / (t1 - t0) for (n0, t0), (n1, t1) in itertools.pairwise(marks)
            ],
        }

    async def _template(self, backlog: int) -> int:
        """Return the database holding a backlog of ``backlog`` tasks; fill it once."""
        if backlog not in self._templates:
            db = len(self._templates) + 1
            started = time.perf_counter()
            async with Redis(unix_socket_path=self.socket, db=db) as client:
                await client.flushdb()
                bus = Bus(redis=client)
                items = [EnqueueItem("noop", PAYLOAD) for _ in range(min(FILL_CHUNK, backlog))]
                for start in range(0, backlog, FILL_CHUNK):
                    await bus.enqueue_many(self.app, items[: backlog - start])
            self._templates[backlog] = db
            _progress(f"filled a {_size(backlog)} backlog in {time.perf_counter() - started:.1f} s")
        return self._templates[backlog]

    async def _restore(self, backlog: int) -> None:
        """Make database 0 hold exactly the backlog's template (COPY, no enqueue)."""
        db = await self._template(backlog)
        await self.redis.flushdb()
        async with Redis(unix_socket_path=self.socket, db=db) as source:
            async for key in source.scan_iter(count=1000):
                await source.copy(key, key, destination_db=0)  # type: ignore[arg-type]

    # -- idle-worker figures -----------------------------------------------

    async def latency(self) -> None:
        """Enqueue-to-start latency at LATENCY_RATE tasks/s on an idle worker."""
        n = int(LATENCY_RATE * self.plan.latency_s)
        p50: list[float] = []
        p99: list[float] = []
        for run in range(self.plan.runs):
            samples = await self._with_idle_worker(self._paced_probes(n), WARMUP_TASKS + n)
            ms = [ns / 1e6 for ns in samples["latency_ns"]]
            if len(ms) != n:
                raise RuntimeError(f"latency: {len(ms)} samples for {n} tasks")
            p50.append(percentile(ms, 50))
            p99.append(percentile(ms, 99))
            self.details.setdefault("latency", []).append(
                {"p50_ms": p50[-1], "p99_ms": p99[-1], "max_ms": max(ms), "n": n}
            )
            _progress(f"latency run {run + 1}: p50 {p50[-1]:.3f} ms, p99 {p99[-1]:.3f} ms")
        label = f"enqueue-to-start at {LATENCY_RATE}/s"
        self.figures += [
            Figure("latency_p50", f"{label}, p50", "ms", p50, ("<=", LATENCY_P50_TARGET_MS), 3),
            Figure("latency_p99", f"{label}, p99", "ms", p99, ("<=", LATENCY_P99_TARGET_MS), 3),
        ]

    async def _paced_probes(self, n: int) -> None:
        interval_s = 1 / LATENCY_RATE
        for warm, count in ((True, WARMUP_TASKS), (False, n)):
            start = time.perf_counter()
            for i in range(count):
                wait_s = start + i * interval_s - time.perf_counter()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                await self.bus.enqueue(self.app, "probe", {"t_ns": time.time_ns(), "warm": warm})

    async def delayed(self) -> None:
        """Lateness (start - due) of tasks due 0.05-2 s after enqueue, idle worker."""
        n = self.plan.delayed_n
        p50: list[float] = []
        p99: list[float] = []
        for run in range(self.plan.runs):
            rng = random.Random(DELAY_SEED + run)
            samples = await self._with_idle_worker(self._delayed_tasks(n, rng), WARMUP_TASKS + n)
            ms = [ns / 1e6 for ns in samples["lateness_ns"]]
            if len(ms) != n:
                raise RuntimeError(f"delayed: {len(ms)} samples for {n} tasks")
            p50.append(percentile(ms, 50))
            p99.append(percentile(ms, 99))
            self.details.setdefault("delayed", []).append(
                {"p50_ms": p50[-1], "p99_ms": p99[-1], "max_ms": max(ms), "min_ms": min(ms), "n": n}
            )
            _progress(f"delayed run {run + 1}: p50 {p50[-1]:.3f} ms, p99 {p99[-1]:.3f} ms")
        lo, hi = DELAY_RANGE_MS
        label = f"delayed-task lateness, {n} due in {lo / 1000}-{hi / 1000} s"
        self.figures += [
            Figure("lateness_p50", f"{label}, p50", "ms", p50, decimals=3),
            Figure("lateness_p99", f"{label}, p99", "ms", p99, ("<=", LATENESS_P99_TARGET_MS), 3),
        ]

    async def _delayed_tasks(self, n: int, rng: random.Random) -> None:
        warm = [EnqueueItem("probe", {"t_ns": 0, "warm": True}) for _ in range(WARMUP_TASKS)]
        await self.bus.enqueue_many(self.app, warm)
        await self._until_finished(WARMUP_TASKS, SLACK_S)
        now_ms = time.time_ns() // 1_000_000
        dues = [now_ms + rng.randint(*DELAY_RANGE_MS) for _ in range(n)]
        await self.bus.enqueue_many(
            self.app, [EnqueueItem("due", {"due_ms": due}, run_at_ms=due) for due in dues]
        )

    async def _with_idle_worker(self, produce: Awaitable[None], total: int) -> dict[str, Any]:
        """Start a worker on an empty database, run ``produce``, wait for ``total``
        finished tasks, stop the worker and return its evidence."""
        await self.redis.flushdb()
        proc, out = self._start_worker(IDLE_CONCURRENCY, burst=False)
        try:
            await self._until(lambda: self.redis.hlen(self.keys.workers), "the worker to register")
            await produce
            await self._until_finished(total, DELAY_RANGE_MS[1] / 1000 + SLACK_S)
        finally:
            self.children.end(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"worker pid {proc.pid} exited with status {proc.returncode}")
        return orjson.loads(out.read_bytes())  # type: ignore[no-any-return]

    # -- memory ----------------------------------------------------------------

    async def memory(self) -> None:
        """used_memory per queued task with a PAYLOAD_BYTES payload; per-key breakdown."""
        n = self.plan.memory_n
        items = [EnqueueItem("noop", PAYLOAD) for _ in range(BATCH)]
        per_task: list[float] = []
        for run in range(self.plan.runs):
            await self.redis.flushdb()
            before = (await self.redis.info("memory"))["used_memory"]
            for start in range(0, n, BATCH):
                await self.bus.enqueue_many(self.app, items[: n - start])
            after = (await self.redis.info("memory"))["used_memory"]
            per_task.append((after - before) / n)
            _progress(f"memory run {run + 1}: {per_task[-1]:.0f} bytes/task")
        breakdown: dict[str, float] = {}
        async for key in self.redis.scan_iter(match=f"{self.keys.base}:*"):
            usage = await self.redis.memory_usage(key, samples=0)
            breakdown[key.decode().removeprefix(self.keys.base + ":")] = (usage or 0) / n
        task_id = await self.redis.lindex(self.keys.queue("default").ready, 0)
        sizes = {
            "id": len(task_id),
            "record": await self.redis.hstrlen(self.keys.tasks, task_id),
            "state": await self.redis.hstrlen(self.keys.state, task_id),
        }
        self.details["memory"] = {"bytes_per_key_per_task": breakdown, "value_bytes": sizes}
        self.figures.append(
            Figure(
                "memory_per_task",
                f"memory per queued task, {PAYLOAD_BYTES}-byte payload",
                "bytes",
                per_task,
                ("<", MEMORY_TARGET_BYTES),
            )
        )
        for key, value in sorted(breakdown.items(), key=lambda kv: -kv[1]):
            if value >= 1:  # the app's small keys (queue set, wake lists) round to 0
                label = f"  MEMORY USAGE {key} / tasks"
                self.figures.append(Figure(f"memory_{key}", label, "bytes", [value]))
        for name, size in sizes.items():
            self.figures.append(
                Figure(f"memory_{name}_bytes", f"  {name} as stored (value bytes)", "bytes", [size])
            )

    # -- helpers -----------------------------------------------------------------

    def _start_worker(
        self, concurrency: int, *, burst: bool, log_level: str = "info"
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self._workers += 1
        out = self.tmp / f"worker-{self._workers}.json"
        args = [
            sys.executable, str(WORKER_SCRIPT),
            "--socket", self.socket,
            "--out", str(out),
            "--concurrency", str(concurrency),
            "--prefix", self.bus.prefix,
            "--log-level", log_level,
        ]  # fmt: skip
        if burst:
            args.append("--burst")
        if self.profile_dir is not None and burst:
            args += ["--profile", str(self.profile_dir / f"worker-{self._workers}.prof")]
        return self.children.start(args, stdout=subprocess.DEVNULL), out

    async def _wait_exit(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker pid {proc.pid} still running after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)
        self.children.end(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"worker pid {proc.pid} exited with status {proc.returncode}")

    async def _until(
        self, check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = SLACK_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(POLL_S)

    async def _until_finished(self, total: int, timeout_s: float) -> None:
        async def done() -> bool:
            return await self.redis.zcard(self.keys.finished) >= total  # type: ignore[no-any-return]

        await self._until(done, f"{total} finished tasks", timeout_s)

    async def _redis_cpu_s(self) -> float:
        cpu = await self.redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def run_bench(
    server: RedisServer,
    children: Children,
    plan: Plan,
    names: list[str],
    tmp: Path,
    profile_dir: Path | None,
) -> Bench:
    """Run the named scenarios in their canonical order; return the results."""
    bench = Bench(server, children, plan, tmp)
    bench.profile_dir = profile_dir
    try:
        for name in SCENARIOS:
            if name in names:
                _progress(f"-- {name}")
                await getattr(bench, name)()
    finally:
        await bench.close()
    return bench


def main() -> int:
    """Parse the arguments, run the benchmark, print the table (and write JSON)."""
    return bench_main(
        doc=__doc__,
        scenarios=list(SCENARIOS),
        quick=QUICK,
        full=FULL,
        run_bench=run_bench,
        report=print_table,
        profile_help="write a cProfile of every draining worker into this directory (slows them)",
        tmp_prefix="taskbus-bench-",
    )


if __name__ == "__main__":
    sys.exit(main())
