"""The engine's atomic operations as Lua files: loading them, naming them by SHA1.

Each ``*.lua`` file beside this module is one atomic state change of an app's
keys; its header lists its KEYS and ARGV. Helpers several scripts share live
in ``include/`` (the error list, a state entry read without trusting it); a
line ``--! include NAME.lua`` is replaced by that file when the script is
loaded, so the server sees one self-contained script, and its SHA1 is that
of the expanded text. Every key a script touches is passed
in ``KEYS`` and built by :mod:`bus.store.keys`; the caller passes the time in. Scripts
are called by EVALSHA and loaded on a NOSCRIPT reply (a restarted server or a
fresh replica has an empty script cache).

This module owns the files and their :class:`Script` objects, one per file,
and the shape of one call, :data:`Call`. Sending calls is
:mod:`bus.store.transport`'s job (which also loads a script the server does not
know); the typed wrappers that build calls and read their replies are
:mod:`bus.store.engine` (the task lifecycle) and :mod:`bus.store.features`
(dead letters, recurring tasks, nodes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import hiredis

__all__ = [
    "ALL_SCRIPTS",
    "BEAT",
    "CLAIM",
    "ENQUEUE",
    "NODE_BEAT",
    "NODE_DROP",
    "PURGE",
    "RECORD",
    "RECUR",
    "RELEASE",
    "RENEW",
    "REPLAY",
    "ROUTED",
    "SETTLE",
    "Call",
    "Script",
]


_INCLUDE = re.compile(r"^--! include ([a-z_]+\.lua)[ \t]*$", re.MULTILINE)


def _expand(text: str, name: str) -> str:
    """Replace each include line by the included file (includes do not nest)."""
    folder = resources.files(__package__).joinpath("include")

    def included(match: re.Match[str]) -> str:
        found = folder.joinpath(match.group(1))
        if not found.is_file():
            raise FileNotFoundError(f"{name}.lua includes {match.group(1)}, not in include/")
        return found.read_text("utf-8").rstrip("\n")

    return _INCLUDE.sub(included, text)


class Script:
    """A Lua script loaded from this package, called by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        text = resources.files(__package__).joinpath(f"{name}.lua").read_text("utf-8")
        self.source = _expand(text, name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self._head = (b"EVALSHA", self.sha.encode())

    def pack(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        """Return the ``EVALSHA`` command for these KEYS and ARGV as protocol bytes."""
        packed: bytes = hiredis.pack_command((*self._head, len(keys), *keys, *args))
        return packed


ENQUEUE = Script("enqueue")
CLAIM = Script("claim")
SETTLE = Script("settle")
RENEW = Script("renew")
RELEASE = Script("release")
BEAT = Script("beat")
RECORD = Script("record")
ROUTED = Script("routed")

ALL_SCRIPTS = (ENQUEUE, CLAIM, SETTLE, RENEW, RELEASE, BEAT, RECORD, ROUTED)

# Dead letters (bus.inspect.deadletters), recurring tasks and nodes (bus.recurring,
# bus.nodes).
REPLAY = Script("replay")
PURGE = Script("purge")
RECUR = Script("recur")
NODE_BEAT = Script("node_beat")
NODE_DROP = Script("node_drop")

# A script call inside a pipeline: (script, keys, args).
Call = tuple[Script, Sequence[str], Sequence[Any]]
