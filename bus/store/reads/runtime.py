"""The engine's and the bus's own reads; the conventions are those of :mod:`bus.store.reads`.

The subscription registry (publish, the declarations of enqueue by app name,
the registry watch, subscriptions sync), the pending-event sweep, one task
(``Bus.get_task``), an app's queue names (a worker serving ``*``), recurring
tasks and live nodes. Their batches go through
the client's transport (:meth:`bus.store.transport.Transport.commands`), the
seam a cluster deployment replaces; a single command goes to the client's own
method, which every deployment's client has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from bus.store.keys import AppKeys, BusKeys
from bus.store.transport import sync_transport_for, transport_for
from bus.store.types import AsyncClient, SyncClient

__all__ = [
    "AppRegistration",
    "RegistryEntries",
    "StoredEnvelopes",
    "app_registered",
    "app_registration",
    "event_envelopes",
    "event_envelopes_sync",
    "live_nodes",
    "recurring_entries",
    "registry_entries",
    "registry_entries_sync",
    "registry_version",
    "registry_version_sync",
    "stale_pending",
    "task_entry",
]


# -- The engine and the bus ------------------------------------------------------------


class RegistryEntries(NamedTuple):
    """The subscription registry as stored: its version, and each app's entries."""

    version: bytes | None
    subs: dict[bytes, bytes]
    tasks: dict[bytes, bytes]


def _registry_commands(keys: BusKeys) -> list[tuple[Any, ...]]:
    return [("GET", keys.subs_version), ("HGETALL", keys.subs), ("HGETALL", keys.task_decls)]


async def registry_entries(client: AsyncClient, keys: BusKeys) -> RegistryEntries:
    """Read a consistent snapshot of the registry (one ``MULTI``: its keys share a slot)."""
    version, subs, tasks = await transport_for(client).commands(
        _registry_commands(keys), atomic=True
    )
    return RegistryEntries(version, subs, tasks)


def registry_entries_sync(client: SyncClient, keys: BusKeys) -> RegistryEntries:
    """Like :func:`registry_entries`, for synchronous callers."""
    version, subs, tasks = sync_transport_for(client).commands(
        _registry_commands(keys), atomic=True
    )
    return RegistryEntries(version, subs, tasks)


async def registry_version(client: AsyncClient, keys: BusKeys) -> bytes | None:
    """The registry's version as stored (None: never written, or lost)."""
    return cast("bytes | None", await client.get(keys.subs_version))


def registry_version_sync(client: SyncClient, keys: BusKeys) -> bytes | None:
    """Like :func:`registry_version`, for synchronous callers."""
    return cast("bytes | None", client.get(keys.subs_version))


class AppRegistration(NamedTuple):
    """One app's registry entries as stored (None: no entry)."""

    subs: bytes | None
    tasks: bytes | None


async def app_registration(client: AsyncClient, keys: BusKeys, app: str) -> AppRegistration:
    """Read one app's subscriptions and task declarations entries."""
    subs, tasks = await transport_for(client).commands(
        [("HGET", keys.subs, app), ("HGET", keys.task_decls, app)]
    )
    return AppRegistration(subs, tasks)


async def app_registered(client: AsyncClient, keys: BusKeys, app: str) -> tuple[bool, bytes | None]:
    """Whether ``app`` has a subscriptions entry, and the registry's version as stored."""
    present, version = await transport_for(client).commands(
        [("HEXISTS", keys.subs, app), ("GET", keys.subs_version)]
    )
    return bool(present), version


async def stale_pending(
    client: AsyncClient, keys: BusKeys, *, until_ms: int, offset: int, limit: int
) -> list[bytes]:
    """Keys of pending events recorded no later than ``until_ms``, oldest first, one page."""
    return cast(
        "list[bytes]",
        await client.zrangebyscore(keys.pending, "-inf", until_ms, offset, limit),
    )


class StoredEnvelopes(NamedTuple):
    """Events' envelopes (None: not in the log) and the apps confirmed for each."""

    envelopes: list[bytes | None]
    confirmed: list[bytes | None]


def _envelope_commands(keys: BusKeys, event_keys: Sequence[str | bytes]) -> list[tuple[Any, ...]]:
    return [("HMGET", keys.events, *event_keys), ("HMGET", keys.confirmed, *event_keys)]


async def event_envelopes(
    client: AsyncClient, keys: BusKeys, event_keys: Sequence[str | bytes]
) -> StoredEnvelopes:
    """Read events' envelopes and confirmed apps in one round trip (at least one key)."""
    envelopes, confirmed = await transport_for(client).commands(
        _envelope_commands(keys, event_keys)
    )
    return StoredEnvelopes(envelopes, confirmed)


def event_envelopes_sync(
    client: SyncClient, keys: BusKeys, event_keys: Sequence[str | bytes]
) -> StoredEnvelopes:
    """Like :func:`event_envelopes`, for synchronous callers."""
    envelopes, confirmed = sync_transport_for(client).commands(_envelope_commands(keys, event_keys))
    return StoredEnvelopes(envelopes, confirmed)


async def task_entry(
    client: AsyncClient, keys: AppKeys, task_id: str
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """One task's state JSON, record and attempt errors (each None if absent)."""
    state, record, errors = await transport_for(client).commands(
        [
            ("HGET", keys.state, task_id),
            ("HGET", keys.tasks, task_id),
            ("HGET", keys.errors, task_id),
        ]
    )
    return state, record, errors


async def queue_names(client: AsyncClient, keys: AppKeys) -> list[str]:
    """The names of an app's queues (those any enqueue created), sorted."""
    members = await client.smembers(keys.queues)
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


async def recurring_entries(client: AsyncClient, keys: AppKeys) -> dict[bytes, bytes]:
    """An app's recurring tasks: name -> entry JSON, as stored."""
    return cast("dict[bytes, bytes]", await client.hgetall(keys.recurring))


async def live_nodes(
    client: AsyncClient, keys: AppKeys, *, now_ms: int
) -> tuple[list[bytes], dict[bytes, bytes]]:
    """The nodes whose registration runs past ``now_ms``, and when each node joined.

    One ``MULTI``, so a node that joins or is dropped meanwhile is in both or
    neither.
    """
    alive, joined = await transport_for(client).commands(
        [("ZRANGEBYSCORE", keys.nodes, now_ms, "+inf"), ("HGETALL", keys.nodes_joined)],
        atomic=True,
    )
    return alive, joined
