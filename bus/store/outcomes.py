"""Verdicts in settle.lua's wire format: the outcome of a claimed task as sent.

:class:`bus.core.verdict.Verdict` says what an attempt's end means in the task
model's terms; :func:`settle_value` gives the value of the
:class:`~bus.store.engine.Outcome` that :func:`bus.store.engine.settle` sends.
The value's layout is settle.lua's (see its header): empty for ``ok``,
``"<run_at_ms>|<error JSON>"`` for ``retry``, ``"<reason>|<error JSON>"`` for
``dead``.
"""

from __future__ import annotations

from bus.core.verdict import Verdict

__all__ = ["settle_value"]


def settle_value(verdict: Verdict) -> bytes:
    """The value settle.lua reads for ``verdict`` (see the module docstring)."""
    if verdict.kind == "retry":
        return b"%d|" % verdict.run_at_ms + verdict.error
    if verdict.kind == "dead":
        return verdict.reason.encode() + b"|" + verdict.error
    return b""
