"""The command line shared by the benchmark scripts: options, the private
Redis server, interrupts, the table and the JSON report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shlex
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from engine_report import Figure, source_info
from engine_support import Children, RedisServer, machine_info

RunBench = Callable[[RedisServer, Children, Any, list[str], Path, Path | None], Awaitable[Any]]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench_main(
    *,
    doc: str | None,
    scenarios: Sequence[str],
    quick: Any,
    full: Any,
    run_bench: RunBench,
    report: Callable[[dict[str, Any], int, list[Figure]], None],
    profile_help: str,
    tmp_prefix: str,
) -> int:
    """Parse the options, run the benchmark on a private server, print and save it.

    ``quick`` and ``full`` are the scripts' plan dataclasses (with ``runs``);
    ``run_bench`` returns an object with ``figures`` and ``details``.
    """
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--only", nargs="+", choices=scenarios, help="run only these scenarios")
    parser.add_argument("--runs", type=int, help="runs per figure (default: 3, quick: 1)")
    parser.add_argument("--profile", type=Path, help=profile_help)
    args = parser.parse_args()
    plan = quick if args.quick else full
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", *sys.argv])
    machine = {**machine_info(command), **source_info()}
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        children = Children()
        try:
            server = RedisServer(Path(tmp), children)
            server.start()
            only = list(args.only or scenarios)
            bench = asyncio.run(run_bench(server, children, plan, only, Path(tmp), args.profile))
        except KeyboardInterrupt:
            children.close()
            print(
                "interrupted; every process the benchmark started has been ended",
                file=sys.stderr,
                flush=True,
            )
            return 130
        finally:
            children.close()
    machine["load_avg_1m_after"] = machine_info(command)["load_avg_1m"]
    report(machine, plan.runs, bench.figures)
    if args.json is not None:
        document = {
            "machine": machine,
            "plan": dataclasses.asdict(plan),
            "figures": [f.as_dict() for f in bench.figures],
            "details": bench.details,
        }
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0
