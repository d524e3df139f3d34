"""Turning per-run figures into medians, ranges, ratios to taskbus, and a table.

A ratio is taken within one run (row value / taskbus value of the same run)
and then summarised like any figure, so slow phases of a shared machine hit
both sides of a ratio. For rates a ratio above 1 means faster than taskbus;
for latencies a ratio above 1 means slower.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["FIGURES", "markdown", "summarise"]

BASELINE = "taskbus"

# (key in results, figure in a run, field of it, label, unit)
FIGURES: list[tuple[str, str, str, str, str]] = [
    ("enqueue_one", "enqueue_one", "rate", "A enqueue, 1 job/call", "jobs/s"),
    ("enqueue_bulk", "enqueue_bulk", "rate", "A enqueue, bulk API", "jobs/s"),
    ("drain", "drain", "rate", "B drain, 1 worker process", "jobs/s"),
    ("latency_p50", "latency", "p50_ms", "C latency p50", "ms"),
    ("latency_p99", "latency", "p99_ms", "C latency p99", "ms"),
]


def _values(runs: list[dict[str, Any]], figure: str, field: str) -> dict[int, float]:
    out = {}
    for run in runs:
        value = run.get(figure)
        if value is not None:
            out[int(run["run"])] = float(value[field])
    return out


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarise(meta: dict[str, Any], measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add medians, min-max and same-run ratios to taskbus for every row."""
    base_runs = measured.get(BASELINE, {}).get("runs", [])
    rows = []
    for data in measured.values():
        summary: dict[str, Any] = {}
        for key, figure, field, _, _ in FIGURES:
            values = _values(data["runs"], figure, field)
            base = _values(base_runs, figure, field)
            ratios = [values[r] / base[r] for r in values if base.get(r)]
            summary[key] = _stats(list(values.values()))
            if summary[key] is not None:
                summary[key]["ratio_to_taskbus"] = _stats(ratios)
        capped = any((run.get("drain") or {}).get("capped") for run in data["runs"])
        errors = {
            f"run{run['run']}.{k}": v for run in data["runs"] for k, v in run["errors"].items()
        }
        rows.append({**data, "summary": summary, "drain_capped": capped, "errors": errors})
    return {**meta, "rows": rows}


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:,.0f}"


def _cell(stats: dict[str, Any] | None, unit: str, row: str) -> str:
    if stats is None:
        return "-"
    text = f"{_fmt(stats['median'], unit)}"
    if stats["n"] > 1:
        text += f" ({_fmt(stats['min'], unit)}-{_fmt(stats['max'], unit)})"
    ratio = stats.get("ratio_to_taskbus")
    if ratio is not None and row != BASELINE:
        text += f" x{ratio['median']:.2f}"
    return text


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (median (min-max) xratio-to-taskbus)."""
    head = ["row", "semantics", *(label for _, _, _, label, _ in FIGURES)]
    units = ["", "", *(unit for _, _, _, _, unit in FIGURES)]
    lines = [
        "| "
        + " | ".join(f"{h} ({u})" if u else h for h, u in zip(head, units, strict=True))
        + " |",
        "|" + "---|" * len(head),
    ]
    for data in results["rows"]:
        semantics = data["semantics"].split(" (")[0]
        cells = [f"{data['row']} {data['version']}", semantics]
        for key, _, _, _, unit in FIGURES:
            cell = _cell(data["summary"][key], unit, data["row"])
            if key == "drain" and data["drain_capped"]:
                cell += " (cut at cap)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    params = results["params"]
    lines.append("")
    lines.append(
        f"Median of {params['runs']} run(s), (min-max), xratio to taskbus in the same run "
        "(rates: >1 = faster than taskbus; latencies: >1 = slower). "
        f"A: {params['n_enqueue']:,} jobs one per call, bulk {params['n_bulk']:,} jobs in calls "
        f"of {params['bulk_batch']:,}; B: {params['n_drain']:,} pre-enqueued no-op jobs; "
        f"C: {params['rate']:.0f} jobs/s for {params['duration_s']:.0f} s. "
        f"Redis {results['machine']['redis_server']}, {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}; taskbus: {results['taskbus_source']}."
    )
    errors = [(d["row"], k, v) for d in results["rows"] for k, v in d["errors"].items()]
    if errors:
        lines.append("")
        lines.append("Errors:")
        lines += [f"- {row} {where}: {message}" for row, where, message in errors]
    return "\n".join(lines)
