"""The worker: one app's claimer, attempts, settler and heartbeat, composed.

A worker is a few small owners, each of its own state, wired here:

* :class:`~bus.worker.slots.Slots`: the tasks it holds, runs, and has ready;
* :class:`~bus.worker.claimer.Claimer`: the claim loop, which takes tasks for
  the free slots and blocks on wake lists when there is no work (never polls);
* :class:`~bus.worker.attempt.Runner`: starts each ready task as an
  :class:`~bus.worker.attempt.Attempt` and ends every attempt through one path;
* :class:`~bus.worker.settler.Settler`: sends outcomes in batches, one script
  call each, and hands tasks back;
* :class:`~bus.worker.heartbeat.Heartbeat`: renews leases, writes the status
  record, runs the beat hooks;
* :class:`~bus.worker.trouble.Trouble`: the shared view of connection trouble;
* an optional observer (:mod:`bus.worker.observer`) for metrics and tracing.

This module holds the lifecycle: start (join the node, read the queues, run
the three loops), stop (hand back the ready tasks at once, let running ones
finish within ``grace_s``, hand back the rest, settle, leave). The worker can
run inside an existing asyncio program (``async with worker:`` or
``asyncio.create_task(worker.run())``); it installs no signal handlers. The
CLI in ``bus.worker.__main__`` adds those.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import orjson
import structlog

from bus.core import clock
from bus.core.app import App
from bus.core.handler_call import HandlerThreads
from bus.core.ids import new_id
from bus.core.options import MAX_PREFETCH
from bus.core.task import TaskRecord
from bus.core.verdict import OK, Verdict, judge
from bus.nodes import Node, default_node
from bus.recurring import Recurring, RecurringChains
from bus.store.engine import ClaimedTask, Outcome
from bus.store.keys import AppKeys, validate_queue_name
from bus.store.types import AsyncClient, StoreError
from bus.worker.attempt import PayloadAdapter, Runner
from bus.worker.claimer import Claimer
from bus.worker.heartbeat import Heartbeat
from bus.worker.observer import GuardedObserver, WorkerObserver
from bus.worker.settler import Settler
from bus.worker.slots import Counters, Slots
from bus.worker.trouble import Trouble
from bus.worker.watchdog import DEFAULT_BLOCK_WARN_S, LoopWatchdog

__all__ = ["SHUTDOWN_CANCEL_WAIT_S", "PayloadAdapter", "Worker"]

log = structlog.get_logger("bus.worker")

# How long shutdown waits for cancelled handlers before handing their tasks back.
SHUTDOWN_CANCEL_WAIT_S = 5.0


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
        observer: Told of every claim, start, end, settle and lost lease (see
            :mod:`bus.worker.observer`: metrics and tracing); None, the
            default, makes no such calls at all.

    Attributes:
        slots: The tasks it holds, runs and has ready (:mod:`bus.worker.slots`).
        counters: What it has done since it started.
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
        observer: WorkerObserver | None = None,
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
        self.block_warn_s = block_warn_s
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
        self.counters = Counters()
        guarded = GuardedObserver(observer, app.name) if observer is not None else None
        self._stop_requested = asyncio.Event()
        self.slots = Slots(app.name, concurrency, self.prefetch)
        self.trouble = Trouble(app.name, self.id, self._stop_requested, self._beat_soon)
        self.settler = Settler(
            redis,
            self.keys,
            app_name=app.name,
            retention_ms=self.retention_ms,
            slots=self.slots,
            counters=self.counters,
            trouble=self.trouble,
            on_settled=self.on_settled,
            observer=guarded,
        )
        self.executor = HandlerThreads(f"bus-{app.name}")
        self.runner = Runner(
            app,
            self.id,
            slots=self.slots,
            settler=self.settler,
            counters=self.counters,
            executor=self.executor,
            broadcast=self._broadcast,
            payload_adapter=payload_adapter,
            publisher=publisher,
            observer=guarded,
        )
        self.claimer = Claimer(
            redis,
            self.keys,
            app_name=app.name,
            worker_id=self.id,
            queues=self.queues,
            node_queue=self.node.queue,
            lease_ms=self.lease_ms,
            burst=burst,
            slots=self.slots,
            runner=self.runner,
            settler=self.settler,
            trouble=self.trouble,
            observer=guarded,
        )
        self.heartbeat = Heartbeat(
            redis,
            self.keys,
            app_name=app.name,
            worker_id=self.id,
            lease_ms=self.lease_ms,
            slots=self.slots,
            status=self.status_record,
            refresh_queues=self.claimer.refresh_queues,
            hooks=self.on_beat,
            observer=guarded,
        )
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
            self.slots.stopping = True
            self.slots.freed.set()
            asyncio.get_running_loop().create_task(self.claimer.poke())

    @property
    def running_ids(self) -> list[str]:
        """Ids of the tasks whose handlers run now."""
        return list(self.slots.running)

    def status_record(self) -> bytes:
        """The worker's status record, as stored in the app's workers hash."""
        running = self.slots.running
        return orjson.dumps(
            {
                "id": self.id,
                "app": self.app.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "started_ms": self.counters.started_ms,
                "beat_ms": clock.now_ms(),
                "running": list(running)[:50],
                "running_count": len(running),
                "prefetched": len(self.slots.ready),
                "processed": self.counters.processed,
                "failed": self.counters.failed,
                "dead": self.counters.dead,
            }
        )

    # -- the lifecycle -------------------------------------------------------

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
        settler = asyncio.create_task(self.settler.loop(), name="bus-settle")
        beater = asyncio.create_task(self.heartbeat.loop(), name="bus-heartbeat")
        watchdog = LoopWatchdog.started(self.block_warn_s, app=self.app.name, worker=self.id)
        try:
            await self._join()
            await self.claimer.refresh_queues()
            await self.claimer.loop()
        finally:
            self.slots.stopping = True
            await self._shutdown(settler, beater)
            if watchdog is not None:
                watchdog.stop()

    async def _shutdown(self, settler: asyncio.Task[None], beater: asyncio.Task[None]) -> None:
        """Hand back the tasks not started, drain within the grace period, hand
        back the rest, settle, leave."""
        slots = self.slots
        if slots.ready:
            await self.settler.hand_back(slots.take_ready())
        tasks = [r.task for r in slots.running.values() if r.task is not None]
        if tasks:
            log.info("worker_draining", app=self.app.name, running=len(tasks), grace_s=self.grace_s)
            await asyncio.wait(tasks, timeout=self.grace_s)
        leftover = [r for r in slots.running.values() if r.task is not None]
        for running in leftover:
            running.cancel(lost=False)
        if leftover:
            cancelled = [r.task for r in leftover if r.task is not None]
            # Bounded: a handler that swallows its cancellation must not keep the
            # worker from leaving; its task is handed back all the same.
            done, stuck = await asyncio.wait(cancelled, timeout=SHUTDOWN_CANCEL_WAIT_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: the attempt already recorded it
            if stuck:
                log.error(
                    "handler_ignored_cancellation",
                    app=self.app.name,
                    count=len(stuck),
                    reason="handlers still running at shutdown; their tasks are handed back",
                )
            await self.settler.hand_back([r.held for r in leftover])
        self.settler.closing = True
        self.settler.wanted.set()
        try:
            await asyncio.wait_for(settler, timeout=max(self.grace_s, 5.0))
        except TimeoutError:
            log.error("settle_unfinished", app=self.app.name, outcomes=len(self.settler.outcomes))
        self.heartbeat.finish()
        try:
            await asyncio.wait_for(beater, timeout=5.0)
        except TimeoutError:
            log.error("heartbeat_unfinished", app=self.app.name, worker=self.id)
        try:
            await self.node.leave(clock.now_ms())
            await self.heartbeat.leave()
            await self.claimer.leave()
        except StoreError as exc:
            log.warning("status_not_removed", app=self.app.name, error=str(exc))
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info(
            "worker_stopped",
            app=self.app.name,
            worker=self.id,
            processed=self.counters.processed,
            failed=self.counters.failed,
        )

    def _beat_soon(self) -> None:
        # Redis answers again: beat at once, as the server may have come back
        # empty; the beat re-registers the node and runs the hooks that notice
        # a lost registry (bus.events.registry_watch) and recurring chains.
        self.heartbeat.soon()

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
