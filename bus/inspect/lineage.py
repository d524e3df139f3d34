"""What happened to a task, and to every task an event became: the lineage API.

This module owns no code: it is the documented entry point of the lineage
read API (docs/operations.md, "Python API"), so that a dashboard imports one
module for it. The code lives by concept:

- :mod:`bus.inspect.tasks`: one task as stored, with the history
  reconstructed from its state (:func:`read_task`, :func:`read_tasks`,
  :class:`TaskSnapshot`, :class:`HistoryEntry`, :exc:`TaskNotFound`);
- :mod:`bus.inspect.events`: one event from the event log and the task of each
  subscription (:func:`event_lineage`, :class:`EventLineage`,
  :class:`Delivery`, :exc:`EventNotFound`).

Code inside bus/ imports from those modules directly.
"""

from __future__ import annotations

# Re-exported on purpose: `bus.inspect.lineage` is the API's documented import
# path (docs/operations.md), kept when the code moved out (issue 14).
from bus.inspect.events import Delivery, EventLineage, EventNotFound, event_lineage
from bus.inspect.tasks import (
    HistoryEntry,
    TaskNotFound,
    TaskSnapshot,
    error_to_doc,
    read_task,
    read_tasks,
)

__all__ = [
    "Delivery",
    "EventLineage",
    "EventNotFound",
    "HistoryEntry",
    "TaskNotFound",
    "TaskSnapshot",
    "error_to_doc",
    "event_lineage",
    "read_task",
    "read_tasks",
]
