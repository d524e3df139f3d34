"""Names: what an app name and a queue name may be.

Part of the task model (an App's name, a task's queue), checked wherever a
name comes in; the store builds its keys from names that passed these.
"""

from __future__ import annotations

import re

__all__ = ["validate_app_name", "validate_queue_name"]

_APP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def validate_app_name(name: str) -> str:
    """Return ``name`` if it is a valid app name, else raise ``ValueError``.

    Args:
        name: Lowercase letters, digits, ``_`` and ``-``; 1 to 64 characters.

    Raises:
        ValueError: The name has other characters or a bad length.
    """
    if not _APP_RE.fullmatch(name):
        raise ValueError(
            f"invalid app name {name!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it is a valid queue name, else raise ``ValueError``.

    Args:
        name: Letters, digits, ``_``, ``.`` and ``-``; 1 to 100 characters.

    Raises:
        ValueError: The name has other characters or a bad length.
    """
    if not _QUEUE_RE.fullmatch(name):
        raise ValueError(
            f"invalid queue name {name!r}: use 1-100 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        )
    return name
