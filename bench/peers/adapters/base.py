"""The contract every peer adapter meets, and the job bodies they all share.

Every library runs the same two jobs, written once here:

* the **no-op job** increments one Redis counter (``INCR``);
* the **latency job** gets the producer's wall-clock time in ns at enqueue and
  pushes "handler start minus enqueue time" (ns) onto one Redis list.

A row of the comparison is a :class:`Variant`: one library in one mode (its
documented default, its at-least-once mode, or a worker class that matters).
An adapter module exposes ``VARIANTS`` and a :class:`Peer` subclass; the
harness loads it by row name (see :mod:`bench.peers.adapters`).

Worker and producer processes learn the Redis URL and the row from two
environment variables, read here only, because several libraries (dramatiq,
huey, celery's CLI, taskiq's CLI) need their broker object when the module is
imported by their own worker command.
"""

from __future__ import annotations

import abc
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio

__all__ = [
    "COUNTER_KEY",
    "LATENCY_KEY",
    "Peer",
    "Variant",
    "async_redis",
    "env_row",
    "env_url",
    "latency_async",
    "latency_sync",
    "noop_async",
    "noop_sync",
    "sync_redis",
    "variants_by_row",
    "venv_script",
]

COUNTER_KEY = "peers:noop:count"
LATENCY_KEY = "peers:latency:ns"

URL_ENV = "PEERS_REDIS_URL"
ROW_ENV = "PEERS_ROW"


@dataclass(frozen=True, slots=True)
class Variant:
    """One row of the comparison.

    Attributes:
        row: The row's name on the command line (``--only``) and in results.
        library: The PyPI distribution whose version the row reports.
        mode: What is configured, in words (``default``, ``acks_late`` ...).
        semantics: ``at-least-once`` or ``at-most-once``, with the reason.
        concurrency: The worker's concurrency in its one process, and whether
            that is the library's default.
        bulk_api: The library's genuine bulk enqueue call, or None.
    """

    row: str
    library: str
    mode: str
    semantics: str
    concurrency: str
    bulk_api: str | None = None


def env_url() -> str:
    """Return the Redis URL the harness gave this process."""
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(
            f"{URL_ENV} is not set: peer adapters run under bench/peers/run.py, "
            "which starts a private redis-server and passes its URL"
        )
    return url


def env_row(default: str) -> str:
    """Return the row this process runs (``default`` when none was given)."""
    return os.environ.get(ROW_ENV) or default


_sync_client: redis.Redis | None = None
_async_client: redis.asyncio.Redis | None = None


def sync_redis() -> redis.Redis:
    """The process's blocking Redis client for job bodies (built on first use)."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(env_url())
    return _sync_client


def async_redis() -> redis.asyncio.Redis:
    """The process's asyncio Redis client for job bodies (built on first use,
    inside the worker's one event loop)."""
    global _async_client
    if _async_client is None:
        _async_client = redis.asyncio.Redis.from_url(env_url())
    return _async_client


def noop_sync() -> None:
    """The no-op job for libraries that call plain functions."""
    sync_redis().incr(COUNTER_KEY)


def latency_sync(sent_ns: int) -> None:
    """The latency job for libraries that call plain functions."""
    started_ns = time.time_ns()
    sync_redis().rpush(LATENCY_KEY, started_ns - int(sent_ns))


async def noop_async() -> None:
    """The no-op job for asyncio libraries."""
    await async_redis().incr(COUNTER_KEY)


async def latency_async(sent_ns: int) -> None:
    """The latency job for asyncio libraries."""
    started_ns = time.time_ns()
    await async_redis().rpush(LATENCY_KEY, started_ns - int(sent_ns))


def venv_script(name: str) -> str:
    """Path of a console script installed beside this interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python bench/peers/run.py --setup`")
    return str(path)


def variants_by_row(variants: Iterable[Variant]) -> dict[str, Variant]:
    """Index an adapter's variants by row name."""
    return {v.row: v for v in variants}


class Peer(abc.ABC):
    """One library in one mode, as the harness drives it.

    The producer side runs in the phase process (:mod:`bench.peers.phase`);
    the worker is the command :meth:`worker_argv` returns, which the harness
    starts as a subprocess in a process group of its own and ends by its id
    (:mod:`bench.peers.procs`). Producer methods are coroutines for every
    library; those of blocking libraries just call the blocking API (there is
    one producer, so nothing else waits on the loop).

    Args:
        variant: The row this instance runs.
        redis_url: The private Redis server's URL.
    """

    def __init__(self, variant: Variant, redis_url: str) -> None:
        self.variant = variant
        self.redis_url = redis_url

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect the producer (default: nothing to do)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the producer's connections (default: nothing to do)."""

    @abc.abstractmethod
    async def enqueue_noop(self, i: int) -> None:
        """Enqueue one no-op job with one call of the library's enqueue API."""

    @abc.abstractmethod
    async def enqueue_latency(self, sent_ns: int) -> None:
        """Enqueue one latency job whose payload is ``sent_ns``."""

    async def enqueue_noop_bulk(self, start: int, n: int) -> None:
        """Enqueue ``n`` no-op jobs with one call of the library's bulk API.

        Raises:
            NotImplementedError: The library has no genuine bulk enqueue.
        """
        raise NotImplementedError(f"{self.variant.row} has no bulk enqueue API")

    @abc.abstractmethod
    def worker_argv(self) -> list[str]:
        """The command that runs this library's worker as ONE worker process.

        It runs with the repository root as working directory and on
        ``PYTHONPATH``, and with the URL and row in the environment.
        """
