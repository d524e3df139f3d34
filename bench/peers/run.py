"""Compare taskbus with Celery, RQ, Dramatiq, arq, SAQ, taskiq and huey.

Same machine, same run, same private Redis, same two job bodies. Figures:

  A  enqueue rate of one producer: one job per call, and the bulk API where
     the library has a genuine one;
  B  drain rate of ONE worker process over pre-enqueued no-op jobs, from the
     counter's first increment to the last (start-up excluded; the harness
     polls the counter every 10 ms);
  C  latency (handler start minus enqueue time) p50/p99 of jobs sent at a
     fixed rate to an idle worker.

Each figure is the median of --runs runs (min-max kept), with the rows in a
rotated order each run, and a ratio to taskbus from the same run.

  python bench/peers/run.py --setup     # create bench/.venv-peers once
  python bench/peers/run.py             # full comparison (~45 min)
  python bench/peers/run.py --quick --only taskbus,rq

Writes bench/peers/results/latest.json and peers.png; worker logs go to
bench/peers/results/logs/ (not committed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "bench" / ".venv-peers"
HERE = REPO / "bench" / "peers"
RESULTS = HERE / "results"
LOGS = RESULTS / "logs"

# Figure sizes. Full: what the published table uses; quick: for development.
FULL = {
    "runs": 3,
    "n_enqueue": 5000,  # one-by-one enqueues timed per run (after 200 untimed)
    "n_bulk": 20000,  # jobs per bulk run, in calls of --batch jobs
    "n_drain": 20000,  # pre-enqueued no-op jobs for figure B (as specified)
    "drain_cap_s": 120.0,  # a slower drain is cut here and its rate reported as capped
    "rate": 200.0,  # figure C's send rate, jobs/s (as specified)
    "duration_s": 10.0,  # figure C's send time (as specified)
}
QUICK = {
    **FULL,
    "runs": 1,
    "n_enqueue": 1000,
    "n_bulk": 5000,
    "n_drain": 2000,
    "drain_cap_s": 30.0,
    "duration_s": 3.0,
}
# Bulk calls enqueue this many jobs each: a producer flushing a buffer.
BULK_BATCH = 1000
# The harness reads figure B's counter this often (measurement, not load).
POLL_S = 0.010
# A worker that has not run its first job by then has failed to start.
WORKER_START_TIMEOUT_S = 60.0
# Bounds for one producer phase subprocess (it only fails by hanging).
PHASE_TIMEOUT_S = 600.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/peers/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help=f"create {VENV.relative_to(REPO)} and install the peers + taskbus",
    )
    parser.add_argument("--quick", action="store_true", help="1 run with small N, for development")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated rows or libraries (taskbus is always added, "
        "since every figure is also a ratio to it)",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results to this file"
    )
    parser.add_argument("--no-chart", action="store_true", help="skip peers.png")
    parser.add_argument(
        "--taskbus-ref",
        default=None,
        help="measure taskbus at this git ref (exported to a temp dir) "
        "instead of a copy of the working tree's bus/ taken at start",
    )
    parser.add_argument(
        "--redis-server", default=None, help="redis-server binary (default: the one on PATH)"
    )
    return parser.parse_args(argv)


def setup() -> None:
    """Create the peers venv and install the pinned peers and taskbus (editable)."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "install", "-r", str(HERE / "requirements.txt"), "-e", str(REPO)], check=True
    )
    subprocess.run([*pip, "check"], check=True)
    print(f"peers venv ready: {VENV}", file=sys.stderr)


def in_peers_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def reexec_in_venv(argv: list[str]) -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{VENV} does not exist: run `python {Path(__file__).relative_to(REPO)} --setup`")
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # Same clean-up path as Ctrl-C: every `with` block ends what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def export_taskbus(ref: str, into: Path) -> str:
    """Export ``bus/`` at a git ref into ``into``; return the commit id."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "bus"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def working_tree_state() -> str:
    """Which taskbus the copied working tree is, for the results file."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return f"working tree at {out.stdout.strip() or 'unknown'} (copied at start)"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.setup:
        setup()
        return 0
    if not in_peers_venv():
        reexec_in_venv(argv)
    sys.path[0] = str(REPO)  # package imports, and no shadowing by this folder
    from bench.peers import report
    from bench.peers.adapters import ROWS, rows_for
    from bench.peers.harness import Harness
    from bench.peers.procs import RedisServer

    params = dict(QUICK if args.quick else FULL)
    if args.runs is not None:
        params["runs"] = args.runs
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        rows = rows_for([*names, "taskbus"]) if names else list(ROWS)
    except ValueError as exc:
        sys.exit(str(exc))
    signal.signal(signal.SIGTERM, _sigterm)
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peers-taskbus-") as src:
        # taskbus is measured from a frozen copy of its source, so that edits
        # made to the working tree during a long run cannot mix versions.
        if args.taskbus_ref:
            commit = export_taskbus(args.taskbus_ref, Path(src))
            taskbus_source = f"git {args.taskbus_ref} = {commit}"
        else:
            shutil.copytree(
                REPO / "bus", Path(src) / "bus", ignore=shutil.ignore_patterns("__pycache__")
            )
            taskbus_source = working_tree_state()
        extra_path = [src]
        with RedisServer(args.redis_server) as server:
            harness = Harness(
                server.url,
                repo=REPO,
                logs=LOGS,
                params=params,
                batch=BULK_BATCH,
                poll_s=POLL_S,
                start_timeout_s=WORKER_START_TIMEOUT_S,
                phase_timeout_s=PHASE_TIMEOUT_S,
                taskbus_path=extra_path,
            )
            started = time.time()
            try:
                measured = harness.run(rows)
            except KeyboardInterrupt:
                print("interrupted: every process started has been ended", file=sys.stderr)
                return 130
            finally:
                harness.close()
            meta = {
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "command": shlex.join(["python", "bench/peers/run.py", *argv]),
                "duration_s": round(time.time() - started, 1),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "redis_server": server.version(),
                },
                "taskbus_source": taskbus_source,
                "params": {**params, "bulk_batch": BULK_BATCH, "poll_s": POLL_S},
            }
    results = report.summarise(meta, measured)
    text = json.dumps(results, indent=2)
    (RESULTS / "latest.json").write_text(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    if not args.no_chart:
        from bench.peers import chart

        chart.draw(results, RESULTS / "peers.png")
    print(report.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
