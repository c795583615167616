"""Read-ahead for sequential readers, by block.

A read that starts in the block where the previous read ended, or in the next one, continues a
sequential run; any other read starts a new run. Once a run has crossed two block boundaries it
is a stream, not a probe, and the window of blocks to load ahead opens and doubles with every
read, up to a limit; a new run closes it. So a single read costs only the blocks it touches,
while a stream gets its fetching and verifying done on worker threads, ahead of the reader.
"""

from __future__ import annotations

WINDOW_BYTES = 32 * 1024 * 1024
STREAM_BLOCKS = 2  # block boundaries a run crosses before it counts as a stream


class ReadAhead:
    """The read-ahead state of one open file (not shared: each reader has its own pattern)."""

    def __init__(self, block_size: int, window_bytes: int = WINDOW_BYTES) -> None:
        self.limit = max(1, window_bytes // block_size)
        self.window = 0
        self._start = -1  # first block of the current run
        self._last = -2  # last block of the previous read

    def advise(self, first: int, last: int, count: int) -> range:
        """The blocks to load ahead after a read of blocks `first`..`last` of a `count`-block file."""
        if first not in (self._last, self._last + 1):
            self._start, self.window = first, 0
        self._last = last
        if last - self._start >= STREAM_BLOCKS:
            self.window = min(self.limit, max(1, self.window * 2))
        return range(last + 1, min(count, last + 1 + self.window))
