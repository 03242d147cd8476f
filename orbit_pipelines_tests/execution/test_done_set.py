"""DoneSet: exact membership, including hashes that share their first 8 bytes."""

from __future__ import annotations

import os

import numpy as np

from orbit_pipelines.execution.done_set import HASH_DTYPE, DoneSet


def as_array(hashes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(hashes), dtype=HASH_DTYPE)


def test_membership_is_exact_even_when_the_first_half_collides() -> None:
    prefix = os.urandom(8)
    twins = [prefix + os.urandom(8) for _ in range(3)]  # same high half, different low
    done = [os.urandom(16) for _ in range(5000)] + twins
    absent = [os.urandom(16) for _ in range(500)] + [prefix + os.urandom(8)]
    done_set = DoneSet(as_array(done[::-1]))  # unsorted input
    assert len(done_set) == len(done)
    assert done_set.contains(as_array(done)).all()
    assert not done_set.contains(as_array(absent)).any()
    mixed = [twins[2], absent[-1], done[7], absent[0], twins[0]]
    assert done_set.contains(as_array(mixed)).tolist() == [True, False, True, False, True]


def test_empty_done_set_contains_nothing() -> None:
    assert DoneSet(as_array([])).contains(as_array([os.urandom(16)])).tolist() == [False]
