"""huey with its Redis storage (``RedisHuey``).

Worker: ``huey_consumer bench.peers.adapters.huey.huey -w 1 -k thread -q``:
huey's defaults are one worker of type *thread* (``-w 1 -k thread``, passed
explicitly), in one process; ``-q`` logs at WARNING instead of INFO, which would
print a line per task. The consumer blocks on ``BRPOP`` (``blocking=True``, the
default for Redis storage), so it does not poll.

Semantics: at-most-once, and no other mode with Redis: the consumer pops the
message (``BRPOP``) before running it; a consumer that dies mid-task loses it.
``retries`` only re-run tasks that raised.

Bulk: none; calling a task enqueues one message.
"""

from __future__ import annotations

from huey import RedisHuey

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_url,
    latency_sync,
    noop_sync,
    variants_by_row,
    venv_script,
)

VARIANTS = variants_by_row(
    [
        Variant(
            row="huey",
            library="huey",
            mode="default (RedisHuey)",
            semantics="at-most-once (popped before it runs)",
            concurrency="1 process, 1 worker thread (default)",
        )
    ]
)

# huey_consumer imports this module-level instance, as in any huey project.
huey = RedisHuey("peers", url=env_url())


@huey.task(name="noop")
def noop(i: int) -> None:
    """The shared no-op job."""
    noop_sync()


@huey.task(name="latency")
def latency(sent_ns: int) -> None:
    """The shared latency job."""
    latency_sync(sent_ns)


class HueyPeer(Peer):
    """huey's producer side: calling the task enqueues it."""

    async def enqueue_noop(self, i: int) -> None:
        """One task call."""
        noop(i)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One task call carrying the enqueue time."""
        latency(sent_ns)

    def worker_argv(self) -> list[str]:
        """The huey consumer: one thread worker, quiet."""
        return [
            venv_script("huey_consumer"),
            "bench.peers.adapters.huey.huey",
            "-w",
            "1",
            "-k",
            "thread",
            "-q",
        ]


PEER = HueyPeer
