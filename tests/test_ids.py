"""Tests of bus.ids: time-sortable ids and the time they carry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bus.ids import id_time_ms, new_id

MS = st.integers(min_value=0, max_value=2**48 - 1)


def _reference_id(now_ms: int, random_bits: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = now_ms << 80 | random_bits
    return "".join(alphabet[value >> (5 * i) & 31] for i in reversed(range(26)))


@given(MS)
def test_new_id_carries_its_millisecond(now_ms: int) -> None:
    """Every id is 26 Crockford characters and decodes to the time it was made for."""
    value = new_id(now_ms)
    assert len(value) == 26
    assert set(value) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert id_time_ms(value) == now_ms


@given(MS, MS)
def test_ids_sort_by_time(a_ms: int, b_ms: int) -> None:
    """An id made for an earlier millisecond sorts before one made for a later one."""
    if a_ms < b_ms:
        assert new_id(a_ms) < new_id(b_ms)


@given(MS)
def test_new_id_is_the_ulid_layout(now_ms: int) -> None:
    """The first 10 characters are the 48-bit time, as a 26-character shift encoding has them."""
    assert new_id(now_ms)[:10] == _reference_id(now_ms, 0)[:10]


def test_ids_of_one_millisecond_differ() -> None:
    """Ids made in the same millisecond differ in their 80 random bits."""
    assert len({new_id(1_700_000_000_000) for _ in range(1000)}) == 1000
