"""The history of a chaos scenario and the checker that classifies it.

A history is a directory of JSON-lines files: ``pub-*.jsonl`` written by the
publishers (``invoke``, then ``ok``, ``fail`` or ``info`` per event; see
``publisher.py``) and ``handled-*.jsonl`` written by the handlers (one line
per invocation, ``outcome`` ``ok`` or ``raised``; see ``world.HANDLERS``).

The unit of delivery is (app, subscription, history id): the bus makes one task
per event and matching subscription. Per app the checker counts, like Jepsen's
total-queue checker:

- **lost**: acknowledged (``ok``), not poison, must reach the subscription, and
  never handled;
- **recovered**: outcome unknown (``info``, or no answer because the publisher
  died) and handled;
- **unexpected**: handled, but never published (or refused, or not matching);
- **duplicated**: handled more than once (``extra`` counts the surplus runs).

Poison units are checked apart: never handled, and at most ``max_attempts``
invocations each (that they end dead is checked against Redis by the scenario).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.chaos.world import APPS, MAX_ATTEMPTS, expected_deliveries

Unit = tuple[str, str, str]  # app, subscription, history id


@dataclass
class Published:
    """What the publishers' history says of one event."""

    hid: str
    type: str
    kind: str
    poison: bool
    invoked_t: float
    outcome: str = "unknown"  # ok | fail | info | unknown (the process died)
    key: str | None = None
    error: str | None = None


@dataclass
class AppReport:
    """The checker's verdict for one app."""

    expected: int = 0
    handled: int = 0
    lost: int = 0
    recovered: int = 0
    unexpected: int = 0
    duplicated: int = 0
    extra_runs: int = 0
    poison_units: int = 0
    poison_over_attempts: int = 0
    poison_handled: int = 0
    lost_examples: list[str] = field(default_factory=list)
    unexpected_examples: list[str] = field(default_factory=list)

    @property
    def lost_fraction(self) -> float:
        """Lost deliveries over the acknowledged deliveries the app should get."""
        return self.lost / self.expected if self.expected else 0.0

    @property
    def duplicated_fraction(self) -> float:
        """Units handled more than once over all handled units."""
        return self.duplicated / self.handled if self.handled else 0.0


@dataclass
class Report:
    """The checker's verdict for a whole history."""

    invoked: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    unknown: int = 0
    poison: int = 0
    apps: dict[str, AppReport] = field(default_factory=dict)
    info_errors: dict[str, int] = field(default_factory=dict)
    last_handled_t: float = 0.0
    latency_p99_s: float = 0.0
    latency_max_s: float = 0.0

    def total(self, name: str) -> int:
        """Sum one counter (``lost``, ``duplicated``...) over the apps."""
        return sum(int(getattr(r, name)) for r in self.apps.values())

    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        doc = asdict(self)
        for app, report in self.apps.items():
            doc["apps"][app]["lost_fraction"] = report.lost_fraction
            doc["apps"][app]["duplicated_fraction"] = report.duplicated_fraction
        return doc


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            out.append(orjson.loads(raw))
    return out


def read_published(directory: Path) -> dict[str, Published]:
    """Read every publisher's history: one :class:`Published` per history id."""
    published: dict[str, Published] = {}
    for path in sorted(directory.glob("pub-*.jsonl")):
        for doc in _lines(path):
            hid = doc["hid"]
            if doc["op"] == "invoke":
                if hid in published:
                    raise ValueError(f"{path}: history id {hid} invoked twice")
                published[hid] = Published(
                    hid, doc["type"], doc["kind"], bool(doc["poison"]), float(doc["t"])
                )
            else:
                entry = published[hid]
                if entry.outcome != "unknown":
                    raise ValueError(f"{path}: history id {hid} answered twice")
                entry.outcome = doc["op"]
                entry.key = doc.get("key")
                entry.error = doc.get("error")
    return published


def read_handled(directory: Path) -> list[dict[str, Any]]:
    """Read every handler invocation line."""
    handled: list[dict[str, Any]] = []
    for path in sorted(directory.glob("handled-*.jsonl")):
        handled += _lines(path)
    return handled


def check(directory: Path) -> Report:
    """Classify a history directory (see the module docstring)."""
    published = read_published(directory)
    handled = read_handled(directory)
    report = Report(apps={app: AppReport() for app in APPS})
    expected: dict[Unit, Published] = {}
    for p in published.values():
        report.invoked += 1
        setattr(report, p.outcome, getattr(report, p.outcome) + 1)
        report.poison += p.poison
        if p.outcome == "info" and p.error:
            name = p.error.split(":", 1)[0]
            report.info_errors[name] = report.info_errors.get(name, 0) + 1
        if p.outcome == "fail":
            continue
        payload = {"kind": p.kind}
        for app, sub in expected_deliveries(p.type, payload):
            expected[(app, sub, p.hid)] = p
    runs: Counter[Unit] = Counter()
    poison_runs: Counter[Unit] = Counter()
    first_t: dict[Unit, float] = {}
    for doc in handled:
        unit = (doc["app"], doc["sub"], doc["hid"])
        if doc["outcome"] == "ok":
            runs[unit] += 1
            first_t[unit] = min(first_t.get(unit, doc["t"]), doc["t"])
            report.last_handled_t = max(report.last_handled_t, doc["t"])
        else:
            poison_runs[unit] += 1
    for unit, p in expected.items():
        app_report = report.apps[unit[0]]
        if p.poison:
            app_report.poison_units += 1
            app_report.poison_over_attempts += poison_runs[unit] > MAX_ATTEMPTS
            app_report.poison_handled += runs[unit] > 0
            continue
        if p.outcome == "ok":
            app_report.expected += 1
            if runs[unit] == 0:
                app_report.lost += 1
                if len(app_report.lost_examples) < 10:
                    app_report.lost_examples.append(f"{unit} key={p.key}")
        elif runs[unit]:
            app_report.recovered += 1
    for unit, count in runs.items():
        app_report = report.apps.setdefault(unit[0], AppReport())
        app_report.handled += 1
        if unit not in expected:
            app_report.unexpected += 1
            if len(app_report.unexpected_examples) < 10:
                app_report.unexpected_examples.append(str(unit))
        if count > 1:
            app_report.duplicated += 1
            app_report.extra_runs += count - 1
    latencies = sorted(first_t[u] - expected[u].invoked_t for u in first_t if u in expected)
    if latencies:
        report.latency_p99_s = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        report.latency_max_s = latencies[-1]
    return report
