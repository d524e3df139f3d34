"""Schedules of recurring tasks: the slots they run at, as pure functions of time.

A :class:`Schedule` is either ``every`` (a fixed period) or a five-field
``cron`` line read in an IANA time zone (UTC by default). Its *slots* are the
instants it runs at; they come from the schedule alone, never from "now plus
the period", so runs do not drift by the time a run takes.

* ``every``: the multiples of the period since the Unix epoch (UTC). ``1h``
  runs on the hour, ``1d`` at midnight UTC, ``200ms`` at every 200 ms mark.
* ``cron``: the wall-clock times in the zone that match the line, with two
  rules for daylight-saving changes:

  - a time that does not exist (skipped by a spring-forward change, e.g.
    02:30 on the last Sunday of March in Europe/Berlin) runs at the end of the
    gap (03:00 local), once, however many such times the line has;
  - a time that exists twice (repeated by a fall-back change) runs at its
    first occurrence only, so a daily job runs once that day. An hourly line
    therefore has a two-hour gap at fall-back; use ``every`` or a UTC cron
    line when each real hour matters.

Nothing here reads the clock: every function takes the time as an argument
(epoch milliseconds), so tests pass fixed instants instead of sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError

__all__ = ["Schedule", "cron", "every", "next_slot", "plan_next", "prev_slot"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    """When a recurring task runs: ``every_ms`` or ``cron`` in ``timezone``.

    Build one with :func:`every` or :func:`cron`.

    Attributes:
        every_ms: The period in milliseconds (exclusive with ``cron``).
        cron: A five-field cron line: minute hour day month weekday.
        timezone: The IANA zone the cron line is read in.

    Raises:
        ValueError: Neither or both of ``every_ms`` and ``cron``; a period that
            is not positive; a cron line that is invalid or never matches; an
            unknown time zone; a time zone given with ``every_ms``.
    """

    every_ms: int | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.every_ms is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of every_ms and cron")
        if self.every_ms is not None:
            if isinstance(self.every_ms, bool) or not isinstance(self.every_ms, int):
                raise ValueError(f"every_ms must be an integer, got {self.every_ms!r}")
            if self.every_ms <= 0:
                raise ValueError(f"every_ms must be > 0, got {self.every_ms}")
            if self.timezone != "UTC":
                raise ValueError("a time zone goes with a cron line only ('every' is real time)")
            return
        line = str(self.cron)
        if len(line.split()) != 5 or not croniter.is_valid(line):
            raise ValueError(
                f"cron line must be five valid fields (minute hour day month weekday), got {line!r}"
            )
        try:
            self.zone  # noqa: B018 - resolve the zone now, to fail here
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'Europe/Berlin'"
            ) from exc
        try:
            croniter(line, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError as exc:
            raise ValueError(f"cron line {line!r} never matches a date") from exc

    @cached_property
    def zone(self) -> ZoneInfo:
        """The time zone of the cron line."""
        return ZoneInfo(self.timezone)

    @property
    def fingerprint(self) -> str:
        """A short text that changes whenever the slots would change."""
        if self.every_ms is not None:
            return f"every {self.every_ms}ms"
        return f"cron {self.cron} {self.timezone}"

    def __str__(self) -> str:
        return self.fingerprint


def every(period: str | int) -> Schedule:
    """A schedule that runs at every multiple of ``period`` since the epoch.

    Args:
        period: A duration such as ``"30s"``, ``"5m"``, ``"1h30m"``,
            ``"200ms"``, or milliseconds as an integer.

    Raises:
        ValueError: Not a positive duration.
    """
    if isinstance(period, str):
        from bus.config.apptoml import parse_duration

        try:
            period = parse_duration(period)
        except Exception as exc:  # ConfigError or ValueError, by config version
            raise ValueError(str(exc)) from exc
    return Schedule(every_ms=period)


def cron(line: str, timezone: str = "UTC") -> Schedule:
    """A schedule that runs at the wall-clock times a cron line matches.

    Args:
        line: Five fields: minute hour day month weekday (e.g. ``"0 3 * * *"``).
        timezone: The IANA zone the line is read in (default UTC).

    Raises:
        ValueError: An invalid line or zone.
    """
    return Schedule(cron=line, timezone=timezone)


def next_slot(schedule: Schedule, after_ms: int) -> int:
    """Return the first slot strictly after ``after_ms``.

    Args:
        schedule: The schedule.
        after_ms: An instant, in epoch milliseconds.

    Returns:
        The slot, in epoch milliseconds; always greater than ``after_ms``.
    """
    if schedule.every_ms is not None:
        return (after_ms // schedule.every_ms + 1) * schedule.every_ms
    zone = schedule.zone
    # Walls at or before the local time of ``after`` map to instants at or
    # before it (the wall -> instant map never decreases), so start there.
    walls = croniter(str(schedule.cron), _wall(after_ms, zone))
    while True:
        slot = _instant_ms(walls.get_next(datetime), zone)
        if slot > after_ms:
            return slot


def prev_slot(schedule: Schedule, at_ms: int) -> int:
    """Return the last slot at or before ``at_ms``.

    Args:
        schedule: The schedule.
        at_ms: An instant, in epoch milliseconds.
    """
    if schedule.every_ms is not None:
        return (at_ms // schedule.every_ms) * schedule.every_ms
    zone = schedule.zone
    instant = _EPOCH + timedelta(milliseconds=at_ms)
    # In the repeated hour of a fall-back change, walls later than the local
    # time map to earlier instants (their first occurrence): start from the
    # largest offset in effect over the last day, then walk down.
    offset = max(_offset(instant, zone), _offset(instant - _DAY, zone))
    start = (instant + offset).replace(tzinfo=None) + timedelta(seconds=1)
    walls = croniter(str(schedule.cron), start)
    while True:
        slot = _instant_ms(walls.get_prev(datetime), zone)
        if slot <= at_ms:
            return slot


def plan_next(schedule: Schedule, after_ms: int, now_ms: int, missed_runs: int) -> int:
    """Return the slot of the occurrence that follows the one at ``after_ms``.

    Slots at or before ``now_ms`` have passed without a run (everything was
    offline, or a run took longer than the period). At most ``missed_runs`` of
    them are kept, the most recent ones; the others are skipped.

    Args:
        schedule: The schedule.
        after_ms: The slot of the previous occurrence.
        now_ms: The current time.
        missed_runs: How many passed slots may still run (0: none, the next
            occurrence is the first future slot).

    Returns:
        The slot; it is greater than ``after_ms``, and at or before ``now_ms``
        only when missed slots are run.
    """
    first = next_slot(schedule, after_ms)
    if first > now_ms:
        return first
    if missed_runs <= 0:
        return next_slot(schedule, now_ms)
    slot = prev_slot(schedule, now_ms)
    for _ in range(missed_runs - 1):
        if slot <= first:
            break
        slot = prev_slot(schedule, slot - 1)
    return max(slot, first)


# -- wall clock <-> instants ---------------------------------------------------


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _wall(at_ms: int, zone: ZoneInfo) -> datetime:
    """The naive local wall time of an instant."""
    return (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(zone).replace(tzinfo=None)


def _instant_ms(wall: datetime, zone: ZoneInfo) -> int:
    """The instant a matching wall time runs at (see the module's DST rules)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return _ms(first)  # exists; fold=0 is its first occurrence when repeated
    # In a spring-forward gap: fold=0 reads the wall with the offset before the
    # change (an instant after the gap), fold=1 with the one after (before it).
    # The gap ends between the two; find the change to the second.
    after = _ms(first) // 1000
    before = _ms(wall.replace(tzinfo=zone, fold=1).astimezone(UTC)) // 1000
    target = _offset(first, zone)
    while after - before > 1:
        mid = (after + before) // 2
        if _offset(_EPOCH + timedelta(seconds=mid), zone) == target:
            after = mid
        else:
            before = mid
    return after * 1000
