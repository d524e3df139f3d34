"""RQ (Redis Queue).

Worker: ``rq worker --url URL --quiet default``: one process. RQ's default
worker class, ``rq.Worker``, forks a work horse for every job; that is its
documented default and what the ``rq`` row measures. ``rq.SimpleWorker`` runs
jobs in the worker process itself, with no fork: the fair equivalent of the
other libraries' one process, measured as ``rq-simple``. ``--quiet`` drops RQ's
two INFO lines per job, so no library pays for per-job logging.

Rows:

* ``rq``: default. A job is popped and moved to the StartedJobRegistry; if its
  worker dies, registry clean-up moves it to the FailedJobRegistry (or retries
  it if it has retries left, which by default it does not): at-most-once.
* ``rq-simple``: the same semantics with ``SimpleWorker``.
* ``rq-retry``: jobs enqueued with ``retry=Retry(max=3)``: a job abandoned by a
  dead worker is re-enqueued by the clean-up once its timeout has passed
  (RQ 3.0 ``StartedJobRegistry.cleanup``): at-least-once.

Bulk: ``Queue.enqueue_many`` with ``Queue.prepare_data`` items (one pipeline).
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry

from bench.peers.adapters.base import (
    Peer,
    Variant,
    latency_sync,
    noop_sync,
    variants_by_row,
    venv_script,
)

QUEUE = "default"
# Retries for the at-least-once row; any value >= 1 makes a job recoverable.
AT_LEAST_ONCE_RETRIES = 3

VARIANTS = variants_by_row(
    [
        Variant(
            row="rq",
            library="rq",
            mode="default (rq.Worker: forks a work horse per job)",
            semantics="at-most-once (a dead worker's job goes to FailedJobRegistry)",
            concurrency="1 process + 1 forked horse per job, 1 job at a time (default)",
            bulk_api="Queue.enqueue_many",
        ),
        Variant(
            row="rq-simple",
            library="rq",
            mode="rq.SimpleWorker (no fork)",
            semantics="at-most-once (a dead worker's job goes to FailedJobRegistry)",
            concurrency="1 process, 1 job at a time",
            bulk_api="Queue.enqueue_many",
        ),
        Variant(
            row="rq-retry",
            library="rq",
            mode=f"rq.Worker, jobs with Retry(max={AT_LEAST_ONCE_RETRIES})",
            semantics="at-least-once (abandoned job retried by registry clean-up)",
            concurrency="1 process + 1 forked horse per job, 1 job at a time (default)",
            bulk_api="Queue.enqueue_many",
        ),
    ]
)


def noop(i: int) -> None:
    """The shared no-op job."""
    noop_sync()


def latency(sent_ns: int) -> None:
    """The shared latency job."""
    latency_sync(sent_ns)


class RqPeer(Peer):
    """RQ's producer side: ``Queue.enqueue`` / ``Queue.enqueue_many``."""

    async def open(self) -> None:
        """Build the queue."""
        self.queue = Queue(QUEUE, connection=Redis.from_url(self.redis_url))
        self.retry = Retry(max=AT_LEAST_ONCE_RETRIES) if self.variant.row == "rq-retry" else None

    async def close(self) -> None:
        """Close the connection."""
        self.queue.connection.close()

    async def enqueue_noop(self, i: int) -> None:
        """One ``Queue.enqueue`` call."""
        self.queue.enqueue(noop, i, retry=self.retry)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``Queue.enqueue`` call carrying the enqueue time."""
        self.queue.enqueue(latency, sent_ns, retry=self.retry)

    async def enqueue_noop_bulk(self, start: int, n: int) -> None:
        """One ``Queue.enqueue_many`` call."""
        self.queue.enqueue_many(
            [Queue.prepare_data(noop, (i,), retry=self.retry) for i in range(start, start + n)]
        )

    def worker_argv(self) -> list[str]:
        """The rq worker CLI; ``SimpleWorker`` for the ``rq-simple`` row."""
        argv = [venv_script("rq"), "worker", "--url", self.redis_url, "--quiet"]
        if self.variant.row == "rq-simple":
            argv += ["--worker-class", "rq.SimpleWorker"]
        return [*argv, QUEUE]


PEER = RqPeer
