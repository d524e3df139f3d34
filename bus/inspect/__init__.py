"""The inspection API: what the CLI shows and does, and what a dashboard will.

The entry points (docs/operations.md, "Python API"):

- :mod:`bus.inspect.status`: :func:`~bus.inspect.status.bus_status` (per app
  its queue depths, dead count, workers, and whether it lacks workers),
  :func:`~bus.inspect.status.overdue_pending` and
  :func:`~bus.inspect.status.health_problems` (the health check),
  :func:`~bus.inspect.status.app_names` and
  :func:`~bus.inspect.status.require_apps` (which apps exist);
- :mod:`bus.inspect.lineage`: :func:`~bus.inspect.lineage.read_task` (one task
  with its history), :func:`~bus.inspect.lineage.event_lineage` (one event
  with the task of each subscription), and
  :func:`~bus.inspect.lineage.read_tasks`, several tasks of an app in one round
  trip (the building block of the others: it takes the app's
  :class:`~bus.store.keys.AppKeys` and lets the store's errors through); the
  code is in :mod:`bus.inspect.tasks` and :mod:`bus.inspect.events`;
- :mod:`bus.inspect.deadletters`: :func:`~bus.inspect.deadletters.list_dead`,
  :func:`~bus.inspect.deadletters.count_dead`,
  :func:`~bus.inspect.deadletters.get_dead`,
  :func:`~bus.inspect.deadletters.select_dead` (the dead set, in
  :mod:`bus.inspect.deadset`), :func:`~bus.inspect.deadletters.replay` and
  :func:`~bus.inspect.deadletters.purge` (in :mod:`bus.inspect.replay`).

Each other function takes the caller's client (:data:`bus.store.types.AsyncClient`)
and the key prefix, reads through :mod:`bus.store.reads` and acts through the
store's scripts (this package sends no command of its own), raises taskbus's
errors only (:mod:`bus.store.redis_errors`), and returns objects with
``to_doc()`` for JSON. Damaged entries are returned flagged, never raised.
"""
