"""Tests of bus.core.options: Backoff delays and forms, TaskOptions validation."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.core.options import Backoff, OptionError, TaskOptions
from bus.errors import ConfigError


class FixedDraw(random.Random):
    """A random source whose every draw is the same number."""

    def __init__(self, draw: float) -> None:
        super().__init__()
        self.draw = draw

    def random(self) -> float:
        """Return the fixed draw."""
        return self.draw


LOW, MID, HIGH = FixedDraw(0.0), FixedDraw(0.5), FixedDraw(0.999999)

bases = st.floats(min_value=0.001, max_value=100.0)
caps = st.floats(min_value=0.0, max_value=10_000.0)
jitters = st.floats(min_value=0.0, max_value=1.0)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=1, max_value=3000)


@st.composite
def exponential(draw: st.DrawFn) -> Backoff:
    """Any valid exponential back-off."""
    base = draw(bases)
    return Backoff(base_s=base, max_s=base + draw(caps), jitter=draw(jitters))


schedules = st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=6).map(
    lambda delays: Backoff(delays_s=tuple(delays))
)

# -- Backoff: delays ---------------------------------------------------------------------------


def test_default_backoff_doubles_from_one_second_up_to_five_minutes() -> None:
    """Without jitter (the middle draw), delays go 1, 2, 4, ... and stop at 300 s."""
    delays = [Backoff().delay_s(n, MID) for n in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_proportional_jitter_spreads_each_delay_around_its_nominal_value() -> None:
    """jitter = 0.2 spreads the 4 s delay of attempt 3 over [3.2, 4.8)."""
    backoff = Backoff(base_s=1, max_s=300, jitter=0.2)
    low, high = backoff.delay_s(3, LOW), backoff.delay_s(3, HIGH)
    assert (round(low, 9), round(high, 4)) == (3.2, 4.8)


def test_jitter_never_pushes_a_delay_over_the_cap() -> None:
    """A capped delay drawn high is still max_s."""
    assert Backoff(base_s=1, max_s=10, jitter=0.5).delay_s(20, HIGH) == 10


def test_zero_jitter_ignores_the_draw() -> None:
    """With jitter = 0 every draw gives the nominal delay."""
    backoff = Backoff(base_s=0.5, max_s=60, jitter=0)
    assert {backoff.delay_s(4, rng) for rng in (LOW, MID, HIGH)} == {4.0}


def test_schedule_gives_its_entries_and_repeats_the_last() -> None:
    """[1, 5, 30] gives 1, 5, 30, 30, ... with no jitter."""
    backoff = Backoff(delays_s=(1, 5, 30))
    assert [backoff.delay_s(n, HIGH) for n in range(1, 6)] == [1, 5, 30, 30, 30]


def test_huge_attempt_numbers_give_the_cap_without_overflow() -> None:
    """Attempt 100000 is capped, not an OverflowError."""
    assert Backoff(base_s=1e-300, max_s=7, jitter=0).delay_s(100_000) == 7


def test_backoff_without_rng_uses_the_random_module() -> None:
    """Omitting rng draws from the shared generator (within the jitter bounds)."""
    delay = Backoff(base_s=10, max_s=100, jitter=0.1).delay_s(1)
    assert 9 <= delay <= 11


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_numbers_start_at_one(attempt: int) -> None:
    """There is no attempt 0 to back off from."""
    with pytest.raises(ValueError, match="start at 1"):
        Backoff().delay_s(attempt)


@given(exponential(), attempts, draws)
def test_exponential_delay_stays_within_zero_and_max(
    backoff: Backoff, attempt: int, draw: float
) -> None:
    """Every delay is in [0, max_s]."""
    assert 0 <= backoff.delay_s(attempt, FixedDraw(draw)) <= backoff.max_s


@given(exponential(), attempts, draws)
def test_exponential_delay_never_shrinks_with_more_attempts(
    backoff: Backoff, attempt: int, draw: float
) -> None:
    """For the same draw, a later attempt never waits less (so neither does the mean)."""
    rng = FixedDraw(draw)
    assert backoff.delay_s(attempt, rng) <= backoff.delay_s(attempt + 1, rng)


@given(exponential(), attempts)
def test_mean_delay_never_shrinks_with_more_attempts(backoff: Backoff, attempt: int) -> None:
    """The expected delay (averaged over evenly spread draws) is non-decreasing."""
    grid = [FixedDraw(i / 64) for i in range(64)]

    def mean(n: int) -> float:
        return sum(backoff.delay_s(n, rng) for rng in grid) / len(grid)

    assert mean(attempt) <= mean(attempt + 1)


@given(exponential(), attempts, draws)
def test_jitter_stays_within_its_proportion(backoff: Backoff, attempt: int, draw: float) -> None:
    """A delay is within +/-jitter of min(max_s, base_s * 2**(attempt-1)), then capped."""
    nominal = min(backoff.max_s, backoff.base_s * 2.0 ** min(attempt - 1, 1023))
    delay = backoff.delay_s(attempt, FixedDraw(draw))
    low = nominal * (1 - backoff.jitter)
    high = min(backoff.max_s, nominal * (1 + backoff.jitter))
    assert low * (1 - 1e-9) <= delay <= high * (1 + 1e-9)


@given(schedules, attempts)
def test_schedule_delay_is_one_of_its_entries(backoff: Backoff, attempt: int) -> None:
    """A listed schedule never invents a delay."""
    assert backoff.delays_s is not None
    assert backoff.delay_s(attempt) in backoff.delays_s


# -- Backoff: forms and validation -------------------------------------------------------------


def test_to_doc_is_a_table_for_exponential_and_a_list_for_a_schedule() -> None:
    """The JSON form mirrors the two app.toml forms."""
    assert (Backoff(base_s=2).to_doc(), Backoff(delays_s=(1, 5)).to_doc()) == (
        {"base_s": 2.0, "max_s": 300.0, "jitter": 0.2},
        [1.0, 5.0],
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (None, Backoff()),
        ([1, 5, 30], Backoff(delays_s=(1.0, 5.0, 30.0))),
        ((2,), Backoff(delays_s=(2.0,))),
        ({"base_s": 0.5}, Backoff(base_s=0.5)),
        ({"base_s": 1, "max_s": 60, "jitter": 0}, Backoff(base_s=1, max_s=60, jitter=0)),
        ({"delays_s": [1, 2]}, Backoff(delays_s=(1, 2))),
        (Backoff(base_s=3), Backoff(base_s=3)),
    ],
)
def test_from_doc_reads_every_form(doc: Any, expected: Backoff) -> None:
    """None, a list, a table of fields, or a Backoff."""
    assert Backoff.from_doc(doc) == expected


@given(st.one_of(exponential(), schedules))
def test_to_doc_and_asdict_round_trip_through_from_doc(backoff: Backoff) -> None:
    """Both the JSON form and dataclasses.asdict read back to an equal Backoff."""
    assert Backoff.from_doc(backoff.to_doc()) == backoff
    assert Backoff.from_doc(dataclasses.asdict(backoff)) == backoff


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"base": 1}, "unknown back-off key 'base'"),
        ("fast", "a back-off is a table"),
        (5, "a back-off is a table"),
        ([], "at least one delay"),
        ([1, -1], "must be >= 0"),
        ([1, "5"], "'delays_s' must be a number"),
        ([1, float("nan")], "finite"),
        ({"base_s": 0}, "'base_s' must be > 0"),
        ({"base_s": -1}, "'base_s' must be > 0"),
        ({"base_s": True}, "'base_s' must be a number"),
        ({"base_s": 10, "max_s": 5}, "'max_s' .* must be >= 'base_s'"),
        ({"jitter": 1.5}, "between 0 and 1"),
        ({"jitter": -0.1}, "between 0 and 1"),
        ({"max_s": float("inf")}, "finite"),
        ({"delays_s": [1], "base_s": 2}, "not both"),
        ({"delays_s": "1,5"}, "list of seconds"),
    ],
)
def test_invalid_backoffs_raise_option_error(doc: Any, message: str) -> None:
    """Every malformed back-off is refused, naming what is wrong."""
    with pytest.raises(OptionError, match=message):
        Backoff.from_doc(doc)


def test_option_error_is_a_config_error_and_a_value_error() -> None:
    """Callers can catch it as either family."""
    assert issubclass(OptionError, ConfigError)
    assert issubclass(OptionError, ValueError)


# -- TaskOptions -------------------------------------------------------------------------------


def test_task_options_defaults() -> None:
    """Defaults: queue default, 5 attempts, default back-off, 60 s, no delay, scope any."""
    assert TaskOptions() == TaskOptions("default", 5, Backoff(), 60.0, 0.0, "any")


def test_task_options_store_seconds_as_floats() -> None:
    """Whole numbers of seconds are kept as floats."""
    options = TaskOptions(timeout_s=30, delay_s=2)
    assert (type(options.timeout_s), type(options.delay_s)) == (float, float)


def test_task_options_are_frozen() -> None:
    """Options cannot change after validation."""
    options = TaskOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.queue = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"queue": "bad queue"}, "'queue': invalid queue name"),
        ({"queue": ""}, "'queue': invalid queue name"),
        ({"queue": 3}, "'queue' must be a string"),
        ({"max_attempts": 0}, "'max_attempts' must be >= 1"),
        ({"max_attempts": 2.0}, "'max_attempts' must be an integer"),
        ({"max_attempts": True}, "'max_attempts' must be an integer"),
        ({"timeout_s": 0}, "'timeout_s' must be > 0"),
        ({"timeout_s": float("nan")}, "'timeout_s' must be a finite number"),
        ({"timeout_s": "30"}, "'timeout_s' must be a number"),
        ({"delay_s": -1}, "'delay_s' must be >= 0"),
        ({"scope": "some"}, "'scope' must be 'any' or 'all'"),
        ({"backoff": [1, 5]}, "'backoff' must be a Backoff"),
    ],
)
def test_invalid_task_options_raise_option_error_naming_the_option(
    changes: dict[str, Any], message: str
) -> None:
    """Every out-of-range or mistyped option is refused with its name."""
    with pytest.raises(OptionError, match=message):
        TaskOptions(**changes)


def test_task_options_accept_every_valid_value() -> None:
    """A fully specified, valid set of options is kept as given."""
    backoff = Backoff(delays_s=(1, 2))
    options = TaskOptions("critical.v2", 1, backoff, 0.5, 10, "all")
    fields = (options.queue, options.max_attempts, options.backoff)
    assert (*fields, options.timeout_s, options.delay_s, options.scope) == (
        "critical.v2",
        1,
        backoff,
        0.5,
        10.0,
        "all",
    )
