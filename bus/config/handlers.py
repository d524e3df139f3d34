"""Handler loading: resolving an app's handler refs to functions, confined to the app.

This module owns the import of the handlers an app config names. Handlers are
imported only by :func:`resolve_handler`, when a worker starts. A handler ref
names a module of the app's own directory; one that names any other module
(``os:system``) is refused unless ``allow_external_handlers`` lists it or a
package above it, so that a config line can never turn a task's payload into
the arguments of an arbitrary function of the import path.

An app's own modules are imported under a private package per app directory
(``taskbus_apps.<app>``, registered in ``sys.modules``), so apps need neither
``__init__.py`` nor ``sys.path`` changes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable
from difflib import get_close_matches
from typing import Any

from bus.config.model import AppConfig
from bus.errors import ConfigError

__all__ = [
    "HandlerImportError",
    "is_module_path",
    "resolve_handler",
]

_APPS_PACKAGE = "taskbus_apps"


class HandlerImportError(ConfigError):
    """A handler named in an app config cannot be imported or is not callable."""


def is_module_path(text: object) -> bool:
    """Whether ``text`` is a dotted module path of Python names (``mylib.tasks``)."""
    return isinstance(text, str) and all(part.isidentifier() for part in text.split("."))


def _app_package(config: AppConfig) -> str:
    """Register (once) and return the private package whose path is the app directory."""
    if _APPS_PACKAGE not in sys.modules:
        root = types.ModuleType(_APPS_PACKAGE, "Handler modules of taskbus apps.")
        root.__path__ = []
        sys.modules[_APPS_PACKAGE] = root
    directory = str(config.directory.resolve())
    name = f"{_APPS_PACKAGE}.{config.name}"
    existing = sys.modules.get(name)
    if existing is not None and list(getattr(existing, "__path__", [])) != [directory]:
        # Another directory holds an app of the same name in this process (tests
        # do this): keep both apart with a name derived from the directory.
        digest = hashlib.sha256(directory.encode()).hexdigest()[:10]
        name = f"{name}_{digest}"
        existing = sys.modules.get(name)
    if existing is None:
        package = types.ModuleType(name, f"Handler modules of the app in {directory}.")
        package.__path__ = [directory]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = [directory]
        sys.modules[name] = package
    return name


def _is_local(config: AppConfig, module: str) -> bool:
    top = config.directory / module.split(".")[0]
    return top.with_suffix(".py").is_file() or (top / "__init__.py").is_file()


def _is_allowed(config: AppConfig, module: str) -> bool:
    # Prefixes match whole module-path parts: "mylib.tasks" is not "mylib.tasksevil".
    return any(module == p or module.startswith(p + ".") for p in config.allow_external_handlers)


def _confined(config: AppConfig, ref: str, where: str) -> tuple[str, str, bool]:
    """Split a ref into module, function and whether the module is the app's own.

    Raises:
        ConfigError: The ref is not ``module:function`` of identifiers, names a
            dunder attribute, or names a module outside the app directory
            that ``allow_external_handlers`` does not list.
    """
    module, _, function = ref.rpartition(":")
    module = module or config.handlers
    # Configs built in code skip the parser's checks: no relative (".x") or
    # path-like ("../x", "/x") module gets as far as the import system.
    if not is_module_path(module) or not function.isidentifier():
        raise ConfigError(f"{where}: must be 'module:function' or 'function' of Python names")
    if function.startswith("__") and function.endswith("__"):
        raise ConfigError(f"{where}: {function!r} is a special attribute, not a handler")
    if _is_local(config, module):
        return module, function, True
    if _is_allowed(config, module):
        return module, function, False
    first = module.split(".")[0]
    raise ConfigError(
        f"{where}: module {module!r} is not in the app directory {config.directory} "
        f"(no {first}.py or {first}/__init__.py there) and allow_external_handlers does not "
        f"list it. Handlers run only the app's own code unless app.toml opts in: "
        f'add allow_external_handlers = ["{module}"] (a package name allows its submodules too)'
    )


def resolve_handler(config: AppConfig, ref: str) -> Callable[..., Any]:
    """Import the handler named by ``ref`` for an app.

    ``module`` is looked up in the app's directory (as ``<module>.py`` or a
    package ``<module>/__init__.py``), imported as
    ``taskbus_apps.<app>.<module>`` so apps need neither ``__init__.py`` nor
    ``sys.path`` changes, and may use relative imports between their modules
    (an app's ``os.py`` is the app's, never the standard library's). A module
    the directory does not have is imported from the import path only if
    ``config.allow_external_handlers`` lists it or a package above it.

    Args:
        config: The app's config.
        ref: ``"module:function"``, or ``"function"`` in the app's default
            ``handlers`` module.

    Returns:
        The handler.

    Raises:
        ConfigError: The ref names a module outside the app directory that
            ``allow_external_handlers`` does not list, or is not a
            ``module:function`` ref. Nothing is imported.
        HandlerImportError: The module cannot be imported (the message has
            the underlying error), has no such attribute, or it is not callable.
    """
    where = f"{config.file}: handler {ref!r}"
    module, function, local = _confined(config, ref, where)
    try:
        if local:
            importlib.invalidate_caches()  # the files may be newer than the finder's cache
            loaded = importlib.import_module(f"{_app_package(config)}.{module}")
        else:
            loaded = importlib.import_module(module)
    except Exception as exc:
        raise HandlerImportError(
            f"{where}: cannot import module {module!r}: {type(exc).__name__}: {exc}"
        ) from exc
    source = getattr(loaded, "__file__", None) or module
    if not hasattr(loaded, function):
        names = [n for n in dir(loaded) if not n.startswith("_") and callable(getattr(loaded, n))]
        close = get_close_matches(function, names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise HandlerImportError(f"{where}: {source} has no function {function!r}.{hint}")
    target = getattr(loaded, function)
    if not callable(target):
        raise HandlerImportError(
            f"{where}: {function!r} in {source} is a {type(target).__name__}, not a function"
        )
    handler: Callable[..., Any] = target
    return handler
