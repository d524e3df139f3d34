"""A chaos publisher process: publishes events and appends every attempt to a history.

Run: python -m tests.chaos.publisher --history FILE --name P [options]

Reads BUS_* settings from the environment. Each event gets a history id
``<name>-<n>``; before a publish the process appends ``invoke`` (with the
event's type, kind and poison flag), after it ``ok`` (with the event key),
``fail`` (the bus refused the event: nothing was written) or ``info`` (the
outcome is unknown: the connection failed mid-call). A process killed between
``invoke`` and its answer leaves the outcome unknown too. With ``--idempotent``
every event carries ``id = hid`` and a failed call is retried with the same id
until it is acknowledged (the bus's dedup makes the retry safe).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from typing import Any

import orjson
import redis.exceptions

from bus import Bus, EventSpec, Settings
from bus.events.schemas import SchemaError
from tests.chaos.world import EVENT_TYPES, KINDS

# The errors after which a publish may or may not have taken effect.
UNKNOWN_OUTCOME = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class History:
    """An append-only JSON-lines file; each line is one ``os.write`` (atomic, unbuffered)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def add(self, op: str, hid: str, **fields: Any) -> None:
        """Append one operation."""
        doc = {"op": op, "hid": hid, "t": time.time(), **fields}
        os.write(self._fd, orjson.dumps(doc) + b"\n")


def _event(rng: random.Random, hid: str, poison_rate: float, pad: int) -> EventSpec:
    payload: dict[str, Any] = {"hid": hid, "kind": rng.choice(KINDS)}
    if rng.random() < poison_rate:
        payload["poison"] = True
    if pad:
        payload["pad"] = "x" * pad
    return EventSpec(rng.choice(EVENT_TYPES), payload, id=None)


def _invoke(history: History, spec: EventSpec) -> None:
    history.add(
        "invoke",
        spec.payload["hid"],
        type=spec.type,
        kind=spec.payload["kind"],
        poison=bool(spec.payload.get("poison")),
    )


def _publish_one(
    bus: Bus, history: History, spec: EventSpec, idempotent: bool, stop: list[bool]
) -> None:
    hid = spec.payload["hid"]
    _invoke(history, spec)
    retry_until = time.monotonic() + 60.0
    pause_s = 0.02
    while True:
        try:
            key = bus.publish(spec.type, spec.payload, id=hid if idempotent else None)
        except UNKNOWN_OUTCOME as exc:
            if not idempotent or time.monotonic() > retry_until or stop[0]:
                history.add("info", hid, error=f"{type(exc).__name__}: {exc}")
                return
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.5)
            continue
        except SchemaError as exc:  # a refusal: the bus wrote nothing
            history.add("fail", hid, error=f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # anything else: the outcome is unknown
            history.add("info", hid, error=f"{type(exc).__name__}: {exc}")
            return
        history.add("ok", hid, key=key)
        return


def _publish_batch(bus: Bus, history: History, specs: list[EventSpec]) -> None:
    for spec in specs:
        _invoke(history, spec)
    try:
        keys = bus.publish_many(specs)
    except UNKNOWN_OUTCOME as exc:
        for spec in specs:
            history.add("info", spec.payload["hid"], error=f"{type(exc).__name__}: {exc}")
        return
    except SchemaError as exc:
        for spec in specs:
            history.add("fail", spec.payload["hid"], error=f"{type(exc).__name__}: {exc}")
        return
    except Exception as exc:
        for spec in specs:
            history.add("info", spec.payload["hid"], error=f"{type(exc).__name__}: {exc}")
        return
    for spec, key in zip(specs, keys, strict=True):
        history.add("ok", spec.payload["hid"], key=key)


def main(argv: list[str]) -> int:
    """Publish until the count or the duration is reached, or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history", required=True, help="the history file to append to")
    parser.add_argument("--name", required=True, help="prefix of this process's history ids")
    parser.add_argument("--count", type=int, default=1_000_000, help="events to publish at most")
    parser.add_argument("--duration-s", type=float, default=3600.0, help="publish this long")
    parser.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = flat out")
    parser.add_argument("--batch", type=int, default=1, help=">1: publish_many in batches")
    parser.add_argument("--poison-rate", type=float, default=0.0, help="share of poison events")
    parser.add_argument("--idempotent", action="store_true", help="id = hid, retry until acked")
    parser.add_argument("--pad", type=int, default=0, help="payload padding in bytes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crash-after-record",
        action="store_true",
        help="exit right after recording the first event, before routing it",
    )
    args = parser.parse_args(argv)
    stop = [False]

    def on_term(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random(args.seed)
    history = History(args.history)
    bus = Bus(Settings.from_env(), crash_after_record=args.crash_after_record)
    print(f"ready {os.getpid()}", flush=True)
    started = time.monotonic()
    n = 0
    try:
        while n < args.count and not stop[0]:
            if time.monotonic() - started > args.duration_s:
                break
            size = min(args.batch, args.count - n)
            specs = [
                _event(rng, f"{args.name}-{n + i}", args.poison_rate, args.pad) for i in range(size)
            ]
            n += size
            if size == 1:
                _publish_one(bus, history, specs[0], args.idempotent, stop)
            else:
                _publish_batch(bus, history, specs)
            if args.rate > 0:
                ahead_s = n / args.rate - (time.monotonic() - started)
                if ahead_s > 0:
                    time.sleep(ahead_s)
    finally:
        bus.close_sync()
    print(f"done {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
