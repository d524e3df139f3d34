"""Figures of bench/engine.py and how they are printed: median, min-max, target."""

from __future__ import annotations

import operator
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bus

__all__ = ["Figure", "print_table", "source_info"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass
class Figure:
    """One measured figure: its runs, and the issue's target if it has one.

    Attributes:
        key: A stable name for the JSON output.
        label: What the table shows.
        unit: The unit of the values.
        values: One value per run.
        target: ``(op, threshold)`` with op ``>=``, ``<=`` or ``<``; None if none.
        decimals: Digits after the point in the table.
    """

    key: str
    label: str
    unit: str
    values: list[float]
    target: tuple[str, float] | None = None
    decimals: int = 0
    median: float = field(init=False)

    def __post_init__(self) -> None:
        self.median = statistics.median(self.values)

    @property
    def met(self) -> bool | None:
        """Whether the median meets the target (None without a target)."""
        if self.target is None:
            return None
        op, threshold = self.target
        return _OPS[op](self.median, threshold)

    def fmt(self, value: float) -> str:
        """Format one value with the figure's precision and thousands separators."""
        return f"{value:,.{self.decimals}f}"

    def as_dict(self) -> dict[str, Any]:
        """The figure as the JSON report holds it."""
        return {
            "key": self.key,
            "label": self.label.strip(),
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": self.values,
            "target": f"{self.target[0]} {self.target[1]:g}" if self.target else None,
            "met": self.met,
        }


def print_table(machine: dict[str, Any], runs: int, figures: list[Figure]) -> None:
    """Print the environment and one row per figure."""
    print(f"taskbus engine benchmark: median of {runs} run(s), min-max")
    print(f"machine: {machine['nproc']} CPUs, {machine['cpu']}")
    print(
        f"load average (1 min): {machine['load_avg_1m']} before, "
        f"{machine.get('load_avg_1m_after', '?')} after"
    )
    print(
        f"{machine['redis_server']}; Python {machine['python']}; redis-py {machine['redis_py']}; "
        f"hiredis {machine['hiredis']}"
    )
    print(f"bus: {machine['bus_path']} ({machine['bus_git']})")
    print(f"command: {machine['command']}")
    print()
    rows = [("figure", "median", "min-max", "unit", "target", "")]
    for fig in figures:
        spread = (
            "" if len(fig.values) == 1 else f"{fig.fmt(min(fig.values))}-{fig.fmt(max(fig.values))}"
        )
        target = f"{fig.target[0]} {fig.target[1]:,g}" if fig.target else ""
        verdict = {True: "met", False: "MISSED", None: ""}[fig.met]
        rows.append((fig.label, fig.fmt(fig.median), spread, fig.unit, target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4].ljust(widths[4]),
            row[5],
        ]
        print("  ".join(cells).rstrip())


def source_info() -> dict[str, str]:
    """Where the measured ``bus`` package comes from, and its git commit if any."""
    path = Path(bus.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        described = f"git {commit}" + (", with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        described = "not a git checkout"
    return {"bus_path": str(path), "bus_git": described}
