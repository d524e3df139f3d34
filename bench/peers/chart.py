"""The comparison as one PNG: the three figures per library, taskbus highlighted.

Bars are medians, whiskers the min-max over runs. Rates and latencies span
orders of magnitude between libraries, so the axes are logarithmic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

__all__ = ["draw"]

# (first series, second series) of a panel, for taskbus and for the peers.
BASELINE_COLOURS = ("#d62728", "#ff9896")
PEER_COLOURS = ("#4c72b0", "#9ecae1")
LEGEND_COLOURS = ("#555555", "#bbbbbb")

PANELS: list[tuple[str, list[tuple[str, str]], str]] = [
    (
        "A  enqueue rate, one producer",
        [("enqueue_one", "1 job/call"), ("enqueue_bulk", "bulk API")],
        "jobs/s (log)",
    ),
    ("B  drain rate, 1 worker process", [("drain", "no-op jobs")], "jobs/s (log)"),
    (
        "C  latency at 200 jobs/s",
        [("latency_p50", "p50"), ("latency_p99", "p99")],
        "ms, handler start - enqueue (log)",
    ),
]


def draw(results: dict[str, Any], path: Path) -> None:
    """Write the chart of ``results`` (as :func:`report.summarise` builds) to ``path``."""
    rows = results["rows"]
    labels = [f"{r['row']} [{'ALO' if 'least' in r['semantics'] else 'AMO'}]" for r in rows]
    height = 0.38
    fig, axes = plt.subplots(1, len(PANELS), figsize=(18, 0.45 * len(rows) + 2.5), sharey=True)
    for ax, (title, series, xlabel) in zip(axes, PANELS, strict=True):
        lowest = math.inf
        for k, (key, _) in enumerate(series):
            ys, widths, lo, hi, colours = [], [], [], [], []
            for i, r in enumerate(rows):
                stats = r["summary"][key]
                if stats is None:
                    continue
                ys.append(i + (k - (len(series) - 1) / 2) * height)
                widths.append(stats["median"])
                lo.append(stats["median"] - stats["min"])
                hi.append(stats["max"] - stats["median"])
                lowest = min(lowest, stats["min"])
                colours.append((BASELINE_COLOURS if r["row"] == "taskbus" else PEER_COLOURS)[k])
            ax.barh(
                ys,
                widths,
                height=height,
                xerr=[lo, hi],
                color=colours,
                error_kw={"elinewidth": 1, "capsize": 2},
            )
            for y, w in zip(ys, widths, strict=True):
                ax.text(w, y, f" {w:,.0f}" if w >= 10 else f" {w:.2f}", va="center", fontsize=7)
        ax.set_xscale("log")
        if lowest < math.inf:
            # Bars start one decade below the smallest value, so lengths compare.
            ax.set_xlim(left=10 ** (math.floor(math.log10(lowest)) - 1))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.3)
        if len(series) > 1:
            handles = [
                Patch(color=c, label=n) for c, (_, n) in zip(LEGEND_COLOURS, series, strict=False)
            ]
            ax.legend(handles=handles, fontsize=7, loc="best")
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    m = results["machine"]
    fig.suptitle(
        f"taskbus vs peers - median of {results['params']['runs']} run(s), whiskers min-max; "
        f"ALO = at-least-once, AMO = at-most-once; {m['cpus']} CPUs, Redis {m['redis_server']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
