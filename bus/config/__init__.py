"""Configuration: settings from the environment (:mod:`bus.config.settings`),
app.toml parsing and handler loading (:mod:`bus.config.apptoml`), and building
apps, subscriptions and task declarations from it (:mod:`bus.config.apps`).
"""
