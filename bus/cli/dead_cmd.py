"""The ``dead`` commands: list, show, replay and purge an app's dead letters.

Tasks are selected by ``--id`` (repeatable), by ``--type`` and/or a dead-time
range ``--since``/``--until``, or with ``--all``. Replay moves tasks back to
their queues (``--dry-run`` to preview, ``--rate N/s`` to pace it); purge
deletes them for good and asks first (``--yes`` to skip the question, required
when standard input is not a terminal). Formats: ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from bus.cli.ops import (
    InputError,
    app_arg,
    fmt_age,
    fmt_time,
    parse_when_ms,
    print_json,
    print_table,
    with_redis,
)
from bus.cli.status_cmd import print_task
from bus.config.settings import Settings
from bus.core import clock
from bus.inspect.deadset import (
    DeadLetterError,
    DeadTask,
    Selection,
    count_dead,
    list_dead,
    select_dead,
)
from bus.inspect.replay import DEFAULT_BATCH, ReplayReport, purge, replay
from bus.inspect.status import require_apps
from bus.inspect.tasks import TaskSnapshot, read_tasks
from bus.store.keys import AppKeys
from bus.store.types import AsyncClient
from bus.text import emit

__all__ = ["parse_rate", "register"]

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*$")
_PER_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 1 / 60, "min": 1 / 60, "h": 1 / 3600}
SHOW_SKIPPED = 20


def parse_rate(text: str) -> float:
    """Parse ``--rate``: ``50/s``, ``600/m``, ``1000/h`` or a bare number per second.

    Raises:
        InputError: The text is not a positive rate.
    """
    match = _RATE_RE.match(text)
    rate = float(match.group(1)) * _PER_S[match.group(2)] if match else 0.0
    if rate <= 0:
        raise InputError(f"--rate {text!r} is not a rate: use e.g. 50/s, 600/m or 1000/h")
    return rate


def _add_selectors(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--app", required=True, help="the app whose dead letters to use")
    cmd.add_argument(
        "--id", action="append", nargs="+", metavar="ID", help="these tasks (repeatable)"
    )
    cmd.add_argument(
        "--type", help="task name, or event type pattern as in subscriptions (order.*)"
    )
    cmd.add_argument("--since", metavar="TIME", help="died at or after TIME (ISO 8601 or 2h)")
    cmd.add_argument("--until", metavar="TIME", help="died at or before TIME (ISO 8601 or 10m)")
    cmd.add_argument("--all", action="store_true", help="every dead task of the app")
    cmd.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dead`` command group."""
    group = subparsers.add_parser(
        "dead",
        help="list, show, replay and purge dead letters",
        description=(
            "A task is dead when it ran out of attempts, its handler failed it for good, "
            "its record or payload could not be decoded, or no handler is declared. Dead "
            "tasks stay, with every attempt's error, until replayed or purged."
        ),
    )
    commands = group.add_subparsers(dest="dead_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list dead tasks, newest first")
    listing.add_argument("--app", required=True, help="the app")
    listing.add_argument(
        "--type", help="task name, or event type pattern as in subscriptions (order.*)"
    )
    listing.add_argument("--since", metavar="TIME", help="died at or after TIME (ISO 8601 or 2h)")
    listing.add_argument("--until", metavar="TIME", help="died at or before TIME")
    listing.add_argument("--limit", type=int, default=100, help="most rows (default: 100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)

    show = commands.add_parser("show", help="show a dead task with its errors")
    show.add_argument("id", metavar="ID", help="the task id")
    show.add_argument("--app", required=True, help="the app")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)

    rep = commands.add_parser(
        "replay",
        help="move dead tasks back to their queues",
        description=(
            "Move the selected dead tasks back to the queue in their records: attempts "
            "start again from 0, errors are kept, the replay count goes up. A task is "
            "moved, never copied: if two replays race, it runs once."
        ),
    )
    _add_selectors(rep)
    rep.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    rep.add_argument("--rate", help="most tasks per second: 50/s, 600/m (default: no limit)")
    rep.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="tasks per batch (default: %(default)s)"
    )
    rep.set_defaults(handler=run_replay)

    pur = commands.add_parser(
        "purge",
        help="delete dead tasks for good",
        description="Delete the selected dead tasks: record, state and errors.",
    )
    _add_selectors(pur)
    pur.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pur.set_defaults(handler=run_purge)


# -- selection ---------------------------------------------------------------------------


def _filters(args: argparse.Namespace, now_ms: int) -> dict[str, Any]:
    since = parse_when_ms(args.since, "--since", now_ms) if args.since else None
    until = parse_when_ms(args.until, "--until", now_ms) if args.until else None
    if since is not None and until is not None and since > until:
        raise InputError(f"--since ({fmt_time(since)}) is after --until ({fmt_time(until)})")
    return {"type": args.type, "since_ms": since, "until_ms": until}


def _selector(args: argparse.Namespace, now_ms: int) -> dict[str, Any]:
    """The selection keywords of replay/purge, checked: exactly one way to select."""
    ids = [i for group in args.id for i in group] if args.id else None
    filters = _filters(args, now_ms)
    has_filter = any(v is not None for v in filters.values())
    if sum((ids is not None, has_filter, args.all)) != 1:
        raise InputError(
            "select dead tasks with --id ID..., or with --type and/or --since/--until, "
            "or with --all (exactly one of these)"
        )
    if ids is not None:
        return {"ids": ids}
    if args.all:
        return {"everything": True}
    return filters


def _check_ids(selection: Selection, app: str) -> None:
    if selection.missing:
        listed = "; ".join(f"{i}: {why}" for i, why in selection.missing.items())
        raise DeadLetterError(
            f"not dead letters of app {app!r}: {listed}. Nothing was changed; "
            f"see 'python -m bus dead list --app {app}'"
        )


def _row(task: DeadTask, now_ms: int) -> tuple[str, ...]:
    last = task.task.info.errors[-1] if task.task.info.errors else None
    error = f"{last.type}: {last.message}" if last else "-"
    if len(error) > 60:
        error = error[:57] + "..."
    return (
        fmt_age(now_ms - task.dead_ms),
        task.id,
        task.type or "?",
        task.queue or "?",
        f"{task.task.info.attempts}/{task.task.info.max_attempts}",
        str(task.task.info.replays),
        "state unreadable" if task.task.state_error else task.reason or "-",
        error,
    )


# -- handlers ----------------------------------------------------------------------------


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dead tasks, newest first."""
    app = app_arg(args.app)
    now = clock.now_ms()
    filters = _filters(args, now)
    if args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")

    async def read(client: AsyncClient) -> tuple[list[DeadTask], int]:
        await require_apps(client, settings.prefix, [app])
        tasks = await list_dead(client, settings.prefix, app, limit=args.limit, **filters)
        total = await count_dead(
            client, settings.prefix, app, since_ms=filters["since_ms"], until_ms=filters["until_ms"]
        )
        return tasks, total

    tasks, total = with_redis(settings, read)
    if args.json:
        print_json({"app": app, "total": total, "tasks": [t.to_doc() for t in tasks]})
        return 0
    if not tasks:
        emit(f"no dead tasks in app {app}" + (" match" if any(filters.values()) else ""))
        return 0
    header = ("DIED AGO", "ID", "TYPE", "QUEUE", "ATTEMPTS", "REPLAYS", "REASON", "LAST ERROR")
    rows: list[tuple[str, ...]] = [header, *(_row(t, now) for t in tasks)]
    print_table(rows)
    in_range = " in the time range" if filters["since_ms"] or filters["until_ms"] else ""
    emit(f"{len(tasks)} shown; {total} dead in app {app}{in_range}")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one dead task with its errors and history."""
    app = app_arg(args.app)

    async def read(client: AsyncClient) -> TaskSnapshot | None:
        return (await read_tasks(client, AppKeys(settings.prefix, app), [args.id])).get(args.id)

    task = with_redis(settings, read)
    if task is None:
        raise DeadLetterError(f"app {app!r} has no task {args.id!r}: check the id and --app")
    if task.dead_ms is None:
        raise DeadLetterError(
            f"task {args.id!r} of app {app!r} is not dead (state {task.info.state.value}); "
            f"see 'python -m bus task show {args.id} --app {app}'"
        )
    doc = task.to_doc(full=True)
    if args.json:
        print_json(doc)
    else:
        print_task(doc)
    return 0


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the selected dead tasks."""
    app = app_arg(args.app)
    selector = _selector(args, clock.now_ms())
    rate = parse_rate(args.rate) if args.rate else None
    if args.batch < 1:
        raise InputError(f"--batch must be >= 1, got {args.batch}")

    async def work(client: AsyncClient) -> ReplayReport:
        await require_apps(client, settings.prefix, [app])
        if "ids" in selector:
            _check_ids(await select_dead(client, settings.prefix, app, selector["ids"]), app)
        return await replay(
            client,
            settings.prefix,
            app,
            dry_run=args.dry_run,
            rate_per_s=rate,
            batch=args.batch,
            **selector,
        )

    report = with_redis(settings, work)
    if args.json:
        print_json(report.to_doc())
        return 0
    verb = "would replay" if report.dry_run else "replayed"
    per_queue = ", ".join(f"{q}: {n}" for q, n in sorted(report.queues.items()))
    emit(
        f"{verb} {len(report.replayed)} task{'s' if len(report.replayed) != 1 else ''} "
        f"of app {app}" + (f" ({per_queue})" if per_queue else "")
    )
    if report.skipped:
        emit(f"skipped {len(report.skipped)}:")
        for task_id, why in list(report.skipped.items())[:SHOW_SKIPPED]:
            emit(f"  {task_id}: {why}")
        if len(report.skipped) > SHOW_SKIPPED:
            emit(f"  ... and {len(report.skipped) - SHOW_SKIPPED} more (--json lists all)")
    return 0


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the selected dead tasks, after confirmation."""
    app = app_arg(args.app)
    selector = _selector(args, clock.now_ms())

    async def select(client: AsyncClient) -> Selection:
        await require_apps(client, settings.prefix, [app])
        selection = await select_dead(client, settings.prefix, app, **selector)
        if "ids" in selector:
            _check_ids(selection, app)
        return selection

    selection = with_redis(settings, select)
    ids = [t.id for t in selection.tasks]
    if not ids:
        if args.json:
            print_json({"app": app, "selected": 0, "purged": 0})
        else:
            emit(f"no dead tasks of app {app} match; nothing purged")
        return 0
    if not args.yes:
        question = (
            f"Delete {len(ids)} dead task{'s' if len(ids) != 1 else ''} of app {app} for good?"
        )
        if not sys.stdin.isatty():
            raise InputError(
                f"{question} Refusing to purge without --yes: standard input is not a terminal"
            )
        answer = input(f"{question} [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            emit("nothing purged")
            return 1

    async def delete(client: AsyncClient) -> int:
        return await purge(client, settings.prefix, app, ids)

    purged = with_redis(settings, delete)
    if args.json:
        print_json({"app": app, "selected": len(ids), "purged": purged})
    else:
        changed = f" ({len(ids) - purged} were no longer dead)" if purged < len(ids) else ""
        emit(f"purged {purged} dead task{'s' if purged != 1 else ''} of app {app}{changed}")
    return 0
