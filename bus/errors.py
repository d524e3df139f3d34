"""Exception classes of taskbus.

Every error taskbus raises derives from :class:`BusError`, so callers can catch
the library's errors as one family. Messages say what was wrong, where, and what
to do about it. Modules that own a concept define their specific subclasses next
to the code (e.g. schema errors in ``bus.schemas``); the ones shared across
modules live here.
"""

from __future__ import annotations

__all__ = ["BusError", "ConfigError", "RedisSetupError"]


class BusError(Exception):
    """Base class of every error taskbus raises."""


class ConfigError(BusError):
    """A setting, environment variable or config file is invalid."""


class RedisSetupError(BusError):
    """The Redis server cannot be used safely (unreachable, evicting keys, ...)."""
