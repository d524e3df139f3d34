"""The world a chaos scenario runs in: two event types, three apps, their handlers.

Everything is written into a scenario's own directory, so the harness depends
on nothing in ``apps/`` or ``schemas/``. The subscription table below is the
single description of who gets what; :func:`expected_deliveries` applies it
with its own few lines of logic (not the bus's matcher), so a routing bug
shows up as lost or unexpected deliveries rather than being agreed with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_TYPES = ("chaos.happened", "chaos.noticed")
KINDS = ("a", "b", "c")
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Subscription:
    """One subscription of a chaos app: event types and an optional kind filter."""

    app: str
    name: str
    events: tuple[str, ...]
    kinds: tuple[str, ...] | None = None

    def matches(self, event_type: str, payload: dict[str, Any]) -> bool:
        """Whether an event of this type and payload is routed to this subscription."""
        if event_type not in self.events:
            return False
        return self.kinds is None or payload.get("kind") in self.kinds


SUBSCRIPTIONS = (
    Subscription("alpha", "everything", EVENT_TYPES),
    Subscription("beta", "happened_ab", ("chaos.happened",), ("a", "b")),
    Subscription("beta", "noticed", ("chaos.noticed",)),
    Subscription("gamma", "happened", ("chaos.happened",)),
)
APPS = tuple(sorted({s.app for s in SUBSCRIPTIONS}))

_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "version": 1,
    "type": "object",
    "required": ["hid", "kind"],
    "additionalProperties": False,
    "properties": {
        "hid": {"type": "string", "minLength": 1, "maxLength": 64},
        "kind": {"enum": list(KINDS)},
        "poison": {"type": "boolean"},
        "pad": {"type": "string", "maxLength": 4096},
    },
}

# Written as each app's handlers.py. Every invocation appends one JSON line to
# a per-process file with a single O_APPEND write, so a SIGKILL never leaves a
# torn line and the line is in the kernel (not a Python buffer) before the
# handler returns: "handled" in the history means the handler finished its work.
HANDLERS = '''
"""Chaos handlers: append one history line per invocation; poison always fails."""
import asyncio
import os
import time

import orjson

_fd = None


def _append(doc):
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["CHAOS_HISTORY_DIR"], f"handled-{os.getpid()}.jsonl")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, orjson.dumps(doc) + b"\\n")


_SLEEP_S = float(os.environ.get("CHAOS_HANDLER_SLEEP_S", "0"))


async def handle(event, ctx):
    if _SLEEP_S:
        await asyncio.sleep(_SLEEP_S)  # keeps tasks in flight for pause faults to catch
    doc = {
        "app": ctx.app,
        "sub": ctx.name,
        "hid": event.data["hid"],
        "key": event.key,
        "task": ctx.task_id,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "t": time.time(),
    }
    if event.data.get("poison"):
        _append({**doc, "outcome": "raised"})
        raise ValueError(f"poison event {event.data['hid']}")
    _append({**doc, "outcome": "ok"})
'''


def write_world(root: Path, *, concurrency: int = 20) -> tuple[Path, Path]:
    """Write the schemas and the three apps under ``root``.

    Args:
        root: A fresh directory of the scenario.
        concurrency: Each worker's concurrency (``[worker] concurrency``).

    Returns:
        The schemas directory and the apps directory.
    """
    schemas = root / "schemas"
    schemas.mkdir(parents=True)
    for event_type in EVENT_TYPES:
        doc = {**_SCHEMA, "$id": f"https://taskbus.test/chaos/{event_type}/1"}
        (schemas / f"{event_type}.json").write_text(json.dumps(doc, indent=2))
    apps = root / "apps"
    for app in APPS:
        directory = apps / app
        directory.mkdir(parents=True)
        (directory / "handlers.py").write_text(HANDLERS)
        lines = [f'name = "{app}"', "", "[worker]", f"concurrency = {concurrency}", ""]
        for sub in (s for s in SUBSCRIPTIONS if s.app == app):
            lines += [
                "[[subscriptions]]",
                f'name = "{sub.name}"',
                "events = [" + ", ".join(f'"{e}"' for e in sub.events) + "]",
                'handler = "handlers:handle"',
                f"max_attempts = {MAX_ATTEMPTS}",
                "backoff = [0.05, 0.1]",
                "timeout_s = 10",
            ]
            if sub.kinds is not None:
                lines.append("where = { kind = [" + ", ".join(f'"{k}"' for k in sub.kinds) + "] }")
            lines.append("")
        (directory / "app.toml").write_text("\n".join(lines))
    return schemas, apps


def expected_deliveries(event_type: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The (app, subscription) pairs that must receive this event."""
    return [(s.app, s.name) for s in SUBSCRIPTIONS if s.matches(event_type, payload)]
