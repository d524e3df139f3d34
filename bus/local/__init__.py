"""The embedded Redis: a private redis-server that taskbus starts when no URL is set.

:mod:`bus.local.embedded` starts, stops and reports on the server;
:mod:`bus.local.binaries` finds the ``redis-server`` to run and its version;
:mod:`bus.local.datadir` owns the files of the data dir (config, pidfile, lock,
socket record). Imported only where a server is to be started or looked after
(:mod:`bus.store.connection` without ``BUS_REDIS_URL``, ``python -m bus redis``),
never for a configured server.
"""
