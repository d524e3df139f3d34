"""Scope ``all``: broadcasts run once on every live node; nodes come and go.

In-process workers (each its own node, or sharing a ``node`` name) cover the
rules; worker processes (``python -m bus.worker --node ...``) cover the CLI, a
scope-all subscription, and a node killed with SIGKILL during a broadcast.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bus import App, Bus, Settings, TaskContext
from bus.core.enqueue import EnqueueItem
from bus.core.schedule import every
from bus.nodes import copy_id, node_queue
from bus.recurring import Recurring
from bus.store import features
from bus.store.keys import AppKeys
from tests.conftest import text
from tests.engine_helpers import eventually, running_worker
from tests.procs.runner import Proc, wait_until

KEYS = AppKeys("bus", "fleet")


def fleet(runs: list[tuple[str, str]], *, fail_first: bool = False) -> App:
    """The app 'fleet': a broadcast task 'wipe' that notes (task id, queue) of each run."""
    app = App("fleet")

    @app.task(scope="all", backoff=[0.05])
    async def wipe(payload: Any, ctx: TaskContext) -> None:
        runs.append((ctx.task_id, ctx.queue))
        if fail_first and ctx.attempt == 1:
            raise RuntimeError("disk busy")

    return app


async def node_count(aredis: Redis) -> int:
    """How many nodes the registry holds."""
    return int(await aredis.zcard(KEYS.nodes))


async def state(aredis: Redis, task_id: str) -> str | None:
    """A task's state, or None if it has no record."""
    raw = await aredis.hget(KEYS.state, task_id)
    return str(orjson.loads(raw)["s"]) if raw else None


async def test_broadcast_runs_once_on_each_of_three_nodes(aredis: Redis) -> None:
    """Three workers, three nodes: one copy each, on its own queue; the broadcast succeeds."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs)
    async with (
        running_worker(app, aredis) as w1,
        running_worker(app, aredis) as w2,
        running_worker(app, aredis) as w3,
    ):
        await eventually(lambda: _equals(node_count(aredis), 3), 5, "three nodes")
        ref = await Bus(redis=aredis).enqueue(app, "wipe", {"path": "/tmp"})
        copies = {copy_id(ref.id, w.node.name): w.node.queue for w in (w1, w2, w3)}
        await eventually(lambda: _all_succeeded(aredis, copies), 5, "three copies")
    assert sorted(runs) == sorted(copies.items())
    assert await state(aredis, ref.id) == "succeeded"


async def test_copy_that_fails_is_retried_on_its_own_node(aredis: Redis) -> None:
    """A failing copy is retried like any task, on the node it was meant for."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs, fail_first=True)
    async with running_worker(app, aredis) as w1, running_worker(app, aredis) as w2:
        await eventually(lambda: _equals(node_count(aredis), 2), 5, "two nodes")
        ref = await Bus(redis=aredis).enqueue(app, "wipe")
        copies = {copy_id(ref.id, w.node.name): w.node.queue for w in (w1, w2)}
        await eventually(lambda: _all_succeeded(aredis, copies), 5, "both copies")
    assert sorted(runs) == sorted([*copies.items(), *copies.items()])


async def test_processes_sharing_a_node_name_run_a_broadcast_once_per_name(aredis: Redis) -> None:
    """Two workers of node 'host-a' and one of 'host-b': two copies in all."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs)
    async with (
        running_worker(app, aredis, node="host-a"),
        running_worker(app, aredis, node="host-a"),
        running_worker(app, aredis, node="host-b"),
    ):
        await eventually(lambda: _equals(node_count(aredis), 2), 5, "two nodes")
        ref = await Bus(redis=aredis).enqueue(app, "wipe")
        copies = {copy_id(ref.id, n): node_queue(n) for n in ("host-a", "host-b")}
        await eventually(lambda: _all_succeeded(aredis, copies), 5, "two copies")
    assert sorted(runs) == sorted(copies.items())


async def test_late_joining_node_does_not_receive_an_old_broadcast(aredis: Redis) -> None:
    """A node that joins after a broadcast gets only the broadcasts sent after it joined."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs)
    bus = Bus(redis=aredis)
    async with running_worker(app, aredis) as early:
        await eventually(lambda: _equals(node_count(aredis), 1), 5, "the first node")
        old = await bus.enqueue(app, "wipe", {"n": 1})
        await eventually(lambda: _state_is(aredis, copy_id(old.id, early.node.name), "succeeded"))
        async with running_worker(app, aredis) as late:
            await eventually(lambda: _equals(node_count(aredis), 2), 5, "the second node")
            new = await bus.enqueue(app, "wipe", {"n": 2})
            fresh = {copy_id(new.id, w.node.name): w.node.queue for w in (early, late)}
            await eventually(lambda: _all_succeeded(aredis, fresh), 5, "both copies")
    assert [task for task, queue in runs if queue == late.node.queue] == [
        copy_id(new.id, late.node.name)
    ]
    assert await state(aredis, copy_id(old.id, late.node.name)) is None


async def test_broadcast_sent_while_no_node_runs_reaches_nobody(aredis: Redis) -> None:
    """A node that starts after a broadcast drops it (no node was listening) and runs later ones."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs)
    bus = Bus(redis=aredis)
    old = await bus.enqueue(app, "wipe")
    async with running_worker(app, aredis) as worker:
        await eventually(lambda: _state_is(aredis, old.id, "succeeded"), 5, "the old broadcast")
        new = await bus.enqueue(app, "wipe")
        await eventually(lambda: _state_is(aredis, copy_id(new.id, worker.node.name), "succeeded"))
    assert runs == [(copy_id(new.id, worker.node.name), worker.node.queue)]


async def test_recurring_broadcast_runs_on_every_node_at_each_slot(aredis: Redis) -> None:
    """A scope-all recurring task: each occurrence runs once on each node."""
    runs: list[tuple[str, str]] = []
    app = fleet(runs)
    item = Recurring("wipe", every("200ms"))
    async with (
        running_worker(app, aredis, recurring=[item]) as w1,
        running_worker(app, aredis, recurring=[item]) as w2,
    ):
        await eventually(lambda: _distinct_copies(runs, 4), 5, "two occurrences on both nodes")
    by_slot: dict[str, set[str]] = {}
    for task_id, queue in runs:
        occurrence, _, node = task_id.partition("@")
        assert node_queue(node) == queue
        by_slot.setdefault(occurrence, set()).add(node)
    complete = [nodes for nodes in by_slot.values() if len(nodes) == 2]
    assert len(complete) >= 2
    assert all(nodes == {w1.node.name, w2.node.name} for nodes in complete)
    assert len(runs) == len(set(runs))


async def test_star_worker_never_serves_another_nodes_queue(aredis: Redis) -> None:
    """A copy for node 'ghost' waits in its queue; a '*' worker of another node leaves it."""
    await features.node_beat(
        aredis, KEYS, "ghost", now_ms=_now(), ttl_ms=60_000, queue_prefix="node."
    )
    ref = (
        await Bus(redis=aredis).enqueue_many("fleet", [EnqueueItem("wipe", queue="node.ghost")])
    )[0]
    runs: list[tuple[str, str]] = []
    await running_worker_burst(fleet(runs), aredis)
    assert runs == []
    assert await state(aredis, ref.id) == "queued"


async def test_node_whose_time_ran_out_is_dropped_with_its_waiting_copies(aredis: Redis) -> None:
    """Any worker's beat drops a silent node: registry entry, queue and copies."""
    await features.node_beat(
        aredis, KEYS, "gone", now_ms=_now() - 10_000, ttl_ms=1, queue_prefix="node."
    )
    ref = (await Bus(redis=aredis).enqueue_many("fleet", [EnqueueItem("wipe", queue="node.gone")]))[
        0
    ]
    orphan = (
        await Bus(redis=aredis).enqueue_many("fleet", [EnqueueItem("wipe", queue="node.never")])
    )[0]
    await running_worker_burst(fleet([]), aredis)
    assert await state(aredis, ref.id) is None
    assert await state(aredis, orphan.id) is None
    assert not await aredis.sismember(KEYS.queues, "node.gone")
    assert await aredis.zscore(KEYS.nodes, "gone") is None
    assert await aredis.hget(KEYS.nodes_joined, "gone") is None


async def test_clean_stop_drops_a_workers_own_node_but_not_a_shared_one(aredis: Redis) -> None:
    """A node of its own leaves with its worker; a named node stays until its time runs out."""
    async with running_worker(fleet([]), aredis):
        await eventually(lambda: _equals(node_count(aredis), 1), 5, "the node")
    assert await node_count(aredis) == 0
    async with running_worker(fleet([]), aredis, node="host-a"):
        await eventually(lambda: _equals(node_count(aredis), 1), 5, "the shared node")
    assert await aredis.zscore(KEYS.nodes, "host-a") is not None


async def test_bad_node_name_is_refused(aredis: Redis) -> None:
    """A node name must fit a queue name; the error says which characters are allowed."""
    from bus import Worker

    with pytest.raises(ValueError, match="invalid node name 'a b'"):
        Worker(fleet([]), aredis, node="a b")


# -- helpers ------------------------------------------------------------------------


def _now() -> int:
    from bus.core import clock

    return clock.now_ms()


async def running_worker_burst(app: App, aredis: Redis) -> None:
    """Run a burst worker of ``app`` until it is idle."""
    from bus import Worker

    await Worker(app, aredis, burst=True, lease_s=2.0).run()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _state_is(aredis: Redis, task_id: str, expected: str) -> bool:
    return await state(aredis, task_id) == expected


async def _all_succeeded(aredis: Redis, task_ids: dict[str, str]) -> bool:
    return all([await state(aredis, t) == "succeeded" for t in task_ids])


async def _distinct_copies(runs: list[tuple[str, str]], count: int) -> bool:
    return len({task_id for task_id, _ in runs}) >= count


# -- worker processes -------------------------------------------------------------------

# Copied into each temporary app dir as handlers.py; app.toml names handlers:note.
HANDLERS = Path(__file__).parent / "handlers" / "evidence.py"

APP_TOML = """name = "fleet"

[[tasks]]
name = "wipe"
handler = "handlers:note"
scope = "all"

[[subscriptions]]
name = "drop_cache"
events = "cache.invalidated"
handler = "handlers:note"
scope = "all"
"""


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment for worker processes: the private server and the app 'fleet'."""
    apps = tmp_path / "apps"
    (apps / "fleet").mkdir(parents=True)
    (apps / "fleet" / "handlers.py").write_bytes(HANDLERS.read_bytes())
    (apps / "fleet" / "app.toml").write_text(APP_TOML)
    values = {
        "BUS_REDIS_URL": str(settings.redis_url),
        "BUS_SCHEMAS_DIR": str(settings.schemas_dir),
        "BUS_APPS_DIR": str(apps),
        "BUS_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(values)


def start_nodes(procs: Callable[..., Proc], client: redis.Redis, *names: str) -> dict[str, Proc]:
    """Start one worker process per node name; wait until every node is registered."""
    started = {
        name: procs(
            "-m", "bus.worker", "--app", "fleet", "--node", name, "--lease-s", "0.3", name=name
        )
        for name in names
    }

    def registered() -> bool:
        for proc in started.values():
            assert proc.popen.poll() is None, proc.output()
        return client.zcard(KEYS.nodes) == len(names)

    wait_until(registered, 30, f"nodes {names}")
    return started


def runs_of(client: redis.Redis) -> list[tuple[str, str, int]]:
    """(task id, queue, pid) of every run, in order."""
    out = []
    for run in client.lrange("test:runs", 0, -1):
        task_id, queue, pid = text(run).split("|")
        out.append((task_id, queue, int(pid)))
    return out


def enqueue_wipe(payload: dict[str, str]) -> str:
    """Enqueue the broadcast 'wipe' from a fresh event loop; return its id."""
    import asyncio

    async def go() -> str:
        bus = Bus()
        try:
            item = EnqueueItem("wipe", payload, scope="all")
            return (await bus.enqueue_many("fleet", [item]))[0].id
        finally:
            await bus.aclose()

    return asyncio.run(go())


def test_three_node_processes_each_run_a_broadcast_and_an_event_once(
    procs: Callable[..., Proc], env: Settings, redis_url: str
) -> None:
    """An enqueued broadcast and a scope-all subscription reach each node exactly once."""
    client = redis.Redis.from_url(redis_url)
    nodes = start_nodes(procs, client, "n1", "n2", "n3")
    task_id = enqueue_wipe({})
    publisher = Bus(env)
    try:
        event = publisher.publish("cache.invalidated", {"keys": ["price:42"]})
    finally:
        publisher.close_sync()
    expected = {
        copy_id(base, node): node_queue(node)
        for base in (task_id, f"{event}.drop_cache")
        for node in nodes
    }
    wait_until(lambda: len(runs_of(client)) >= 6, 20, "six runs")
    runs = runs_of(client)
    assert sorted((t, q) for t, q, _ in runs) == sorted(expected.items())
    assert all(pid == nodes[q.removeprefix("node.")].pid for _, q, pid in runs)
    client.close()


def test_node_killed_during_a_broadcast_is_dropped_and_its_copy_does_not_run_elsewhere(
    procs: Callable[..., Proc], env: Settings, redis_url: str
) -> None:
    """SIGKILL node n2 mid-copy: n2 leaves the registry, its copy is deleted, not rerun."""
    client = redis.Redis.from_url(redis_url)
    nodes = start_nodes(procs, client, "n1", "n2", "n3")
    held = enqueue_wipe({"hold": "node.n2"})
    wait_until(lambda: len(runs_of(client)) == 3, 20, "three copies to start")
    nodes["n2"].signal(signal.SIGKILL)
    wait_until(lambda: client.zscore(KEYS.nodes, "n2") is None, 10, "n2 to be dropped")
    assert client.hget(KEYS.state, copy_id(held, "n2")) is None
    assert not client.sismember(KEYS.queues, "node.n2")
    # A second broadcast round trip: anything that could still run n2's copy would have.
    after = enqueue_wipe({})
    wait_until(lambda: len(runs_of(client)) == 5, 20, "the next broadcast on n1 and n3")
    runs = runs_of(client)
    assert sorted(t for t, _, _ in runs) == sorted(
        [*(copy_id(held, n) for n in nodes), *(copy_id(after, n) for n in ("n1", "n3"))]
    )
    assert [pid for t, _, pid in runs if t == copy_id(held, "n2")] == [nodes["n2"].pid]
    client.close()
