"""Tests of bus.core.ids: time-sortable ids and the time they carry."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.core.ids import id_time_ms, new_id

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


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    """Code that seeds ``random`` (tests often do) cannot make two processes share ids."""
    random.seed(7)
    first = new_id(1_700_000_000_000)
    random.seed(7)
    assert new_id(1_700_000_000_000) != first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    """After a fork the child draws from a fresh seed, not a copy of the parent's sequence."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id, leave without running pytest's exit
        os.write(write_end, new_id(1_700_000_000_000).encode())
        os._exit(0)
    os.close(write_end)
    parent_id = new_id(1_700_000_000_000)
    with os.fdopen(read_end, "rb") as pipe:
        child_id = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(child_id) == 26
    assert child_id != parent_id
