"""The inspection commands: ``status``, ``task show`` and ``event show``.

``status`` shows every app's queues, dead letters and workers, and flags
registered apps that no worker has served for a while; ``status --check`` is a
health check (exit 1 naming each problem). ``task show`` tells one
task's story from its stored state; ``event show`` follows an event to the task
it became in each subscribing app. Formats: ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from bus.cli.ops import (
    app_arg,
    fmt_age,
    fmt_time,
    parse_duration_ms,
    print_json,
    print_table,
    with_redis,
)
from bus.config.settings import Settings
from bus.core import clock
from bus.inspect.events import EventLineage, event_lineage
from bus.inspect.status import (
    LIVE_AFTER_MS,
    PENDING_AFTER_MS,
    BusStatus,
    bus_status,
    health_problems,
    overdue_pending,
)
from bus.inspect.tasks import TaskSnapshot, read_task
from bus.store.types import AsyncClient
from bus.text import emit, emit_block

__all__ = ["print_task", "register"]

PAYLOAD_CHARS = 2000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status``, ``task`` and ``event`` commands."""
    status = subparsers.add_parser(
        "status",
        help="show queues, dead letters and workers of every app",
        description=(
            "Per app: each queue's ready, delayed and in-flight tasks and the age of the "
            "oldest waiting one; the dead-letter count; the workers and their last "
            "heartbeats. Registered apps without a live worker for longer than "
            "--stale-after are flagged."
        ),
    )
    status.add_argument("--app", action="append", help="only this app (repeatable)")
    status.add_argument(
        "--stale-after",
        default="5m",
        metavar="DURATION",
        help="flag a registered app with no live worker for this long (default: %(default)s)",
    )
    status.add_argument(
        "--live-after",
        metavar="DURATION",
        default=f"{LIVE_AFTER_MS // 1000}s",
        help="a worker whose last heartbeat is older is gone (default: %(default)s)",
    )
    status.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 1 and name the problem when an app has dead tasks or no "
        "live worker, or events stay pending past --pending-after (exit 0 otherwise)",
    )
    status.add_argument(
        "--pending-after",
        metavar="DURATION",
        default=f"{PENDING_AFTER_MS // 1000}s",
        help="with --check: an event still pending after this long is a problem "
        "(default: %(default)s, the sweep grace plus a heartbeat, with margin)",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=run_status)

    task = subparsers.add_parser("task", help="inspect a task")
    task_commands = task.add_subparsers(dest="task_command", metavar="COMMAND", required=True)
    show = task_commands.add_parser(
        "show",
        help="show a task's record, state and history",
        description=(
            "Show a task's record, current state, every attempt's error and its history "
            "(created, started, failed, dead, replayed, succeeded), as stored."
        ),
    )
    show.add_argument("id", metavar="ID", help="the task id")
    show.add_argument("--app", required=True, help="the app the task belongs to")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_task_show)

    event = subparsers.add_parser("event", help="inspect an event")
    event_commands = event.add_subparsers(dest="event_command", metavar="COMMAND", required=True)
    eshow = event_commands.add_parser(
        "show",
        help="show an event and the task it became in each subscribing app",
        description=(
            "Show the event's envelope from the event log and, for every registered "
            "subscription, the state of its task <key>.<subscription> ('no task' when the "
            "subscription does not match, the event is not routed yet, or the task expired)."
        ),
    )
    eshow.add_argument("key", metavar="EVENT_KEY", help="the event's bus key (buskey)")
    eshow.add_argument("--json", action="store_true", help="print JSON")
    eshow.set_defaults(handler=run_event_show)


# -- status ------------------------------------------------------------------------------


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status of every app (or of the ``--app`` ones); with ``--check``, judge it."""
    stale_ms = parse_duration_ms(args.stale_after, "--stale-after")
    live_ms = parse_duration_ms(args.live_after, "--live-after")
    pending_ms = parse_duration_ms(args.pending_after, "--pending-after")
    apps = [app_arg(a) for a in args.app] if args.app else None

    async def read(client: AsyncClient) -> tuple[BusStatus, tuple[int, int | None] | None]:
        now = clock.now_ms()
        status = await bus_status(
            client,
            settings.prefix,
            now_ms=now,
            apps=apps,
            live_after_ms=live_ms,
            stale_after_ms=stale_ms,
        )
        if not args.check:
            return status, None
        pending = await overdue_pending(
            client, settings.prefix, now_ms=now, older_than_ms=pending_ms
        )
        return status, pending

    status, pending = with_redis(settings, read)
    problems = health_problems(status, pending, pending_ms) if pending is not None else []
    if args.json:
        doc = status.to_doc()
        if args.check:
            doc["check"] = {"ok": not problems, "problems": problems}
        print_json(doc)
        return 1 if problems else 0
    if not status.apps:
        emit("no apps: none is registered and none has queues")
    for index, app in enumerate(status.to_doc()["apps"]):
        if index:
            emit()
        _print_app(app)
    if args.check:
        emit()
        if problems:
            emit(f"check: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
            for problem in problems:
                emit(f"  {problem}")
        else:
            emit("check: ok")
    return 1 if problems else 0


def _print_app(app: dict[str, Any]) -> None:
    label = "registered" if app["registered"] else "not registered"
    emit(
        f"app {app['app']} ({label}): {app['dead']} dead, "
        f"{app['live_workers']} live worker{'s' if app['live_workers'] != 1 else ''}"
    )
    if app["warning"]:
        emit(f"  WARNING: {app['warning']}: its queues fill up and nobody works them")
    if app["queues"]:
        rows = [("QUEUE", "READY", "DELAYED", "IN FLIGHT", "OLDEST WAITING")]
        for q in app["queues"]:
            rows.append(
                (
                    q["queue"],
                    str(q["ready"]),
                    str(q["delayed"]),
                    str(q["inflight"]),
                    fmt_age(q["oldest_waiting_age_ms"]),
                )
            )
        print_table(rows, indent="  ")
    else:
        emit("  no queues")
    if app["workers"]:
        wrows = [("WORKER", "HOST", "PID", "QUEUES", "RUNNING", "DONE", "FAILED", "LAST BEAT")]
        for w in app["workers"]:
            beat = fmt_age(w["last_beat_age_ms"]) + ("" if w["live"] else " (gone)")
            wrows.append(
                (
                    w["id"],
                    str(w["host"] or "-"),
                    str(w["pid"] or "-"),
                    ",".join(w["queues"]) or "-",
                    str(w["running"]),
                    str(w["processed"]),
                    str(w["failed"]),
                    beat,
                )
            )
        print_table(wrows, indent="  ")


# -- task show ---------------------------------------------------------------------------


def run_task_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print one task with its history."""
    app = app_arg(args.app)

    async def read(client: AsyncClient) -> TaskSnapshot:
        return await read_task(client, settings.prefix, app, args.id)

    task = with_redis(settings, read)
    if args.json:
        print_json(task.to_doc(full=True))
    else:
        print_task(task.to_doc(full=True))
    return 0


def print_task(doc: dict[str, Any]) -> None:
    """Print a task document (``TaskSnapshot.to_doc(full=True)``) for a human."""
    emit(f"task {doc['id']} of app {doc['app']}")
    what = f"{doc['name']} (kind {doc['kind']})" if doc["name"] else "-"
    state = doc["state"] + (f" ({doc['dead_reason']})" if doc["dead_reason"] else "")
    if doc["state_error"]:
        state = f"UNREADABLE: {doc['state_error']}"
    rows = [
        ("name", what),
        ("type", doc["type"] or "-"),
        ("queue", doc["queue"] or "-"),
        ("state", state),
        ("attempts", f"{doc['attempts']} of {doc['max_attempts']}"),
        ("replays", str(doc["replays"])),
        ("worker", doc["worker"] or "-"),
    ]
    if doc["event_key"]:
        rows.insert(2, ("event", doc["event_key"]))
    if doc["record_error"]:
        rows.append(("record", f"UNREADABLE: {doc['record_error']}"))
    for label, value in rows:
        emit(f"  {label:<9} {value}")
    emit("history")
    hrows = []
    for entry in doc["history"]:
        detail = {k: v for k, v in entry.items() if k not in ("at_ms", "event") and v is not None}
        text = " ".join(f"{k}={v}" for k, v in detail.items() if k not in ("type", "message"))
        if "type" in detail:
            text += f" {detail['type']}: {detail.get('message', '')}"
        hrows.append((fmt_time(entry["at_ms"]), entry["event"], text.strip()))
    print_table(hrows, indent="  ")
    if doc["record"] is not None:
        payload = orjson.dumps(doc["record"]["payload"], option=orjson.OPT_INDENT_2).decode()
        emit("payload")
        emit_block(_clip(payload), indent="  ")
    elif doc["record_raw"] is not None:
        emit("raw record")
        emit_block(_clip(doc["record_raw"]), indent="  ")
    if doc["errors"] and doc["errors"][-1]["traceback"]:
        emit(f"last error (attempt {doc['errors'][-1]['attempt']})")
        emit_block(doc["errors"][-1]["traceback"].rstrip(), indent="  ")


def _schema(env: dict[str, Any]) -> str | None:
    if env.get("dataschema") is None:
        return None
    version = env.get("schemaversion")
    return f"{env['dataschema']}" + (f" (version {version})" if version is not None else "")


def _clip(text: str) -> str:
    return text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS] + " ...(clipped)"


# -- event show --------------------------------------------------------------------------


def run_event_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print an event and the state of its task in every subscribing app."""

    async def read(client: AsyncClient) -> EventLineage:
        return await event_lineage(client, settings.prefix, args.key)

    lineage = with_redis(settings, read)
    doc = lineage.to_doc()
    if args.json:
        print_json(doc)
        return 0
    env = doc["envelope"]
    if env is None:
        emit(f"event {doc['key']} (UNREADABLE: {doc['envelope_error']})")
        emit(f"  {'routed':<11} " + ("no (pending)" if doc["pending"] else "yes"))
        emit("raw envelope")
        emit_block(_clip(doc["envelope_raw"]), indent="  ")
        _print_deliveries(doc)
        return 0
    emit(f"event {doc['key']} ({env.get('type')})")
    for label, value in (
        ("id", env.get("id")),
        ("source", env.get("source")),
        ("time", env.get("time")),
        ("schema", _schema(env)),
        ("correlation", env.get("correlationid")),
        ("routed", "no (pending: a worker's sweep will route it)" if doc["pending"] else "yes"),
    ):
        if value is not None:
            emit(f"  {label:<11} {value}")
    emit("data")
    emit_block(_clip(orjson.dumps(env.get("data"), option=orjson.OPT_INDENT_2).decode()), "  ")
    _print_deliveries(doc)
    return 0


def _print_deliveries(doc: dict[str, Any]) -> None:
    if not doc["deliveries"]:
        emit("no registered subscriptions")
        return
    rows = [("APP", "SUBSCRIPTION", "TASK", "STATE", "ATTEMPTS", "NOTE")]
    for d in doc["deliveries"]:
        if d["state"] is None:
            note = "does not match" if doc["envelope"] is not None else "envelope unreadable"
            if d["matches"]:
                note = (
                    "not routed yet" if doc["pending"] else "expired, purged, or subscribed later"
                )
            rows.append((d["app"], d["subscription"], d["task_id"], "no task", "-", note))
            continue
        note = d["dead_reason"] or ""
        if d["replays"]:
            note = f"{note} replayed {d['replays']}x".strip()
        rows.append(
            (d["app"], d["subscription"], d["task_id"], d["state"], str(d["attempts"]), note)
        )
    print_table(rows)
