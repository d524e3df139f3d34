"""Run one chaos scenario: Redis, three apps' workers, publishers, a nemesis, a verdict.

A :class:`Scenario` names its faults and a seed; :func:`run` starts a private
redis-server with an AOF (``appendfsync`` as the scenario says), writes the
world (``world.py``), starts one worker per app (their start-up syncs the
subscriptions) and the publishers, lets the nemesis inject faults while the
publishers run, heals everything, waits until Redis is quiescent (no task
ready, delayed or in flight, no event pending), then checks the history and
audits Redis. Every process is started here and ended here, by pid.

Faults (``Scenario.faults``):

- ``kill_worker``: SIGKILL a random worker, start a new one at once;
- ``kill_redis``: SIGKILL redis-server, restart it on the same data;
- ``kill_publisher``: SIGKILL a random publisher mid-publish, start a new one;
- ``crash_publisher``: a publisher that exits between recording an event and
  routing it (mid-fan-out, deterministically);
- ``pause_worker``: SIGSTOP a worker past its lease, then SIGCONT it;
- ``client_kill``: ``CLIENT KILL TYPE normal`` (every client connection drops).
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis

from bus.core.task import TaskInfo, TaskState
from bus.store.keys import AppKeys, BusKeys
from tests.chaos.history import Report, check, read_handled, read_published
from tests.chaos.world import APPS, MAX_ATTEMPTS, write_world
from tests.conftest import raw, raw_or_none, texts
from tests.procs.runner import Proc
from tests.redis_server import RedisServer

FAULTS = (
    "kill_worker",
    "kill_redis",
    "kill_publisher",
    "crash_publisher",
    "pause_worker",
    "client_kill",
)


@dataclass(frozen=True)
class Scenario:
    """What to run: the faults, their pace, the load and the durability setting."""

    name: str
    faults: tuple[str, ...]
    seed: int = 1
    appendfsync: Literal["always", "everysec"] = "always"
    fault_s: float = 8.0  # faults (and publishing) last this long
    fault_every_s: float = 1.0  # mean pause between faults
    publishers: int = 2
    rate: float = 150.0  # events per second per publisher
    batch: int = 1  # >1: the publishers use publish_many
    poison_rate: float = 0.0
    lease_s: float = 2.0
    concurrency: int = 20
    handler_sleep_s: float = 0.0  # each handler run takes this long
    workers_per_app: int = 1
    settle_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")


@dataclass
class Outcome:
    """What happened: the checker's report, the Redis audit, faults and timings."""

    scenario: Scenario
    report: Report
    faults: dict[str, int]
    audit: list[str]  # problems found in Redis after quiescence; empty = clean
    dead: int  # tasks in the dead sets
    settle_s: float  # from the end of the faults to quiescence
    last_handled_after_s: float  # from the end of the faults to the last handled unit
    acks_rejected: int  # late acks the engine refused (fencing)
    leases_lost: int  # attempts a worker abandoned on noticing its lease had gone

    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "appendfsync": self.scenario.appendfsync,
            "faults": self.faults,
            "settle_s": round(self.settle_s, 2),
            "last_handled_after_s": round(self.last_handled_after_s, 2),
            "acks_rejected": self.acks_rejected,
            "leases_lost": self.leases_lost,
            "dead": self.dead,
            "audit": self.audit,
            "report": self.report.to_doc(),
        }


class _Cluster:
    """The scenario's processes: workers per app and publishers, all ended by pid."""

    def __init__(self, scenario: Scenario, root: Path, env: dict[str, str]) -> None:
        self.scenario = scenario
        self.root = root
        self.env = env
        self.history = Path(env["CHAOS_HISTORY_DIR"])
        self.all: list[Proc] = []
        self.workers: dict[tuple[str, int], Proc] = {}  # (app, slot) -> process
        self.publishers: list[Proc] = []
        self.paused: list[Proc] = []
        self._names = 0

    def _start(self, args: list[str], name: str) -> Proc:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            proc = Proc(args, self.root / f"{name}-{len(self.all)}.log")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.all.append(proc)
        return proc

    def start_worker(self, app: str, slot: int = 0) -> Proc:
        proc = self._start(
            [
                "-m",
                "bus.worker",
                "--app",
                app,
                "--lease-s",
                str(self.scenario.lease_s),
                "--grace-s",
                "1",
                "--sweep-grace-s",
                "1",
                "--log-level",
                "info",
            ],
            f"worker-{app}",
        )
        self.workers[(app, slot)] = proc
        return proc

    def start_publisher(self, duration_s: float, *, crash: bool = False) -> Proc:
        self._names += 1
        name = f"p{self._names}"
        s = self.scenario
        args = [
            "-m",
            "tests.chaos.publisher",
            "--history",
            str(self.history / f"pub-{name}.jsonl"),
            "--name",
            name,
            "--seed",
            str(s.seed * 1000 + self._names),
            "--poison-rate",
            str(s.poison_rate),
        ]
        if crash:
            args += ["--count", "1", "--crash-after-record"]
        else:
            args += ["--duration-s", f"{duration_s:.3f}", "--rate", str(s.rate)]
            args += ["--batch", str(s.batch)]
            if self._names % 2 == 0:
                args.append("--idempotent")
        proc = self._start(args, f"publisher-{name}")
        if not crash:
            self.publishers.append(proc)
        return proc

    def wait_workers_started(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for (app, _), proc in self.workers.items():
            while "worker_started" not in proc.output():
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{app} worker did not start:\n{proc.output()[-3000:]}")
                time.sleep(0.02)

    def end(self) -> None:
        for proc in self.all:
            proc.end()


def _quiescent(client: redis.Redis, prefix: str) -> list[str]:
    """What is still moving: non-empty queues, in-flight sets, pending events."""
    busy: list[str] = []
    for app in APPS:
        keys = AppKeys(prefix, app)
        for queue in texts(client.smembers(keys.queues)):
            q = keys.queue(queue)
            for key, size in (
                (q.ready, client.llen(q.ready)),
                (q.delayed, client.zcard(q.delayed)),
                (q.inflight, client.zcard(q.inflight)),
            ):
                if size:
                    busy.append(f"{key}={size}")
    pending = client.zcard(BusKeys(prefix).pending)
    if pending:
        busy.append(f"pending events={pending}")
    return busy


def _audit(client: redis.Redis, prefix: str, history: Path) -> tuple[list[str], int]:
    """Check Redis against the history: every poison unit dead after exactly its attempts."""
    problems: list[str] = []
    published = read_published(history)
    poison_keys = {p.key for p in published.values() if p.poison and p.key}
    # Events whose publisher died before the answer: their keys appear in the
    # handlers' lines (poison ones raise, and record the key first).
    poison_keys |= {
        d["key"] for d in read_handled(history) if d["outcome"] == "raised" and d.get("key")
    }
    dead_total = 0
    for app in APPS:
        keys = AppKeys(prefix, app)
        dead = texts(client.zrange(keys.dead, 0, -1))
        dead_total += len(dead)
        for task_id in dead:
            event_key = task_id.rsplit(".", 1)[0]
            if event_key not in poison_keys:
                problems.append(f"{app}: {task_id} is dead but its event is not poison")
                continue
            raw_state = client.hget(keys.state, task_id)
            if raw_state is None:
                problems.append(f"{app}: dead task {task_id} has no state")
                continue
            record = raw_or_none(client.hget(keys.tasks, task_id))
            info = TaskInfo.from_raw(task_id, raw(raw_state), record, None)
            if info.state is not TaskState.DEAD or info.attempts != MAX_ATTEMPTS:
                problems.append(
                    f"{app}: {task_id} state {info.state.value} after {info.attempts} attempts "
                    f"(want dead after {MAX_ATTEMPTS})"
                )
    return problems, dead_total


def _inject(
    kind: str, cluster: _Cluster, server: RedisServer, rng: random.Random, remaining_s: float
) -> None:
    s = cluster.scenario
    if kind == "kill_worker":
        app, slot = rng.choice(sorted(cluster.workers))
        cluster.workers[(app, slot)].signal(signal.SIGKILL)
        cluster.start_worker(app, slot)
    elif kind == "kill_redis":
        server.kill()
        time.sleep(rng.uniform(0.05, 0.5))
        server.start()
    elif kind == "kill_publisher":
        live = [p for p in cluster.publishers if p.popen.poll() is None]
        if live:
            victim = rng.choice(live)
            victim.signal(signal.SIGKILL)
            cluster.publishers.remove(victim)
            cluster.start_publisher(remaining_s)
    elif kind == "crash_publisher":
        cluster.start_publisher(0, crash=True)
    elif kind == "pause_worker":
        proc = cluster.workers[rng.choice(sorted(cluster.workers))]
        proc.signal(signal.SIGSTOP)
        time.sleep(s.lease_s * rng.uniform(1.5, 2.5))
        proc.signal(signal.SIGCONT)
    elif kind == "client_kill":
        with server.client() as admin:
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


def run(scenario: Scenario, root: Path) -> Outcome:
    """Run ``scenario`` in the fresh directory ``root``; every process is ended on return."""
    rng = random.Random(scenario.seed)
    history = root / "history"
    history.mkdir(parents=True)
    schemas, apps = write_world(root / "world", concurrency=scenario.concurrency)
    server = RedisServer(appendonly=True, appendfsync=scenario.appendfsync)
    server.start()
    env = {
        "BUS_REDIS_URL": server.url,
        "BUS_SCHEMAS_DIR": str(schemas),
        "BUS_APPS_DIR": str(apps),
        "BUS_DATA_DIR": str(root / "data"),
        "CHAOS_HISTORY_DIR": str(history),
        "CHAOS_HANDLER_SLEEP_S": str(scenario.handler_sleep_s),
    }
    cluster = _Cluster(scenario, root, env)
    faults: dict[str, int] = {}
    try:
        for app in APPS:
            for slot in range(scenario.workers_per_app):
                cluster.start_worker(app, slot)
        cluster.wait_workers_started()
        started = time.monotonic()
        for _ in range(scenario.publishers):
            cluster.start_publisher(scenario.fault_s)
        while scenario.faults:
            time.sleep(scenario.fault_every_s * rng.uniform(0.5, 1.5))
            remaining_s = scenario.fault_s - (time.monotonic() - started)
            if remaining_s <= 0:
                break
            kind = rng.choice(scenario.faults)
            _inject(kind, cluster, server, rng, remaining_s)
            faults[kind] = faults.get(kind, 0) + 1
        # Heal: Redis up, every worker running; the publishers run out their time.
        if not server.running:
            server.start()
        for (app, slot), proc in list(cluster.workers.items()):
            proc.signal(signal.SIGCONT)
            if proc.popen.poll() is not None:
                cluster.start_worker(app, slot)
        for proc in cluster.publishers:
            proc.wait(scenario.fault_s + 120)
        faults_end = time.time()
        settle_from = time.monotonic()
        with server.client() as client:
            deadline = settle_from + scenario.settle_timeout_s
            calm = 0
            while calm < 3:
                busy = _quiescent(client, "bus")
                calm = 0 if busy else calm + 1
                if busy and time.monotonic() > deadline:
                    raise AssertionError(
                        f"{scenario.name}: not quiescent {scenario.settle_timeout_s}s after the "
                        f"faults: {busy}"
                    )
                time.sleep(0.2)
            settle_s = time.monotonic() - settle_from
            audit, dead = _audit(client, "bus", history)
        report = check(history)
        logs = [p.output() for p in cluster.all]
        return Outcome(
            scenario=scenario,
            report=report,
            faults=faults,
            audit=audit,
            dead=dead,
            settle_s=settle_s,
            last_handled_after_s=max(0.0, report.last_handled_t - faults_end),
            acks_rejected=sum(text.count('"ack_rejected"') for text in logs),
            leases_lost=sum(text.count('"lease_lost"') for text in logs),
        )
    finally:
        cluster.end()
        server.close()
