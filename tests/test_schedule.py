"""Schedule maths with fixed instants: every, cron, time zones, DST, catch-up."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.core.schedule import Schedule, cron, every, next_slot, plan_next, prev_slot

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch ms of a UTC date and time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> int:
    """Epoch ms of a wall-clock time in ``zone``."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)
    return int(moment.timestamp() * 1000)


def slots(schedule: Schedule, after_ms: int, count: int) -> list[int]:
    """The next ``count`` slots after ``after_ms``."""
    out = []
    for _ in range(count):
        after_ms = next_slot(schedule, after_ms)
        out.append(after_ms)
    return out


# -- every ---------------------------------------------------------------------


def test_every_slots_are_multiples_of_the_period_since_the_epoch() -> None:
    """'1h' runs on the hour, whatever the time it is asked at."""
    assert slots(every("1h"), utc(2024, 5, 1, 10, 17, 3), 2) == [
        utc(2024, 5, 1, 11),
        utc(2024, 5, 1, 12),
    ]


def test_every_next_slot_is_strictly_after_a_slot() -> None:
    """Asked exactly at a slot, the next slot is one period later."""
    assert next_slot(every("200ms"), 1_000) == 1_200
    assert prev_slot(every("200ms"), 1_000) == 1_000


def test_every_ignores_daylight_saving() -> None:
    """'1d' is 24 real hours: midnight UTC, across a Berlin DST change."""
    assert slots(every("1d"), utc(2024, 3, 30, 12), 2) == [utc(2024, 3, 31), utc(2024, 4, 1)]


def test_every_accepts_milliseconds() -> None:
    """An integer is milliseconds."""
    assert every(250) == Schedule(every_ms=250)


@pytest.mark.parametrize(
    ("period", "error"),
    [(0, "must be > 0"), (-5, "must be > 0"), ("0s", "must be > 0"), ("soon", "invalid duration")],
)
def test_every_rejects_bad_periods(period: str | int, error: str) -> None:
    """Zero, negative and malformed periods raise, saying what is wrong."""
    with pytest.raises(ValueError, match=error):
        every(period)


# -- cron ----------------------------------------------------------------------


def test_cron_in_utc_matches_the_line() -> None:
    """'0 3 * * *' in UTC runs at 03:00 UTC every day."""
    assert slots(cron("0 3 * * *"), utc(2024, 5, 1, 3), 2) == [
        utc(2024, 5, 2, 3),
        utc(2024, 5, 3, 3),
    ]


def test_cron_reads_the_line_in_its_time_zone() -> None:
    """03:00 Berlin is 01:00 UTC in summer and 02:00 UTC in winter."""
    schedule = cron("0 3 * * *", "Europe/Berlin")
    assert next_slot(schedule, utc(2024, 7, 1)) == utc(2024, 7, 1, 1)
    assert next_slot(schedule, utc(2024, 12, 1)) == utc(2024, 12, 1, 2)


def test_cron_time_skipped_by_spring_forward_runs_at_the_end_of_the_gap() -> None:
    """02:30 does not exist on 2024-03-31 in Berlin: it runs at 03:00 CEST, once."""
    schedule = cron("30 2 * * *", "Europe/Berlin")
    assert slots(schedule, utc(2024, 3, 30, 12), 3) == [
        local(BERLIN, 2024, 3, 31, 3, 0),
        local(BERLIN, 2024, 4, 1, 2, 30),
        local(BERLIN, 2024, 4, 2, 2, 30),
    ]


def test_cron_times_in_the_gap_collapse_into_one_run() -> None:
    """Every quarter hour: 02:00-02:45 are skipped, one run at 03:00, then 03:15."""
    schedule = cron("*/15 * * * *", "Europe/Berlin")
    assert slots(schedule, local(BERLIN, 2024, 3, 31, 1, 40), 4) == [
        local(BERLIN, 2024, 3, 31, 1, 45),
        local(BERLIN, 2024, 3, 31, 3, 0),
        local(BERLIN, 2024, 3, 31, 3, 15),
        local(BERLIN, 2024, 3, 31, 3, 30),
    ]


def test_cron_time_repeated_by_fall_back_runs_once_at_its_first_occurrence() -> None:
    """02:30 happens twice on 2024-10-27 in Berlin; the daily job runs at the first."""
    schedule = cron("30 2 * * *", "Europe/Berlin")
    first = local(BERLIN, 2024, 10, 27, 2, 30, fold=0)
    assert first == utc(2024, 10, 27, 0, 30)
    assert slots(schedule, utc(2024, 10, 26, 12), 2) == [first, local(BERLIN, 2024, 10, 28, 2, 30)]


def test_cron_hourly_skips_the_repeated_hour_at_fall_back() -> None:
    """Hourly on local time: 02:00 CEST runs, the repeated 02:00 CET does not."""
    schedule = cron("0 * * * *", "Europe/Berlin")
    assert slots(schedule, utc(2024, 10, 26, 23, 30), 3) == [
        utc(2024, 10, 27, 0),  # 02:00 CEST
        utc(2024, 10, 27, 2),  # 03:00 CET
        utc(2024, 10, 27, 3),
    ]


def test_cron_prev_slot_inside_the_repeated_hour() -> None:
    """At 02:10 CET (the second 02:10), the last 02:30 slot was 02:30 CEST."""
    schedule = cron("30 2 * * *", "Europe/Berlin")
    second_pass = local(BERLIN, 2024, 10, 27, 2, 10, fold=1)
    assert prev_slot(schedule, second_pass) == utc(2024, 10, 27, 0, 30)
    assert next_slot(schedule, second_pass) == local(BERLIN, 2024, 10, 28, 2, 30)


def test_cron_prev_slot_across_spring_forward() -> None:
    """The gap's one run is the last slot at its instant and after it, not before."""
    schedule = cron("30 2 * * *", "Europe/Berlin")
    gap_end = local(BERLIN, 2024, 3, 31, 3, 0)
    assert prev_slot(schedule, gap_end) == gap_end
    assert prev_slot(schedule, gap_end - 1) == local(BERLIN, 2024, 3, 30, 2, 30)


@pytest.mark.parametrize(
    ("line", "zone", "error"),
    [
        ("0 3 * * *", "Mars/Olympus", "unknown time zone"),
        ("0 3 * *", "UTC", "five valid fields"),
        ("61 * * * *", "UTC", "five valid fields"),
        ("0 0 31 2 *", "UTC", "never matches"),
    ],
)
def test_cron_rejects_bad_lines_and_zones(line: str, zone: str, error: str) -> None:
    """Unknown zones, wrong field counts, bad values and impossible dates raise."""
    with pytest.raises(ValueError, match=error):
        cron(line, zone)


def test_fingerprint_changes_with_the_slots() -> None:
    """Same schedule, same fingerprint; another period or zone, another one."""
    assert every("1m").fingerprint == every(60_000).fingerprint
    assert every("1m").fingerprint != every("2m").fingerprint
    assert cron("0 3 * * *").fingerprint != cron("0 3 * * *", "Europe/Berlin").fingerprint


# -- catch-up --------------------------------------------------------------------


def test_plan_next_is_the_next_slot_when_nothing_was_missed() -> None:
    """After slot 1000 at time 1100, the next occurrence is slot 1200."""
    assert plan_next(every("200ms"), 1_000, 1_100, 1) == 1_200


def test_plan_next_without_catch_up_skips_to_the_first_future_slot() -> None:
    """Slots 1200..5000 passed; with no missed runs the next is 5200."""
    assert plan_next(every("200ms"), 1_000, 5_000, 0) == 5_200


def test_plan_next_runs_the_most_recent_missed_slots() -> None:
    """With three missed runs allowed, the chain resumes at the third latest."""
    assert plan_next(every("200ms"), 1_000, 5_000, 1) == 5_000
    assert plan_next(every("200ms"), 1_000, 5_000, 3) == 4_600


def test_plan_next_never_goes_back_before_the_next_slot() -> None:
    """Fewer missed slots than allowed: the next slot after the last run."""
    assert plan_next(every("200ms"), 1_000, 1_450, 5) == 1_200


# -- properties ------------------------------------------------------------------

LINES = ["* * * * *", "*/7 * * * *", "30 2 * * *", "0 * * * *", "15 1-3 * * 0", "0 0 29 2 *"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
INSTANTS = st.integers(min_value=utc(2019, 1, 1), max_value=utc(2031, 1, 1))

schedules = st.one_of(
    st.integers(min_value=1, max_value=10 * 86_400_000).map(every),
    st.builds(cron, st.sampled_from(LINES), st.sampled_from(ZONES)),
)


@settings(max_examples=300, deadline=None)
@given(schedules, INSTANTS, st.integers(min_value=0, max_value=86_400_000 * 3))
def test_next_slot_is_after_and_monotonic(schedule: Schedule, after: int, step: int) -> None:
    """next_slot(a) > a, and a <= b implies next_slot(a) <= next_slot(b)."""
    first = next_slot(schedule, after)
    assert first > after
    assert next_slot(schedule, after + step) >= first


@settings(max_examples=300, deadline=None)
@given(schedules, INSTANTS)
def test_no_slot_lies_between_prev_and_next(schedule: Schedule, at: int) -> None:
    """prev_slot(a) <= a < next_slot(a), and the slot after prev_slot(a) is next_slot(a)."""
    before = prev_slot(schedule, at)
    assert before <= at
    assert next_slot(schedule, before) == next_slot(schedule, at)
    assert prev_slot(schedule, before) == before


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LINES), INSTANTS)
def test_utc_cron_slots_match_the_line(line: str, after: int) -> None:
    """In UTC (no DST), every slot is a whole minute the line matches."""
    slot = next_slot(cron(line), after)
    moment = datetime.fromtimestamp(slot / 1000, UTC)
    assert slot % 60_000 == 0
    assert croniter.match(line, moment.replace(tzinfo=None))


@settings(max_examples=200, deadline=None)
@given(schedules, INSTANTS, st.integers(min_value=0, max_value=86_400_000), st.integers(0, 5))
def test_plan_next_keeps_at_most_the_allowed_missed_slots(
    schedule: Schedule, after: int, late: int, runs: int
) -> None:
    """Nothing missed: the next slot; else a passed slot only if runs allow it."""
    after = next_slot(schedule, after)
    now = after + late
    first = next_slot(schedule, after)
    planned = plan_next(schedule, after, now, runs)
    if first > now:
        assert planned == first
    elif runs == 0:
        assert planned == next_slot(schedule, now)
    else:
        assert first <= planned <= now
        if runs == 1:
            assert planned == prev_slot(schedule, now)
