"""The task model: apps and task definitions, options, the task record and its
state, the handler's context, schedules, ids and the clock.

Nothing here talks to Redis or knows about events; the layers above build on it
(docs/architecture.md).
"""
