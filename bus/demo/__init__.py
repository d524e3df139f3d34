"""The demo: several apps receive a stream of events, with faults on purpose.

``python -m bus demo`` runs it (:mod:`bus.demo.run`); the pieces are the event
stream (:mod:`bus.demo.events`), the feed that publishes it at a steady rate
(``python -m bus.demo.feed``, :mod:`bus.demo.feed`), the worker processes
(:mod:`bus.demo.procs`), the live screen (:mod:`bus.demo.screen`) and the
state read back from Redis with the final checks (:mod:`bus.demo.state`).
Nothing here is imported by the rest of taskbus; the CLI imports it only when
the ``demo`` command runs.
"""
