"""The rows of a step that need no more work, as one sorted array of 16-byte hashes."""

from __future__ import annotations

import numpy as np

HASH_DTYPE = np.dtype("S16")


class DoneSet:
    """Membership of row-key hashes in a sorted ``S16`` array (binary search, no Python set).

    Loaded once when a step starts; rows finished during this run are not added, because
    the executor never meets the same key twice in one pass.
    """

    def __init__(self, sorted_hashes: np.ndarray) -> None:
        self._hashes = sorted_hashes

    def __len__(self) -> int:
        return int(self._hashes.shape[0])

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` (dtype ``S16``) are done."""
        if self._hashes.shape[0] == 0:
            return np.zeros(hashes.shape[0], dtype=bool)
        pos = np.searchsorted(self._hashes, hashes)
        pos[pos == self._hashes.shape[0]] = 0
        return self._hashes[pos] == hashes
