"""The writes that are not scripts: registry entries, the pending set's orphans, wake pokes.

Everything else that changes state is a Lua script (:mod:`bus.store.engine`,
:mod:`bus.store.features`). These few writes touch keys of the one ``{.bus}``
slot and need no script: writing or removing an app's registry entries is a
``MULTI`` that also bumps the registry version (so a publisher's cached
snapshot can never look current after it), and the sweep's drop of pending
entries whose event is gone or unroutable may repeat harmlessly. A worker
pokes its own wake list (a one-item list that ends its blocking wait when a
timer fires or it stops) and deletes it when it leaves. Like the
reads of :mod:`bus.store.reads`, their batches go through the client's
transport (:meth:`bus.store.transport.Transport.commands`).

The registry's version rule (an epoch in ms times ``VERSION_EPOCH``, plus one
per change) is :mod:`bus.events.registry_sync`'s; it passes the fresh version
a registry made afresh starts from.
"""

from __future__ import annotations

from collections.abc import Sequence

from bus.store.keys import BusKeys
from bus.store.transport import transport_for
from bus.store.types import AsyncClient

__all__ = ["drop_pending", "drop_wake", "poke_wake", "remove_app", "write_app"]

# A poked wake list that nobody pops goes after this long (a worker that died).
_WAKE_TTL_MS = 60_000


async def write_app(
    client: AsyncClient,
    keys: BusKeys,
    app: str,
    subs: bytes,
    tasks: bytes | None,
    *,
    fresh_version: int,
) -> None:
    """Store an app's subscriptions (and task declarations) and bump the version.

    Args:
        client: The client.
        keys: The bus keys.
        app: The app.
        subs: Its subscriptions entry.
        tasks: Its task declarations entry; None leaves the stored one.
        fresh_version: The version to start from if the registry has none.
    """
    commands: list[tuple[object, ...]] = [("HSET", keys.subs, app, subs)]
    if tasks is not None:
        commands.append(("HSET", keys.task_decls, app, tasks))
    commands += (("SET", keys.subs_version, fresh_version, "NX"), ("INCR", keys.subs_version))
    await transport_for(client).commands(commands, atomic=True)


async def remove_app(client: AsyncClient, keys: BusKeys, app: str, *, fresh_version: int) -> bool:
    """Remove an app's registry entries and bump the version; False if it had none.

    Args:
        client: The client.
        keys: The bus keys.
        app: The app.
        fresh_version: The version to start from if the registry has none.
    """
    removed, removed_tasks, _, _ = await transport_for(client).commands(
        [
            ("HDEL", keys.subs, app),
            ("HDEL", keys.task_decls, app),
            ("SET", keys.subs_version, fresh_version, "NX"),
            ("INCR", keys.subs_version),
        ],
        atomic=True,
    )
    return bool(removed or removed_tasks)


async def drop_pending(client: AsyncClient, keys: BusKeys, event_keys: Sequence[bytes]) -> None:
    """Take events out of the pending set and their confirmed-apps entries (at least one)."""
    await client.zrem(keys.pending, *event_keys)
    await client.hdel(keys.confirmed, *event_keys)


async def poke_wake(client: AsyncClient, wake_key: str) -> None:
    """Push one item to a wake list (kept at one item, expiring): its waiter wakes."""
    await transport_for(client).commands(
        [("LPUSH", wake_key, b"1"), ("LTRIM", wake_key, 0, 0), ("PEXPIRE", wake_key, _WAKE_TTL_MS)]
    )


async def drop_wake(client: AsyncClient, wake_key: str) -> None:
    """Delete a wake list (its worker leaves)."""
    await client.delete(wake_key)
