"""Connections of taskbus's own for synchronous script calls, beside the pool.

A blocking client's pool costs more per checkout than the script call it
carries: redis-py takes a lock each way, polls the socket to see that nothing
is left unread, and records metrics. One-task enqueue from sync code paid it on
every call, about 15% of its time on the benchmark machine (issue 7). Here
script calls take a connection from a free list of their own instead, built
from the pool's settings but not counted by it:

* taking and giving back is a ``deque`` pop and append (atomic, no lock);
  a call holds its connection until the replies are read, so no other caller
  sees it half-read, and one that fails mid-exchange is dropped, not given back;
* threads (or greenlets) that come and go share the list, so none leaks a
  connection and none pays a new connect per call; the list holds at most as
  many connections as calls ever ran at once;
* the list lives on the pool object, so it goes when the pool goes;
* a process that finds a list made before a fork (by pid, checked per call:
  servers such as uWSGI fork without running Python's fork hooks) starts an
  empty one; redis-py does not shut down a socket another process made.

Only a plain :class:`redis.ConnectionPool` takes part, and only where redis-py
does not manage connections after they are made: a blocking pool bounds them
on purpose, client-side caching, sentinel pools, RESP3 maintenance
notifications and credential providers (tokens refreshed on live
connections) all act on the pool's own connections. Those clients, and
single-connection ones, keep using the pool.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from redis import ConnectionPool
from redis import Redis as SyncRedis

__all__ = ["close", "give_back", "take"]

_ATTR = "_taskbus_idle"


class _Idle:
    """The idle connections of one pool's settings, in one process."""

    __slots__ = ("conns", "pid")

    def __init__(self) -> None:
        self.conns: deque[Any] = deque()
        self.pid = os.getpid()


def _eligible(client: SyncRedis) -> ConnectionPool | None:
    pool = getattr(client, "connection_pool", None)
    if type(pool) is not ConnectionPool or client.connection is not None:
        return None
    kwargs = pool.connection_kwargs
    if (
        getattr(pool, "cache", None) is not None
        or kwargs.get("credential_provider") is not None
        or kwargs.get("maint_notifications_pool_handler") is not None
    ):
        return None
    return pool


def _idle(pool: ConnectionPool) -> _Idle:
    idle: _Idle | None = getattr(pool, _ATTR, None)
    if idle is None or idle.pid != os.getpid():
        # Two threads may both get here; one list wins, and the other's
        # connection joins it when given back.
        idle = _Idle()
        setattr(pool, _ATTR, idle)
    return idle


def take(client: SyncRedis) -> Any | None:
    """A connection for one exchange on ``client``'s server, or None where the
    client does not take part (see the module docstring).

    Give it back with :func:`give_back` once every reply is read; after an
    error, disconnect it instead. A new connection connects on its first
    command.
    """
    pool = _eligible(client)
    if pool is None:
        return None
    try:
        return _idle(pool).conns.pop()
    except IndexError:
        return pool.connection_class(**pool.connection_kwargs)


def give_back(client: SyncRedis, conn: Any) -> None:
    """Return a connection from :func:`take` whose replies were all read."""
    idle: _Idle | None = getattr(client.connection_pool, _ATTR, None)
    # No getpid here: take() checked it, so a list and a connection of the
    # same process match by their pids.
    if idle is not None and idle.pid == conn.pid:
        idle.conns.append(conn)


def close(client: SyncRedis) -> None:
    """Close the idle connections kept for ``client``'s pool.

    A connection in use by a call in another thread is left to finish; it is
    kept when given back. Calls made afterwards connect again.
    """
    pool = _eligible(client)
    idle: _Idle | None = getattr(pool, _ATTR, None) if pool is not None else None
    if idle is None or idle.pid != os.getpid():
        return
    while True:
        try:
            conn = idle.conns.pop()
        except IndexError:
            return
        conn.disconnect()
