"""Configuration: settings from the environment (:mod:`bus.config.settings`),
the app config model (:mod:`bus.config.model`), app.toml parsing
(:mod:`bus.config.apptoml`, reading tables with :mod:`bus.config.tables`),
handler loading (:mod:`bus.config.handlers`), and building apps, subscriptions
and task declarations from it (:mod:`bus.config.apps`).
"""
