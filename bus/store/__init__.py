"""Redis: the key layout (:mod:`bus.store.keys`), the Lua scripts
(:mod:`bus.store.scripts`), their typed call wrappers (:mod:`bus.store.engine`
for the task lifecycle, :mod:`bus.store.features` for dead letters, recurring
tasks and nodes), the transport that sends the calls (:mod:`bus.store.transport`,
with :mod:`bus.store.own` for synchronous connections), connections and server
checks (:mod:`bus.store.connection`), and the mapping of redis-py errors to
taskbus's (:mod:`bus.store.redis_errors`).

This is the package meant to hold every use of redis-py; what still imports
it elsewhere is listed in tests/test_architecture.py (docs/architecture.md).
"""
