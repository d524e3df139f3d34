"""The task engine under real faults: killed, paused and racing worker processes,
and a Redis server that dies and comes back."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

import redis

from bus.core.enqueue import EnqueueItem
from tests.conftest import text, texts
from tests.procs.runner import Proc, wait_until
from tests.redis_server import MakeRedisServer

APP = "eng"


def start_worker(procs: Callable[..., Proc], url: str, *extra: str) -> Proc:
    proc = procs("-m", "tests.procs.engine_worker", "--url", url, *extra, name="worker")
    proc.wait_ready()
    return proc


def enqueue(url: str, items: list[EnqueueItem]) -> list[str]:
    """Enqueue from a fresh event loop (tests here are synchronous)."""
    import asyncio

    from redis.asyncio import Redis

    from bus.client import Bus

    async def go() -> list[str]:
        client = Redis.from_url(url)
        try:
            refs = await Bus(redis=client).enqueue_many(APP, items)
        finally:
            await client.aclose()
        return [ref.id for ref in refs]

    return asyncio.run(go())


def runs(client: redis.Redis) -> dict[str, int]:
    return {text(k): int(v) for k, v in client.hgetall(f"test:{APP}:runs").items()}


def state_of(client: redis.Redis, task_id: str) -> dict[str, object]:
    import orjson

    raw = client.hget(f"bus:app:{{{APP}}}:state", task_id)
    return orjson.loads(raw) if raw else {}


def test_concurrent_workers_claim_each_task_exactly_once(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    """Three worker processes share 20,000 tasks; each task runs exactly once."""
    client = redis.Redis.from_url(redis_url)
    n = 20_000
    ids = enqueue(redis_url, [EnqueueItem("noted", {"n": i}) for i in range(n)])
    for _ in range(3):
        start_worker(procs, redis_url, "--concurrency", "50")
    wait_until(lambda: client.hlen(f"test:{APP}:runs") >= n, 60, "all tasks to run")
    counts = runs(client)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    client.close()


def test_killed_worker_task_completes_elsewhere_after_its_lease(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    """SIGKILL a worker mid-task; another worker runs the task once the lease ends."""
    client = redis.Redis.from_url(redis_url)
    victim = start_worker(procs, redis_url, "--lease-s", "0.5")
    (task_id,) = enqueue(redis_url, [EnqueueItem("started", {"s": 60, "then": 0})])
    wait_until(lambda: client.llen(f"test:{APP}:started") == 1, 10, "task to start")
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    start_worker(procs, redis_url, "--lease-s", "0.5")
    wait_until(lambda: runs(client).get(task_id) == 1, 10, "task to complete elsewhere")
    assert time.monotonic() - killed_at < 3.0
    # The handler records its run before the worker settles it.
    wait_until(lambda: state_of(client, task_id).get("s") == "succeeded", 5, "the run to settle")
    state = state_of(client, task_id)
    assert state["a"] == 2
    client.close()


def test_paused_worker_loses_its_lease_and_its_late_ack_is_rejected(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    """SIGSTOP past the lease: another worker runs the task; after SIGCONT the
    first worker changes nothing: its ack is rejected, or its heartbeat learns
    of the lost lease first and it cancels the attempt (a race after SIGCONT)."""
    client = redis.Redis.from_url(redis_url)
    paused = start_worker(procs, redis_url, "--lease-s", "1.5", "--log-level", "info")
    (task_id,) = enqueue(redis_url, [EnqueueItem("started", {"s": 0.3, "then": 0})])
    wait_until(lambda: client.llen(f"test:{APP}:started") == 1, 10, "task to start")
    paused.signal(signal.SIGSTOP)
    other = start_worker(procs, redis_url, "--lease-s", "1.5")
    wait_until(lambda: state_of(client, task_id).get("s") == "succeeded", 10, "rescue")
    rescued = state_of(client, task_id)
    paused.signal(signal.SIGCONT)
    wait_until(
        lambda: "ack_rejected" in paused.output() or "lease_lost" in paused.output(),
        10,
        "late ack to be rejected or the lost lease noticed",
    )
    assert state_of(client, task_id) == rescued
    assert rescued["a"] == 2
    assert str(other.pid) in str(rescued["w"])
    client.close()


def test_redis_restart_with_aof_always_loses_nothing(
    procs: Callable[..., Proc], make_redis_server: MakeRedisServer
) -> None:
    """Kill -9 Redis with work queued, delayed and running; after restart all of it runs."""
    server = make_redis_server(appendonly=True, appendfsync="always")
    url = server.url
    client = redis.Redis.from_url(url)
    now_ids = enqueue(url, [EnqueueItem("slow", {"s": 0.01}) for _ in range(300)])
    later_ids = enqueue(url, [EnqueueItem("noted", {}, delay_s=1.0) for _ in range(50)])
    worker = start_worker(procs, url, "--concurrency", "4", "--lease-s", "1")
    wait_until(lambda: client.hlen(f"test:{APP}:runs") >= 20, 10, "work to start")
    client.close()
    server.kill()
    time.sleep(0.3)
    server.restart()
    client = redis.Redis.from_url(url)
    expected = set(now_ids) | set(later_ids)
    wait_until(lambda: expected <= set(runs(client)), 30, "every task to run after restart")
    assert worker.popen.poll() is None, worker.output()
    # The outage is logged (which loop notices first varies), never fatal.
    assert "Connection refused" in worker.output() or "Connection reset" in worker.output()
    client.close()


def test_several_workers_promote_delayed_tasks_without_duplicates(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    """2,000 delayed tasks, three workers racing to promote them: each runs once."""
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(7)
    for _ in range(3):
        start_worker(procs, redis_url, "--concurrency", "20")
    items = [EnqueueItem("noted", {"n": i}, delay_s=rng.uniform(0.05, 1.0)) for i in range(2000)]
    ids = enqueue(redis_url, items)
    wait_until(lambda: client.hlen(f"test:{APP}:runs") >= len(ids), 20, "delayed tasks")
    time.sleep(0.2)
    counts = runs(client)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    client.close()


def test_sigterm_hands_running_tasks_back_for_another_worker(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    """SIGTERM with a task still running past the grace: it is handed back and
    another worker picks it up at once, long before the lease would end."""
    client = redis.Redis.from_url(redis_url)
    first = start_worker(procs, redis_url, "--lease-s", "60", "--grace-s", "0.1")
    (task_id,) = enqueue(redis_url, [EnqueueItem("started", {"s": 60, "then": 0})])
    wait_until(lambda: client.llen(f"test:{APP}:started") == 1, 10, "task to start")
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    second = start_worker(procs, redis_url, "--lease-s", "60")
    wait_until(lambda: client.llen(f"test:{APP}:started") == 2, 5, "the task to restart")
    starts = texts(client.lrange(f"test:{APP}:started", 0, -1))
    assert starts == [f"{task_id}:{first.pid}", f"{task_id}:{second.pid}"]
    assert state_of(client, task_id)["a"] == 1  # the interrupted attempt is not counted
    client.close()
