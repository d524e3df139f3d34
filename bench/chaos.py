"""The long chaos scenarios behind docs/reliability.md.

Runs each scenario of ``tests/chaos/`` for longer and at a higher rate than the
test suite does, and prints one table row per scenario: events published,
faults injected, and the checker's lost / recovered / unexpected / duplicated
counts summed over the three apps, plus how long after the faults stopped the
last delivery ran.

    .venv/bin/python bench/chaos.py                         # every scenario, 60 s of faults each
    .venv/bin/python bench/chaos.py --fault-s 20 --only workers-killed redis-killed
    .venv/bin/python bench/chaos.py --json out.json --help

Every process it starts (redis-server, workers, publishers) is ended by pid.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.scenario import Scenario, run  # noqa: E402

ALL = ("kill_worker", "kill_redis", "kill_publisher", "crash_publisher", "pause_worker",
       "client_kill")  # fmt: skip

SCENARIOS: dict[str, dict[str, Any]] = {
    "calm": {"faults": ()},
    "workers-killed": {"faults": ("kill_worker",)},
    "redis-killed": {"faults": ("kill_redis",), "fault_every_s": 2.0},
    "publishers-killed": {"faults": ("kill_publisher", "crash_publisher")},
    "worker-paused": {"faults": ("pause_worker",)},
    "client-kill": {"faults": ("client_kill",), "fault_every_s": 0.5},
    "everything": {"faults": ALL},
    "everysec-redis-killed": {
        "faults": ("kill_redis",),
        "appendfsync": "everysec",
        "fault_every_s": 2.0,
    },
}


def row(outcome_doc: dict[str, Any], took_s: float) -> str:
    """One Markdown table row."""
    r = outcome_doc["report"]
    apps = r["apps"].values()

    def total(name: str) -> int:
        return sum(int(a[name]) for a in apps)

    audit = "clean" if not outcome_doc["audit"] else "; ".join(outcome_doc["audit"][:3])
    faults = ", ".join(f"{k} x{v}" for k, v in sorted(outcome_doc["faults"].items())) or "none"
    return (
        f"| {outcome_doc['scenario']} | {outcome_doc['appendfsync']} | {r['invoked']:,} "
        f"| {r['ok']:,} / {r['info'] + r['unknown']:,} | {faults} | {total('expected'):,} "
        f"| **{total('lost')}** | {total('recovered')} | {total('unexpected')} "
        f"| {total('duplicated')} ({total('extra_runs')} runs) "
        f"| {total('poison_units')} / {outcome_doc['dead']} "
        f"| {outcome_doc['acks_rejected']} / {outcome_doc['leases_lost']} "
        f"| {outcome_doc['last_handled_after_s']:.1f} s | {audit} "
        f"| {took_s:.0f} s |"
    )  # fmt: skip


HEADER = (
    "| scenario | fsync | events | acked / unknown | faults | deliveries due | lost | recovered "
    "| unexpected | duplicated | poison / dead | late acks refused / leases lost "
    "| last delivery after faults | Redis audit | run |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str]) -> int:
    """Run the chosen scenarios; print the table; optionally write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument(
        "--fault-s", type=float, default=60.0, help="seconds of faults (and publishing)"
    )
    parser.add_argument("--rate", type=float, default=400.0, help="events per second per publisher")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--poison-rate", type=float, default=0.01)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    docs: list[dict[str, Any]] = []
    print(HEADER, flush=True)
    for offset, name in enumerate(names):
        spec = dict(SCENARIOS[name])
        scenario = Scenario(
            name,
            tuple(spec.pop("faults")),
            seed=args.seed + offset,
            fault_s=args.fault_s,
            publishers=args.publishers,
            rate=args.rate,
            poison_rate=args.poison_rate,
            lease_s=args.lease_s,
            settle_timeout_s=300.0,
            **spec,
        )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
            outcome = run(scenario, Path(tmp))
        doc = outcome.to_doc()
        docs.append(doc)
        print(row(doc, time.monotonic() - started), flush=True)
    if args.json:
        args.json.write_bytes(orjson.dumps(docs, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
