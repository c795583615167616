"""Read-ahead for sequential readers, by block.

A read that starts in the block where the previous read ended, or in the next one, continues a
sequential run; any other read starts a new run. Once a run has crossed two block boundaries it
is a stream, not a probe, and the window of blocks to load ahead opens and doubles with every
read, up to a limit; a new run closes it. So a single read costs only the blocks it touches,
while a stream gets its fetching and verifying done on worker threads, ahead of the reader.

A reader that keeps missing blocks outside any stream is random (a database, a zip's central
directory then its members, a shuffled loader reading records); after a few such misses the
caller may fetch the rest of the blob at once (reader.py says when: a partial reader of a big
file, such as one reading a few parquet columns, must stay partial).
"""

from __future__ import annotations

WINDOW_BYTES = 32 * 1024 * 1024
STREAM_BLOCKS = 2  # block boundaries a run crosses before it counts as a stream
SCATTERED_MISSES = 4  # blocks fetched for reads outside a stream before the reader is random


class ReadAhead:
    """The read-ahead state of one open file (not shared: each reader has its own pattern)."""

    def __init__(self, block_size: int, window_bytes: int = WINDOW_BYTES) -> None:
        self.limit = max(1, window_bytes // block_size)
        self.window = 0
        self._start = -1  # first block of the current run
        self._last = -2  # last block of the previous read
        self._misses = 0  # blocks fetched for reads outside a stream

    @property
    def run_blocks(self) -> int:
        """Blocks the current sequential run has read."""
        return max(0, self._last - self._start + 1)

    def advise(self, first: int, last: int, count: int) -> range:
        """The blocks to load ahead after a read of blocks `first`..`last` of a `count`-block file."""
        if first not in (self._last, self._last + 1):
            self._start, self.window = first, 0
        self._last = last
        if last - self._start >= STREAM_BLOCKS:
            self.window = min(self.limit, max(1, self.window * 2))
        return range(last + 1, min(count, last + 1 + self.window))

    def random_miss(self) -> bool:
        """Note that a read had to fetch a block. True, from the SCATTERED_MISSES-th such miss
        on, when the reader is random."""
        if self.window:
            return False
        self._misses += 1
        return self._misses >= SCATTERED_MISSES
