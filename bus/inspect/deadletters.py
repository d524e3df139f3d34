"""Dead letters of an app: list, show, replay (redrive) and purge them.

This module owns no code: it is the documented entry point of the
dead-letter API (docs/operations.md, "Python API"), so that a dashboard
imports one module for it. The code lives by concept:

- :mod:`bus.inspect.deadset`: the dead set read (:func:`list_dead`,
  :func:`count_dead`, :func:`get_dead`, :func:`select_dead`, :class:`DeadTask`,
  :class:`Selection`, :exc:`DeadLetterError`); when the engine dead-letters a
  task, and how tasks are selected, is told there;
- :mod:`bus.inspect.replay`: the actions on a selection (:func:`replay`,
  :func:`purge`, :class:`ReplayReport`, :data:`DEFAULT_BATCH`).

Code inside bus/ imports from those modules directly.
"""

from __future__ import annotations

# Re-exported on purpose: `bus.inspect.deadletters` is the API's documented
# import path (docs/operations.md), kept when the code moved out (issue 14).
from bus.inspect.deadset import (
    DeadLetterError,
    DeadTask,
    Selection,
    count_dead,
    get_dead,
    list_dead,
    select_dead,
)
from bus.inspect.replay import DEFAULT_BATCH, ReplayReport, purge, replay

__all__ = [
    "DEFAULT_BATCH",
    "DeadLetterError",
    "DeadTask",
    "ReplayReport",
    "Selection",
    "count_dead",
    "get_dead",
    "list_dead",
    "purge",
    "replay",
    "select_dead",
]
