"""Exception classes of taskbus.

Every error taskbus raises derives from :class:`BusError`, so callers can catch
the library's errors as one family. Messages say what was wrong, where, and what
to do about it. Modules that own a concept define their specific subclasses next
to the code (e.g. schema errors in ``bus.events.schemas``); the ones shared across
modules live here.

Redis trouble at a public call arrives as one of these (``bus.store.redis_errors``
translates redis-py's exceptions, the original chained as ``__cause__``)::

    BusError
    ├── RedisSetupError          the server is unsafe (evicts keys, too old)
    │   └── RedisUnavailable     the server cannot be used right now
    │       ├── RedisAuthError         wrong or missing user/password
    │       ├── RedisPermissionError   an ACL forbids a command or key (NOPERM)
    │       └── RedisTLSError          the TLS handshake or certificate failed
    └── RedisCommandError        the server refused one command (WRONGTYPE, OOM, ...)

A caller that degrades gracefully when Redis is gone catches
:class:`RedisUnavailable`; its ``transient`` flag says whether trying again
later can help (a refused connection, a timeout) or whether a setting must be
fixed first (a password, an ACL, a certificate).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BusError",
    "ConfigError",
    "RedisAuthError",
    "RedisCommandError",
    "RedisPermissionError",
    "RedisSetupError",
    "RedisTLSError",
    "RedisUnavailable",
]


class BusError(Exception):
    """Base class of every error taskbus raises."""


class ConfigError(BusError):
    """A setting, environment variable or config file is invalid."""


class RedisSetupError(BusError):
    """The Redis server cannot be used safely (unreachable, evicting keys, ...)."""


class RedisUnavailable(RedisSetupError):
    """The Redis server cannot be reached or used: refused, timed out, or gone.

    Attributes:
        transient: Trying again later may succeed (the server may come
            back); False for the subclasses, where a setting must change.
    """

    transient: ClassVar[bool] = True


class RedisAuthError(RedisUnavailable):
    """The server refused the login: a wrong password, or none where one is needed."""

    transient: ClassVar[bool] = False


class RedisPermissionError(RedisUnavailable):
    """The server's ACL forbids the user a command or a key taskbus needs (NOPERM)."""

    transient: ClassVar[bool] = False


class RedisTLSError(RedisUnavailable):
    """The TLS connection failed: no TLS on that port, or a certificate not trusted."""

    transient: ClassVar[bool] = False


class RedisCommandError(BusError):
    """The server answered a command with an error (WRONGTYPE, OOM, ...)."""
