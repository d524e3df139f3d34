"""The registry's entries: what one subscription or task declaration says, and
the checks that tell a damaged entry from a sound one.

The registry (``bus.events.registry``) keeps two hashes, app -> JSON list: the app's
subscriptions (``subs``) and its task declarations (``tasks``, the ``[[tasks]]``
and ``[[recurring]]`` of its app.toml, for producers that enqueue by app name
without the app's code). Anything can be in Redis: an entry written by hand,
truncated, re-encoded, or left by another version. Every entry is checked here
field by field before routing or enqueueing uses it; a bad one raises
:class:`EntryDamaged` with the reason, so that the registry skips that app's
entry alone and the rest keeps working.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson

from bus.core.options import Backoff, OptionError, TaskOptions
from bus.errors import BusError
from bus.store.keys import validate_app_name

__all__ = [
    "EntryDamaged",
    "SubscriptionSpec",
    "TaskSpec",
    "app_name_of",
    "read_subscriptions",
    "read_tasks",
]


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """One subscription as registered: what it matches and how its tasks run."""

    app: str
    name: str
    events: tuple[str, ...]
    where: dict[str, Any] | None = None
    queue: str = "default"
    max_attempts: int = 5
    backoff: Any = None
    timeout_s: float = 60.0
    delay_s: float = 0.0
    scope: str = "any"

    def to_doc(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in the registry."""
        doc = asdict(self)
        doc["events"] = list(self.events)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SubscriptionSpec:
        """Build from the stored form (unchecked: see :func:`read_subscriptions`)."""
        return cls(**{**doc, "events": tuple(doc["events"])})


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task declaration as registered: the options a task of this name gets
    when it is enqueued by app name and the caller does not give them.

    The attributes are those of :class:`bus.core.app.TaskDef` that enqueue reads, so
    either serves as a declaration.
    """

    name: str
    queue: str = "default"
    max_attempts: int = 5
    timeout_s: float = 60.0
    backoff: Any = None
    scope: str = "any"

    def to_doc(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in the registry."""
        return asdict(self)


class EntryDamaged(BusError):
    """A stored registry entry cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def app_name_of(raw: bytes | str) -> tuple[str, str | None]:
    """Return a hash field's app name as text, and why it is damaged (or None).

    A name that is not UTF-8 comes back escaped (``caf\\xe9``), and so do
    control characters (``\\x1b``), so that it can be logged and shown; such
    a name is always damaged.
    """
    if isinstance(raw, bytes):
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return raw.decode("utf-8", "backslashreplace"), f"app name is not UTF-8: {exc}"
    else:
        name = raw
    try:
        validate_app_name(name)
    except ValueError as exc:
        if not name.isprintable():
            name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
        return name, str(exc)
    return name, None


def _load_list(raw: bytes | str, what: str) -> list[Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EntryDamaged(f"not UTF-8: {exc}") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EntryDamaged(f"not JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise EntryDamaged(f"expected a JSON list of {what}, got {_kind(doc)}")
    return doc


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return names.get(type(value), repr(value)[:40])


def _fields(doc: Any, allowed: frozenset[str], required: tuple[str, ...], what: str) -> str:
    """Check one item's shape; return its name."""
    if not isinstance(doc, dict):
        raise EntryDamaged(f"a {what} is {_kind(doc)}, not an object")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise EntryDamaged(f"a {what} has no name (field 'name' is {name!r})")
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise EntryDamaged(f"{what} {name!r}: unknown field {unknown[0]!r}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise EntryDamaged(f"{what} {name!r}: field {missing[0]!r} is missing")
    return name


def _check_options(doc: dict[str, Any], name: str, what: str) -> None:
    """Check the option fields an item has, by the rules app.toml follows."""
    try:
        names = ("queue", "max_attempts", "timeout_s", "delay_s", "scope")
        options: dict[str, Any] = {k: doc[k] for k in names if k in doc}
        TaskOptions(backoff=Backoff.from_doc(doc.get("backoff")), **options)
    except (OptionError, TypeError) as exc:
        raise EntryDamaged(f"{what} {name!r}: {exc}") from exc


_SUBSCRIPTION_FIELDS = frozenset(f.name for f in fields(SubscriptionSpec))
_TASK_FIELDS = frozenset(f.name for f in fields(TaskSpec))


def read_subscriptions(app: str, raw: bytes | str) -> list[SubscriptionSpec]:
    """Decode and check one app's stored subscriptions.

    Patterns and filters are compiled by the caller (``CompiledSubscription``),
    whose errors also mark the entry damaged.

    Raises:
        EntryDamaged: The entry is not UTF-8, not JSON, not a list of
            subscription objects, or a field is missing, unknown, of the wrong
            type or out of range.
    """
    specs: list[SubscriptionSpec] = []
    seen: set[str] = set()
    for doc in _load_list(raw, "subscriptions"):
        name = _fields(doc, _SUBSCRIPTION_FIELDS, ("app", "name", "events"), "subscription")
        if doc["app"] != app:
            raise EntryDamaged(f"subscription {name!r} names app {doc['app']!r}, not {app!r}")
        events = doc["events"]
        if not (isinstance(events, list) and events and all(isinstance(e, str) for e in events)):
            raise EntryDamaged(f"subscription {name!r}: 'events' must be a list of event patterns")
        where = doc.get("where")
        if where is not None and not isinstance(where, dict):
            raise EntryDamaged(f"subscription {name!r}: 'where' must be an object, got {where!r}")
        _check_options(doc, name, "subscription")
        if name in seen:
            raise EntryDamaged(f"subscription {name!r} appears twice")
        seen.add(name)
        specs.append(SubscriptionSpec.from_doc(doc))
    return specs


def read_tasks(raw: bytes | str) -> dict[str, TaskSpec]:
    """Decode and check one app's stored task declarations, by name.

    Raises:
        EntryDamaged: As :func:`read_subscriptions`.
    """
    declared: dict[str, TaskSpec] = {}
    for doc in _load_list(raw, "task declarations"):
        name = _fields(doc, _TASK_FIELDS, ("name",), "task")
        _check_options(doc, name, "task")
        if name in declared:
            raise EntryDamaged(f"task {name!r} appears twice")
        declared[name] = TaskSpec(**doc)
    return declared
