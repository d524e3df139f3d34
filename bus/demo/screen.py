"""The demo's terminal output: narrated steps above a live summary table.

On a terminal the summary (events published, and per app its worker and its
tasks delivered, waiting, running, retrying, dead) is redrawn in place; each
narrated step is printed above it and stays. Elsewhere (a pipe, a file, a
test, or ``--verbose`` where worker logs share the terminal) nothing is
redrawn: steps are plain lines, and the summary is one line at most every
``plain_every_s`` seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import TextIO

from bus.demo.state import AppCounts, Snapshot

__all__ = ["Screen", "summary_line", "summary_table"]

_UP_AND_CLEAR = "\x1b[{n}A\r\x1b[J"
_COLUMNS = ("APP", "WORKER", "DELIVERED", "WAITING", "RUNNING", "RETRYING", "DEAD")


def _header(elapsed_s: float, published: int, planned: int, snap: Snapshot) -> str:
    follow_ups = max(snap.events - published, 0)
    return (
        f"{elapsed_s:5.1f}s  published {published}/{planned} events, "
        f"+{follow_ups} follow-ups by handlers, {snap.pending} pending"
    )


def summary_table(
    elapsed_s: float,
    published: int,
    planned: int,
    snap: Snapshot,
    workers: Mapping[str, str],
) -> list[str]:
    """The live summary as aligned lines.

    Args:
        elapsed_s: Seconds since the demo started.
        published: Events the demo has published.
        planned: Events it will publish.
        snap: The counts.
        workers: Per app, its worker's state (``running``, ``offline`` ...).
    """
    rows: list[Sequence[str]] = [_COLUMNS]
    for app, c in snap.apps.items():
        rows.append(
            (
                app,
                workers.get(app, "-"),
                str(c.delivered),
                str(c.waiting),
                str(c.running),
                str(c.retrying),
                str(c.dead),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [_header(elapsed_s, published, planned, snap)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  " + "  ".join(cells))
    return lines


def _app_text(app: str, worker: str, c: AppCounts) -> str:
    return (
        f"{app} ({worker}) {c.delivered} delivered, {c.waiting} waiting, "
        f"{c.running} running, {c.retrying} retrying, {c.dead} dead"
    )


def summary_line(
    elapsed_s: float,
    published: int,
    planned: int,
    snap: Snapshot,
    workers: Mapping[str, str],
) -> str:
    """The summary as one line (for output that is not a terminal)."""
    parts = [_header(elapsed_s, published, planned, snap)]
    parts += [_app_text(app, workers.get(app, "-"), c) for app, c in snap.apps.items()]
    return "[" + parts[0] + "] " + " | ".join(parts[1:])


class Screen:
    """Writes the demo's steps and its summary.

    Args:
        out: Where to write.
        live: Redraw the summary in place (a terminal); else plain lines.
        plain_every_s: Without ``live``, the least time between two summary lines.
    """

    def __init__(self, out: TextIO, *, live: bool, plain_every_s: float = 1.0) -> None:
        self.out = out
        self.live = live
        self.plain_every_s = plain_every_s
        self._block: list[str] = []
        self._last_plain_s: float | None = None

    def note(self, text: str) -> None:
        """Print a step; on a terminal it goes above the summary, which is redrawn."""
        self._erase()
        self.out.write(text + "\n")
        self._draw()

    def show(
        self,
        elapsed_s: float,
        published: int,
        planned: int,
        snap: Snapshot,
        workers: Mapping[str, str],
        *,
        force: bool = False,
    ) -> None:
        """Show the summary (redrawn in place, or as a plain line when due or forced)."""
        if self.live:
            self._erase()
            # A line wider than the terminal wraps, and the redraw would then
            # erase one line too few: clip to the width.
            width = max(shutil.get_terminal_size().columns - 1, 20)
            lines = summary_table(elapsed_s, published, planned, snap, workers)
            self._block = [line[:width] for line in lines]
            self._draw()
            return
        due = self._last_plain_s is None or elapsed_s - self._last_plain_s >= self.plain_every_s
        if due or force:
            self._last_plain_s = elapsed_s
            self.out.write(summary_line(elapsed_s, published, planned, snap, workers) + "\n")
            self.out.flush()

    def table(
        self,
        elapsed_s: float,
        published: int,
        planned: int,
        snap: Snapshot,
        workers: Mapping[str, str],
    ) -> None:
        """Print the summary table once, as lines that stay (the final state)."""
        self._erase()
        self._block = []
        for line in summary_table(elapsed_s, published, planned, snap, workers):
            self.out.write(line + "\n")
        self.out.flush()

    def freeze(self) -> None:
        """Stop redrawing: the summary on screen stays as it is."""
        self._block = []

    def _erase(self) -> None:
        if self.live and self._block:
            self.out.write(_UP_AND_CLEAR.format(n=len(self._block)))

    def _draw(self) -> None:
        if self.live and self._block:
            self.out.write("\n".join(self._block) + "\n")
        self.out.flush()
