"""The rows of a step that need no more work, as one sorted array of 16-byte hashes."""

from __future__ import annotations

import numpy as np

HASH_DTYPE = np.dtype("S16")


def _halves(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Integer compares are far faster than numpy's fixed-width byte-string compares.
    words = np.frombuffer(hashes.tobytes(), dtype=">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


class DoneSet:
    """Membership of row-key hashes: a binary search over the first 8 bytes, confirmed on
    the last 8 (one 16 MB pair of arrays for a million rows, no Python set).

    Loaded once when a step starts; the keys this run handles are tracked by ``SeenKeys``.
    """

    def __init__(self, hashes: np.ndarray) -> None:
        hi, lo = _halves(hashes)
        self._set(hi, lo)

    def _set(self, hi: np.ndarray, lo: np.ndarray) -> None:
        order = np.argsort(hi, kind="stable")
        self._n = int(hi.shape[0])
        self._hi = hi[order]
        self._lo = lo[order]

    @classmethod
    def _sorted(cls, hi: np.ndarray, lo: np.ndarray) -> DoneSet:
        """A set over halves already sorted by ``hi`` (``lo`` aligned with it)."""
        done = cls.__new__(cls)
        done._n = int(hi.shape[0])
        done._hi = hi
        done._lo = lo
        return done

    @classmethod
    def union(cls, a: DoneSet, b: DoneSet) -> DoneSet:
        """One set holding both (for merging levels of ``SeenKeys``)."""
        # Both are sorted already: place b's entries among a's by binary search instead of
        # concatenating and sorting again (no argsort order, no concatenated copies: the
        # merge of the last levels is SeenKeys' peak memory over a long run).
        merged = cls.__new__(cls)
        n = a._n + b._n
        at_b = np.searchsorted(a._hi, b._hi, side="right") + np.arange(b._n)
        from_a = np.ones(n, dtype=bool)
        from_a[at_b] = False
        merged._n = n
        merged._hi = np.empty(n, dtype=np.uint64)
        merged._lo = np.empty(n, dtype=np.uint64)
        merged._hi[at_b] = b._hi
        merged._lo[at_b] = b._lo
        merged._hi[from_a] = a._hi
        merged._lo[from_a] = a._lo
        return merged

    def __len__(self) -> int:
        return self._n

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` (dtype ``S16``) are done."""
        found = np.zeros(hashes.shape[0], dtype=bool)
        if self._n == 0 or hashes.shape[0] == 0:
            return found
        q_hi, q_lo = _halves(hashes)
        # Sorted needles walk the big array in one direction: far fewer cache misses.
        order = np.argsort(q_hi)
        s_hi = q_hi[order]
        pos = np.searchsorted(self._hi, s_hi)
        at = np.minimum(pos, self._n - 1)
        same_hi = self._hi[at] == s_hi
        hit = same_hi & (self._lo[at] == q_lo[order])
        # Several done hashes sharing their first 8 bytes (vanishingly rare): walk the run.
        for k in np.flatnonzero(same_hi & ~hit):
            j = int(pos[k])
            while j < self._n and self._hi[j] == s_hi[k]:
                if self._lo[j] == q_lo[order[k]]:
                    hit[k] = True
                    break
                j += 1
        found[order] = hit
        return found


class SeenKeys:
    """The keys handled so far in this run, so that a key met again in a later batch is
    never handled twice (whatever the batch size).

    Levels of sorted arrays, merged when a newer level grows as large as the one before it
    (a log-structured merge): 16 bytes per key, O(log n) levels to search per batch, and
    each key re-sorted O(log n) times over a run.
    """

    def __init__(self) -> None:
        self._levels: list[DoneSet] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def add(self, hashes: np.ndarray) -> None:
        """Remember ``hashes`` (dtype ``S16``)."""
        if hashes.shape[0] == 0:
            return
        self._levels.append(DoneSet(hashes))
        while len(self._levels) > 1 and len(self._levels[-1]) >= len(self._levels[-2]):
            newer = self._levels.pop()
            self._levels[-1] = DoneSet.union(self._levels[-1], newer)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` were handled already."""
        found = np.zeros(hashes.shape[0], dtype=bool)
        for level in self._levels:
            found |= level.contains(hashes)
        return found


class DoneSetBuilder:
    """Builds a ``DoneSet`` from digests streamed in blocks (one ledger record at a time),
    with a peak memory close to the set's own 16 bytes a digest.

    Loading everything, then sorting, holds the raw bytes, both halves, an argsort order
    and the sorted copies at once (about 5 times the set: 800 MB at 10M rows). Here each
    block is spread, as it arrives, into preallocated regions by the top bits of its high
    half (a bucket of about 64K digests each), and every region is then sorted on its own
    and moved down into place: beyond the set, only one block and one region are held.
    The regions get room for 6 standard deviations above the expected count of uniform
    digests; a digest that still finds its region full (or more digests than ``expected``)
    is kept aside and merged at the end, so the set is exact whatever arrives.
    """

    _BUCKET_TARGET = 1 << 16
    _GROUP_BYTES = 1 << 20

    def __init__(self, expected: int) -> None:
        expected = max(0, int(expected))
        bits = 0
        while bits < 8 and (expected >> bits) > self._BUCKET_TARGET:
            bits += 1
        self._bits = bits
        buckets = 1 << bits
        per = expected / buckets
        self._cap = int(per + 6 * per**0.5) + 16
        # np.empty maps pages lazily: a region's unused room is never made resident.
        self._hi = np.empty(buckets * self._cap, dtype=np.uint64)
        self._lo = np.empty(buckets * self._cap, dtype=np.uint64)
        self._fill = np.zeros(buckets, dtype=np.int64)
        self._base = np.arange(buckets, dtype=np.int64) * self._cap
        self._aside: list[np.ndarray] = []
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def add(self, block: bytes | memoryview) -> None:
        """Take a block of packed 16-byte digests (any number, in any order)."""
        view = memoryview(block).cast("B")
        if len(view) % 16:
            raise ValueError("a digest block is not a whole number of 16-byte digests")
        if len(view) >= self._GROUP_BYTES:
            self._flush()
            for at in range(0, len(view), self._GROUP_BYTES):
                self._spread(view[at : at + self._GROUP_BYTES])
            return
        # Records of ~1,000 digests are spread in groups: the per-call cost of the
        # spreading would otherwise be most of the load.
        self._pending.append(bytes(view))
        self._pending_bytes += len(view)
        if self._pending_bytes >= self._GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            group = b"".join(self._pending)
            self._pending = []
            self._pending_bytes = 0
            self._spread(memoryview(group))

    def _spread(self, block: memoryview) -> None:
        words = np.frombuffer(block, dtype=">u8").reshape(-1, 2)
        # Native copies first: numpy scatters a strided big-endian column 30x slower.
        hi = words[:, 0].astype(np.uint64)
        lo = words[:, 1].astype(np.uint64)
        count = hi.shape[0]
        if self._bits:
            # The bucket is the top bits of the first byte: a uint8 key, which numpy's
            # stable argsort sorts by radix. In bucket order, a digest's slot is the
            # bucket's fill plus its place among this block's digests of the bucket.
            top = np.frombuffer(block, dtype=np.uint8)[::16] >> np.uint8(8 - self._bits)
            order = np.argsort(top, kind="stable")
            counts = np.bincount(top, minlength=self._fill.shape[0])
        else:
            order = None
            counts = np.array([count])
        room = self._cap - self._fill
        placed = np.minimum(counts, room)
        if (placed == counts).all():
            first = np.cumsum(counts) - counts
            # Slots in bucket order, handed back to the digests in arrival order: one
            # scatter of each half instead of a gather and a scatter.
            at = np.repeat(self._base + self._fill - first, counts) + np.arange(count)
            if order is not None:
                at[order] = at.copy()
            self._hi[at] = hi
            self._lo[at] = lo
        else:
            if order is not None:
                hi, lo = hi[order], lo[order]
            self._spread_with_spill(hi, lo, counts, placed)
        self._fill += placed

    def _spread_with_spill(
        self, hi: np.ndarray, lo: np.ndarray, counts: np.ndarray, placed: np.ndarray
    ) -> None:
        # hi/lo are in bucket order: the first ``placed`` of each bucket's run go in, the
        # rest aside (only when a bucket is fuller than 6 standard deviations allow).
        first = np.cumsum(counts) - counts
        rank = np.arange(hi.shape[0]) - np.repeat(first, counts)
        fits = rank < np.repeat(placed, counts)
        at = np.repeat(self._base + self._fill, counts)[fits] + rank[fits]
        self._hi[at] = hi[fits]
        self._lo[at] = lo[fits]
        self._aside.append(np.stack([hi[~fits], lo[~fits]], axis=1))

    def build(self) -> DoneSet:
        """The set (the builder is spent afterwards)."""
        self._flush()
        hi_all, lo_all = self._hi, self._lo
        n = 0
        for bucket in range(self._fill.shape[0]):
            count = int(self._fill[bucket])
            start = int(self._base[bucket])
            hi, lo = _sort_pairs(hi_all[start : start + count], lo_all[start : start + count])
            # Regions only move down (n <= start), and the sorted pieces are copies.
            hi_all[n : n + count] = hi
            lo_all[n : n + count] = lo
            n += count
        self._hi = self._lo = np.empty(0, dtype=np.uint64)
        # Give back the room above the set (realloc shrinks the mapping in place).
        hi_all.resize(n, refcheck=False)
        lo_all.resize(n, refcheck=False)
        done = DoneSet._sorted(hi_all, lo_all)
        if self._aside:
            rest = np.concatenate(self._aside)
            self._aside = []
            hi, lo = _sort_pairs(rest[:, 0].copy(), rest[:, 1].copy())
            done = DoneSet.union(done, DoneSet._sorted(hi, lo))
        return done


def _sort_pairs(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted copies of ``hi`` and of ``lo`` in the same order."""
    count = hi.shape[0]
    if count < 2:
        return hi.copy(), lo.copy()
    # numpy sorts plain uint64 in place several times faster than it argsorts them: sort
    # the high halves with each one's index in its low bits, then read the order back.
    bits = int(count - 1).bit_length()
    mask = np.uint64((1 << bits) - 1)
    packed = hi & ~mask
    packed |= np.arange(count, dtype=np.uint64)
    packed.sort()
    order = (packed & mask).astype(np.intp)
    del packed
    hi_sorted = hi[order]
    if (hi_sorted[1:] < hi_sorted[:-1]).any():
        # Two high halves equal above the index bits, unequal in them: the packed order
        # put them by index. Rare (a few times in a hundred 10M-row sets); sort exactly.
        order = np.argsort(hi, kind="stable")
        hi_sorted = hi[order]
    return hi_sorted, lo[order]
