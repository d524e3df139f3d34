"""Time-sortable identifiers for tasks and events.

An id is 26 characters of Crockford base32 (the ULID layout): 48 bits of
milliseconds since the epoch, then 80 random bits. Ids sort by creation time
to the millisecond, carry no coordination, and are safe in Redis keys and URLs.
"""

from __future__ import annotations

import os

__all__ = ["id_time_ms", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def new_id(now_ms: int) -> str:
    """Return a new time-sortable id for the given time.

    Args:
        now_ms: Creation time in milliseconds since the epoch.
    """
    value = (now_ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def id_time_ms(value: str) -> int | None:
    """Return the creation time encoded in an id, or None if it is not one of ours.

    Args:
        value: A string that may be an id made by :func:`new_id`.
    """
    if len(value) != 26:
        return None
    number = 0
    for char in value[:10]:
        index = _INDEX.get(char)
        if index is None:
            return None
        number = number * 32 + index
    return number
