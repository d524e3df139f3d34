"""Every read the layers above make of Redis, typed: one function per question.

Nothing outside :mod:`bus.store` sends a command of its own. A read takes the
caller's client (:data:`bus.store.types.AsyncClient`) and the keys it asks
about (:mod:`bus.store.keys`), sends its commands in one pipeline where their
answers do not depend on each other (never more round trips than the question
needs), and returns what is stored as it is stored: bytes, scores, counts.
Decoding and judging damage stay with the caller, who reports a damaged entry
and goes on (docs/architecture.md); nothing here raises on stored content.
Errors are redis-py's (:data:`bus.store.types.STORE_ERRORS`); the public
calls above map them to taskbus's (:mod:`bus.store.redis_errors`).

Two modules hold them, both read through this package's names:
:mod:`bus.store.reads.inspection` (for :mod:`bus.inspect`, the CLI, a
dashboard and the demo) and :mod:`bus.store.reads.runtime` (the engine's and
the bus's own: the registry, the sweep, one task, recurring tasks, nodes).
"""

from __future__ import annotations

from bus.store.reads.inspection import (
    AppEntries,
    DeliveryStates,
    QueueDepth,
    StoredEvent,
    StoredTask,
    app_entries,
    apps_with_queues,
    beating_workers,
    count_dead,
    dead_page,
    delivery_states,
    envelopes,
    event_entry,
    glob_escape,
    has_dead,
    pending_overdue,
    queue_depths,
    registered_apps,
    server_info_sync,
    task_states,
    tasks,
    worker_records,
)
from bus.store.reads.runtime import (
    AppRegistration,
    RegistryEntries,
    StoredEnvelopes,
    app_registered,
    app_registration,
    event_envelopes,
    event_envelopes_sync,
    live_nodes,
    queue_names,
    recurring_entries,
    registry_entries,
    registry_entries_sync,
    registry_version,
    registry_version_sync,
    stale_pending,
    task_entry,
)

__all__ = [
    "AppEntries",
    "AppRegistration",
    "DeliveryStates",
    "QueueDepth",
    "RegistryEntries",
    "StoredEnvelopes",
    "StoredEvent",
    "StoredTask",
    "app_entries",
    "app_registered",
    "app_registration",
    "apps_with_queues",
    "beating_workers",
    "count_dead",
    "dead_page",
    "delivery_states",
    "envelopes",
    "event_entry",
    "event_envelopes",
    "event_envelopes_sync",
    "glob_escape",
    "has_dead",
    "live_nodes",
    "pending_overdue",
    "queue_depths",
    "queue_names",
    "recurring_entries",
    "registered_apps",
    "registry_entries",
    "registry_entries_sync",
    "registry_version",
    "registry_version_sync",
    "server_info_sync",
    "stale_pending",
    "task_entry",
    "task_states",
    "tasks",
    "worker_records",
]
