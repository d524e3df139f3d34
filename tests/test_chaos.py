"""Short chaos scenarios: real processes killed, paused and cut off; nothing lost.

Each scenario runs three apps' workers and publishers for a few seconds under
one kind of fault (``tests/chaos/scenario.py``), then checks the history of
every publish and handler run (``tests/chaos/history.py``). The long versions,
and the figures in ``docs/reliability.md``, come from ``bench/chaos.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenario import Outcome, Scenario, run

# Faults end, then everything must be handled within this: a lease to notice
# a dead worker, a sweep for an event a publisher left unrouted, and the
# back-off of poison retries, on a loaded 2-core machine.
SETTLE_BOUND_S = 30.0


def assert_nothing_lost(outcome: Outcome) -> None:
    """The targets of an appendfsync-always scenario."""
    report = outcome.report
    summary = outcome.to_doc()
    assert report.invoked > 200, summary
    assert report.total("lost") == 0, summary
    assert report.total("unexpected") == 0, summary
    assert report.total("poison_handled") == 0, summary
    assert report.total("poison_over_attempts") == 0, summary
    assert outcome.audit == [], summary
    assert outcome.last_handled_after_s < SETTLE_BOUND_S, summary
    assert report.fail == 0, summary  # every event of the world is valid


def test_a_calm_run_delivers_everything_exactly_once(tmp_path: Path) -> None:
    """Without faults every subscriber gets every event once and poison ends dead."""
    outcome = run(Scenario("calm", (), fault_s=3, poison_rate=0.05), tmp_path)
    assert_nothing_lost(outcome)
    assert outcome.report.total("duplicated") == 0
    # No false alarms either: a renew that crosses the worker's own settle is
    # not a lost lease.
    assert outcome.acks_rejected == outcome.leases_lost == 0, outcome.to_doc()
    assert outcome.report.unknown == outcome.report.info == 0
    assert outcome.dead == sum(r.poison_units for r in outcome.report.apps.values()) > 0


@pytest.mark.parametrize(
    ("faults", "seed"),
    [
        (("kill_worker",), 11),
        (("kill_redis",), 12),
        (("kill_publisher", "crash_publisher"), 13),
        (("pause_worker",), 14),
        (("client_kill",), 15),
    ],
    ids=["workers-killed", "redis-killed", "publishers-killed", "worker-paused", "client-kill"],
)
def test_faults_lose_nothing_with_appendfsync_always(
    tmp_path: Path, faults: tuple[str, ...], seed: int
) -> None:
    """Under each fault, with poison in the stream, no acknowledged event is lost."""
    scenario = Scenario(
        "-".join(faults), faults, seed=seed, fault_s=6, poison_rate=0.02, lease_s=1.5
    )
    outcome = run(scenario, tmp_path)
    assert sum(outcome.faults.values()) >= 2, outcome.to_doc()
    assert_nothing_lost(outcome)


def test_a_paused_worker_is_fenced_when_it_wakes(tmp_path: Path) -> None:
    """A worker stopped past its lease loses its tasks to others and cannot ack them late."""
    scenario = Scenario(
        "paused",
        ("pause_worker",),
        seed=21,
        fault_s=6,
        fault_every_s=0.5,
        lease_s=1.0,
        handler_sleep_s=0.02,  # so that every pause catches tasks in flight
        workers_per_app=2,  # so that another worker takes them over
    )
    outcome = run(scenario, tmp_path)
    assert_nothing_lost(outcome)
    # Each pause lasts 1.5-2.5 leases. Whenever the other worker took a paused
    # worker's task over (a duplicate run), the woken worker must have had its
    # late ack refused or noticed the lost lease: an accepted late ack would
    # show as a duplicate with neither.
    fenced = outcome.acks_rejected + outcome.leases_lost
    assert outcome.report.total("duplicated") <= fenced, outcome.to_doc()
    assert outcome.faults == {"pause_worker": outcome.faults["pause_worker"]}
    assert outcome.faults["pause_worker"] >= 2, outcome.to_doc()


def test_everysec_redis_kills_are_measured_not_hidden(tmp_path: Path) -> None:
    """With appendfsync everysec losses are counted against acknowledged events, never invented."""
    scenario = Scenario(
        "everysec", ("kill_redis",), seed=31, appendfsync="everysec", fault_s=5, lease_s=1.5
    )
    outcome = run(scenario, tmp_path)
    report = outcome.report
    assert report.total("unexpected") == 0, outcome.to_doc()
    assert report.total("lost") <= report.ok  # counted against acknowledged events
    assert sum(outcome.faults.values()) >= 2
