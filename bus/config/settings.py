"""Settings of taskbus, and the one place environment variables are read.

:class:`Settings` is a frozen dataclass built once (usually by
:meth:`Settings.from_env`) and passed around. Every field has one ``BUS_*``
environment variable:

===========================  =====================  ==========================
Variable                     Field                  Default
===========================  =====================  ==========================
``BUS_REDIS_URL``            ``redis_url``          unset: the embedded server
``BUS_DATA_DIR``             ``data_dir``           ``.bus`` (absolute)
``BUS_APPENDFSYNC``          ``appendfsync``        ``everysec``
``BUS_PREFIX``               ``prefix``             ``bus``
``BUS_SCHEMAS_DIR``          ``schemas_dir``        ``schemas``
``BUS_APPS_DIR``             ``apps_dir``           ``apps``
``BUS_LOG_LEVEL``            ``log_level``          ``info``
``BUS_MAX_PAYLOAD_BYTES``    ``max_payload_bytes``  ``262144``
``BUS_DEDUP_WINDOW_S``       ``dedup_window_s``     ``86400``
``BUS_RETENTION_S``          ``retention_s``        ``86400``
``BUS_REDIS_TIMEOUT_S``      ``redis_timeout_s``    ``5``
===========================  =====================  ==========================

Any other ``BUS_*`` variable is an error naming it, so a typo is never silently
ignored. The one exception is the ``BUS_TEST_*`` family, which belongs to the
test suite (e.g. ``BUS_TEST_REDIS_SERVER``) and is never read here.

An empty value is an error, except for ``BUS_REDIS_URL`` where it means "not
set" (so ``BUS_REDIS_URL=${REDIS_URL:-}`` in a compose file selects the
embedded server).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from bus.errors import ConfigError

__all__ = ["ENV_PREFIX", "ENV_VARS", "TEST_ENV_PREFIX", "AppendFsync", "Settings", "redact_url"]

AppendFsync = Literal["always", "everysec", "no"]

#: Prefix of every environment variable taskbus reads.
ENV_PREFIX = "BUS_"
#: Prefix reserved for the test suite; ignored by :meth:`Settings.from_env`.
TEST_ENV_PREFIX = "BUS_TEST_"

#: Environment variable of each settings field.
ENV_VARS: Mapping[str, str] = {
    "redis_url": "BUS_REDIS_URL",
    "data_dir": "BUS_DATA_DIR",
    "appendfsync": "BUS_APPENDFSYNC",
    "prefix": "BUS_PREFIX",
    "schemas_dir": "BUS_SCHEMAS_DIR",
    "apps_dir": "BUS_APPS_DIR",
    "log_level": "BUS_LOG_LEVEL",
    "max_payload_bytes": "BUS_MAX_PAYLOAD_BYTES",
    "dedup_window_s": "BUS_DEDUP_WINDOW_S",
    "retention_s": "BUS_RETENTION_S",
    "redis_timeout_s": "BUS_REDIS_TIMEOUT_S",
}

_REDIS_SCHEMES = ("redis", "rediss", "unix")
_APPENDFSYNC_VALUES: tuple[str, ...] = get_args(AppendFsync)
_LOG_LEVELS = ("debug", "info", "warning", "error")
# ":" separates key parts and braces delimit the Redis Cluster hash tag, so a
# prefix holding either would corrupt the key layout.
_PREFIX_FORBIDDEN = "{}:"


@dataclass(frozen=True)
class Settings:
    """Validated settings of one taskbus process.

    Build it with :meth:`from_env`; direct construction is for tests and
    embedding programs, and is validated the same way.

    Attributes:
        redis_url: URL of the Redis server (``redis://``, ``rediss://`` or
            ``unix://``); None starts the embedded server in ``data_dir``.
        data_dir: Directory of the embedded server (socket, AOF, logs); always
            absolute.
        appendfsync: AOF fsync policy of the embedded server.
        prefix: First part of every Redis key.
        schemas_dir: Directory of the event JSON schemas.
        apps_dir: Directory of the app definitions.
        log_level: One of ``debug``, ``info``, ``warning``, ``error``.
        max_payload_bytes: Largest accepted serialised payload.
        dedup_window_s: How long a published event id is remembered.
        retention_s: How long finished tasks are kept.
        redis_timeout_s: How long a connection attempt, or the reply to a
            command, may take before the server counts as unreachable
            (``RedisUnavailable``); blocking waits add their own time to it.
    """

    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".bus"))
    appendfsync: AppendFsync = "everysec"
    prefix: str = "bus"
    schemas_dir: Path = field(default_factory=lambda: Path("schemas"))
    apps_dir: Path = field(default_factory=lambda: Path("apps"))
    log_level: str = "info"
    max_payload_bytes: int = 262144
    dedup_window_s: int = 86400
    retention_s: int = 86400
    redis_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        """Validate every field and make ``data_dir`` absolute.

        Raises:
            ConfigError: A field holds a value that is not allowed.
        """
        for name in ENV_VARS:
            _CHECKS[name](getattr(self, name), f"Settings.{name}")
        # The embedded server's socket, pidfile and AOF must not move when the
        # process changes directory, so the data dir is pinned at construction.
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``BUS_*`` environment variables.

        Args:
            environ: The variables to read; ``os.environ`` when None. Tests pass
                an explicit dict so the real environment never leaks in.

        Returns:
            The validated settings; unset variables take their defaults.

        Raises:
            ConfigError: A variable is unknown, or its value is not allowed. The
                message names the variable, the value and what is allowed.
        """
        env = os.environ if environ is None else environ
        _reject_unknown(env)
        values: dict[str, Any] = {}
        for name, env_var in ENV_VARS.items():
            raw = env.get(env_var)
            if raw is None:
                continue
            if raw.strip() == "":
                if name == "redis_url":
                    continue
                raise ConfigError(
                    f"{env_var} is set but empty; unset it to use the default, "
                    f"or give a value ({_ALLOWED[name]})"
                )
            values[name] = _PARSERS[name](raw.strip(), env_var)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (validated like the original).

        Args:
            **changes: Field names and their new values.

        Returns:
            The new settings.

        Raises:
            ConfigError: A new value is not allowed.
            TypeError: A name is not a settings field.
        """
        return dataclasses.replace(self, **changes)


def _reject_unknown(env: Mapping[str, str]) -> None:
    known = set(ENV_VARS.values())
    unknown = sorted(
        key
        for key in env
        if key.startswith(ENV_PREFIX) and not key.startswith(TEST_ENV_PREFIX) and key not in known
    )
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise ConfigError(
        f"unknown environment variable{'s' if len(unknown) > 1 else ''}: {', '.join(hints)}; "
        f"taskbus reads only {', '.join(sorted(known))} "
        f"({TEST_ENV_PREFIX}* is reserved for the test suite)"
    )


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable url>"


def _bad(where: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{where}={value!r} is not allowed; expected {allowed}")


def _check_redis_url(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _bad(where, value, _ALLOWED["redis_url"])
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise _bad(where, redact_url(value), _ALLOWED["redis_url"]) from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise _bad(where, redact_url(value), _ALLOWED["redis_url"])
    if parts.scheme == "unix" and not parts.path:
        raise _bad(where, redact_url(value), "a socket path, as in unix:///run/redis.sock")


def _check_path(value: object, where: str) -> None:
    if not isinstance(value, Path):
        raise _bad(where, value, "a pathlib.Path")


def _check_choice(choices: tuple[str, ...]) -> Callable[[object, str], None]:
    def check(value: object, where: str) -> None:
        if value not in choices:
            raise _bad(where, value, f"one of {', '.join(choices)}")

    return check


def _check_prefix(value: object, where: str) -> None:
    if (
        not isinstance(value, str)
        or not value
        or any(c in _PREFIX_FORBIDDEN or c.isspace() for c in value)
    ):
        raise _bad(where, value, _ALLOWED["prefix"])


def _check_positive_int(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(where, value, "a positive integer")


def _check_positive_number(value: object, where: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _bad(where, value, "a positive number of seconds")


def _parse_str(raw: str, env_var: str) -> str:
    return raw


def _parse_path(raw: str, env_var: str) -> Path:
    return Path(raw).expanduser()


def _parse_lower(raw: str, env_var: str) -> str:
    return raw.lower()


def _parse_positive_int(raw: str, env_var: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise _bad(env_var, raw, "a positive integer") from None
    return value


def _parse_positive_number(raw: str, env_var: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise _bad(env_var, raw, "a positive number of seconds") from None


def _validating(
    parse: Callable[[str, str], object], check: Callable[[object, str], None]
) -> Callable[[str, str], object]:
    def parse_and_check(raw: str, env_var: str) -> object:
        value = parse(raw, env_var)
        check(value, env_var)
        return value

    return parse_and_check


_ALLOWED: Mapping[str, str] = {
    "redis_url": "a URL starting with redis://, rediss:// or unix://",
    "data_dir": "a directory path",
    "appendfsync": f"one of {', '.join(_APPENDFSYNC_VALUES)}",
    "prefix": "a non-empty string without '{', '}', ':' or whitespace",
    "schemas_dir": "a directory path",
    "apps_dir": "a directory path",
    "log_level": f"one of {', '.join(_LOG_LEVELS)}",
    "max_payload_bytes": "a positive integer",
    "dedup_window_s": "a positive integer",
    "retention_s": "a positive integer",
    "redis_timeout_s": "a positive number of seconds",
}

_CHECKS: Mapping[str, Callable[[object, str], None]] = {
    "redis_url": _check_redis_url,
    "data_dir": _check_path,
    "appendfsync": _check_choice(_APPENDFSYNC_VALUES),
    "prefix": _check_prefix,
    "schemas_dir": _check_path,
    "apps_dir": _check_path,
    "log_level": _check_choice(_LOG_LEVELS),
    "max_payload_bytes": _check_positive_int,
    "dedup_window_s": _check_positive_int,
    "retention_s": _check_positive_int,
    "redis_timeout_s": _check_positive_number,
}

_PARSERS: Mapping[str, Callable[[str, str], object]] = {
    "redis_url": _validating(_parse_str, _check_redis_url),
    "data_dir": _validating(_parse_path, _check_path),
    "appendfsync": _validating(_parse_lower, _CHECKS["appendfsync"]),
    "prefix": _validating(_parse_str, _check_prefix),
    "schemas_dir": _validating(_parse_path, _check_path),
    "apps_dir": _validating(_parse_path, _check_path),
    "log_level": _validating(_parse_lower, _CHECKS["log_level"]),
    "max_payload_bytes": _validating(_parse_positive_int, _check_positive_int),
    "dedup_window_s": _validating(_parse_positive_int, _check_positive_int),
    "retention_s": _validating(_parse_positive_int, _check_positive_int),
    "redis_timeout_s": _validating(_parse_positive_number, _check_positive_number),
}
