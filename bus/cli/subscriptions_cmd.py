"""The ``subscriptions`` commands: sync an app's subscriptions, list, unregister."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from bus.cli.ops import InputError, print_table
from bus.config.apps import load_app_config_named, subscription_specs, task_specs
from bus.config.settings import Settings
from bus.events.registry import load_registry
from bus.events.registry_sync import sync_subscriptions, unregister_app
from bus.store.connection import connect
from bus.store.keys import BusKeys, validate_app_name
from bus.text import emit

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``subscriptions`` command group."""
    group = subparsers.add_parser(
        "subscriptions",
        help="manage the subscription registry",
        description=(
            "Subscriptions are declared in apps/<app>/app.toml and stored in Redis, so "
            "events reach an app's queue even while none of its workers runs."
        ),
    )
    commands = group.add_subparsers(dest="subs_command", metavar="COMMAND", required=True)

    sync = commands.add_parser(
        "sync",
        help="store an app's subscriptions from its config",
        description=(
            "Make the registry's subscriptions of an app equal to its app.toml. A sync "
            "that would remove subscriptions prints the diff and changes nothing unless "
            "--allow-removal is given. Workers sync their app at start."
        ),
    )
    sync.add_argument("--app", required=True, help="the app (a directory in BUS_APPS_DIR)")
    sync.add_argument("--allow-removal", action="store_true", help="allow dropping subscriptions")
    sync.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    sync.set_defaults(handler=run_sync)

    listing = commands.add_parser(
        "list",
        help="show the registered subscriptions",
        description="Show every registered app and its subscriptions.",
    )
    listing.add_argument("--app", help="only this app")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)

    unreg = commands.add_parser(
        "unregister",
        help="remove an app from the registry",
        description=(
            "Remove an app and all its subscriptions: events published afterwards no "
            "longer reach it. Its queues and tasks are left as they are."
        ),
    )
    unreg.add_argument("--app", required=True, help="the app to remove")
    unreg.add_argument("--yes", action="store_true", help="do it without asking")
    unreg.set_defaults(handler=run_unregister)


def run_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Sync one app's subscriptions; print the diff."""
    config = load_app_config_named(settings, args.app)
    specs = subscription_specs(config)

    async def go() -> str:
        client = await connect(settings)
        try:
            result = await sync_subscriptions(
                client,
                BusKeys(settings.prefix),
                config.name,
                specs,
                tasks=task_specs(config),
                allow_removal=args.allow_removal,
                dry_run=args.dry_run,
            )
        finally:
            await client.aclose()
        suffix = " (dry run, nothing written)" if args.dry_run else ""
        return result.describe() + suffix

    emit(asyncio.run(go()))
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print the registry."""

    async def go() -> None:
        client = await connect(settings)
        try:
            registry = await load_registry(client, BusKeys(settings.prefix))
        finally:
            await client.aclose()
        subs = [s.spec for s in registry.subscriptions if args.app in (None, s.spec.app)]
        apps = [a for a in registry.apps if args.app in (None, a)]
        # A damaged entry is skipped by the registry; it is listed here with
        # its reason (and how to repair it), the rest of the listing as usual.
        damaged = [
            {"app": app, "entry": entry, "reason": reason}
            for entry, damage in (
                ("subscriptions", registry.damage),
                ("tasks", registry.task_damage),
            )
            for app, reason in damage.items()
            if args.app in (None, app)
        ]
        if args.json:
            doc = {
                "version": registry.version,
                "apps": apps,
                "subscriptions": [s.to_doc() for s in subs],
                "tasks": {
                    app: [t.to_doc() for t in declared.values()]
                    for app, declared in registry.tasks.items()
                    if args.app in (None, app)
                },
                "damaged": damaged,
            }
            print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
            return
        if not apps and not damaged:
            emit("no apps registered" if args.app is None else f"app {args.app} is not registered")
            return
        rows = [("APP", "SUBSCRIPTION", "EVENTS", "FILTER", "QUEUE", "SCOPE")]
        for s in subs:
            where = orjson.dumps(s.where).decode() if s.where else "-"
            rows.append((s.app, s.name, ",".join(s.events), where, s.queue, s.scope))
        for app in apps:
            if app not in registry.damage and not any(s.app == app for s in subs):
                rows.append((app, "-", "-", "-", "-", "-"))
        for d in damaged:
            flag = f"DAMAGED {d['entry']} entry: {d['reason']}"
            rows.append((d["app"], flag, "-", "-", "-", "-"))
        print_table(rows)
        for app in dict.fromkeys(d["app"] for d in damaged):
            if _valid_name(app):
                emit(f"repair app {app}: python -m bus subscriptions sync --app {app}")
            else:
                emit(
                    f"remove {app}: no app can have this name; delete its field "
                    f"from {BusKeys(settings.prefix).subs} (HDEL)"
                )

    asyncio.run(go())
    return 0


def _valid_name(app: str) -> bool:
    try:
        validate_app_name(app)
    except ValueError:
        return False
    return True


def run_unregister(args: argparse.Namespace, settings: Settings) -> int:
    """Remove an app from the registry, after confirmation."""
    if not args.yes:
        question = f"Unregister app {args.app!r}? Events will no longer reach it."
        if not sys.stdin.isatty():
            # input() would die with EOFError in a script or a pipe.
            raise InputError(
                f"{question} Refusing to unregister without --yes: standard input is not a terminal"
            )
        answer = input(f"{question} [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            emit("nothing changed")
            return 1

    async def go() -> bool:
        client = await connect(settings)
        try:
            return await unregister_app(client, BusKeys(settings.prefix), args.app)
        finally:
            await client.aclose()

    if asyncio.run(go()):
        emit(f"app {args.app} unregistered")
        return 0
    emit(f"app {args.app} was not registered")
    return 1
