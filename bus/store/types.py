"""The store's names for the layers above: client types and the errors a store call raises.

Modules outside :mod:`bus.store` never import redis-py (docs/architecture.md).
They hold a client as :data:`AsyncClient` or :data:`SyncClient`, built by
:mod:`bus.store.connection`, and hand it back to the store's functions; they
catch :data:`STORE_ERRORS` where a store call can fail with the server's own
error (public calls translate those to :mod:`bus.errors`), and ask
:func:`is_connection_trouble` whether the connection, not a command, failed.
A cluster client (the cluster issue) widens these names here and nowhere else.
"""

from __future__ import annotations

from typing import TypeAlias

from redis import Redis as _SyncRedis
from redis.asyncio import Redis as _AsyncRedis
from redis.exceptions import ConnectionError as _ConnectionError
from redis.exceptions import RedisError as _RedisError
from redis.exceptions import TimeoutError as _TimeoutError

__all__ = ["STORE_ERRORS", "AsyncClient", "StoreError", "SyncClient", "is_connection_trouble"]

#: The asyncio client the store's async functions take.
AsyncClient: TypeAlias = _AsyncRedis
#: The blocking client the store's ``*_sync`` functions take.
SyncClient: TypeAlias = _SyncRedis
#: The base class of the errors a store call raises that are not taskbus's.
StoreError: TypeAlias = _RedisError
#: What to catch around a store call (``except STORE_ERRORS as exc``).
STORE_ERRORS: tuple[type[Exception], ...] = (_RedisError,)


def is_connection_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection failed or timed out (not a refused command)."""
    return isinstance(exc, (_ConnectionError, _TimeoutError))
