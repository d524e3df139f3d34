"""SAQ (Simple Async Queue) on Redis.

Worker: ``saq bench.peers.adapters.saq.settings``: one process (``--workers``
defaults to 1), asyncio, ``concurrency=10`` (SAQ's default). It dequeues with
``BLMOVE`` and is woken through pub/sub, so it does not poll. Its CLI logs at
WARNING by default (no line per job).

Rows:

* ``saq`` (default): a job's ``retries`` is 1, i.e. one attempt. A job whose
  worker died is found by the sweep once its timeout (10 s) has passed and is
  finished as *aborted*: at-most-once.
* ``saq-retry``: jobs enqueued with ``retries=3``: the sweep retries a stuck
  job instead: at-least-once.

Bulk: none genuine. ``Queue.map`` enqueues one job per item and then waits for
all results.
"""

from __future__ import annotations

from typing import Any

from saq import Queue

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_url,
    latency_async,
    noop_async,
    variants_by_row,
    venv_script,
)

QUEUE = "default"
# SAQ's own default, stated so the row says it.
CONCURRENCY = 10
# Attempts for the at-least-once row; any value >= 2 lets the sweep retry.
AT_LEAST_ONCE_RETRIES = 3

VARIANTS = variants_by_row(
    [
        Variant(
            row="saq",
            library="saq",
            mode="default (retries=1)",
            semantics="at-most-once (a stuck job is swept and aborted)",
            concurrency=f"1 process, asyncio, concurrency={CONCURRENCY} (default)",
        ),
        Variant(
            row="saq-retry",
            library="saq",
            mode=f"jobs with retries={AT_LEAST_ONCE_RETRIES}",
            semantics="at-least-once (a stuck job is swept and retried)",
            concurrency=f"1 process, asyncio, concurrency={CONCURRENCY} (default)",
        ),
    ]
)


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    """The shared no-op job."""
    await noop_async()


async def latency(ctx: dict[str, Any], *, t: int) -> None:
    """The shared latency job."""
    await latency_async(t)


# The saq CLI imports this module and reads ``settings``, as in any SAQ project.
settings = {
    "queue": Queue.from_url(env_url(), name=QUEUE),
    "functions": [noop, latency],
    "concurrency": CONCURRENCY,
}


class SaqPeer(Peer):
    """SAQ's producer side: ``Queue.enqueue``."""

    async def open(self) -> None:
        """Connect the queue."""
        self.queue = Queue.from_url(self.redis_url, name=QUEUE)
        await self.queue.connect()
        self.options: dict[str, Any] = (
            {"retries": AT_LEAST_ONCE_RETRIES} if self.variant.row == "saq-retry" else {}
        )

    async def close(self) -> None:
        """Disconnect the queue."""
        await self.queue.disconnect()

    async def enqueue_noop(self, i: int) -> None:
        """One ``Queue.enqueue`` call."""
        await self.queue.enqueue("noop", i=i, **self.options)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``Queue.enqueue`` call carrying the enqueue time."""
        await self.queue.enqueue("latency", t=sent_ns, **self.options)

    def worker_argv(self) -> list[str]:
        """The saq CLI, one process."""
        return [venv_script("saq"), "bench.peers.adapters.saq.settings"]


PEER = SaqPeer
