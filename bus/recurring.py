"""Recurring tasks: one chain of occurrences per task, kept by every worker.

There is no scheduler process. Each recurring task is a chain of ordinary
delayed tasks, its *occurrences*: the one for slot ``S`` has the id
``rec.<name>.<S>`` and is due at ``S`` (slots come from the schedule, see
:mod:`bus.core.schedule`). The app's recurring hash names each task's current
occurrence (slot, id, schedule fingerprint, queue), and every change of a
chain is one ``recur.lua`` call: delete the current occurrence if it still
waits, add the next one, update the hash, all in one step and only if the hash
still names the occurrence the caller saw (compare-and-set). However many
workers try the same change at once, one occurrence results.

Three things move a chain:

1. **The boot check** (:meth:`RecurringChains.sync` with ``full=True``), at
   every worker start: adds the chains of new recurring tasks (first slot after
   now), reschedules those whose schedule or options changed (their waiting
   occurrence is replaced), and removes those no longer declared.
2. **After an outcome** (:meth:`RecurringChains.after_settled`): when an
   occurrence has succeeded or died, the worker that settled it adds the next
   one, at the first slot after the finished one's slot (not after now).
3. **Repair** (``sync`` with ``full=False``), with every heartbeat and in the
   boot check: a chain whose occurrence finished without a next one (the
   worker crashed between settle and step 2, or the occurrence died of lease
   expiry) is continued; an occurrence whose slot passed long ago without a
   worker to run it is moved per ``catch_up``.

``catch_up`` (default 1): after a stretch of slots that passed without a run
(everything was offline, or a run outlasted its period), at most this many of
them run, the most recent ones, then the chain goes on at the first future
slot; 0 runs none.

A worker killed during an occurrence's run changes nothing here: the
occurrence is retried like any task (its lease expires), and its final outcome
moves the chain on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from bus.config.model import AppConfig
from bus.core.app import App
from bus.core.enqueue import EnqueueItem, prepare
from bus.core.schedule import Schedule, next_slot, plan_next
from bus.store import engine, features, reads, scripts, transport
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient

__all__ = [
    "Recurring",
    "RecurringChains",
    "occurrence_id",
    "parse_occurrence_id",
    "recurring_from_config",
]

log = structlog.get_logger("bus.recurring")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_ID_RE = re.compile(r"^rec\.([a-z0-9][a-z0-9_-]{0,99})\.(\d+)$")
# Waiting or running: the chain has its next occurrence.
_PENDING = frozenset({"scheduled", "queued", "running", "retrying"})


@dataclass(frozen=True)
class Recurring:
    """A recurring task: which declared task, on which schedule.

    The task's handler and options (queue, attempts, timeout, back-off, scope)
    are its declaration in the app. Each occurrence gets the payload
    ``{**payload, "slot_ms": <its slot>}``.

    Attributes:
        name: The declared task's name (``[a-z0-9_-]``, 1-100 characters).
        schedule: When it runs.
        catch_up: Most slots that passed without a run to run late (>= 0).
        payload: Extra JSON fields of every occurrence's payload.

    Raises:
        ValueError: A bad name or ``catch_up``.
    """

    name: str
    schedule: Schedule
    catch_up: int = 1
    payload: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"recurring task name {self.name!r} must be 1-100 of [a-z0-9_-], "
                "starting with a letter or digit"
            )
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int):
            raise ValueError(f"recurring task {self.name!r}: catch_up must be an integer")
        if self.catch_up < 0:
            raise ValueError(f"recurring task {self.name!r}: catch_up must be >= 0")


def recurring_from_config(config: AppConfig) -> list[Recurring]:
    """The recurring tasks of an app config (its ``[[recurring]]`` tables)."""
    return [
        Recurring(
            name=item.name,
            schedule=Schedule(
                every_ms=item.every_ms,
                cron=item.cron,
                timezone=item.timezone if item.cron is not None else "UTC",
            ),
            catch_up=item.catch_up,
        )
        for item in config.recurring
    ]


def occurrence_id(name: str, slot_ms: int) -> str:
    """The deterministic id of a recurring task's occurrence at a slot."""
    return f"rec.{name}.{slot_ms}"


def parse_occurrence_id(task_id: str) -> tuple[str, int] | None:
    """Return (name, slot) of an occurrence id; None for any other id.

    Copies of a broadcast occurrence (``...@<node>``) are not occurrences.
    """
    match = _ID_RE.fullmatch(task_id)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True, slots=True)
class _Entry:
    """A chain's current occurrence, as the recurring hash holds it."""

    slot_ms: int
    id: str
    fp: str
    queue: str

    def encode(self) -> bytes:
        return orjson.dumps({"slot": self.slot_ms, "id": self.id, "fp": self.fp, "q": self.queue})

    @classmethod
    def decode(cls, raw: bytes) -> _Entry:
        doc = orjson.loads(raw)
        return cls(int(doc["slot"]), str(doc["id"]), str(doc["fp"]), str(doc["q"]))


class RecurringChains:
    """The chains of one app's recurring tasks, as one worker keeps them.

    Args:
        app: The app; every recurring task must be declared in it.
        redis: The worker's Redis client.
        keys: The app's keys.
        recurring: The app's recurring tasks (all of them: the boot check
            removes the chains of any other).
        grace_ms: How long a finished occurrence is left to the worker that
            settled it, and how late a waiting one may be, before repair acts.

    Raises:
        ValueError: A recurring task is not declared in the app, or two share
            a name.
    """

    def __init__(
        self,
        app: App,
        redis: AsyncClient,
        keys: AppKeys,
        recurring: Sequence[Recurring],
        *,
        grace_ms: int,
    ) -> None:
        self.app = app
        self.redis = redis
        self.keys = keys
        self.grace_ms = grace_ms
        self.by_name: dict[str, Recurring] = {}
        self._fp: dict[str, str] = {}
        for item in recurring:
            if item.name in self.by_name:
                raise ValueError(f"app {app.name!r}: recurring task {item.name!r} given twice")
            if app.get(item.name) is None:
                raise ValueError(
                    f"app {app.name!r}: recurring task {item.name!r} has no declared task "
                    "of that name (declare its handler with @app.task or in app.toml)"
                )
            self.by_name[item.name] = item
            self._fp[item.name] = self._fingerprint(item)
        self.synced = False

    def _prepare(self, item: Recurring, slot_ms: int, now_ms: int) -> tuple[str, engine.NewTask]:
        payload = {**(item.payload or {}), "slot_ms": slot_ms}
        task = EnqueueItem(
            item.name, payload, id=occurrence_id(item.name, slot_ms), run_at_ms=slot_ms
        )
        return prepare(self.app, task, now_ms)

    def _fingerprint(self, item: Recurring) -> str:
        # The record of a fixed slot carries every declared option that shapes
        # an occurrence; any change of them or of the schedule reschedules.
        _, task = self._prepare(item, 0, 0)
        digest = hashlib.sha1(item.schedule.fingerprint.encode() + b"\x00" + task.record)
        return digest.hexdigest()[:16]

    def _move(
        self,
        name: str,
        seen: _Entry | None,
        slot_ms: int | None,
        now_ms: int,
        *,
        seen_fp: str,
        replace_waiting: bool = False,
    ) -> scripts.Call:
        """A ``recur.lua`` call: from ``seen`` to the occurrence at ``slot_ms``
        (None: remove the chain)."""
        task: engine.NewTask | None = None
        entry = b""
        queue = seen.queue if seen else "default"
        if slot_ms is not None:
            item = self.by_name[name]
            queue, task = self._prepare(item, slot_ms, now_ms)
            entry = _Entry(slot_ms, task.id, self._fp[name], queue).encode()
        return features.recur_call(
            self.keys,
            now_ms=now_ms,
            name=name,
            seen_id=seen.id if seen else "",
            seen_fp=seen_fp,
            seen_queue=seen.queue if seen else queue,
            entry=entry,
            task=task,
            queue=queue,
            replace_waiting=replace_waiting,
        )

    async def _read(self) -> tuple[dict[str, _Entry], dict[str, dict[str, Any] | None]]:
        raw = await reads.recurring_entries(self.redis, self.keys)
        entries = {name.decode(): _Entry.decode(doc) for name, doc in raw.items()}
        ids = [e.id for e in entries.values()]
        states: dict[str, dict[str, Any] | None] = {}
        if ids:
            values = await reads.task_states(self.redis, self.keys, ids)
            states = {i: orjson.loads(v) if v else None for i, v in zip(ids, values, strict=True)}
        return entries, states

    def _plan(
        self, item: Recurring, entry: _Entry | None, state: dict[str, Any] | None, now_ms: int
    ) -> tuple[str, int] | None:
        """What the chain of ``item`` needs: (why, next slot), or None if nothing."""
        if entry is None:
            return "added", next_slot(item.schedule, now_ms)
        if entry.fp != self._fp[item.name]:
            return "rescheduled", next_slot(item.schedule, now_ms)
        status = state.get("s") if state else None
        if status == "scheduled" and entry.slot_ms < now_ms - self.grace_ms:
            # Due long ago and never promoted: no worker ran while it was due.
            slot = plan_next(item.schedule, entry.slot_ms - 1, now_ms, item.catch_up)
            return ("caught_up", slot) if slot != entry.slot_ms else None
        if status in _PENDING:
            return None
        finished_ms = int(state.get("tf", 0)) if state else 0
        if finished_ms > now_ms - self.grace_ms:
            return None  # just settled: the settling worker moves the chain
        return "repaired", plan_next(item.schedule, entry.slot_ms, now_ms, item.catch_up)

    async def sync(self, now_ms: int, *, full: bool) -> dict[str, list[str]]:
        """Check every chain; fix those that need it (the boot check and repair).

        Args:
            now_ms: The current time.
            full: The boot check: also add new chains, reschedule changed ones
                and remove undeclared ones. Without it only chains whose
                schedule matches this worker's are repaired, so workers of two
                config versions (a rolling deploy) do not undo each other.

        Returns:
            The names changed by this call, by reason (``added``,
            ``rescheduled``, ``removed``, ``repaired``, ``caught_up``).
        """
        changed: dict[str, list[str]] = {}
        if not full and not self.by_name:
            return changed  # nothing to repair; only a boot check removes chains
        for _ in range(5):
            entries, states = await self._read()
            moves: list[tuple[str, str, scripts.Call]] = []
            for name, item in self.by_name.items():
                entry = entries.get(name)
                if not full and (entry is None or entry.fp != self._fp[name]):
                    continue
                plan = self._plan(item, entry, states.get(entry.id) if entry else None, now_ms)
                if plan is not None:
                    why, slot = plan
                    call = self._move(
                        name,
                        entry,
                        slot,
                        now_ms,
                        seen_fp=entry.fp if entry else "",
                        # A late occurrence promoted meanwhile runs; keep it.
                        replace_waiting=why == "caught_up",
                    )
                    moves.append((name, why, call))
            if full:
                for name, entry in entries.items():
                    if name not in self.by_name:
                        call = self._move(name, entry, None, now_ms, seen_fp=entry.fp)
                        moves.append((name, "removed", call))
            if not moves:
                break
            results = await transport.run_calls(self.redis, [call for _, _, call in moves])
            for (name, why, _), result in zip(moves, results, strict=True):
                if int(result[0]) == 1:
                    changed.setdefault(why, []).append(name)
            if all(int(result[0]) == 1 for result in results):
                break
            # Another worker moved a chain first: read again and re-check.
        if full:
            self.synced = True
        if changed:
            log.info("recurring_synced", app=self.app.name, full=full, **changed)
        return changed

    async def after_settled(self, outcomes: Sequence[engine.Outcome], now_ms: int) -> int:
        """Add the next occurrence of every occurrence that just finished.

        Args:
            outcomes: Outcomes the settle script accepted.
            now_ms: The current time.

        Returns:
            How many chains moved on (a chain changed meanwhile is left alone).
        """
        calls = []
        for outcome in outcomes:
            parsed = parse_occurrence_id(outcome.id)
            if outcome.kind == "retry" or parsed is None or parsed[0] not in self.by_name:
                continue
            name, slot = parsed
            item = self.by_name[name]
            seen = _Entry(slot, outcome.id, self._fp[name], outcome.queue)
            after = plan_next(item.schedule, slot, now_ms, item.catch_up - 1)
            calls.append(self._move(name, seen, after, now_ms, seen_fp=seen.fp))
        if not calls:
            return 0
        results = await transport.run_calls(self.redis, calls)
        return sum(int(result[0]) for result in results)
