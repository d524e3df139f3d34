"""Time-sortable identifiers for tasks and events.

An id is 26 characters of Crockford base32 (the ULID layout): 48 bits of
milliseconds since the epoch, then 80 random bits. Ids sort by creation time
to the millisecond, carry no coordination, and are safe in Redis keys and URLs.
"""

from __future__ import annotations

import os
import random

__all__ = ["id_time_ms", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
# Two characters per 10 bits: an id is 13 lookups instead of 26 shifts (every
# enqueue and publish makes one; see docs/benchmarks.md).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# The random part: a generator of our own, seeded from os.urandom, untouched
# by code that calls random.seed(), and seeded again in a process that finds a
# generator made before a fork (by pid, checked per id: servers such as uWSGI
# fork without running Python's fork hooks), so two processes never share a
# sequence. os.urandom per id cost ~0.35 us more. Ids need to be unique, not secret.
_random = random.Random()
_random_pid = os.getpid()
# The time part of the last id made: consecutive ids often share the millisecond.
_last_time: tuple[int, str] = (-1, "")


def new_id(now_ms: int) -> str:
    """Return a new time-sortable id for the given time.

    Args:
        now_ms: Creation time in milliseconds since the epoch.
    """
    global _last_time, _random_pid
    if _random_pid != os.getpid():
        _random.seed()
        _random_pid = os.getpid()
    t = now_ms & 0xFFFF_FFFF_FFFF
    p = _PAIRS
    last_t, head = _last_time
    if t != last_t:
        head = p[t >> 40] + p[t >> 30 & 1023] + p[t >> 20 & 1023] + p[t >> 10 & 1023] + p[t & 1023]
        _last_time = (t, head)
    r = _random.getrandbits(80)
    return (
        head
        + p[r >> 70]
        + p[r >> 60 & 1023]
        + p[r >> 50 & 1023]
        + p[r >> 40 & 1023]
        + p[r >> 30 & 1023]
        + p[r >> 20 & 1023]
        + p[r >> 10 & 1023]
        + p[r & 1023]
    )


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
