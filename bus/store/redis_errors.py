"""Turning redis-py's exceptions into taskbus's, at the public boundary.

Public calls (the :class:`bus.Bus` methods, ``bus.publish``, the read/admin
API of ``bus.inspect.status``, ``bus.inspect.lineage`` and ``bus.inspect.deadletters``, the CLI's
commands) run under :func:`redis_errors`, :func:`maps_redis_errors` or
:func:`maps_client_errors`, so a
caller sees one family of errors (see :mod:`bus.errors`) and one message that
says what to do, never a redis-py traceback:

==============================================  ==============================
redis-py raised                                 the caller gets
==============================================  ==============================
``ConnectionError``, ``TimeoutError``           :class:`RedisUnavailable`
``AuthenticationError``, ``NOAUTH``, ...        :class:`RedisAuthError`
``NoPermissionError`` (NOPERM), a script's ACL  :class:`RedisPermissionError`
an SSL error or handshake failure               :class:`RedisTLSError`
any other ``RedisError`` (WRONGTYPE, OOM, ...)  :class:`RedisCommandError`
==============================================  ==============================

taskbus's own errors pass through unchanged (e.g. the publisher's partial
fan-out error), and the redis-py exception stays chained as ``__cause__``.

A NOPERM reply does not say which key was refused, so the message names the
command and its keys from a note attached where the command was sent
(:func:`note_command`): by the clients :mod:`bus.store.connection` builds, by the
script runner of :mod:`bus.store.transport`, or from redis-py's own annotation of a
failed pipeline command.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import ssl
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.config.settings import Settings, redact_url
from bus.errors import (
    BusError,
    RedisAuthError,
    RedisCommandError,
    RedisPermissionError,
    RedisTLSError,
    RedisUnavailable,
)

__all__ = [
    "NotingClient",
    "NotingSyncClient",
    "ServerRef",
    "maps_client_errors",
    "maps_redis_errors",
    "note_command",
    "redis_errors",
    "translate",
]

P = ParamSpec("P")
T = TypeVar("T")

# Commands whose first argument is not a key (the ones taskbus sends).
_KEYLESS = frozenset(
    {"ACL", "AUTH", "CLIENT", "CONFIG", "HELLO", "INFO", "PING", "SCAN", "SCRIPT", "SELECT", "TIME"}
)
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \((?P<command>.*?)\) of pipeline caused error: ")
_ARG_CHARS = 60


@dataclass(frozen=True, slots=True)
class ServerRef:
    """Which server a message is about, without its password.

    Attributes:
        name: e.g. ``the Redis server at redis://app:***@cache:6379/0
            (BUS_REDIS_URL)`` or ``the embedded Redis server in /srv/.bus``.
        prefix: The key prefix, for the ACL hint.
        tls: The URL is ``rediss://``.
        has_password: The URL gives a password.
        timeout_s: The socket timeout, for the timeout hint (None: unknown).
        timeout_from: Where that timeout is set.
    """

    name: str
    prefix: str
    tls: bool
    has_password: bool
    timeout_s: float | None
    timeout_from: str = "BUS_REDIS_TIMEOUT_S"

    @classmethod
    def of(cls, settings: Settings) -> ServerRef:
        """Describe the server ``settings`` connect to."""
        url = settings.redis_url
        if url is None:
            return cls(
                f"the embedded Redis server in {settings.data_dir}",
                settings.prefix,
                tls=False,
                has_password=False,
                timeout_s=settings.redis_timeout_s,
            )
        parts = urlsplit(url)
        return cls(
            f"the Redis server at {redact_url(url)} (BUS_REDIS_URL)",
            settings.prefix,
            tls=parts.scheme == "rediss",
            has_password=bool(parts.password),
            timeout_s=settings.redis_timeout_s,
        )

    @classmethod
    def of_client(cls, client: Any, prefix: str) -> ServerRef:
        """Describe the server a caller's own client talks to (no password shown)."""
        pool = getattr(client, "connection_pool", None)
        kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", None) or {})
        tls = "SSL" in type(pool).__name__ or "SSL" in getattr(
            getattr(pool, "connection_class", None), "__name__", ""
        )
        if kwargs.get("path"):
            url = f"unix://{kwargs['path']}"
        else:
            user = kwargs.get("username") or ""
            auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
            host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
            url = f"{'rediss' if tls else 'redis'}://{auth}{host}:{port}/{kwargs.get('db', 0)}"
        return cls(
            f"the Redis server at {url}",
            prefix,
            tls=tls,
            has_password=bool(kwargs.get("password")),
            timeout_s=kwargs.get("socket_timeout"),
            timeout_from="the client's socket_timeout",
        )


@dataclass(frozen=True, slots=True)
class _Noted:
    command: str
    keys: tuple[str, ...]


def note_command(exc: BaseException, command: str, keys: Sequence[str]) -> None:
    """Remember on ``exc`` which command (and keys) the server refused.

    Args:
        exc: The exception the command raised; its type and message stay.
        command: The command as a reader knows it, e.g. ``HGET`` or
            ``EVALSHA enqueue.lua``.
        keys: The keys the command was given.
    """
    if getattr(exc, "_bus_command", None) is None:
        exc._bus_command = _Noted(command, tuple(keys))  # type: ignore[attr-defined]


def _text(value: object) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= _ARG_CHARS else text[: _ARG_CHARS - 3] + "..."


def _from_args(args: Sequence[object]) -> _Noted:
    words = [_text(a) for a in args]
    name = words[0].upper() if words else "?"
    if name in ("EVALSHA", "EVAL") and len(words) > 2 and words[2].isdigit():
        return _Noted(name, tuple(words[3 : 3 + int(words[2])]))
    if name in _KEYLESS or len(words) < 2:
        return _Noted(" ".join([name, *words[1:2]]) if name in _KEYLESS else name, ())
    return _Noted(name, (words[1],))


def _command_of(exc: RedisError) -> tuple[_Noted | None, str]:
    """Return the noted command (if known) and the server's own message."""
    message = str(exc)
    noted: _Noted | None = getattr(exc, "_bus_command", None)
    match = _PIPELINE_NOTE.match(message)
    if match is not None:
        message = message[match.end() :]
        if noted is None:
            noted = _from_args(match.group("command").split())
    return noted, message


def _describe(noted: _Noted | None) -> str:
    if noted is None:
        return "a command (which one was not recorded)"
    if not noted.keys:
        return noted.command
    label = "key" if len(noted.keys) == 1 else "keys"
    return f"{noted.command} on {label} {', '.join(noted.keys)}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_tls_failure(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, ssl.SSLError):
            return True
        text = str(link)
        if "SSL" in text or "handshake" in text:
            return True
    return False


def _is_permission_error(exc: RedisError, message: str) -> bool:
    if isinstance(exc, NoPermissionError):
        return True
    # A script's redis.call() refused by the ACL: Redis 7.0 answers ERR, not NOPERM.
    return isinstance(exc, ResponseError) and (
        "can't run this command" in message or "no permissions" in message.lower()
    )


def _is_auth_error(exc: RedisError, message: str) -> bool:
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return True
    if isinstance(exc, AuthenticationWrongNumberOfArgsError):
        return True
    return isinstance(exc, ResponseError) and message.startswith(("NOAUTH", "WRONGPASS"))


def translate(exc: RedisError, server: ServerRef) -> BusError:
    """Return the taskbus error for a redis-py exception (the caller chains it).

    Args:
        exc: What redis-py raised.
        server: The server it was talking to, for the message.

    Returns:
        A :class:`RedisUnavailable` (or subclass) when the server cannot be
        used, a :class:`RedisCommandError` when it refused one command.
    """
    noted, message = _command_of(exc)
    if _is_auth_error(exc, message):
        lowered = message.lower()
        missing = "noauth" in lowered or "already authenticated" in lowered or "required" in lowered
        if missing and not server.has_password:
            why = "the server requires a password and none is given"
        elif "invalid username-password" in lowered or "wrongpass" in lowered:
            why = "wrong user name or password"
        else:
            why = message
        return RedisAuthError(
            f"authentication failed at {server.name}: {why} ({message}); put the user and "
            "password in BUS_REDIS_URL, as in redis://USER:PASSWORD@HOST:6379/0"
        )
    if _is_permission_error(exc, message):
        return RedisPermissionError(
            f"permission denied at {server.name}: its ACL does not let this user run "
            f"{_describe(noted)} ({message}); grant the user the commands taskbus sends "
            f"and the keys {server.prefix}:* (ACL SETUSER), or connect as a user that has them"
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        if server.tls and _is_tls_failure(exc):
            return RedisTLSError(
                f"TLS failed with {server.name}: {_cause_text(exc)}; check that the server "
                "speaks TLS on that port, and give the CA that signed its certificate with "
                "?ssl_ca_certs=/path/to/ca.pem in the URL (ssl_cert_reqs=none turns "
                "verification off)"
            )
        if isinstance(exc, RedisTimeoutError):
            tls_hint = (
                "; over rediss:// this is also what a server without TLS on that port looks like"
                if server.tls
                else ""
            )
            within = (
                f"within {server.timeout_s:g}s ({server.timeout_from})"
                if server.timeout_s is not None
                else "in time"
            )
            return RedisUnavailable(
                f"cannot reach {server.name}: no answer {within}: {_cause_text(exc)}"
                f"{tls_hint}; check that the server runs and is reachable"
            )
        return RedisUnavailable(
            f"cannot reach {server.name}: {_cause_text(exc)}; check the setting and that "
            "the server runs"
        )
    return RedisCommandError(f"{server.name} refused {_describe(noted)}: {message}")


def _cause_text(exc: BaseException) -> str:
    texts: list[str] = []
    for link in _chain(exc):
        text = str(link).strip().rstrip(".")
        # redis-py repeats its cause's text in its own message: keep it once.
        if text and not any(text in seen for seen in texts):
            texts.append(text)
    return ": ".join(texts[:2]) or type(exc).__name__


@contextlib.contextmanager
def redis_errors(server: ServerRef | Settings) -> Iterator[None]:
    """Run a block whose redis-py errors become taskbus errors (see :func:`translate`).

    Args:
        server: The server the block talks to (or the settings naming it).

    Raises:
        BusError: A :class:`RedisUnavailable` or :class:`RedisCommandError`
            for a redis-py error, with that error as ``__cause__``; taskbus's
            own errors pass unchanged.
    """
    try:
        yield
    except RedisError as exc:
        ref = ServerRef.of(server) if isinstance(server, Settings) else server
        raise translate(exc, ref) from exc


def maps_redis_errors(method: Callable[P, T]) -> Callable[P, T]:
    """Decorate a method (sync or async) of an object with a ``settings`` attribute.

    The method's redis-py errors become taskbus errors, as under
    :func:`redis_errors`.
    """
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except RedisError as exc:
                raise translate(exc, ServerRef.of(args[0].settings)) from exc

        return cast(Callable[P, T], async_wrapper)

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except RedisError as exc:
            raise translate(exc, ServerRef.of(args[0].settings)) from exc  # type: ignore[attr-defined]

    return wrapper


def maps_client_errors(
    func: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate an async inspect/admin function called as ``func(client, prefix, ...)``.

    The read/admin API (:mod:`bus.inspect`: status, lineage, dead letters)
    takes the caller's own client, so the server is described from that
    client; its redis-py errors become taskbus errors as under
    :func:`redis_errors`.
    """

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except RedisError as exc:
            prefix = args[1] if len(args) > 1 and isinstance(args[1], str) else "bus"
            client = args[0] if args else kwargs.get("client")
            raise translate(exc, ServerRef.of_client(client, prefix)) from exc

    return wrapper


class NotingClient(redis.asyncio.Redis):
    """The asyncio client :mod:`bus.store.connection` builds: notes the refused command.

    An exception costs nothing until it is raised, so a command that succeeds
    pays one frame more and nothing else.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command (see redis-py); a refused one is noted on its error."""
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            noted = _from_args(args)
            note_command(exc, noted.command, noted.keys)
            raise


class NotingSyncClient(redis.Redis):
    """The blocking twin of :class:`NotingClient`."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command (see redis-py); a refused one is noted on its error."""
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            noted = _from_args(args)
            note_command(exc, noted.command, noted.keys)
            raise
