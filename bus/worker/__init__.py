"""The worker of an app: ``python -m bus.worker --app NAME`` runs one.

See :class:`bus.worker.loop.Worker` for the worker and how it is composed,
:mod:`bus.worker.observer` for the observer seam, and ``__main__`` for the CLI.
"""

from bus.worker.loop import Worker
from bus.worker.observer import NullObserver, WorkerObserver

__all__ = ["NullObserver", "Worker", "WorkerObserver"]
