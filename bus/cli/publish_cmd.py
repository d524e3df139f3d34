"""The ``publish`` command: publish one event from the shell, validated like the API.

Standard output holds the event key alone (for scripts); standard error says
when the event was a duplicate of an earlier one (``duplicate of KEY``) or
matched no registered subscription (``recorded, routed to 0 apps``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from bus.client import Bus
from bus.config.settings import Settings
from bus.errors import BusError
from bus.events.publish_results import PublishReport
from bus.text import emit

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``publish`` command."""
    cmd = subparsers.add_parser(
        "publish",
        help="publish an event",
        description=(
            "Validate a payload against schemas/TYPE.json and publish it. The payload is "
            "JSON given as an argument, read from --file, or from standard input ('-')."
        ),
        epilog="example: python -m bus publish user.signed_up "
        '\'{"user_id": "u1", "email": "a@example.com", "plan": "pro", "country": "DE"}\'',
    )
    cmd.add_argument("type", metavar="TYPE", help="event type, e.g. user.signed_up")
    cmd.add_argument("payload", nargs="?", metavar="JSON", help="the payload; '-' reads stdin")
    cmd.add_argument("--file", type=Path, metavar="PATH", help="read the payload from a file")
    cmd.add_argument("--id", help="your own event id: the same source + id is routed once")
    cmd.add_argument("--source", help="event source (default: this host's name)")
    cmd.add_argument("--correlation-id", help="correlation id carried by follow-ups")
    cmd.set_defaults(handler=run)


def _read_payload(args: argparse.Namespace) -> bytes:
    if args.file is not None and args.payload is not None:
        raise BusError("give the payload as an argument or with --file, not both")
    if args.file is not None:
        try:
            data: bytes = args.file.read_bytes()
            return data
        except OSError as exc:
            raise BusError(f"cannot read {args.file}: {exc.strerror}") from exc
    if args.payload is None or args.payload == "-":
        return sys.stdin.buffer.read()
    return str(args.payload).encode()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Publish and print the event key; say on stderr when it is a duplicate or reached nobody."""
    raw = _read_payload(args)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BusError(f"the payload is not valid JSON: {exc}") from exc
    bus = Bus(settings)
    try:
        report = bus.publish_report(
            args.type, payload, id=args.id, source=args.source, correlation_id=args.correlation_id
        )
    finally:
        bus.close_sync()
    emit(report.key)
    note = _note(args, report)
    if note:
        emit(note, file=sys.stderr)
    return 0


def _note(args: argparse.Namespace, report: PublishReport) -> str | None:
    """What the user should know about the publish: a duplicate, or no subscriber."""
    if report.duplicate and report.apps:
        return (
            f"duplicate of {report.key}: that event was still pending (its routing had "
            f"failed), so it was routed again to {', '.join(report.apps)}; no app got a "
            "second task"
        )
    if report.duplicate:
        return (
            f"duplicate of {report.key}: source + id {args.id!r} was published before, within "
            "the dedup window (BUS_DEDUP_WINDOW_S); nothing new was recorded or routed"
        )
    if report.held_for:
        reached = f"routed to {len(report.apps)} app(s) so far"
        return (
            f"recorded, {reached}; it stays pending while the registry entry of "
            f"{', '.join(report.held_for)} is damaged (see python -m bus subscriptions list)"
        )
    if report.apps:
        return None
    return (
        f"recorded, routed to 0 apps: no registered subscription matches {args.type} with "
        "this payload (events published before an app is registered reach nobody; see "
        "python -m bus subscriptions list)"
    )
