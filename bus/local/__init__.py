"""The embedded Redis: a private redis-server that taskbus starts when no URL is set.

See :mod:`bus.local.embedded`. Imported only where a server is to be started
or looked after (:mod:`bus.store.connection` without ``BUS_REDIS_URL``, ``python -m
bus redis``), never for a configured server.
"""
