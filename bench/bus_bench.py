"""The event bus's benchmark: publish rates, validation cost, publish-to-handler latency.

Run: python bench/bus_bench.py [--quick] [--json FILE] [--only NAME ...] [--runs N] [--profile DIR]

It starts its own redis-server on a unix socket in a temporary directory (no
persistence), never touches any other server, and ends every process it started,
on errors and Ctrl-C too (the helpers of bench/engine_support.py). Each figure
is the median of the runs (full: 3, ``--quick``: 1) with their min-max; the
variants of one scenario run one after the other within each run, so figures
side by side come from the same stretch of time. The schemas are the
repository's ``user.signed_up`` and ``order.placed``, copied into a temporary
schema directory with one of the benchmark's own, ``bench.probe`` (a
``sent_ns`` integer), and each Bus is pointed at it by
``Settings(schemas_dir=...)``. The scenarios, by the names ``--only`` takes:

  publish    validated user.signed_up events with three subscribing apps
             (billing, email, analytics: 3 tasks per event, registered with
             sync_subscriptions): apublish and publish one by one,
             publish_many and apublish_many in batches of 500; apublish and
             publish_many again with a trivial user.signed_up schema ($id and
             version only) to show the share of validation; and PING one by
             one, the round-trip floor. Every run is checked: each app holds
             one task per event and no event is left pending.
  validate   us per SchemaRegistry.validate of user.signed_up and order.placed
             (payloads that use every property, formats included) and of the
             trivial schema; us per encode_payload and per Publisher.prepare
             (validation, encoding, id and envelope), no I/O
  breakdown  where the time per event goes, in apublish one by one and in
             publish_many: the real publish path with timers around
             SchemaRegistry.validate, Publisher.prepare, route_calls (one task
             record per route) and transport.run_calls (the pipelined round
             trip), plus the redis-server CPU per event (INFO cpu)
  latency    publish-to-handler-start latency at 200 events/s for 10 s (quick:
             3 s): one worker process (bench/bus_worker.py) of the one app
             subscribed to bench.probe; the payload carries time.time_ns()
             taken just before apublish, the handler records the difference

Targets are those of the event-bus issue; the table marks each figure met or
MISSED. Progress goes to standard error, the table to standard output.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import importlib
import io
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis as redis_py
from bench_cli import bench_main
from bus_worker import APP_NAME as LATENCY_APP
from bus_worker import EVENT_TYPE as PROBE_TYPE
from bus_worker import SUBSCRIPTION as PROBE_SUBSCRIPTION
from engine_report import Figure, print_table
from engine_support import Children, RedisServer, percentile
from redis.asyncio import Redis

import bus
from bus.events.payload import encode_payload
from bus.events.publish import EventSpec
from bus.events.registry import SubscriptionSpec

try:
    from bus.events.registry_sync import sync_subscriptions
except ImportError:  # a tree from before the registry split
    from bus.events.registry import sync_subscriptions  # type: ignore[attr-defined,no-redef]
from bus.events.schemas import DRAFT_2020_12
from bus.store import transport
from bus.store.keys import AppKeys, BusKeys

_BENCH_DIR = Path(__file__).resolve().parent

SCENARIOS = ("publish", "validate", "breakdown", "latency")
WORKER_SCRIPT = _BENCH_DIR / "bus_worker.py"
REPO_SCHEMAS = _BENCH_DIR.parent / "schemas"

# The event and subscribers: three apps, one subscription each.
EVENT_TYPE = "user.signed_up"
SUBSCRIBERS = ("billing", "email", "analytics")
RATE_SUBSCRIPTIONS = tuple(
    SubscriptionSpec(app=app, name="on_signed_up", events=(EVENT_TYPE,)) for app in SUBSCRIBERS
)
LATENCY_SUBSCRIPTIONS = (
    SubscriptionSpec(app=LATENCY_APP, name=PROBE_SUBSCRIPTION, events=(PROBE_TYPE,)),
)
# Payloads that use every property of their schema, so every keyword and
# format check (email, date-time, pattern, enum, $ref) runs.
SIGNED_UP = {
    "user_id": "u-000123",
    "email": "ada@example.com",
    "plan": "pro",
    "country": "GB",
    "signed_up_at": "2024-05-01T12:00:00Z",
    "referrer": "newsletter",
}
ORDER_PLACED = {
    "order_id": "o-000456",
    "user_id": "u-000123",
    "amount_cents": 4200,
    "currency": "EUR",
    "items": [
        {"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1500},
        {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 1200},
    ],
    "placed_at": "2024-05-01T12:00:00Z",
}
PROBE_SCHEMA = {
    "$schema": DRAFT_2020_12,
    "$id": "https://taskbus.example/bench/bench.probe/1",
    "version": 1,
    "type": "object",
    "required": ["sent_ns"],
    "additionalProperties": False,
    "properties": {"sent_ns": {"type": "integer"}, "warm": {"type": "boolean"}},
}
# user.signed_up with nothing to check: what publishing costs without validation.
TRIVIAL_SCHEMA = {
    "$schema": DRAFT_2020_12,
    "$id": "https://taskbus.example/bench/trivial/1",
    "version": 1,
}

# The batch size of the publish_many figures (the issue's).
BATCH = 500
# Where the real and the trivial schema are compared, they take turns of this
# many events (two batches of publish_many).
BLOCK_EVENTS = 1_000
# Events published (and routed) before each timed loop: loads the scripts and
# the registry snapshot, warms the schema validators.
WARMUP_EVENTS = 200
# Latency is measured at this fixed, moderate rate (events/s; the issue's).
LATENCY_RATE = 200
# Probe events handled before any sample is taken: the first claims pay for
# lazy set-up in the worker.
WARMUP_PROBES = 20
# Seconds allowed for processes to start and stop, and for a worker to catch up.
SLACK_S = 30.0
# How often the benchmark checks a condition (s) while the worker works.
POLL_S = 0.05

# Targets of the event-bus issue.
ONE_BY_ONE_TARGET = 5_000
BATCHED_TARGET = 30_000
LATENCY_P50_TARGET_MS = 2.0
LATENCY_P99_TARGET_MS = 5.0


@dataclass(frozen=True)
class Plan:
    """Sizes of one invocation: the full benchmark or ``--quick``.

    Attributes:
        runs: Runs per figure.
        one_n: Events per one-by-one publish loop.
        batched_n: Events per batched publish loop.
        validate_n: Calls per loop of the validation figures.
        breakdown_one_n: Events of the one-by-one breakdown.
        breakdown_batched_n: Events of the batched breakdown.
        latency_s: Seconds of paced publishing per latency run.
    """

    runs: int
    one_n: int
    batched_n: int
    validate_n: int
    breakdown_one_n: int
    breakdown_batched_n: int
    latency_s: float


FULL = Plan(
    runs=3,
    one_n=20_000,
    batched_n=100_000,
    validate_n=20_000,
    breakdown_one_n=10_000,
    breakdown_batched_n=50_000,
    latency_s=10.0,
)
QUICK = Plan(
    runs=1,
    one_n=3_000,
    batched_n=20_000,
    validate_n=5_000,
    breakdown_one_n=2_000,
    breakdown_batched_n=10_000,
    latency_s=3.0,
)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_schemas(directory: Path) -> tuple[Path, Path]:
    """Write the benchmark's schema directories; return (real, trivial).

    The real one holds the repository's user.signed_up and order.placed and the
    benchmark's bench.probe; the trivial one a user.signed_up that checks nothing.
    """
    real, trivial = directory / "schemas", directory / "schemas-trivial"
    real.mkdir()
    trivial.mkdir()
    for name in ("user.signed_up.json", "order.placed.json"):
        (real / name).write_bytes((REPO_SCHEMAS / name).read_bytes())
    (real / f"{PROBE_TYPE}.json").write_bytes(orjson.dumps(PROBE_SCHEMA))
    (trivial / f"{EVENT_TYPE}.json").write_bytes(orjson.dumps(TRIVIAL_SCHEMA))
    return real, trivial


@dataclass(frozen=True)
class Mode:
    """One way of publishing; some are also measured with the trivial schema."""

    key: str
    label: str
    batched: bool
    sync: bool = False
    compare_trivial: bool = False

    @property
    def per_call(self) -> int:
        """Events per publish call."""
        return BATCH if self.batched else 1


MODES = {
    mode.key: mode
    for mode in (
        Mode(
            "apublish_one", "await bus.apublish() one by one", batched=False, compare_trivial=True
        ),
        Mode("publish_one", "bus.publish() one by one (sync)", batched=False, sync=True),
        Mode(
            "publish_many",
            f"bus.publish_many(), batches of {BATCH} (sync)",
            batched=True,
            sync=True,
            compare_trivial=True,
        ),
        Mode("apublish_many", f"await bus.apublish_many(), batches of {BATCH}", batched=True),
    )
}

# How the breakdown rows name the two modes it measures, and its parts.
BREAKDOWN_NAMES = {"apublish_one": "apublish", "publish_many": "publish_many"}
BREAKDOWN_PARTS = {
    "validate": "SchemaRegistry.validate",
    "encode_payload": "encode_payload (checks, orjson)",
    "envelope": "build_envelope",
    "prepare_rest": "rest of prepare (new_id, checks)",
    "task_records": f"task records, {len(SUBSCRIBERS)} routes (build, encode)",
    "route_rest": "rest of route_calls (match, enqueue calls)",
    "round_trip": f"transport.run_calls: round trip of {2 + len(SUBSCRIBERS)} script calls",
    "redis_cpu": "  of which redis-server CPU (INFO cpu)",
    "floor": f"  floor: asyncio pipeline of {2 + len(SUBSCRIBERS)} PINGs",
    "floor_sync": f"  floor: sync pipeline of {2 + len(SUBSCRIBERS)} PINGs",
    "other": "other (flow, record and routed calls, timers)",
    "total": "total, timers on",
}


class Timers:
    """Time spent in the parts of the publish path, by wrapping them while active.

    Wraps, on the given Bus's instances, ``SchemaRegistry.validate`` and
    ``Publisher.prepare``; where ``bus.publish`` looks them up,
    ``encode_payload``, ``build_envelope``, ``route_calls`` and
    ``transport.run_calls`` (and ``run_calls_sync``); and where ``route_calls``
    looks it up, the function that builds and encodes one task record per
    route. Each wrapper costs two clock reads (well under a microsecond), which
    land in the "other" part.
    """

    def __init__(self, target: bus.Bus) -> None:
        publisher = target.publisher
        # ``bus.publish`` the attribute is the module-level convenience
        # function, so the modules are looked up by name.
        publish_module = importlib.import_module("bus.events.publish")
        router_module = importlib.import_module("bus.events.router")
        # (object, attribute, part it is timed as, async)
        self._targets: list[tuple[Any, str, str, bool]] = [
            (publisher.schemas, "validate", "validate", False),
            (publisher, "prepare", "prepare", False),
            (publish_module, "encode_payload", "encode_payload", False),
            (publish_module, "build_envelope", "envelope", False),
            (publish_module, "route_calls", "route", False),
            (router_module._Plan, "task", "task_records", False),
            (transport, "run_calls", "round_trip", True),
            (transport, "run_calls_sync", "round_trip", False),
        ]
        self.ns: dict[str, int] = {part: 0 for _, _, part, _ in self._targets}

    def _timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[part] += time.perf_counter_ns() - start

        return timed

    def _timed_async(
        self, part: str, fn: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.ns[part] += time.perf_counter_ns() - start

        return timed

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Install the wrappers; restore the originals on exit."""
        saved = []
        for obj, name, part, is_async in self._targets:
            # Methods are wrapped on the instance; deleting the wrapper there
            # brings the class's method back.
            own = name in vars(obj)
            original = getattr(obj, name)
            saved.append((obj, name, original if own else None))
            wrap = self._timed_async if is_async else self._timed
            setattr(obj, name, wrap(part, original))
        try:
            yield
        finally:
            for obj, name, original in reversed(saved):
                if original is None:
                    delattr(obj, name)
                else:
                    setattr(obj, name, original)


class Bench:
    """The scenarios, run against one private redis-server."""

    def __init__(
        self,
        server: RedisServer,
        children: Children,
        plan: Plan,
        tmp: Path,
        profile_dir: Path | None,
    ) -> None:
        self.socket = server.socket
        self.children = children
        self.plan = plan
        self.tmp = tmp
        self.profile_dir = profile_dir
        self.redis = Redis(unix_socket_path=self.socket)
        self.sync_redis = redis_py.Redis(unix_socket_path=self.socket)
        real, trivial = write_schemas(tmp)
        self.bus = self._bus(real)
        self.trivial = self._bus(trivial)
        self.keys = BusKeys(self.bus.prefix)
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self._workers = 0

    def _bus(self, schemas_dir: Path) -> bus.Bus:
        return bus.Bus(
            bus.Settings(schemas_dir=schemas_dir),
            redis=self.redis,
            sync_redis=self.sync_redis,
            source="bench",
        )

    async def close(self) -> None:
        """Close the benchmark's Redis clients."""
        await self.redis.aclose()
        self.sync_redis.close()

    async def _reset(self, subscriptions: tuple[SubscriptionSpec, ...]) -> None:
        """Empty the database and register ``subscriptions`` (one app each)."""
        await self.redis.flushdb()
        for spec in subscriptions:
            await sync_subscriptions(self.redis, self.keys, spec.app, [spec])
        self.bus.publisher.forget_registry()
        self.trivial.publisher.forget_registry()

    async def _check_routed(self, events: int) -> None:
        """Every event recorded, routed to each subscriber once, none pending."""
        recorded = await self.redis.hlen(self.keys.events)
        pending = await self.redis.zcard(self.keys.pending)
        tasks = [await self.redis.hlen(AppKeys(self.bus.prefix, a).tasks) for a in SUBSCRIBERS]
        if recorded != events or pending or any(t != events for t in tasks):
            raise RuntimeError(
                f"published {events} events: {recorded} recorded, {pending} pending, "
                f"tasks per app {dict(zip(SUBSCRIBERS, tasks, strict=True))}"
            )

    # -- publish rates ----------------------------------------------------------

    async def _publish(self, mode: Mode, n: int, targets: list[bus.Bus]) -> list[float]:
        """Publish ``n`` events through each target; return each one's events/s.

        The targets take turns in blocks of BLOCK_EVENTS, so a change in the
        machine's load during the run weighs on each of them alike.
        """
        batch = [EventSpec(EVENT_TYPE, SIGNED_UP) for _ in range(BATCH)]
        calls_per_block = max(1, BLOCK_EVENTS // mode.per_call)
        blocks = max(1, n // (calls_per_block * mode.per_call))
        warm_calls = -(-WARMUP_EVENTS // mode.per_call)  # rounded up
        await self._reset(RATE_SUBSCRIPTIONS)
        for target in targets:
            await self._publish_loop(target, mode, warm_calls, batch)
        elapsed = [0.0] * len(targets)
        for _ in range(blocks):
            for i, target in enumerate(targets):
                start = time.perf_counter()
                await self._publish_loop(target, mode, calls_per_block, batch)
                elapsed[i] += time.perf_counter() - start
        events = blocks * calls_per_block * mode.per_call
        await self._check_routed(len(targets) * (warm_calls * mode.per_call + events))
        return [events / seconds for seconds in elapsed]

    async def _publish_loop(
        self, target: bus.Bus, mode: Mode, count: int, batch: list[EventSpec]
    ) -> None:
        """Make ``count`` publish calls of ``mode`` (events, or batches of BATCH)."""
        if mode.batched and mode.sync:
            for _ in range(count):
                target.publish_many(batch)
        elif mode.batched:
            for _ in range(count):
                await target.apublish_many(batch)
        elif mode.sync:
            for _ in range(count):
                target.publish(EVENT_TYPE, SIGNED_UP)
        else:
            for _ in range(count):
                await target.apublish(EVENT_TYPE, SIGNED_UP)

    async def _ping_rate(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await self.redis.ping()
        return n / (time.perf_counter() - start)

    async def publish(self) -> None:
        """Publish rates in every mode; two of them also with the trivial schema."""
        rates: dict[str, list[float]] = {key: [] for key in MODES}
        trivial: dict[str, list[float]] = {key: [] for key, m in MODES.items() if m.compare_trivial}
        floor: list[float] = []
        for run in range(self.plan.runs):
            for mode in MODES.values():
                n = self.plan.batched_n if mode.batched else self.plan.one_n
                targets = [self.bus, self.trivial] if mode.compare_trivial else [self.bus]
                measured = await self._publish(mode, n, targets)
                rates[mode.key].append(measured[0])
                if mode.compare_trivial:
                    trivial[mode.key].append(measured[1])
                _progress(
                    f"publish {mode.key} run {run + 1}: "
                    + ", trivial schema ".join(f"{r:,.0f}" for r in measured)
                    + " events/s"
                )
            floor.append(await self._ping_rate(self.plan.one_n))
            _progress(f"ping run {run + 1}: {floor[-1]:,.0f}/s")
        for mode in MODES.values():
            target = (">=", BATCHED_TARGET if mode.batched else ONE_BY_ONE_TARGET)
            real = rates[mode.key]
            self.figures += [
                Figure(mode.key, mode.label, "events/s", real, target),
                Figure(
                    f"{mode.key}_tasks",
                    f"  tasks routed ({len(SUBSCRIBERS)} per event)",
                    "tasks/s",
                    [r * len(SUBSCRIBERS) for r in real],
                ),
            ]
            if mode.compare_trivial:
                easy = trivial[mode.key]
                self.figures += [
                    Figure(
                        f"{mode.key}_trivial",
                        "  same, trivial schema (turns of 1,000 events)",
                        "events/s",
                        easy,
                    ),
                    Figure(
                        f"{mode.key}_validation_us",
                        "  time per event the schema adds",
                        "us",
                        [1e6 / r - 1e6 / t for r, t in zip(real, easy, strict=True)],
                        decimals=1,
                    ),
                    Figure(
                        f"{mode.key}_validation_share",
                        "  share of the time per event",
                        "%",
                        [100 * (1 - r / t) for r, t in zip(real, easy, strict=True)],
                    ),
                ]
        self.figures.append(
            Figure(
                "ping_one", "redis-py PING one by one, asyncio (round-trip floor)", "ops/s", floor
            )
        )

    # -- validation cost ----------------------------------------------------------

    async def validate(self) -> None:
        """Microseconds per validation, encoding and prepare; no I/O."""
        real = self.bus.publisher.schemas
        trivial = self.trivial.publisher.schemas
        publisher = self.bus.publisher
        now_ms = time.time_ns() // 1_000_000
        cases: list[tuple[str, str, Callable[[], object]]] = [
            (
                "validate_signed_up",
                "SchemaRegistry.validate, user.signed_up",
                lambda: real.validate(EVENT_TYPE, SIGNED_UP),
            ),
            (
                "validate_order_placed",
                "SchemaRegistry.validate, order.placed",
                lambda: real.validate("order.placed", ORDER_PLACED),
            ),
            (
                "validate_trivial",
                "SchemaRegistry.validate, trivial schema",
                lambda: trivial.validate(EVENT_TYPE, SIGNED_UP),
            ),
            (
                "encode_payload",
                "encode_payload, user.signed_up (no validation)",
                lambda: encode_payload(SIGNED_UP, publisher.max_payload_bytes),
            ),
            (
                "prepare",
                "Publisher.prepare, user.signed_up (validate, encode, id, envelope)",
                lambda: publisher.prepare(EVENT_TYPE, SIGNED_UP, now_ms=now_ms),
            ),
        ]
        values: dict[str, list[float]] = {key: [] for key, _, _ in cases}
        n = self.plan.validate_n
        for run in range(self.plan.runs):
            for key, _, fn in cases:
                for _ in range(WARMUP_EVENTS):
                    fn()
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                values[key].append((time.perf_counter() - start) / n * 1e6)
            _progress(
                f"validate run {run + 1}: "
                + ", ".join(f"{key} {v[-1]:.1f} us" for key, v in values.items())
            )
        for key, label, _ in cases:
            self.figures.append(Figure(key, label, "us", values[key], decimals=1))

    # -- where the time goes -------------------------------------------------------

    async def breakdown(self) -> None:
        """Time per event by part of the publish path, one by one and batched."""
        modes = (MODES["apublish_one"], MODES["publish_many"])
        parts: dict[str, dict[str, list[float]]] = {m.key: {} for m in modes}
        for run in range(self.plan.runs):
            for mode in modes:
                result = await self._breakdown_once(mode)
                for name, value in result.items():
                    parts[mode.key].setdefault(name, []).append(value)
                _progress(
                    f"breakdown {mode.key} run {run + 1} (us/event): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result.items())
                )
        for mode in modes:
            for name, label in BREAKDOWN_PARTS.items():
                if name in parts[mode.key]:
                    self.figures.append(
                        Figure(
                            f"breakdown_{mode.key}_{name}",
                            f"{BREAKDOWN_NAMES[mode.key]}: {label}",
                            "us/event",
                            parts[mode.key][name],
                            decimals=1,
                        )
                    )
        self.details["breakdown_us_per_event"] = parts

    async def _breakdown_once(self, mode: Mode) -> dict[str, float]:
        """Publish with timers on; return microseconds per event by part."""
        n = self.plan.breakdown_batched_n if mode.batched else self.plan.breakdown_one_n
        count = n // mode.per_call
        n = count * mode.per_call
        warm_calls = -(-WARMUP_EVENTS // mode.per_call)  # rounded up
        batch = [EventSpec(EVENT_TYPE, SIGNED_UP) for _ in range(BATCH)]
        await self._reset(RATE_SUBSCRIPTIONS)
        await self._publish_loop(self.bus, mode, warm_calls, batch)
        timers = Timers(self.bus)
        cpu_before = await self._redis_cpu_s()
        with timers.active():
            start = time.perf_counter_ns()
            await self._publish_loop(self.bus, mode, count, batch)
            total_ns = time.perf_counter_ns() - start
        redis_cpu_ns = (await self._redis_cpu_s() - cpu_before) * 1e9
        await self._check_routed(warm_calls * mode.per_call + n)
        ns = timers.ns
        per: dict[str, float] = {
            "validate": ns["validate"],
            "encode_payload": ns["encode_payload"],
            "envelope": ns["envelope"],
            "prepare_rest": ns["prepare"] - ns["validate"] - ns["encode_payload"] - ns["envelope"],
            "task_records": ns["task_records"],
            "route_rest": ns["route"] - ns["task_records"],
            "round_trip": ns["round_trip"],
            "redis_cpu": redis_cpu_ns,
            "other": total_ns - ns["prepare"] - ns["route"] - ns["round_trip"],
            "total": total_ns,
        }
        result = {name: value / n / 1000 for name, value in per.items()}
        if not mode.batched:
            result["floor"], result["floor_sync"] = await self._pipeline_floors_us(count)
        return result

    async def _pipeline_floors_us(self, count: int) -> tuple[float, float]:
        """Microseconds per pipeline of as many PINGs as a publish sends script
        calls, with the asyncio and with the synchronous client."""
        calls = 2 + len(SUBSCRIBERS)  # record, one enqueue per app, routed
        start = time.perf_counter_ns()
        for _ in range(count):
            async with self.redis.pipeline(transaction=False) as pipe:
                for _ in range(calls):
                    pipe.ping()
                await pipe.execute()
        middle = time.perf_counter_ns()
        for _ in range(count):
            with self.sync_redis.pipeline(transaction=False) as sync_pipe:
                for _ in range(calls):
                    sync_pipe.ping()
                sync_pipe.execute()
        end = time.perf_counter_ns()
        return (middle - start) / count / 1000, (end - middle) / count / 1000

    async def _redis_cpu_s(self) -> float:
        cpu = await self.redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    # -- latency --------------------------------------------------------------------

    async def latency(self) -> None:
        """Publish-to-handler-start latency at LATENCY_RATE events/s, one worker process."""
        n = int(LATENCY_RATE * self.plan.latency_s)
        p50: list[float] = []
        p99: list[float] = []
        for run in range(self.plan.runs):
            ms = [ns / 1e6 for ns in await self._latency_once(n)]
            if len(ms) != n:
                raise RuntimeError(f"latency: {len(ms)} samples for {n} events")
            p50.append(percentile(ms, 50))
            p99.append(percentile(ms, 99))
            self.details.setdefault("latency", []).append(
                {"p50_ms": p50[-1], "p99_ms": p99[-1], "max_ms": max(ms), "n": n}
            )
            _progress(f"latency run {run + 1}: p50 {p50[-1]:.3f} ms, p99 {p99[-1]:.3f} ms")
        label = f"publish-to-handler-start at {LATENCY_RATE} events/s"
        self.figures += [
            Figure("latency_p50", f"{label}, p50", "ms", p50, ("<=", LATENCY_P50_TARGET_MS), 3),
            Figure("latency_p99", f"{label}, p99", "ms", p99, ("<=", LATENCY_P99_TARGET_MS), 3),
        ]

    async def _latency_once(self, n: int) -> list[int]:
        """Run one worker process while publishing paced probes; return its samples."""
        await self._reset(LATENCY_SUBSCRIPTIONS)
        app_keys = AppKeys(self.bus.prefix, LATENCY_APP)
        self._workers += 1
        out = self.tmp / f"worker-{self._workers}.json"
        args = [
            sys.executable, str(WORKER_SCRIPT),
            "--socket", self.socket,
            "--out", str(out),
            "--prefix", self.bus.prefix,
        ]  # fmt: skip
        proc = self.children.start(args, stdout=subprocess.DEVNULL)
        try:
            await self._until(lambda: self.redis.hlen(app_keys.workers), "the worker to register")
            await self._paced_probes(WARMUP_PROBES, warm=True)
            await self._paced_probes(n, warm=False)

            async def all_finished() -> bool:
                finished: int = await self.redis.zcard(app_keys.finished)
                return finished >= WARMUP_PROBES + n

            await self._until(all_finished, f"{WARMUP_PROBES + n} handled probes")
        finally:
            self.children.end(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"worker pid {proc.pid} exited with status {proc.returncode}")
        samples: list[int] = orjson.loads(out.read_bytes())["latency_ns"]
        return samples

    async def _paced_probes(self, count: int, *, warm: bool) -> None:
        interval_s = 1 / LATENCY_RATE
        start = time.perf_counter()
        for i in range(count):
            wait_s = start + i * interval_s - time.perf_counter()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            await self.bus.apublish(PROBE_TYPE, {"sent_ns": time.time_ns(), "warm": warm})

    async def _until(
        self, check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = SLACK_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(POLL_S)

    # -- profile ----------------------------------------------------------------------

    async def profile(self) -> None:
        """Write cProfiles of apublish one by one and of publish_many (``--profile``)."""
        if self.profile_dir is None:
            return
        batch = [EventSpec(EVENT_TYPE, SIGNED_UP) for _ in range(BATCH)]
        for key, count in (
            ("apublish_one", self.plan.one_n // 4),
            ("publish_many", self.plan.batched_n // 4),
        ):
            mode = MODES[key]
            calls = count // mode.per_call
            await self._reset(RATE_SUBSCRIPTIONS)
            await self._publish_loop(self.bus, mode, 1, batch)
            profiler = cProfile.Profile()
            profiler.enable()
            await self._publish_loop(self.bus, mode, calls, batch)
            profiler.disable()
            path = self.profile_dir / f"{mode.key}.prof"
            profiler.dump_stats(path)
            _progress(f"profile of {mode.key} ({count} events) written to {path}")


async def run_bench(
    server: RedisServer,
    children: Children,
    plan: Plan,
    names: list[str],
    tmp: Path,
    profile_dir: Path | None,
) -> Bench:
    """Run the named scenarios in their canonical order; return the results."""
    bench = Bench(server, children, plan, tmp, profile_dir)
    try:
        for name in SCENARIOS:
            if name in names:
                _progress(f"-- {name}")
                await getattr(bench, name)()
        if profile_dir is not None:
            _progress("-- profile")
            await bench.profile()
    finally:
        await bench.close()
    return bench


def print_report(machine: dict[str, Any], runs: int, figures: list[Figure]) -> None:
    """Print the table of bench/engine_report.py under this benchmark's title."""
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_table(machine, runs, figures)
    events = (
        f"events: {EVENT_TYPE} ({len(orjson.dumps(SIGNED_UP))}-byte payload), routed to "
        f"{len(SUBSCRIBERS)} apps ({', '.join(SUBSCRIBERS)}), one subscription each"
    )
    text = table.getvalue().replace("taskbus engine benchmark", "taskbus event-bus benchmark", 1)
    lines = text.splitlines()
    # Under the header's last line (the command), above the figures.
    at = next(i for i, line in enumerate(lines) if line.startswith("command: ")) + 1
    print("\n".join([*lines[:at], events, *lines[at:]]))


def main() -> int:
    """Parse the arguments, run the benchmark, print the table (and write JSON)."""
    return bench_main(
        doc=__doc__,
        scenarios=list(SCENARIOS),
        quick=QUICK,
        full=FULL,
        run_bench=run_bench,
        report=print_report,
        profile_help=(
            "also write cProfiles of apublish one by one and publish_many into this directory"
        ),
        tmp_prefix="taskbus-bench-bus-",
    )


if __name__ == "__main__":
    sys.exit(main())
