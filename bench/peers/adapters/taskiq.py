"""taskiq with taskiq-redis.

Worker: ``taskiq worker bench.peers.adapters.taskiq:broker --workers 1
--log-level WARNING``. taskiq's default is 2 worker processes; ``--workers 1``
keeps it to ONE (plus the supervising parent), asyncio, with the default
``--max-async-tasks 100``.

Rows:

* ``taskiq``: ``RedisStreamBroker``, the broker taskiq-redis's README shows
  first: a consumer group on a stream; a message is acked after the task
  (``--ack-type when_saved``, the default); messages left unacked by a dead
  worker are claimed again after ``idle_timeout`` (10 min): at-least-once.
* ``taskiq-list``: ``ListQueueBroker`` (LPUSH/BRPOP), the README's choice "if
  you don't want acknowledges": at-most-once.

No result backend in either (none of the rows stores results it does not
store by default). Bulk: none; ``kiq`` sends one message per call.
"""

from __future__ import annotations

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

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

CONCURRENCY = "1 worker process (--workers 1; default 2), asyncio, max_async_tasks=100 (default)"

VARIANTS = variants_by_row(
    [
        Variant(
            row="taskiq",
            library="taskiq",
            mode="RedisStreamBroker (taskiq-redis README default)",
            semantics="at-least-once (acked after the task; unacked reclaimed after idle_timeout)",
            concurrency=CONCURRENCY,
        ),
        Variant(
            row="taskiq-list",
            library="taskiq",
            mode="ListQueueBroker (no acks)",
            semantics="at-most-once (BRPOP: a dead worker's message is lost)",
            concurrency=CONCURRENCY,
        ),
    ]
)


def _make_broker() -> AsyncBroker:
    if env_row("taskiq") == "taskiq-list":
        return ListQueueBroker(env_url())
    return RedisStreamBroker(env_url())


# The taskiq CLI imports ``broker`` from this module, as in any taskiq project.
broker = _make_broker()


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    """The shared no-op job."""
    await noop_async()


@broker.task(task_name="latency")
async def latency(sent_ns: int) -> None:
    """The shared latency job."""
    await latency_async(sent_ns)


class TaskiqPeer(Peer):
    """taskiq's producer side: ``task.kiq``."""

    async def open(self) -> None:
        """Start the broker (declares the consumer group of the stream)."""
        await broker.startup()

    async def close(self) -> None:
        """Shut the broker down."""
        await broker.shutdown()

    async def enqueue_noop(self, i: int) -> None:
        """One ``noop.kiq`` call."""
        await noop.kiq(i)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``latency.kiq`` call carrying the enqueue time."""
        await latency.kiq(sent_ns)

    def worker_argv(self) -> list[str]:
        """The taskiq worker CLI with one worker process."""
        return [
            venv_script("taskiq"),
            "worker",
            "bench.peers.adapters.taskiq:broker",
            "--workers",
            "1",
            "--log-level",
            "WARNING",
        ]


PEER = TaskiqPeer
