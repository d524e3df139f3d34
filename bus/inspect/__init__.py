"""The read and admin API: what the CLI shows and does, and what a dashboard will.

- :mod:`bus.inspect.status`: per app queue depths, workers, nodes, pending
  events; the health check.
- :mod:`bus.inspect.lineage`: one task with its history
  (:mod:`bus.inspect.tasks`), one event with the task of each subscription
  (:mod:`bus.inspect.events`).
- :mod:`bus.inspect.deadletters`: list, show (:mod:`bus.inspect.deadset`),
  replay and purge (:mod:`bus.inspect.replay`) dead tasks.

Each function takes the caller's client and the key prefix, raises taskbus's
errors only (:mod:`bus.store.redis_errors`), and returns objects with ``to_doc()``
for JSON. Damaged entries are returned flagged, never raised.
"""
