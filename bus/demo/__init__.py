"""The demo: several apps receive a stream of events, with faults on purpose.

``python -m bus demo`` runs it (:mod:`bus.demo.run`, the story; its options
and errors in :mod:`bus.demo.options`, the moves its steps share in
:mod:`bus.demo.stage`, the verdict in :mod:`bus.demo.verdict`); the pieces are
the event stream (:mod:`bus.demo.events`), the feed that publishes it at a
steady rate (``python -m bus.demo.feed``, :mod:`bus.demo.feed`), the worker
processes (:mod:`bus.demo.procs`), the live screen (:mod:`bus.demo.screen`)
and the state read back from Redis with the final checks
(:mod:`bus.demo.state`).
Nothing here is imported by the rest of taskbus; the CLI imports it only when
the ``demo`` command runs.
"""

__all__ = ["APPS", "DEFAULT_EVENTS", "DEMO_PREFIX", "MAX_EVENTS", "SHORT_EVENTS"]

# The demo's fixed facts live here, not in bus.demo.run, so that the CLI can
# describe the command without importing the demo (python -m bus --help).

#: The key prefix of everything the demo writes.
DEMO_PREFIX = "demo"
#: The example apps the demo runs, in display order.
APPS = ("billing", "email", "analytics")
#: Events published by default, and with ``--short``.
DEFAULT_EVENTS = 300
SHORT_EVENTS = 40
#: The most events ``--events`` accepts (the summary reads every task each refresh).
MAX_EVENTS = 5_000
