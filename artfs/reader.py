"""Reading files' bytes for a mount: the one owner of a block's state.

A block of a blob is, for this process, in one of these states, and BlockReader is the only
place that moves it between them: on its way (a *flight*: one fetch however many readers wait),
in memory (just fetched, served before it reaches the disk cache), on disk (the cache's, or a
`file://` store's blob read in place) and *verified* (checked against its hash since the blob
was opened: served without another look). cache.py keeps the disk tier; blobs.py talks to the
store.

What is fetched, beyond what a read needs:
- a stream (a run of reads crossing STREAM_BLOCKS block boundaries) gets read-ahead whose
  window doubles per read, up to WINDOW_BYTES, and never beyond half of what the run has read (and a block): a
  run that reads R bytes costs at most 1.5 R plus a block, so a parquet column, one tensor of a
  checkpoint or one member of a zip stays a partial read, while a long stream soon has four
  spans (SPAN_BYTES) on their way;
- a reader that keeps missing blocks outside any stream is random; the rest of the blob comes
  at once only when the blob is small (WHOLE_SMALL) or the reader has demanded half of it;
- opening a small file fetches the next small files of its directory along (the view says
  which), side by side in a pack: one GET per run.
Neighbouring blocks come in one GET per span, on the store's part boundaries (BlobStore.spans).

Everything runs on one trio loop; blocking work goes through `Threads`. Verified blocks and
blocks on local disk are served inline (a thread hop costs more than hashing a block in the page
cache). Where an `await` sits between two state changes, a comment says why that is safe.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from .blobs import SPAN_BYTES, BlobStore
from .cache import BlobFile, BlockCache, InPlaceBlob
from .errors import CorruptDataError, StoreUnavailableError
from .manifest import PER_CHUNK, BlockHashes, Entry
from .namespace import Buffer
from .prefetch import ReadAhead
from .storage.aio import Threads

log = logging.getLogger(__name__)

FAIL_FAST = 10.0  # seconds after a fetch found the store unreachable
WHOLE_SMALL = 4 * SPAN_BYTES  # a random reader gets the rest of a blob this small at once
WHOLE_SHARE = 0.5  # … or of any blob once it has demanded this share of its blocks


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    data: Any = None
    error: Exception | None = None


class Stream:
    """One open file: its blob (leased while open) and how it is being read."""

    __slots__ = ("ahead", "blob", "demanded", "whole_asked")

    def __init__(self, blob: BlobFile) -> None:
        self.blob = blob
        self.ahead = ReadAhead(blob.block_size) if len(blob.verified) > 1 else None  # streams need blocks
        self.demanded = bytearray(len(blob.verified))  # blocks this reader asked for
        self.whole_asked = False


class BlockReader:
    """See the module docstring. `background` is where read-ahead runs (None: no read-ahead)."""

    def __init__(
        self,
        blobs: BlobStore,
        cache: BlockCache,
        threads: Threads,
        background: trio.Nursery | None,
        in_place: bool = True,
    ) -> None:
        self.blobs = blobs
        self.cache = cache
        self.threads = threads
        self.background = background
        self.in_place = in_place
        self.local = in_place and blobs.on_this_machine  # blobs read where they lie: none to fetch
        self.counters: Counter[str] = Counter()  # loop-thread only; the cache counts its own
        self._flights: dict[Any, _Flight] = {}
        self._leased: dict[str, tuple[BlobFile, int]] = {}  # blob → (its BlobFile, users)
        self._verified_in_place: dict[str, bytearray] = {}  # multi-block blobs read in place
        self._ahead: set[tuple[str, int]] = set()  # blocks queued or on their way to disk
        self._spans_loading = trio.CapacityLimiter(threads.background.total_tokens)  # see `_load_ahead`
        self._passed: dict[str, int] = {}  # blob → the block a stream of it has read up to
        self._down_until = 0.0  # until then, fetches fail without asking the store

    # -- single-flight -----------------------------------------------------------------------
    async def ask(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Run `fn` (a store request) in a worker thread once per key however many tasks ask at
        once; they all get its result or its error. Once the store was found unreachable (after
        the retries), fail fast for a while: every request would wait them out again (and the
        kernel repeats a failed read). Joining a flight under way asks nothing."""
        if key not in self._flights and time.monotonic() < self._down_until:
            raise StoreUnavailableError(f"{self.blobs.backend.url} is unreachable (asking again shortly)")
        try:
            return await self._once(key, fn)
        except StoreUnavailableError:
            self._down_until = time.monotonic() + FAIL_FAST
            raise

    async def _once(self, key: Any, fn: Callable[[], Any]) -> Any:
        flight = self._flights.get(key)
        if flight is None:
            flight = (await self._fly([key], lambda: {key: fn()}, background=False))[key]
        else:
            await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.data

    async def _fly(
        self, keys: list[Any], fn: Callable[[], dict[Any, Any]], background: bool
    ) -> dict[Any, _Flight]:
        """Run `fn` in a worker thread as the flight of each of `keys` (none in flight yet): it
        returns each key's result, or the exception that key's askers get."""
        flights = {k: _Flight() for k in keys}
        self._flights.update(flights)
        try:
            got = await self.threads.run(fn, background=background)
            for k, f in flights.items():
                f.data = got[k]
                if isinstance(f.data, Exception):
                    f.error = f.data
        except Exception as e:
            for f in flights.values():
                f.error = e
        finally:
            for k, f in flights.items():
                del self._flights[k]
                f.done.set()
        return flights

    # -- leases ------------------------------------------------------------------------------
    def _acquire(self, entry: Entry) -> BlobFile:
        """The shared BlobFile of `entry`'s content, with one more user (`_release` it)."""
        held = self._leased.get(entry.hash)
        if held is not None:
            blob, users = held
        else:
            path = self.blobs.local_path(entry) if self.in_place else None
            if path is not None:
                verified = self._verified_in_place.get(entry.hash)
                blob = InPlaceBlob(entry, self.blobs.block_size, path, verified)
                if len(blob.verified) > 1:  # a one-block blob is verified again at no cost
                    self._verified_in_place[entry.hash] = blob.verified
            else:
                blob = self.cache.open(entry, functools.partial(self.blobs.read_block, entry))
            users = 0
        self._leased[entry.hash] = (blob, users + 1)
        return blob

    def _release(self, h: str) -> None:
        blob, users = self._leased[h]
        if users > 1:
            self._leased[h] = (blob, users - 1)
        else:
            del self._leased[h]
            self._passed.pop(h, None)
            blob.close()

    @contextlib.contextmanager
    def _lease(self, entry: Entry) -> Iterator[BlobFile]:
        blob = self._acquire(entry)
        try:
            yield blob
        finally:
            self._release(entry.hash)

    # -- streams -----------------------------------------------------------------------------
    def open(self, entry: Entry) -> Stream:
        return Stream(self._acquire(entry))

    def close(self, stream: Stream) -> None:
        self._release(stream.blob.entry.hash)

    async def read(self, stream: Stream, offset: int, size: int) -> Buffer:
        """Verified bytes only. Blocks verified before are served inline; a block on local disk is
        verified inline; a block that must be fetched is, once however many readers wait, in a
        worker thread."""
        blob = stream.blob
        self.counters["read_requests"] += 1
        self.counters["bytes_requested"] += max(0, min(size, blob.entry.size - offset))
        indices = blob.blocks_of(offset, size)
        await self._block_hashes(blob.entry, indices)
        if stream.ahead is not None and self.background is not None and size:
            self._read_ahead(stream, offset, size)
        loaded: dict[int, Buffer] = {}
        for i in indices:
            stream.demanded[i] = 1
            if blob.verified[i]:
                continue
            # being fetched or verified ahead: wait for that; else it may be on disk
            data = None if (blob.entry.hash, i) in self._flights else blob.load_local(i)
            if data is None:
                if stream.ahead is not None and stream.ahead.random_miss():
                    self._random(stream, i)
                data = await self._fetch(blob, i)
            self.counters["blocks_verified"] += 1
            self.counters["bytes_verified"] += len(data)
            loaded[i] = data
        served = blob.read(offset, size, loaded)
        if stream.ahead is not None and stream.ahead.window:
            self._stream_read(blob, offset, offset + size)
        return served

    async def _block_hashes(self, entry: Entry, indices: Iterable[int]) -> None:
        """Load the chunks of a format-2 block list that verifying these blocks needs (a block
        on disk is verified inline, on the loop, where a store request must never run)."""
        hashes = entry.blocks
        if isinstance(hashes, BlockHashes):
            for i in indices:
                if not hashes.loaded(i):
                    key = hashes.chunks[i // PER_CHUNK]
                    await self.ask(("chunk", key), functools.partial(hashes.__getitem__, i))

    def _stream_read(self, blob: BlobFile, offset: int, end: int) -> None:
        """A stream has read `offset`..`end`. Blocks it has read past leave the daemon's memory
        once they are on disk (the kernel keeps what was read): here if they are, else when
        they get there (`_keep`). Memory is then left to the blocks on their way to a reader,
        and a long stream reuses its buffers (fresh pages are what a cold read would otherwise
        spend much time on)."""
        h, bs = blob.entry.hash, blob.block_size
        self._passed[h] = max(self._passed.get(h, 0), end // bs)
        for i in range(offset // bs, end // bs):
            if blob.local(i):
                self.cache.forget(h, i)

    async def _fetch(self, blob: BlobFile, index: int) -> Buffer:
        """A block from the store. The reader gets it before it is written to the cache, which
        happens in the background (meanwhile the block is served from memory)."""
        key = (blob.entry.hash, index)
        if self.background is None:
            data: Buffer = await self.ask(key, functools.partial(blob.fetch, index))
            return data
        starts = key not in self._flights  # else it joins the flight of a reader or of read-ahead
        fetched: Buffer = await self.ask(key, functools.partial(blob.fetch_to_memory, index))
        if starts:
            self._ahead.add(key)  # on its way to disk: not to be fetched again
            self.background.start_soon(self._keep_behind, blob.entry, index, fetched)
        return fetched

    async def _keep_behind(self, entry: Entry, index: int, data: Buffer) -> None:
        with self._lease(entry) as blob:
            try:
                await self._keep([(blob, index, data)])
            finally:
                self._ahead.discard((entry.hash, index))

    async def _keep(self, blocks: list[tuple[BlobFile, int, Buffer]]) -> None:
        """Write blocks fetched to memory (`fetch_to_memory`, `take`) to the cache, in a worker
        thread, after their readers got them. A block that cannot be written stays served from
        memory for a while, then is fetched again."""
        if not blocks:
            return

        def keep() -> None:
            for blob, i, data in blocks:
                try:
                    blob.keep(i, data)
                except Exception as e:
                    log.warning("cannot write block %d of blob %s to the cache: %s", i, blob.entry.hash, e)

        with trio.CancelScope(shield=True):  # unmounting waits for blocks on their way to disk
            await self.threads.run(keep, background=True)
        for blob, i, _ in blocks:
            if i < self._passed.get(blob.entry.hash, 0) and blob.local(i):
                self.cache.forget(blob.entry.hash, i)  # a stream has read past it (`_stream_read`)

    # -- fetching ahead ----------------------------------------------------------------------
    def _read_ahead(self, stream: Stream, offset: int, size: int) -> None:
        """Fetch the blocks the read-ahead window holds and nobody fetches yet, as far as
        ReadAhead.fetch_end says (see the module docstring); verify those on disk already."""
        assert self.background is not None and stream.ahead is not None
        blob = stream.blob
        bs, count = blob.block_size, len(blob.verified)
        last = (min(offset + size, blob.entry.size) - 1) // bs
        window = stream.ahead.advise(offset // bs, last, count)
        span = SPAN_BYTES // bs
        if window:
            end = stream.ahead.fetch_end(window, count, span)
            self._fetch_blocks(blob, self._missing(blob, range(window.start, end)), "blocks_read_ahead")
        h = blob.entry.hash
        on_disk = [i for i in window if not blob.verified[i] and blob.local(i) and (h, i) not in self._ahead]
        for k in range(0, len(on_disk), span):
            self._verify_ahead(blob, on_disk[k : k + span])

    def _verify_ahead(self, blob: BlobFile, indices: list[int]) -> None:
        """Read and verify blocks that are on local disk in a worker thread, ahead of a reader:
        it then finds them in the page cache instead of waiting for the disk on the loop."""
        assert self.background is not None
        self._ahead.update((blob.entry.hash, i) for i in indices)
        self.background.start_soon(self._load_verified, blob.entry, indices)

    async def _load_verified(self, entry: Entry, indices: list[int]) -> None:
        h = entry.hash
        with self._lease(entry) as blob:
            todo = [i for i in indices if (h, i) not in self._flights]

            def verify() -> dict[tuple[str, int], Any]:
                out: dict[tuple[str, int], Any] = {}
                for i in todo:  # a block that fails its check is dropped, and fetched again here
                    try:
                        data = blob.load_local(i)
                        out[h, i] = data if data is not None else blob.fetch(i)
                    except Exception as e:
                        out[h, i] = e
                return out

            try:
                await self._fly([(h, i) for i in todo], verify, background=True)
                self.counters["blocks_verified_ahead"] += len(todo)
            finally:
                self._ahead.difference_update((h, i) for i in indices)

    def _random(self, stream: Stream, but: int) -> None:
        """A reader that keeps missing outside any stream: fetch the rest of its blob at once
        if the blob is small, or once the reader has asked for a good share of it (a random
        reader touches most of such a file sooner or later); otherwise only what it reads."""
        blob = stream.blob
        size = blob.entry.size
        share = sum(stream.demanded) / max(1, len(stream.demanded))
        wanted = size <= WHOLE_SMALL or share >= WHOLE_SHARE
        if self.background is None or stream.whole_asked or not wanted or size > self.cache.budget // 4:
            return
        stream.whole_asked = True
        others = (i for i in range(len(blob.verified)) if i != but)
        self._fetch_blocks(blob, self._missing(blob, others), "blocks_fetched_whole")

    def _missing(self, blob: BlobFile, indices: Iterable[int]) -> list[int]:
        """Those of these blocks that are nowhere yet, nor on their way."""
        h = blob.entry.hash
        return [i for i in indices if (h, i) not in self._ahead and self._still_missing(blob, i)]

    def _still_missing(self, blob: BlobFile, index: int) -> bool:
        """Neither verified, on disk, in memory nor being fetched (a block queued to be fetched
        ahead is still missing: see `_load_ahead`)."""
        h = blob.entry.hash
        return (
            (h, index) not in self._flights
            and not blob.verified[index]
            and not blob.local(index)
            and self.cache.recall(h, index) is None
        )

    def _fetch_blocks(self, blob: BlobFile, indices: list[int], counter: str) -> None:
        """Fetch these blocks in the background, a span of neighbours per GET."""
        for span in self.blobs.spans([(blob.entry, i) for i in indices]):
            self.counters[counter] += len(span)
            self._fetch_ahead([(e, i) for e, i in span])

    def prefetch_small(self, opened: Entry, files: Iterable[Entry]) -> None:
        """Fetch these small files (an opened one and the next of its directory) that are not
        here yet, side by side in a pack with one GET per run."""
        if self.background is None or self.local:
            return
        todo = []
        for e in files:
            if 0 < e.size <= self.blobs.block_size:
                with self._lease(e) as blob:
                    if self._missing(blob, [0]):
                        todo.append(e)
        for span in self.blobs.spans((e, 0) for e in todo):
            self.counters["pack_runs_fetched"] += len(span) > 1
            self.counters["files_fetched_ahead"] += sum(e.path != opened.path for e, _ in span)
            self._fetch_ahead(span)

    def _fetch_ahead(self, pieces: list[tuple[Entry, int]]) -> None:
        """Fetch blocks in the background with one GET (`pieces` make a span)."""
        assert self.background is not None
        self._ahead.update((e.hash, i) for e, i in pieces)
        self.background.start_soon(self._load_ahead, pieces)

    async def _load_ahead(self, pieces: list[tuple[Entry, int]]) -> None:
        """Blocks become flights (which readers wait for) only once their GET can start: a
        reader that needs a block still queued behind other spans (a whole blob coming for a
        random reader, say) fetches it on its own instead of waiting for the queue."""
        with contextlib.ExitStack() as leases:
            blob_of = {e.hash: leases.enter_context(self._lease(e)) for e, _ in pieces}
            try:
                async with self._spans_loading:
                    # A reader may have fetched some of them meanwhile, or be fetching them: left out.
                    todo = [(e, i) for e, i in pieces if self._still_missing(blob_of[e.hash], i)]
                    for span in self.blobs.spans(todo):
                        part = [(blob_of[e.hash], i) for e, i in span]
                        part = [(b, i) for b, i in part if self._still_missing(b, i)]  # again, after an await
                        if part and time.monotonic() >= self._down_until:
                            await self._load_span(part)
            finally:
                self._ahead.difference_update((e.hash, i) for e, i in pieces)

    async def _load_span(self, part: list[tuple[BlobFile, int]]) -> None:
        self.counters["gets_ahead"] += 1
        keys = [(b.entry.hash, i) for b, i in part]
        flights = await self._fly(keys, functools.partial(self._fetch_span, part), background=True)
        for k, f in flights.items():  # the reader gets the error if it reaches this block
            if f.error is not None:
                log.debug("fetching block %d of blob %s ahead: %s", k[1], k[0], f.error)
                if isinstance(f.error, StoreUnavailableError):
                    self._down_until = time.monotonic() + FAIL_FAST
        await self._keep(
            [(b, i, flights[b.entry.hash, i].data) for b, i in part if flights[b.entry.hash, i].error is None]
        )

    def _fetch_span(self, pieces: list[tuple[BlobFile, int]]) -> dict[tuple[str, int], Any]:
        """In a worker thread: one GET for the span, each block verified and taken by its blob
        (the caller keeps them). A block that failed its check is fetched on its own, which
        reports the error."""
        got = self.blobs.read_pieces([(b.entry, i) for b, i in pieces])
        out: dict[tuple[str, int], Any] = {}
        for blob, i in pieces:
            key = (blob.entry.hash, i)
            data = got[key]
            if not isinstance(data, Exception):
                try:
                    blob.take(i, data)
                except CorruptDataError as e:  # what the blob checks itself (a reference's learned hash)
                    data = e
            out[key] = data
        return out

    # -- the whole -----------------------------------------------------------------------------
    def open_blobs(self) -> int:
        return len(self._leased)

    def close_all(self) -> None:
        for blob, _ in self._leased.values():
            blob.close()
        self._leased.clear()


class FileReader(io.RawIOBase):
    """One file of a version, read by the Python API (Version.open): seekable, lazily fetched,
    every byte verified, through the same block cache as the mounts (a block fetched once on
    this machine is read from disk by every later reader, mount or not). Threads of a process
    reading the same block fetch it once. A reader that goes on where it left off gets its
    next blocks a span per GET (up to ahead of it), like a mount's stream."""

    _flights: ClassVar[dict[tuple[str, int], threading.Lock]] = {}
    _flights_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, blobs: BlobStore, cache: BlockCache, entry: Entry) -> None:
        self._blobs = blobs
        path = blobs.local_path(entry)  # a file:// store's blob is read where it lies
        self._blob: BlobFile = (
            InPlaceBlob(entry, blobs.block_size, path)
            if path is not None
            else cache.open(entry, functools.partial(blobs.read_block, entry))
        )
        self._entry = entry
        self._pos = 0
        self._ahead = ReadAhead(blobs.block_size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._entry.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        blob = self._blob
        indices = blob.blocks_of(self._pos, len(buf))
        if not indices:
            return 0
        count = len(blob.verified)
        window = self._ahead.advise(indices[0], indices[-1], count)
        end = self._ahead.fetch_end(window, count, SPAN_BYTES // blob.block_size) if window else 0
        loaded: dict[int, Buffer] = {}
        for i in indices:
            if not blob.verified[i]:
                loaded[i] = self._block(i, range(i, max(end, indices[-1] + 1)))
        data = blob.read(self._pos, len(buf), loaded)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _block(self, index: int, run: range) -> Buffer:
        """Block `index`, from disk if it is there, else fetched (once, however many threads
        ask) with the missing blocks of `run` after it in the same GETs."""
        blob = self._blob
        local = blob.load_local(index)
        if local is not None:
            return local
        key = (blob.entry.hash, index)
        with FileReader._flights_lock:
            lock = FileReader._flights.setdefault(key, threading.Lock())
        with lock:
            try:
                local = blob.load_local(index)  # another thread may have fetched it meanwhile
                if local is not None:
                    return local
                wanted = [i for i in run if not blob.verified[i] and not blob.local(i)]
                got = self._blobs.read_pieces([(blob.entry, i) for i in wanted]) if len(wanted) > 1 else {}
                for i in wanted[1:]:
                    data = got.get((blob.entry.hash, i))
                    if data is not None and not isinstance(data, Exception):
                        blob.accept(i, data)
                first = got.get(key)
                if first is None or isinstance(first, Exception):
                    return blob.fetch(index)  # reports what is wrong with it, if anything
                return blob.accept(index, first)
            finally:
                with FileReader._flights_lock:
                    FileReader._flights.pop(key, None)

    def close(self) -> None:
        if not self.closed:
            self._blob.close()
        super().close()
