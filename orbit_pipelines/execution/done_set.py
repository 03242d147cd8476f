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
