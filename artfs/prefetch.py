"""Read-ahead for sequential readers, by block.

A read that starts in the block where the previous read ended, or in the next one, continues a
sequential run; any other read starts a new run. Once a run has crossed STREAM_BLOCKS block
boundaries it is a stream, not a probe (four: a parquet column chunk of a MiB or two, with the
kernel's own read-ahead of a MiB after it, is still a probe), and the window of blocks to load
ahead opens and doubles with every read, up to a limit; a new run closes it. So a single read
costs only the blocks it touches, while a stream gets its fetching and verifying done on worker
threads, ahead of the reader.

A reader whose reads keep starting runs and missing blocks is random (a database, a zip's central
directory then its members, a shuffled loader reading records); after a few such misses the
caller may fetch the rest of the blob at once (reader.py says when: a partial reader of a big
file, such as one reading a few parquet columns, must stay partial).
"""

from __future__ import annotations

WINDOW_BYTES = 32 * 1024 * 1024
STREAM_BLOCKS = 4  # block boundaries a run crosses before it counts as a stream
SCATTERED_MISSES = 4  # blocks fetched for reads outside a stream before the reader is random


class ReadAhead:
    """The read-ahead state of one open file (not shared: each reader has its own pattern)."""

    def __init__(self, block_size: int, window_bytes: int = WINDOW_BYTES) -> None:
        self.limit = max(1, window_bytes // block_size)
        self.window = 0
        self._start = -1  # first block of the current run
        self._last = -2  # last block of the previous read
        self._misses = 0  # blocks fetched for reads that started a run
        self._jumped = False  # the last read started a run

    @property
    def run_blocks(self) -> int:
        """Blocks the current sequential run has read."""
        return max(0, self._last - self._start + 1)

    def advise(self, first: int, last: int, count: int) -> range:
        """The blocks to load ahead after a read of blocks `first`..`last` of a `count`-block file."""
        self._jumped = (
            not self._start <= first <= self._last + 1
        )  # (the kernel's reads may come out of order)
        if self._jumped:
            self._start, self._last, self.window = first, last, 0
        self._last = max(self._last, last)
        if self._last - self._start >= STREAM_BLOCKS:
            self.window = min(self.limit, max(1, self.window * 2))
        return range(self._last + 1, min(count, self._last + 1 + self.window))

    def random_miss(self) -> bool:
        """Note that a read had to fetch a block. True, from the SCATTERED_MISSES-th such miss
        by a read that started a run on, when the reader is random."""
        if self.window or not self._jumped:
            return False
        self._misses += 1
        return self._misses >= SCATTERED_MISSES

    def fetch_end(self, window: range, count: int, span: int) -> int:
        """Where fetching the `window` just advised should stop, for a store whose GETs are best
        `span` blocks on span boundaries: at most half as much again as the run has read (and a
        block), so a run of R bytes costs at most 1.5 R plus a block (a parquet column, one
        tensor, one zip member stay partial reads); ending on a span boundary where that stays
        ahead of the read."""
        last = self._last
        end = min(count, window.stop, last + 1 + max(1, self.run_blocks // 2))
        if end % span and end // span * span > last + 1:
            end = end // span * span
        return end
