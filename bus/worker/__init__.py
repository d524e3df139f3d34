"""The worker of an app: ``python -m bus.worker --app NAME`` runs one.

See :class:`bus.worker.loop.Worker` for the loop and ``__main__`` for the CLI.
"""

from bus.worker.loop import Worker

__all__ = ["Worker"]
