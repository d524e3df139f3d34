"""A publisher process for bus tests.

Run: python -m tests.procs.publisher --count N [--type T] [--crash-after-record]
Reads BUS_* settings from the environment; publishes N events of the given
type (each with a distinct user id) and prints their keys, one per line. With
--crash-after-record the process exits right after recording the first event,
before routing it (the test hook for a publisher dying mid-fan-out).
"""

from __future__ import annotations

import argparse
import sys

from bus import Bus, Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--type", default="user.signed_up")
    parser.add_argument("--crash-after-record", action="store_true")
    args = parser.parse_args(argv)
    bus = Bus(Settings.from_env(), crash_after_record=args.crash_after_record)
    try:
        for i in range(args.count):
            payload = {
                "user_id": f"p{i}",
                "email": f"p{i}@example.com",
                "plan": "pro",
                "country": "DE",
            }
            print(bus.publish(args.type, payload), flush=True)
    finally:
        bus.close_sync()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
