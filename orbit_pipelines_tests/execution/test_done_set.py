"""DoneSet: exact membership, including hashes that share their first 8 bytes."""

from __future__ import annotations

import os

import numpy as np

from orbit_pipelines.execution.done_set import HASH_DTYPE, DoneSet, DoneSetBuilder


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


def _built(blocks: list[bytes], expected: int) -> DoneSet:
    builder = DoneSetBuilder(expected)
    for block in blocks:
        builder.add(block)
    return builder.build()


def test_builder_streams_records_into_an_exact_sorted_set() -> None:
    # 300,000 digests: over the bucket target, so they are spread into buckets, in records
    # of 1,000 (grouped before spreading) and one large block (spread in slices).
    records = [os.urandom(16 * 1000) for _ in range(200)]
    large = os.urandom(16 * 100_000)
    done = _built([large, *records], 300_000)
    assert len(done) == 300_000
    assert not (done._hi[1:] < done._hi[:-1]).any()
    every = np.frombuffer(large + b"".join(records), dtype=HASH_DTYPE)
    assert done.contains(every).all()
    assert not done.contains(as_array([os.urandom(16) for _ in range(5000)])).any()


def test_builder_keeps_digests_its_buckets_have_no_room_for() -> None:
    # Far more digests in one bucket than its room (all share their first byte), and more
    # than announced: the overflow is kept aside and merged, nothing is dropped.
    crowded = [b"\x07" + os.urandom(15) for _ in range(40_000)]
    spread = [os.urandom(16) for _ in range(200_000)]
    done = _built([b"".join(spread), b"".join(crowded)], 150_000)
    assert len(done) == 240_000
    assert done.contains(as_array(crowded)).all() and done.contains(as_array(spread)).all()
    absent = [b"\x07" + os.urandom(15) for _ in range(2000)]
    assert not done.contains(as_array(absent)).any()


def test_builder_sorts_high_halves_that_tie_above_the_index_bits() -> None:
    # The fast sort packs each digest's index into the low bits of its high half: two high
    # halves equal above those bits but not in them must still end up in order.
    prefix = os.urandom(6)
    twins = [prefix + bytes([0, 255 - n]) + os.urandom(8) for n in range(8)]
    done = _built([b"".join(twins + [os.urandom(16) for _ in range(100)])], 108)
    assert not (done._hi[1:] < done._hi[:-1]).any()
    assert done.contains(as_array(twins)).all()


def test_builder_of_nothing_is_empty() -> None:
    done = _built([], 0)
    assert len(done) == 0
    assert done.contains(as_array([os.urandom(16)])).tolist() == [False]
