"""The operators' plain writes: what the layers above change without a script.

Replay and purge of dead letters are scripts (:mod:`bus.store.features`); what
is left is bulk deletion, which needs no atomicity across keys:
:func:`clear_prefix` deletes every key of a prefix (``SCAN`` + ``UNLINK``,
never ``KEYS`` or ``FLUSHALL``), as the demo does before each run under its own
prefix.
"""

from __future__ import annotations

from bus.store.reads import glob_escape
from bus.store.types import AsyncClient

__all__ = ["clear_prefix"]


async def clear_prefix(client: AsyncClient, prefix: str, *, batch: int = 500) -> int:
    """Delete every key of ``prefix`` (``SCAN`` + ``UNLINK``); return how many.

    Every key of the layout in :mod:`bus.store.keys` starts with ``<prefix>:``, and
    only keys that do are deleted.
    """
    pattern = glob_escape(prefix) + ":*"
    cleared = 0
    found: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        found.append(key)
        if len(found) >= batch:
            cleared += int(await client.unlink(*found))
            found = []
    if found:
        cleared += int(await client.unlink(*found))
    return cleared
