"""Connections of taskbus's own for synchronous script calls: one per thread.

A blocking client's pool costs more per checkout than the script call it
carries: redis-py takes a lock each way, polls the socket to see that nothing
is left unread, and records metrics. One-task enqueue from sync code paid it on
every call (about 30 us of a 90 us round trip on the benchmark machine, issue
7). Here each thread that calls scripts through a pool keeps one connection of
its own, built from the pool's settings but not counted by it:

* it belongs to one thread, so it needs no lock and is never left half-read
  for another caller;
* it lives as long as the thread: when the thread ends its connection is
  garbage and closes itself, so threads that come and go leak nothing (a
  connection taken from the pool and never given back would fill the pool);
* a forked child opens its own instead of sharing the parent's socket (the
  table is replaced at the fork, not checked by pid per call: getpid is a
  system call);
* :func:`close` closes every one of them (``Bus.close_sync``).

Only a plain :class:`redis.ConnectionPool` without client-side caching takes
part. A :class:`redis.BlockingConnectionPool` bounds the connections on
purpose, a sentinel pool picks its server per connection, and a single-
connection client has no pool to mirror: those keep using the pool.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from redis import ConnectionPool
from redis import Redis as SyncRedis

__all__ = ["close", "connection"]


class _Owned:
    """The connections of one pool's settings, one per thread."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._factory = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        self._local = threading.local()
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._factory(**self._kwargs)
            with self._lock:
                self._all.add(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
        for conn in conns:
            conn.disconnect()


_BY_POOL: weakref.WeakKeyDictionary[ConnectionPool, _Owned] = weakref.WeakKeyDictionary()
_BY_POOL_LOCK = threading.Lock()


def _forked() -> None:
    """In a forked child: forget the parent's connections (and locks another
    thread may have held at the fork); they close as garbage, and redis-py
    does not shut down a socket made by another process."""
    global _BY_POOL, _BY_POOL_LOCK
    _BY_POOL = weakref.WeakKeyDictionary()
    _BY_POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def _owned(client: SyncRedis, create: bool) -> _Owned | None:
    pool = getattr(client, "connection_pool", None)
    if (
        type(pool) is not ConnectionPool
        or client.connection is not None
        or getattr(pool, "cache", None) is not None
    ):
        return None
    owned = _BY_POOL.get(pool)
    if owned is None and create:
        with _BY_POOL_LOCK:
            owned = _BY_POOL.get(pool)
            if owned is None:
                owned = _BY_POOL[pool] = _Owned(pool)
    return owned


def connection(client: SyncRedis) -> Any | None:
    """This thread's own connection for ``client``'s server; None where the
    client's pool does not take part (see the module docstring).

    The connection connects on its first command; after an error redis-py has
    disconnected it and the next command connects again.
    """
    owned = _owned(client, create=True)
    return owned.get() if owned is not None else None


def close(client: SyncRedis) -> None:
    """Close the connections opened here for ``client``'s pool, in every thread.

    A thread that calls again afterwards connects again.
    """
    owned = _owned(client, create=False)
    if owned is not None:
        owned.close()
