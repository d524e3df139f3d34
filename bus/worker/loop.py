"""The worker: claims tasks of one app, runs their handlers, settles outcomes.

Three coroutines share one worker:

* the claim loop takes as many tasks as there are free slots, plus up to
  ``prefetch`` more held ready in the worker so that a freed slot starts its
  next task without a round trip, in queue order; when the queues are empty it
  blocks on the queues' wake lists until work arrives or the next delayed task
  or lease deadline is due (a local timer pokes the worker's own wake list at
  that moment, because Redis only checks blocking timeouts about every 100 ms):
  it never polls;
* the settle loop sends outcomes in batches, each batch one script call;
* the heartbeat renews the leases of every task the worker holds, writes the
  worker's status record and reaps those of dead workers.

The worker can run inside an existing asyncio program (``async with worker:``
or ``asyncio.create_task(worker.run())``); it installs no signal handlers. The
CLI in ``bus.worker.__main__`` adds those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import structlog

from bus.core import clock
from bus.core.app import App
from bus.core.context import TaskContext
from bus.core.handler_call import HandlerThreads
from bus.core.ids import new_id
from bus.core.options import MAX_PREFETCH
from bus.core.task import TaskRecord
from bus.core.verdict import OK, Verdict, judge
from bus.nodes import Node, default_node, is_node_queue
from bus.recurring import Recurring, RecurringChains
from bus.store import engine
from bus.store.engine import ClaimedTask, Held, Outcome
from bus.store.keys import AppKeys, validate_queue_name
from bus.store.outcomes import settle_value
from bus.store.types import AsyncClient, StoreError, is_connection_trouble
from bus.worker.attempt import run_attempt
from bus.worker.upkeep import heartbeat_loop, shutdown, status_record
from bus.worker.watchdog import DEFAULT_BLOCK_WARN_S, LoopWatchdog

__all__ = ["Worker"]

log = structlog.get_logger("bus.worker")

# An idle worker's blocking wait ends after this long at the latest (a guard
# against half-open connections; work and due times wake it much sooner).
WAIT_BLOCK_S = 30

PayloadAdapter = Callable[[TaskRecord, TaskContext], Any]


@dataclass(slots=True)
class Running:
    held: Held
    task: asyncio.Task[None] | None = None
    lost: bool = False
    released: bool = False


@dataclass(slots=True)
class _Counters:
    processed: int = 0
    failed: int = 0
    dead: int = 0
    rejected: int = 0
    started_ms: int = field(default_factory=clock.now_ms)


class Worker:
    """Works the queues of one app.

    Args:
        app: The app whose tasks to run; its declarations give the handlers.
        redis: An asyncio Redis client (``decode_responses=False``).
        queues: Queue names in the order they are served; ``"*"`` stands for
            all of the app's queues not named before it, alphabetically.
        concurrency: The most handlers running at once.
        prefetch: The most claimed tasks held ready beyond the running ones
            (default: ``concurrency``). Their leases are renewed like those of
            running tasks; on stop they are handed back at once, their attempt
            not counted. 0 claims only for free slots: use it when handlers
            run long and several workers should share the queue evenly.
        lease_s: How long a claim holds without a heartbeat; heartbeats renew
            it every third of that.
        grace_s: On stop, how long running handlers may take to finish before
            they are cancelled and their tasks handed back.
        burst: Work until the queues (due delayed tasks included) are empty,
            then return.
        prefix: The key prefix.
        retention_s: How long finished task records are kept.
        worker_id: The worker's id (default: host, pid and a random suffix).
        payload_adapter: Turns a record into the handler's first argument
            (the bus layer uses it to hand events to subscription handlers).
        publisher: Given to handlers as ``ctx.publish``.
        on_beat: Coroutines run with every heartbeat (the bus layer's sweep of
            unrouted events); their errors are logged, never fatal.
        on_settled: Coroutines run with the outcomes the settle script
            accepted, after every batch; their errors are logged, never fatal.
        node: The node the worker belongs to: ``scope = "all"`` tasks run once
            per node (see :mod:`bus.nodes`). Default: a node of its own.
        recurring: The app's recurring tasks (see :mod:`bus.recurring`): the
            worker makes their chains match them at start and keeps them
            going. None leaves recurring tasks alone.
        block_warn_s: Log ``event_loop_blocked`` when the event loop does not
            run for this long (see :mod:`bus.worker.watchdog`); None: no watchdog.
    """

    def __init__(
        self,
        app: App,
        redis: AsyncClient,
        *,
        queues: Sequence[str] = ("*",),
        concurrency: int = 10,
        prefetch: int | None = None,
        lease_s: float = 15.0,
        grace_s: float = 10.0,
        burst: bool = False,
        prefix: str = "bus",
        retention_s: float = 86400.0,
        worker_id: str | None = None,
        payload_adapter: PayloadAdapter | None = None,
        publisher: Callable[..., Awaitable[str]] | None = None,
        on_beat: Sequence[Callable[[], Awaitable[object]]] = (),
        on_settled: Sequence[Callable[[Sequence[Outcome]], Awaitable[object]]] = (),
        node: str | None = None,
        recurring: Sequence[Recurring] | None = None,
        block_warn_s: float | None = DEFAULT_BLOCK_WARN_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if prefetch is not None and not 0 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be 0..{MAX_PREFETCH}, got {prefetch}")
        if lease_s <= 0 or grace_s < 0:
            raise ValueError("lease_s must be > 0 and grace_s >= 0")
        if not queues:
            raise ValueError("a worker needs at least one queue (or '*')")
        for name in queues:
            if name != "*":
                validate_queue_name(name)
        self.app = app
        self.redis = redis
        self.queues = list(queues)
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else prefetch
        self.lease_ms = int(lease_s * 1000)
        self.grace_s = grace_s
        self.burst = burst
        self.retention_ms = int(retention_s * 1000)
        self.keys = AppKeys(prefix, app.name)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id(0)[-6:].lower()}"
        self.payload_adapter = payload_adapter
        self.publisher = publisher
        self.node = Node(
            redis,
            self.keys,
            node or default_node(self.id),
            ttl_ms=3 * self.lease_ms,
            shared=node is not None,
        )
        self.recurring = (
            RecurringChains(app, redis, self.keys, recurring, grace_ms=max(self.lease_ms, 1000))
            if recurring is not None
            else None
        )
        self.on_beat = [self._keep_node_and_chains, *on_beat]
        self.on_settled = list(on_settled)
        if self.recurring is not None and self.recurring.by_name:
            self.on_settled.append(self._continue_chains)
        self.counters = _Counters()
        self._own_wake = self.keys.worker_wake(self.id)
        self._running: dict[str, Running] = {}
        # Claimed, not started yet (at most ``prefetch``), in claim order.
        self._ready: dict[str, ClaimedTask] = {}
        self._unsettled: dict[str, Held] = {}
        self._outcomes: list[Outcome] = []
        self._settle_wanted = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._beats_done = asyncio.Event()
        # Set to beat now rather than at the next interval (after a reconnect).
        self._beat_soon = asyncio.Event()
        self._settles = 0
        self._stopping = False
        self._closing = False
        self._known_queues: list[str] = []
        self._trouble_since: float | None = None
        self._trouble_delay = 0.05
        self._executor = HandlerThreads(f"bus-{app.name}")
        self.block_warn_s = block_warn_s
        self._main: asyncio.Task[None] | None = None

    # -- embedding ---------------------------------------------------------

    async def __aenter__(self) -> Worker:
        self._main = asyncio.create_task(self.run(), name=f"bus-worker-{self.id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._main is not None:
            await self._main

    def stop(self) -> None:
        """Ask the worker to stop: no new claims; running tasks get ``grace_s``."""
        if not self._stop_requested.is_set():
            self._stop_requested.set()
            self._stopping = True
            self._slot_free.set()
            asyncio.get_running_loop().create_task(self._poke())

    @property
    def running_ids(self) -> list[str]:
        """Ids of the tasks whose handlers run now."""
        return list(self._running)

    # -- the main loop -----------------------------------------------------

    async def run(self) -> None:
        """Work until :meth:`stop` is called (or, in burst mode, until idle)."""
        log.info(
            "worker_started",
            app=self.app.name,
            worker=self.id,
            queues=self.queues,
            concurrency=self.concurrency,
            lease_ms=self.lease_ms,
            burst=self.burst,
        )
        settler = asyncio.create_task(self._settle_loop(), name="bus-settle")
        beater = asyncio.create_task(self._heartbeat_loop(), name="bus-heartbeat")
        watchdog = LoopWatchdog.started(self.block_warn_s, app=self.app.name, worker=self.id)
        try:
            await self._join()
            await self._refresh_queues()
            await self._claim_loop()
        finally:
            self._stopping = True
            await self._shutdown(settler, beater)
            if watchdog is not None:
                watchdog.stop()

    async def _claim_loop(self) -> None:
        woken: engine.ClaimResult | None = None
        while not self._stopping:
            free = self.concurrency - len(self._running)
            room = free + self.prefetch - len(self._ready)
            # With every slot busy, top the ready tasks up only once half of
            # them have started: fewer, larger claims.
            if room <= 0 or (free <= 0 and len(self._ready) > self.prefetch // 2):
                self._slot_free.clear()
                await self._slot_free.wait()
                # Let the handlers that end in this loop turn free their slots
                # too: one claim for all of them instead of one claim each.
                await asyncio.sleep(0)
                continue
            queues = self._serve_order()
            settles_before = self._settles
            if woken is not None:
                # The claim that came back with the wake-up is the fresh one.
                result, woken = woken, None
            else:
                try:
                    result = await engine.claim(
                        self.redis,
                        self.keys,
                        queues,
                        now_ms=clock.now_ms(),
                        lease_ms=self.lease_ms,
                        max_tasks=room,
                        worker_id=self.id,
                    )
                except StoreError as exc:
                    await self._trouble(exc)
                    continue
                self._recovered()
                self._log_damaged(result)
            self._take(result.tasks)
            if len(result.tasks) >= room:
                continue
            if not self.burst:
                if result.tasks:
                    # Let the tasks just started reach their handlers before
                    # the wait is armed: packing and writing BLPOP + claim
                    # first held each of them back by ~100 us (issue 7, C).
                    await asyncio.sleep(0)
                woken = await self._wait_for_work(
                    queues, result.next_wake_ms, room - len(result.tasks)
                )
            elif await self._burst_idle(result, settles_before):
                return

    def _log_damaged(self, result: engine.ClaimResult) -> None:
        # The claim dead-lettered these in the same step; each is reported by
        # exactly one claim, so this is the one log line per damaged task.
        for task_id, reason in result.damaged:
            log.error(
                "task_damaged",
                app=self.app.name,
                worker=self.id,
                task_id=task_id,
                reason=reason,
            )

    def _take(self, claimed: Sequence[ClaimedTask]) -> None:
        for task in claimed:
            self._unsettled[task.id] = Held(task.id, task.token, task.queue)
            self._ready[task.id] = task  # on stop, handed back at once
        self._start_ready()

    async def _burst_idle(self, result: engine.ClaimResult, settles_before: int) -> bool:
        """In burst mode: True once nothing runs, is due, or awaits settling."""
        if result.tasks or self._settles != settles_before:
            # A settle that completed while this claim was in flight may have
            # scheduled a retry the claim could not see yet.
            return False
        if self._running:
            self._slot_free.clear()
            await self._slot_free.wait()
            return False
        if self._outcomes or self._unsettled:
            # Claim again after the last outcomes are recorded: a retry they
            # schedule may be due at once and must run before we exit.
            await self._flush_outcomes()
            return False
        return result.next_wake_ms is None or result.next_wake_ms > clock.now_ms()

    def _serve_order(self) -> list[str]:
        # The node's own queue comes first; '*' never stands for a node queue.
        named = [q for q in self.queues if q not in ("*", self.node.queue)]
        if "*" not in self.queues:
            return [self.node.queue, *named]
        rest = [q for q in self._known_queues if q not in named and not is_node_queue(q)]
        order: list[str] = [self.node.queue]
        for q in self.queues:
            order.extend(rest if q == "*" else [q] if q in named else [])
        return order

    async def _refresh_queues(self) -> None:
        if "*" in self.queues:
            try:
                members = await self.redis.smembers(self.keys.queues)
            except StoreError as exc:
                await self._trouble(exc)
                return
            self._known_queues = sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def _wait_for_work(
        self, queues: list[str], next_wake_ms: int | None, room: int
    ) -> engine.ClaimResult | None:
        """Block until work may be there; return the claim made on waking, if any."""
        wake_keys = [self.keys.queue(q).wake for q in queues]
        if "*" in self.queues:
            wake_keys.append(self.keys.wake)
        wake_keys.append(self._own_wake)
        loop = asyncio.get_running_loop()
        timer = None
        if next_wake_ms is not None:
            delay_s = (next_wake_ms - clock.now_ms()) / 1000
            if delay_s <= 0:
                return None
            timer = loop.call_later(delay_s, lambda: loop.create_task(self._poke()))
        try:
            # The server-side timeout is only a liveness guard for half-open
            # connections; work and due times wake us through the lists.
            popped, result = await engine.claim_when_woken(
                self.redis,
                self.keys,
                queues,
                wake_keys,
                block_s=WAIT_BLOCK_S,
                now_ms=clock.now_ms(),
                lease_ms=self.lease_ms,
                max_tasks=room,
                worker_id=self.id,
            )
        except StoreError as exc:
            await self._trouble(exc)
            return None
        finally:
            if timer is not None:
                timer.cancel()
        self._recovered()
        if result is not None:
            self._log_damaged(result)
        if self._stopping and result is not None:
            # Stopped while the claim ran: the tasks go to the ready set, which
            # shutdown hands back at once.
            self._take(result.tasks)
            return None
        if popped == self.keys.wake.encode():
            await self._refresh_queues()
            if result is not None:
                # Claimed over the old queue list: take it, then claim again.
                self._take(result.tasks)
            return None
        return result

    async def _poke(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(self._own_wake, b"1")
                pipe.ltrim(self._own_wake, 0, 0)
                pipe.pexpire(self._own_wake, 60_000)
                await pipe.execute()
        except StoreError:
            pass  # the claim loop meets the same error and reports it

    # -- running one task --------------------------------------------------

    def _launch(self, claimed: ClaimedTask) -> None:
        running = Running(self._unsettled[claimed.id])
        self._running[claimed.id] = running
        running.task = asyncio.create_task(self._execute(claimed, running))

    def _start_ready(self) -> None:
        # A freed slot starts the oldest ready task at once, no round trip.
        while self._ready and len(self._running) < self.concurrency and not self._stopping:
            task_id = next(iter(self._ready))
            self._launch(self._ready.pop(task_id))

    async def _execute(self, claimed: ClaimedTask, running: Running) -> None:
        verdict = await self._attempt(claimed, running)
        if self._running.get(claimed.id) is running:
            del self._running[claimed.id]
        self._start_ready()
        self._slot_free.set()
        if verdict is None:
            return
        self.counters.processed += 1
        if verdict.kind != "ok":
            self.counters.failed += 1
            if verdict.kind == "dead":
                self.counters.dead += 1
        self._outcomes.append(
            Outcome(
                claimed.id,
                claimed.token,
                claimed.queue,
                verdict.kind,
                settle_value(verdict),
            )
        )
        self._settle_wanted.set()

    async def _attempt(self, claimed: ClaimedTask, running: Running) -> Verdict | None:
        return await run_attempt(self, claimed, running)

    # -- settling ------------------------------------------------------------

    async def _settle_loop(self) -> None:
        while True:
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            while self._outcomes:
                batch, self._outcomes = self._outcomes[:1000], self._outcomes[1000:]
                await self._settle(batch)
            if self._closing:
                return

    async def _settle(self, batch: list[Outcome]) -> None:
        while True:
            try:
                rejected = await engine.settle(
                    self.redis,
                    self.keys,
                    batch,
                    now_ms=clock.now_ms(),
                    retention_ms=self.retention_ms,
                )
                break
            except StoreError as exc:
                await self._trouble(exc)
        self._recovered()
        self._settles += 1
        for outcome in batch:
            self._forget(outcome.id, outcome.token)
        for task_id in rejected:
            self.counters.rejected += 1
            log.warning(
                "ack_rejected",
                app=self.app.name,
                task_id=task_id,
                reason="stale claim token: the lease was lost and the task recovered",
            )
        if self.on_settled:
            refused = set(rejected)
            await self._run_hooks(
                "settle_hook_failed", self.on_settled, [o for o in batch if o.id not in refused]
            )

    async def _flush_outcomes(self) -> None:
        while self._outcomes or any(
            h.id not in self._running and h.id not in self._ready for h in self._unsettled.values()
        ):
            self._settle_wanted.set()
            await asyncio.sleep(0.001)
        # Lost tasks are dropped from _unsettled by _lose; nothing else can be
        # left once every outcome is settled.

    # -- heartbeat -----------------------------------------------------------

    def _status(self) -> bytes:
        return status_record(self)

    async def _heartbeat_loop(self) -> None:
        await heartbeat_loop(self)

    async def _run_hooks(
        self, failed: str, hooks: Sequence[Callable[..., Awaitable[object]]], *args: Any
    ) -> None:
        for hook in hooks:
            try:
                await hook(*args)
            except Exception as exc:
                log.error(
                    failed,
                    app=self.app.name,
                    hook=getattr(hook, "__name__", "?"),
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )

    # -- nodes, broadcasts, recurring tasks (bus.nodes, bus.recurring) --------

    async def _join(self) -> None:
        # Before the first claim: broadcasts reach nodes that joined before them.
        try:
            await self._keep_node_and_chains()
        except StoreError as exc:
            log.warning("join_failed", app=self.app.name, worker=self.id, error=str(exc))

    async def _keep_node_and_chains(self) -> None:
        await self.node.beat(clock.now_ms())
        if self.recurring is not None:
            await self.recurring.sync(clock.now_ms(), full=not self.recurring.synced)

    async def _continue_chains(self, accepted: Sequence[Outcome]) -> None:
        if self.recurring is not None:
            await self.recurring.after_settled(accepted, clock.now_ms())

    async def _broadcast(self, record: TaskRecord, claimed: ClaimedTask) -> Verdict:
        try:
            nodes = await self.node.fan_out(record, now_ms=clock.now_ms())
        except StoreError as exc:
            return judge(
                exc,
                task_backoff=record.backoff,
                attempt=claimed.attempt,
                max_attempts=record.max_attempts,
                now_ms=clock.now_ms(),
                worker=self.id,
            )
        log.info(
            "broadcast_sent", app=self.app.name, task_id=claimed.id, task=record.name, nodes=nodes
        )
        return OK

    def _forget(self, task_id: str, token: str) -> None:
        # The same task id comes back for each attempt: only forget the claim
        # this token belongs to, never a newer claim of the same task.
        held = self._unsettled.get(task_id)
        if held is not None and held.token == token:
            del self._unsettled[task_id]

    def _lose(self, task_id: str, token: str) -> None:
        held = self._unsettled.get(task_id)
        if held is None or held.token != token:
            return
        running = self._running.get(task_id)
        if running is None and task_id in self._ready:
            # Claimed but not started: the task was recovered before its turn.
            del self._ready[task_id]
            del self._unsettled[task_id]
            log.warning(
                "lease_lost",
                app=self.app.name,
                task_id=task_id,
                reason="lease expired before the task started; it was recovered "
                "and may run elsewhere",
            )
            return
        if running is None:
            # The handler is done and its outcome is queued or on its way: a
            # renew that crossed our own settle sees the task already settled.
            # The settle's answer decides (a stale one is logged ack_rejected).
            return
        del self._unsettled[task_id]
        log.warning(
            "lease_lost",
            app=self.app.name,
            task_id=task_id,
            reason="lease expired; the task was recovered and may run elsewhere",
        )
        if running is not None and running.held.token == token and running.task is not None:
            running.lost = True
            running.task.cancel()

    # -- connection trouble -------------------------------------------------

    async def _trouble(self, exc: StoreError) -> None:
        if self._trouble_since is None:
            self._trouble_since = clock.monotonic_s()
            log.warning(
                "redis_unavailable",
                app=self.app.name,
                worker=self.id,
                error=f"{type(exc).__name__}: {exc}",
            )
        elif not is_connection_trouble(exc):
            log.warning("redis_error", app=self.app.name, error=f"{type(exc).__name__}: {exc}")
        delay = self._trouble_delay * (0.5 + random.random())
        self._trouble_delay = min(self._trouble_delay * 2, 2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), delay)

    def _recovered(self) -> None:
        if self._trouble_since is not None:
            down_s = round(clock.monotonic_s() - self._trouble_since, 3)
            log.info("redis_reconnected", app=self.app.name, worker=self.id, down_s=down_s)
            self._trouble_since = None
            self._trouble_delay = 0.05
            # Beat at once: the server may have come back empty, and the beat
            # re-registers the node and runs the hooks that notice a lost
            # registry (bus.events.registry_watch) and recurring chains.
            self._beat_soon.set()

    # -- shutdown ------------------------------------------------------------

    async def _shutdown(self, settler: asyncio.Task[None], beater: asyncio.Task[None]) -> None:
        await shutdown(self, settler, beater)
