"""The Redis key layout: every key taskbus uses is built here, and only here.

All keys of one application share the hash tag ``{<app>}``, so every multi-key
operation on an app (the Lua scripts in ``bus/store/scripts/``) lands in one Redis
Cluster slot. Bus-wide keys (the event log, the subscription registry) share the
tag ``{.bus}``; a dot cannot appear in an app name, so the tags never collide.

Task data is kept *apart from* the queues (the essay's principle): queues hold
task ids only, and the records live in two per-app hashes. Keeping records in
per-app hashes rather than one key per task means every key a script touches is
known before it runs and is passed in ``KEYS`` (none is built inside Lua).

Per app ``A`` (prefix ``P``, default ``bus``):

==================================  =======  ==================================
key                                 type     holds
==================================  =======  ==================================
``P:app:{A}:tasks``                 hash     id -> immutable record (JSON: name,
                                             queue, payload, options, created)
``P:app:{A}:state``                 hash     id -> mutable state (JSON: state,
                                             attempts, max, token, worker, times)
``P:app:{A}:errors``                hash     id -> JSON list, one entry a failed
                                             attempt (type, message, traceback)
``P:app:{A}:finished``              zset     id -> finished_ms (retention sweep)
``P:app:{A}:dead``                  zset     id -> dead_ms (dead letters)
``P:app:{A}:queues``                set      names of the app's queues
``P:app:{A}:seq``                   string   claim-token counter (fencing)
``P:app:{A}:wake``                  list     wake-ups when the app gains a queue
``P:app:{A}:workers``               hash     worker id -> status record (JSON)
``P:app:{A}:beats``                 zset     worker id -> last heartbeat ms
``P:app:{A}:recurring``             hash     recurring task name -> its current
                                             occurrence (JSON: slot, id, fp,
                                             queue); see ``bus.recurring``
``P:app:{A}:nodes``                 zset     node -> alive-until ms (last beat
                                             plus the node's own TTL)
``P:app:{A}:nodes:joined``          hash     node -> ms it joined (broadcasts
                                             reach nodes that joined before)
``P:app:{A}:q:<Q>``                 list     ready task ids (LPUSH in, RPOP out)
``P:app:{A}:q:<Q>:delayed``         zset     id -> run_at_ms (delayed, retrying)
``P:app:{A}:q:<Q>:inflight``        zset     id -> lease deadline ms
``P:app:{A}:q:<Q>:wake``            list     wake-up tokens for idle workers
``P:app:{A}:w:<W>:wake``            list     wake-ups addressed to worker W
==================================  =======  ==================================

A node's own queue (copies of ``scope = "all"`` tasks for that node) is the
ordinary queue ``node.<N>`` (keys ``P:app:{A}:q:node.<N>...``); ``*`` never
stands for it (see ``bus.nodes``).

Bus-wide keys (tag ``{.bus}``):

==================================  =======  ==================================
``P:bus:{.bus}:events``             hash     event key -> envelope JSON
``P:bus:{.bus}:events:t``           zset     event key -> recorded ms
``P:bus:{.bus}:pending``            zset     event key -> recorded ms, until
                                             every subscriber has its task
``P:bus:{.bus}:confirmed``          hash     pending event key -> the apps
                                             whose tasks of it exist (space-
                                             separated); re-routes skip them
``P:bus:{.bus}:dedup``              hash     source + id -> event key
``P:bus:{.bus}:dedup:t``            zset     source + id -> recorded ms
``P:bus:{.bus}:subs``               hash     app -> its subscriptions (JSON)
``P:bus:{.bus}:subs:version``       string   bumped on every registry change
``P:bus:{.bus}:tasks``              hash     app -> its task declarations (JSON)
==================================  =======  ==================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from bus.core.names import validate_app_name, validate_queue_name

__all__ = [
    "AppKeys",
    "BusKeys",
    "QueueKeys",
    "app_keys",
    "validate_app_name",
    "validate_queue_name",
]

# Queue keys kept per AppKeys; more names than this are built on each call.
_QUEUE_CACHE_SIZE = 256


@dataclass(frozen=True)
class QueueKeys:
    """The four keys of one named queue of an app."""

    ready: str
    delayed: str
    inflight: str
    wake: str


@dataclass(frozen=True)
class AppKeys:
    """Every key of one app, built from the prefix and the app name."""

    prefix: str
    app: str

    @cached_property
    def base(self) -> str:
        """The common start of every key of this app, hash tag included."""
        return f"{self.prefix}:app:{{{self.app}}}"

    @cached_property
    def tasks(self) -> str:
        """Hash: task id -> immutable record."""
        return f"{self.base}:tasks"

    @cached_property
    def state(self) -> str:
        """Hash: task id -> mutable state."""
        return f"{self.base}:state"

    @cached_property
    def errors(self) -> str:
        """Hash: task id -> list of attempt errors."""
        return f"{self.base}:errors"

    @cached_property
    def finished(self) -> str:
        """Zset: finished task id -> finished time (retention sweep)."""
        return f"{self.base}:finished"

    @cached_property
    def dead(self) -> str:
        """Zset: dead task id -> time it died."""
        return f"{self.base}:dead"

    @cached_property
    def queues(self) -> str:
        """Set of the app's queue names."""
        return f"{self.base}:queues"

    @cached_property
    def seq(self) -> str:
        """Counter for claim tokens."""
        return f"{self.base}:seq"

    @cached_property
    def wake(self) -> str:
        """List: wake-ups for ``*`` workers when the app gains a new queue."""
        return f"{self.base}:wake"

    @cached_property
    def workers(self) -> str:
        """Hash: worker id -> status record."""
        return f"{self.base}:workers"

    @cached_property
    def beats(self) -> str:
        """Zset: worker id -> last heartbeat."""
        return f"{self.base}:beats"

    @cached_property
    def recurring(self) -> str:
        """Hash: recurring task name -> its current occurrence (JSON)."""
        return f"{self.base}:recurring"

    @cached_property
    def nodes(self) -> str:
        """Zset: node -> the time it counts as alive until."""
        return f"{self.base}:nodes"

    @cached_property
    def nodes_joined(self) -> str:
        """Hash: node -> the time it joined."""
        return f"{self.base}:nodes:joined"

    @cached_property
    def _queues(self) -> dict[str, QueueKeys]:
        return {}

    def queue(self, name: str) -> QueueKeys:
        """Return the keys of the named queue (built once per name and AppKeys).

        Args:
            name: A queue name (see :func:`validate_queue_name`).
        """
        found = self._queues.get(name)
        if found is not None:
            return found
        base = f"{self.base}:q:{name}"
        keys = QueueKeys(
            ready=base, delayed=f"{base}:delayed", inflight=f"{base}:inflight", wake=f"{base}:wake"
        )
        if len(self._queues) < _QUEUE_CACHE_SIZE:
            self._queues[name] = keys
        return keys

    def worker_wake(self, worker_id: str) -> str:
        """Return the wake-up list addressed to one worker."""
        return f"{self.base}:w:{worker_id}:wake"


@lru_cache(maxsize=1024)
def app_keys(prefix: str, app: str) -> AppKeys:
    """Return the keys of one app, one shared :class:`AppKeys` per prefix and app.

    Enqueue and routing need an app's keys for every task; building them
    (eight f-strings behind ``cached_property``) cost more than packing the
    script call (docs/benchmarks.md).

    Args:
        prefix: The key prefix.
        app: A valid app name (see :func:`validate_app_name`).
    """
    return AppKeys(prefix, app)


@dataclass(frozen=True)
class BusKeys:
    """The bus-wide keys: event log, pending routes, dedup, subscription registry."""

    prefix: str

    @cached_property
    def base(self) -> str:
        """The common start of every bus-wide key, hash tag included."""
        return f"{self.prefix}:bus:{{.bus}}"

    @cached_property
    def events(self) -> str:
        """Hash: event key -> envelope JSON."""
        return f"{self.base}:events"

    @cached_property
    def events_t(self) -> str:
        """Zset: event key -> recorded time (retention)."""
        return f"{self.base}:events:t"

    @cached_property
    def pending(self) -> str:
        """Zset: event key -> recorded time, for events not yet fully routed."""
        return f"{self.base}:pending"

    @cached_property
    def confirmed(self) -> str:
        """Hash: pending event key -> the apps whose tasks of it were seen to exist."""
        return f"{self.base}:confirmed"

    @cached_property
    def dedup(self) -> str:
        """Hash: source + caller id -> event key."""
        return f"{self.base}:dedup"

    @cached_property
    def dedup_t(self) -> str:
        """Zset: source + caller id -> recorded time (dedup window)."""
        return f"{self.base}:dedup:t"

    @cached_property
    def subs(self) -> str:
        """Hash: app name -> its registered subscriptions (JSON)."""
        return f"{self.base}:subs"

    @cached_property
    def task_decls(self) -> str:
        """Hash: app -> JSON list of its declared tasks (``bus.events.registry_specs``)."""
        return f"{self.base}:tasks"

    @cached_property
    def subs_version(self) -> str:
        """Counter bumped on every change of the registry."""
        return f"{self.base}:subs:version"
