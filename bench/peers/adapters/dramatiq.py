"""Dramatiq with its Redis broker.

Worker: ``dramatiq bench.peers.adapters.dramatiq --processes 1 --threads 8``.
Dramatiq's default is one worker process per CPU with 8 threads each;
``--processes 1`` keeps it to ONE worker process (plus the supervising parent,
as in every dramatiq deployment), with the default 8 threads. Logging stays at
dramatiq's default (no line per message).

Semantics: at-least-once by default, and there is no other mode with this
broker: a message is acknowledged after the actor returns, and the unacked
messages of a worker whose heartbeat stops (60 s) are requeued.

Bulk: none genuine. ``group(...).run()`` enqueues its children one by one.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_url,
    latency_sync,
    noop_sync,
    variants_by_row,
    venv_script,
)

QUEUE = "default"
# Dramatiq's own default threads per worker process, passed explicitly.
THREADS = 8

VARIANTS = variants_by_row(
    [
        Variant(
            row="dramatiq",
            library="dramatiq",
            mode="default (RedisBroker)",
            semantics="at-least-once (acked after the actor; a dead worker's messages requeued)",
            concurrency=f"1 worker process (--processes 1; default = one per CPU), "
            f"{THREADS} threads (default)",
        )
    ]
)

# The dramatiq CLI imports this module in its worker process and needs the
# broker and actors declared at import, as in any dramatiq project.
broker = RedisBroker(url=env_url())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name=QUEUE)
def noop(i: int) -> None:
    """The shared no-op job."""
    noop_sync()


@dramatiq.actor(actor_name="latency", queue_name=QUEUE)
def latency(sent_ns: int) -> None:
    """The shared latency job."""
    latency_sync(sent_ns)


class DramatiqPeer(Peer):
    """Dramatiq's producer side: ``actor.send``."""

    async def enqueue_noop(self, i: int) -> None:
        """One ``noop.send`` call."""
        noop.send(i)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``latency.send`` call."""
        latency.send(sent_ns)

    async def close(self) -> None:
        """Close the broker's connections."""
        broker.close()

    def worker_argv(self) -> list[str]:
        """The dramatiq CLI with one worker process."""
        return [
            venv_script("dramatiq"),
            "bench.peers.adapters.dramatiq",
            "--processes",
            "1",
            "--threads",
            str(THREADS),
        ]


PEER = DramatiqPeer
