"""Celery with its Redis transport (kombu).

Worker: ``celery -A bench.peers.adapters.celery worker --pool prefork
--concurrency 1``. Celery's default pool is prefork with one child per CPU;
``--concurrency 1`` keeps it to ONE process executing tasks (plus the parent
that consumes from Redis, as in every prefork deployment). Prefetch stays at its
default (``worker_prefetch_multiplier=4``); log level at celery's default,
WARNING, which prints nothing per task.

Rows:

* ``celery`` (default): the message is acknowledged when the worker receives
  it, before the task runs, so a worker that dies mid-task loses it:
  at-most-once.
* ``celery-late``: ``task_acks_late=True`` + ``task_reject_on_worker_lost=True``:
  acknowledged after the task returns, requeued if the child process dies;
  a dead worker's unacked messages come back after the transport's
  ``visibility_timeout`` (1 h by default): at-least-once.

Bulk: none genuine. ``group(...).apply_async()`` publishes one message per
task (one LPUSH each), and ``chunks`` turns N calls into fewer, bigger
messages, which changes the job; neither is measured as bulk.
"""

from __future__ import annotations

from celery import Celery

from bench.peers.adapters.base import (
    Peer,
    Variant,
    env_row,
    env_url,
    latency_sync,
    noop_sync,
    variants_by_row,
    venv_script,
)

CONCURRENCY = "1 process (prefork pool, --concurrency 1; default = one child per CPU)"

VARIANTS = variants_by_row(
    [
        Variant(
            row="celery",
            library="celery",
            mode="default (ack on receipt)",
            semantics="at-most-once (acked before the task runs)",
            concurrency=CONCURRENCY,
        ),
        Variant(
            row="celery-late",
            library="celery",
            mode="task_acks_late + task_reject_on_worker_lost",
            semantics="at-least-once (acked after the task; redelivered after visibility_timeout)",
            concurrency=CONCURRENCY,
        ),
    ]
)

# The worker CLI finds this module-level ``app``, as in any celery project.
app = Celery("peers", broker=env_url())
if env_row("celery") == "celery-late":
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
# Keeps celery 5.7 from warning at start; the default behaviour, made explicit.
app.conf.broker_connection_retry_on_startup = True


@app.task(name="peers.noop")
def noop(i: int) -> None:
    """The shared no-op job."""
    noop_sync()


@app.task(name="peers.latency")
def latency(sent_ns: int) -> None:
    """The shared latency job."""
    latency_sync(sent_ns)


class CeleryPeer(Peer):
    """Celery's producer side: ``task.delay``."""

    async def enqueue_noop(self, i: int) -> None:
        """One ``noop.delay`` call."""
        noop.delay(i)

    async def enqueue_latency(self, sent_ns: int) -> None:
        """One ``latency.delay`` call."""
        latency.delay(sent_ns)

    def worker_argv(self) -> list[str]:
        """The celery worker CLI, one prefork child."""
        return [
            venv_script("celery"),
            "-A",
            "bench.peers.adapters.celery",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
        ]


PEER = CeleryPeer
