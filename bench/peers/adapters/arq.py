"""arq (asyncio jobs on Redis).

Worker: ``arq bench.peers.adapters.arq.WorkerSettings``: one process, asyncio,
``max_jobs=10`` (arq's default). arq has no blocking dequeue: it polls its
queue (a sorted set), reading at most ``queue_read_limit`` (100) job ids per
poll, then sleeping out the rest of ``poll_delay`` (0.5 s by default). That caps
the default worker at about 200 jobs/s and adds ~0.25 s of latency on average.

Rows:

* ``arq``: the defaults.
* ``arq-fast``: ``poll_delay=0.01`` (10 ms), the fair equivalent of a worker
  that blocks on its queue, at the price of 100 polls/s when idle.

Its default logging prints a line per job start and end at INFO, so the worker
runs with ``--custom-log-dict`` at WARNING (no library pays for per-job lines).

Semantics (both rows): at-least-once by default, and no other mode: a job stays in the
queue while it runs, guarded by an in-progress key that expires after the job
timeout (300 s) plus 10 s; a job whose worker died is then picked up again.
``max_tries`` (5) bounds the reruns.

Bulk: none. ``ArqRedis.enqueue_job`` enqueues one job per call.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_row,
    env_url,
    latency_async,
    noop_async,
    variants_by_row,
    venv_script,
)

# arq's own defaults, stated so the rows say them.
MAX_JOBS = 10
DEFAULT_POLL_DELAY_S = 0.5
# arq-fast: polls at the harness's own polling interval.
FAST_POLL_DELAY_S = 0.01

VARIANTS = variants_by_row(
    [
        Variant(
            row="arq",
            library="arq",
            mode="default",
            semantics="at-least-once (job stays queued; rerun when its in-progress key expires)",
            concurrency=f"1 process, asyncio, max_jobs={MAX_JOBS} (default), "
            f"poll_delay={DEFAULT_POLL_DELAY_S} s (default)",
        ),
        Variant(
            row="arq-fast",
            library="arq",
            mode=f"poll_delay={FAST_POLL_DELAY_S} s",
            semantics="at-least-once (job stays queued; rerun when its in-progress key expires)",
            concurrency=f"1 process, asyncio, max_jobs={MAX_JOBS} (default), "
            f"poll_delay={FAST_POLL_DELAY_S} s",
        ),
    ]
)


async def noop(ctx: dict[str, Any], i: int) -> None:
    """The shared no-op job."""
    await noop_async()


async def latency(ctx: dict[str, Any], sent_ns: int) -> None:
    """The shared latency job."""
    await latency_async(sent_ns)


class WorkerSettings:
    """What the arq CLI runs: the two jobs and the private Redis."""

    functions: ClassVar[list[Any]] = [noop, latency]
    redis_settings = RedisSettings.from_dsn(env_url())
    max_jobs = MAX_JOBS
    poll_delay = FAST_POLL_DELAY_S if env_row("arq") == "arq-fast" else DEFAULT_POLL_DELAY_S


# arq's default_log_config at WARNING instead of INFO (no line per job).
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"arq.standard": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["arq.standard"], "level": "WARNING"}},
}


class ArqPeer(Peer):
    """arq's producer side: ``ArqRedis.enqueue_job``."""

    async def open(self) -> None:
        """Create arq's Redis pool."""
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(self.redis_url))

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.aclose()

    async def enqueue_noop(self, i: int) -> None:
        """One ``enqueue_job`` call."""
        await self.pool.enqueue_job("noop", i)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``enqueue_job`` call carrying the enqueue time."""
        await self.pool.enqueue_job("latency", sent_ns)

    def worker_argv(self) -> list[str]:
        """The arq CLI, logging at WARNING."""
        return [
            venv_script("arq"),
            "--custom-log-dict",
            "bench.peers.adapters.arq.LOG_CONFIG",
            "bench.peers.adapters.arq.WorkerSettings",
        ]


PEER = ArqPeer
