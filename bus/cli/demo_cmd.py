"""The ``demo`` command: publish a stream of events to the example apps and check the outcome.

The story is in :mod:`bus.demo.run` (its options in :mod:`bus.demo.options`, its
verdict in :mod:`bus.demo.verdict`); this module only parses the options. Exit
status: 0 when every check held, 1 when one failed, 2 for bad input or setup
(Redis unusable, another demo running), 130 when interrupted.
"""

from __future__ import annotations

import argparse

from bus.cli.ops import InputError
from bus.config.settings import Settings
from bus.demo import APPS, DEFAULT_EVENTS, DEMO_PREFIX, MAX_EVENTS, SHORT_EVENTS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    demo = subparsers.add_parser(
        "demo",
        help="the demo: publish events, watch the apps receive them, check the outcome",
        description=(
            f"Run the example apps ({', '.join(APPS)}) as worker processes and publish a "
            "stream of events to them, with a live summary. Analytics starts late and "
            "catches up; a poison order dies in billing, the fix is deployed and the dead "
            "letter replayed. At the end the demo checks that every event reached every "
            "matching subscription exactly once, prints a verdict and stops its workers. "
            "It uses BUS_REDIS_URL, else the embedded Redis (left running afterwards), "
            f"under the key prefix '{DEMO_PREFIX}' whose keys it deletes first "
            f"({DEMO_PREFIX}:* only). Exit status: 0 pass, 1 a check failed, 2 bad setup."
        ),
    )
    demo.add_argument(
        "--short",
        action="store_true",
        help=f"a few seconds and {SHORT_EVENTS} events instead of about 15 s and "
        f"{DEFAULT_EVENTS} (the tests use it)",
    )
    demo.add_argument(
        "--events",
        type=int,
        metavar="N",
        help=f"how many events to publish, 1 to {MAX_EVENTS} "
        f"(default: {DEFAULT_EVENTS}, with --short {SHORT_EVENTS})",
    )
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="show the workers' logs here instead of in <BUS_DATA_DIR>/demo/<app>.log",
    )
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo with the parsed options; return its exit status."""
    if args.events is not None and not 1 <= args.events <= MAX_EVENTS:
        raise InputError(f"--events must be between 1 and {MAX_EVENTS}, got {args.events}")
    # Imported here: every other command (and --help) runs without the demo's code.
    from bus.demo.options import DemoOptions
    from bus.demo.run import run_demo

    make = DemoOptions.short if args.short else DemoOptions.full
    return run_demo(settings, make(events=args.events, verbose=args.verbose))
