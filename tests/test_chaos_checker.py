"""The chaos checker classifies hand-written histories correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaos.history import check


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    """Write one history file of JSON lines."""
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))


def invoke(hid: str, kind: str = "c", poison: bool = False, t: float = 1.0) -> dict[str, Any]:
    """A publisher's invoke line for a chaos.happened event (alpha and gamma get kind c)."""
    return {"op": "invoke", "hid": hid, "type": "chaos.happened", "kind": kind, "poison": poison,
            "t": t}  # fmt: skip


def ran(app: str, sub: str, hid: str, outcome: str = "ok", t: float = 2.0) -> dict[str, Any]:
    """A handler's line."""
    return {"app": app, "sub": sub, "hid": hid, "key": f"k{hid}", "outcome": outcome, "t": t}


def test_checker_counts_lost_recovered_unexpected_and_duplicated(tmp_path: Path) -> None:
    """Each class of the total-queue checker is counted for the app it concerns."""
    write(
        tmp_path / "pub-a.jsonl",
        [
            invoke("1"), {"op": "ok", "hid": "1", "key": "k1"},
            invoke("2"), {"op": "ok", "hid": "2", "key": "k2"},
            invoke("3"),  # the publisher died: unknown
            invoke("4"), {"op": "info", "hid": "4", "error": "ConnectionError: gone"},
            invoke("5"), {"op": "fail", "hid": "5", "error": "PayloadInvalid: no"},
        ],
    )  # fmt: skip
    write(
        tmp_path / "handled-1.jsonl",
        [
            ran("alpha", "everything", "1"), ran("gamma", "happened", "1"),
            ran("alpha", "everything", "2"), ran("alpha", "everything", "2", t=9.0),
            # gamma never ran 2: lost
            ran("alpha", "everything", "3"),  # unknown outcome, handled: recovered
            ran("gamma", "happened", "5"),  # refused, yet handled: unexpected
            ran("beta", "happened_ab", "1"),  # kind c does not match beta: unexpected
            ran("alpha", "everything", "99"),  # never published: unexpected
        ],
    )  # fmt: skip
    report = check(tmp_path)
    assert (report.invoked, report.ok, report.unknown, report.info, report.fail) == (5, 2, 1, 1, 1)
    assert report.info_errors == {"ConnectionError": 1}
    alpha, beta, gamma = report.apps["alpha"], report.apps["beta"], report.apps["gamma"]
    assert (alpha.expected, alpha.lost, alpha.recovered, alpha.unexpected) == (2, 0, 1, 1)
    assert (alpha.duplicated, alpha.extra_runs) == (1, 1)
    assert (gamma.expected, gamma.lost, gamma.unexpected) == (2, 1, 1)
    assert gamma.lost_examples == ["('gamma', 'happened', '2') key=k2"]
    assert beta.unexpected == 1
    assert report.total("lost") == 1
    assert report.latency_max_s == pytest.approx(1.0)


def test_checker_flags_poison_that_ran_too_often_or_succeeded(tmp_path: Path) -> None:
    """Poison is never lost nor expected; more runs than max_attempts are flagged."""
    write(
        tmp_path / "pub-a.jsonl", [invoke("p", poison=True), {"op": "ok", "hid": "p", "key": "kp"}]
    )
    write(tmp_path / "handled-1.jsonl", [ran("alpha", "everything", "p", "raised")] * 4)
    report = check(tmp_path)
    alpha = report.apps["alpha"]
    assert (alpha.poison_units, alpha.poison_over_attempts, alpha.lost, alpha.expected) == (
        1,
        1,
        0,
        0,
    )


def test_checker_refuses_a_history_that_answers_twice(tmp_path: Path) -> None:
    """A malformed history is an error, not a silent verdict."""
    write(
        tmp_path / "pub-a.jsonl",
        [invoke("1"), {"op": "ok", "hid": "1", "key": "k"}, {"op": "ok", "hid": "1", "key": "k"}],
    )
    with pytest.raises(ValueError, match="answered twice"):
        check(tmp_path)
