"""Running the figures: rows in a rotated order per run, one figure at a time.

The harness owns the private Redis server's data (it flushes it between
measurements; no other client uses that server), starts each worker as a
process group and ends it by its id, and runs each producer phase in a fresh
subprocess (:mod:`bench.peers.phase`) so that each process imports one
library. A failing measurement is recorded with its error and the comparison
goes on; Ctrl-C ends everything that was started and stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.peers.adapters.base import COUNTER_KEY, ROW_ENV, URL_ENV
from bench.peers.phase import RESULT_PREFIX
from bench.peers.procs import ProcessGroup

__all__ = ["Harness", "MeasurementError"]

# Figure C: time allowed for the worker to start and run the warm-up jobs,
# and for the last jobs to land after sending stops.
LATENCY_READY_TIMEOUT_S = 60.0
LATENCY_DRAIN_TIMEOUT_S = 60.0


class MeasurementError(RuntimeError):
    """One measurement of one row failed; the message says which and why."""


class Harness:
    """Runs figures A, B and C for rows against one private Redis server.

    Args:
        redis_url: The private server.
        repo: The repository root (working directory and ``PYTHONPATH``).
        logs: Directory for worker and phase logs.
        params: Figure sizes (see ``run.FULL``).
        batch: Jobs per bulk enqueue call.
        poll_s: Figure B's counter polling interval.
        start_timeout_s: How long a worker may take to run its first job.
        phase_timeout_s: Bound on one producer phase.
        taskbus_path: Directories put first on ``PYTHONPATH`` (an exported
            taskbus tree, when measuring a git ref).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        repo: Path,
        logs: Path,
        params: dict[str, Any],
        batch: int,
        poll_s: float,
        start_timeout_s: float,
        phase_timeout_s: float,
        taskbus_path: list[str],
    ) -> None:
        self.url = redis_url
        self.repo = repo
        self.logs = logs
        self.params = params
        self.batch = batch
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.phase_timeout_s = phase_timeout_s
        self.pythonpath = [*taskbus_path, str(repo)]
        self.redis = redis.Redis.from_url(redis_url)
        self.meta: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        """Close the harness's own Redis connection."""
        self.redis.close()

    # -- plumbing -----------------------------------------------------------

    def env(self, row: str) -> dict[str, str]:
        env = dict(os.environ)
        env[URL_ENV] = self.url
        env[ROW_ENV] = row
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        return env

    def flush(self) -> None:
        """Empty the private server (ours alone) between measurements."""
        self.redis.flushall()

    def phase(self, row: str, *argv: str) -> dict[str, Any]:
        """Run one producer phase in a subprocess; return its result."""
        cmd = [sys.executable, "-P", "-m", "bench.peers.phase", *argv]
        group = ProcessGroup(cmd, env=self.env(row), cwd=self.repo)
        try:
            out, err = group.proc.communicate(timeout=self.phase_timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise MeasurementError(
                f"{row}: phase {argv[0]} ran past {self.phase_timeout_s} s"
            ) from exc
        finally:
            group.stop()
        lines = [
            ln for ln in out.decode(errors="replace").splitlines() if ln.startswith(RESULT_PREFIX)
        ]
        if group.proc.returncode != 0 or not lines:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise MeasurementError(
                f"{row}: phase {argv[0]} exited {group.proc.returncode}: {' | '.join(tail)}"
            )
        return dict(json.loads(lines[-1][len(RESULT_PREFIX) :]))

    def worker(self, row: str, tag: str, run: int) -> ProcessGroup:
        """Start the row's worker; its output goes to a log file."""
        argv = self.meta[row]["worker_argv"]
        path = self.logs / f"run{run}-{row}-{tag}.log"
        with path.open("wb") as log:
            return ProcessGroup(argv, env=self.env(row), cwd=self.repo, log=log)

    # -- figures ------------------------------------------------------------

    def enqueue(self, row: str) -> dict[str, Any]:
        """Figure A, one job per call."""
        self.flush()
        return self.phase(row, "enqueue", "--n", str(self.params["n_enqueue"]))

    def enqueue_bulk(self, row: str) -> dict[str, Any] | None:
        """Figure A, the bulk API (None if the library has none)."""
        if not self.meta[row]["bulk_api"]:
            return None
        self.flush()
        return self.phase(
            row, "enqueue", "--n", str(self.params["n_bulk"]), "--batch", str(self.batch)
        )

    def drain(self, row: str, run: int) -> dict[str, Any]:
        """Figure B: one worker process over pre-enqueued no-op jobs."""
        n = int(self.params["n_drain"])
        cap_s = float(self.params["drain_cap_s"])
        self.flush()
        self.phase(row, "fill", "--n", str(n))
        with self.worker(row, "drain", run) as worker:
            launched = time.monotonic()
            first: tuple[float, int] | None = None
            while True:
                now = time.monotonic()
                count = int(self.redis.get(COUNTER_KEY) or 0)
                if first is None and count > 0:
                    first = (now, count)
                if first is None and now - launched > self.start_timeout_s:
                    raise MeasurementError(f"{row}: no job ran within {self.start_timeout_s} s")
                if first is not None and (count >= n or now - first[0] >= cap_s):
                    break
                if not worker.alive():
                    raise MeasurementError(f"{row}: worker exited {worker.proc.returncode}")
                time.sleep(self.poll_s)
        elapsed = now - first[0]
        done = count - first[1]
        return {
            "rate": done / elapsed if elapsed > 0 else float("nan"),
            "jobs": count,
            "elapsed_s": elapsed,
            "startup_s": first[0] - launched,
            "capped": count < n,
        }

    def latency(self, row: str, run: int) -> dict[str, Any]:
        """Figure C: jobs at a fixed rate to an idle, started worker."""
        self.flush()
        with self.worker(row, "latency", run):
            return self.phase(
                row,
                "latency",
                "--rate",
                str(self.params["rate"]),
                "--duration-s",
                str(self.params["duration_s"]),
                "--ready-timeout-s",
                str(LATENCY_READY_TIMEOUT_S),
                "--drain-timeout-s",
                str(LATENCY_DRAIN_TIMEOUT_S),
            )

    # -- the whole comparison -------------------------------------------------

    def run(self, rows: list[str]) -> dict[str, dict[str, Any]]:
        """Measure every row ``params["runs"]`` times, rotating the order.

        Returns:
            Per row: its metadata and a list of per-run figures (or errors).
        """
        for row in rows:
            self.meta[row] = self.phase(row, "describe")
        measured: dict[str, dict[str, Any]] = {row: {**self.meta[row], "runs": []} for row in rows}
        figures = [
            ("enqueue_one", lambda row, run: self.enqueue(row)),
            ("enqueue_bulk", lambda row, run: self.enqueue_bulk(row)),
            ("drain", self.drain),
            ("latency", self.latency),
        ]
        runs = int(self.params["runs"])
        # The first row of run 1 was measured seconds after the describe
        # processes started and had its worst figures there in every full run
        # (docs/benchmarks.md); one untimed round of it goes first.
        if rows and runs:
            for name, measure in figures:
                started = time.monotonic()
                try:
                    measure(rows[0], 0)
                    outcome = "done, not counted"
                except MeasurementError as exc:
                    outcome = f"ERROR {exc} (not counted)"
                print(
                    f"[warm-up] {rows[0]:<12} {name:<13} {outcome}  "
                    f"({time.monotonic() - started:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        for run in range(runs):
            shift = run % len(rows)
            for row in rows[shift:] + rows[:shift]:
                result: dict[str, Any] = {"run": run, "errors": {}}
                for name, measure in figures:
                    started = time.monotonic()
                    try:
                        result[name] = measure(row, run)
                    except MeasurementError as exc:
                        result[name] = None
                        result["errors"][name] = str(exc)
                    _progress(
                        run,
                        runs,
                        row,
                        name,
                        result.get(name),
                        result["errors"].get(name),
                        time.monotonic() - started,
                    )
                measured[row]["runs"].append(result)
        return measured


def _progress(
    run: int,
    runs: int,
    row: str,
    name: str,
    value: dict[str, Any] | None,
    error: str | None,
    took_s: float,
) -> None:
    if error:
        text = f"ERROR {error}"
    elif value is None:
        text = "n/a"
    elif name == "latency":
        text = f"p50 {value['p50_ms']:.2f} ms  p99 {value['p99_ms']:.2f} ms"
    else:
        text = f"{value['rate']:,.0f} jobs/s" + (" (capped)" if value.get("capped") else "")
    print(
        f"[run {run + 1}/{runs}] {row:<12} {name:<13} {text}  ({took_s:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
