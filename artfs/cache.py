"""The local block cache, shared by every mount and process of a user, and in-place blob reads.

Layout under the cache directory (`$ARTFS_CACHE`, default `$XDG_CACHE_HOME/artfs`):

    blocks/<block_size>/ab/<hash>            a sparse file the size of the blob
    blocks/<block_size>/ab/<hash>.present    one byte per block: 1 = the block was written
    blocks/<block_size>/ab/<hash>            a small blob (≤ MAP_MIN), whole: no .present
    learned/<block_size>/ab/<key>            a reference whose content was never hashed (keyed by
                                             URI and pin): 16 bytes per block, the xxh3-128 the
                                             block had when first fetched, pinned, from its
                                             origin; never evicted (see `Learned`)
    pins/<store-id>-<name>:v<N>.json         blobs a pinned version needs; never evicted

Blobs are content-addressed, so blocks are shared by every version and every store that holds the
same bytes, and a cache key can never go stale.

Every byte served has been verified: a block is checked against the manifest's hash when it is
fetched, and a block read back from the cache file is checked again the first time each process
touches it after opening the blob. That is what makes the cache crash-safe without an fsync per
block: a block torn by a crash fails its hash, is dropped and fetched again.

A small blob is written whole under a temporary name and renamed into place, so the file at its
path is complete; opening it costs one read, not a lock and a block record, which is what makes
a warm walk over many small files fast.

Eviction is by whole blob, least recently opened first, down to 90% of the budget. A process that
has a big blob open holds a shared `flock` on its cache file and an evictor (any process) needs an
exclusive one, so blocks in use are never evicted (a small blob is read into memory whole: an
evictor may unlink it under its reader). When nothing can be evicted, new blocks are
served without being cached: the budget is a hard limit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import mmap
import os
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .blobs import BlobStore, check_block
from .config import PRIVATE_DIR, PRIVATE_FILE, private_dir
from .errors import CorruptDataError, InvalidInputError, StaleReferenceError
from .logs import redact
from .manifest import Entry
from .progress import ProgressFactory, silent
from .workers import Pool, checkpoint

log = logging.getLogger(__name__)

Buffer = bytes | memoryview

DEFAULT_SHARE = 0.25  # of the free space where the cache lives, when no --cache-size is given
EVICT_TO = 0.9  # an eviction pass frees space down to this share of the budget
MAP_MIN = 256 * 1024  # blobs bigger than this are memory-mapped; smaller ones cached whole
STALE_TMP = 3600  # seconds after which a temporary file in the cache is a crash's leftover
SUM = 16  # bytes of a learned block hash (xxh3-128)
RECENT_BYTES = 256 * 1024 * 1024  # blocks kept in memory once fetched or read (see `recall`)
DIRECT_ALIGN = 4096  # O_DIRECT writes: offsets, lengths and buffers aligned to this
RECORD_BYTES = 4096  # disk space a blob's .present record takes once written (one fs block)


class BlobFile(ABC):
    """The bytes of one blob, local or on their way. A block is served only after it has been
    verified in this process. `load_local` verifies a block that is on local disk (cheap: callers
    run it inline); `fetch` gets one from the store (blocking: callers run it in a worker thread).
    """

    _fetch: Callable[[int], bytes]  # a block from the store, verified

    def __init__(self, entry: Entry, block_size: int) -> None:
        self.entry = entry
        self.block_size = block_size
        self.verified = bytearray(entry.block_count(block_size))

    @abstractmethod
    def _serve(self, pos: int, length: int) -> Buffer:
        """Bytes of verified blocks."""

    def blocks_of(self, offset: int, size: int) -> range:
        """The blocks a read of `size` bytes at `offset` touches."""
        end = min(self.entry.size, offset + size)
        if offset >= end:
            return range(0)
        return range(offset // self.block_size, (end - 1) // self.block_size + 1)

    def read(self, offset: int, size: int, loaded: Mapping[int, Buffer]) -> Buffer:
        """The range, from `loaded` (block index → verified bytes) and from verified blocks on
        disk. A range inside one block is served without a copy where it can be."""
        end = min(self.entry.size, offset + size)
        if not loaded:  # every block is verified: the hot path
            return self._serve(offset, end - offset) if offset < end else b""
        parts: list[Buffer] = []
        pos = offset
        for i in self.blocks_of(offset, size):
            start = i * self.block_size
            stop = min(end, start + self.block_size)
            data = loaded.get(i)
            if data is not None:
                parts.append(memoryview(data)[pos - start : stop - start])
            else:
                assert self.verified[i], "block served before it was verified"
                parts.append(self._serve(pos, stop - pos))
            pos = stop
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    @abstractmethod
    def local(self, index: int) -> bool:
        """True when the block can be had without asking the store."""

    @abstractmethod
    def load_local(self, index: int) -> Buffer | None:
        """Verified bytes of a block on local disk, or None if it must be fetched. Never touches
        the network. CorruptDataError if the bytes are wrong and there is nowhere else to look."""

    def fetch(self, index: int) -> Buffer:
        """Verified bytes of a block from the store (blocking), kept. CorruptDataError if bad."""
        return self.accept(index, self._fetch(index))

    def accept(self, index: int, data: Buffer) -> Buffer:
        """Take block `index`, fetched and verified by the caller: serve it from now on, keep it."""
        self.take(index, data)
        self.keep(index, data)
        return data

    def fetch_to_memory(self, index: int) -> Buffer:
        """`fetch` without `keep`: the block is served from memory until the caller keeps it (a
        reader waiting for its block need not wait for the disk too)."""
        data = self._fetch(index)
        self.take(index, data)
        return data

    @abstractmethod
    def take(self, index: int, data: Buffer) -> None:
        """Serve block `index`, fetched and verified, from memory."""

    @abstractmethod
    def keep(self, index: int, data: Buffer) -> None:
        """Write block `index`, taken before, to the cache (blocking), if the budget has room."""

    @abstractmethod
    def close(self) -> None: ...


class _FileBlob(BlobFile):
    """A blob in a file of its own size. Bigger than MAP_MIN, it is memory-mapped: blocks are
    hashed straight from the page cache and served as views of the mapping, so the kernel copies
    each byte once, into the reader's pages. The files mapped are never truncated while open
    (write-once store blobs; cache files only grow, under a lock that keeps evictors away), so a
    mapping cannot fault."""

    def __init__(self, entry: Entry, block_size: int, fd: int) -> None:
        super().__init__(entry, block_size)
        self.fd = fd
        self._map = mmap.mmap(fd, entry.size, prot=mmap.PROT_READ) if entry.size > MAP_MIN else None

    def _serve(self, pos: int, length: int) -> Buffer:
        if self._map is not None:
            return memoryview(self._map)[pos : pos + length]
        return os.pread(self.fd, length, pos)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still referenced somewhere; it unmaps when collected
                log.debug("blob %s: mapping still in use at close", self.entry.hash)
        os.close(self.fd)


class InPlaceBlob(_FileBlob):
    """A blob of a `file://` store, read where it lies: no second copy."""

    def __init__(self, entry: Entry, block_size: int, path: str, verified: bytearray | None = None) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            log.error("blob %s of %r is missing from the store (%s)", entry.hash, entry.path, path)
            raise CorruptDataError(f"{entry.path}: blob {entry.hash} is missing from the store") from None
        size = os.fstat(fd).st_size
        if size != entry.size:
            os.close(fd)
            log.error(
                "blob %s of %r has %d bytes in the store, not %d (%s)",
                entry.hash,
                entry.path,
                size,
                entry.size,
                path,
            )
            raise CorruptDataError(f"{entry.path}: blob {entry.hash} is truncated or damaged in the store")
        super().__init__(entry, block_size, fd)
        if verified is not None:  # store blobs are write-once: what was verified stays verified
            self.verified = verified
        self._where = path

    def local(self, index: int) -> bool:
        return True

    def load_local(self, index: int) -> Buffer:
        start, length, _ = self.entry.block(index, self.block_size)
        data = self._serve(start, length)
        check_block(self.entry, index, self.block_size, data, self._where)
        self.verified[index] = 1
        return data

    def fetch(self, index: int) -> Buffer:
        return self.load_local(index)  # the store is this disk

    def take(self, index: int, data: Buffer) -> None:
        raise AssertionError("a blob read in place is never fetched")

    keep = take


class Learned:
    """What the first reads of a reference whose content was never hashed (tracked with
    `--no-checksum`) saw: the xxh3-128 of each block. Every later read of the block — fetched
    from its origin again, or read back from the cache — must match, so bytes that changed behind
    an unchanged pin (size and mtime put back) are never served: StaleReferenceError (ESTALE).
    Kept apart from the blocks, so evicting or pruning them forgets nothing (16 bytes a block).
    The first process to record a block wins; a lock makes check-and-record one step."""

    def __init__(self, path: Path, blocks: int, source: str) -> None:
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        self._known = bytearray(os.pread(self._fd, SUM * blocks, 0).ljust(SUM * blocks, b"\0"))
        self._source = source

    def matches(self, index: int, data: Buffer) -> bool:
        """Does block `index` hold what it held when first read? (Recorded now if it was not.)"""
        digest = xxhash.xxh3_128_digest(data)
        at = slice(SUM * index, SUM * (index + 1))
        if self._known[at] == bytes(SUM):
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._known[at] = os.pread(self._fd, SUM, SUM * index).ljust(SUM, b"\0")
                if self._known[at] == bytes(SUM):
                    os.pwrite(self._fd, digest, SUM * index)
                    self._known[at] = digest
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return self._known[at] == digest

    def check(self, index: int, data: Buffer) -> None:
        """StaleReferenceError unless `matches`."""
        if not self.matches(index, data):
            log.warning("%s: block %d differs from what it held when first read", redact(self._source), index)
            raise StaleReferenceError(
                f"{redact(self._source)}: the referenced object changed since it was first read (block "
                f"{index} differs; it was tracked without a checksum, pinned by size and time only)"
            )

    def close(self) -> None:
        os.close(self._fd)


class CachedBlob(_FileBlob):
    """A blob copied block by block into the cache as it is read."""

    def __init__(self, cache: BlockCache, entry: Entry, fetch: Callable[[int], bytes], pinned: bool) -> None:
        self._cache = cache
        self._fetch = fetch
        self._pinned = pinned
        path = cache.path(entry.hash)
        cache.subdir(path)
        fd = _open_shared(path)
        try:
            if os.fstat(fd).st_size != entry.size:
                os.ftruncate(fd, entry.size)
            self._present_fd = os.open(f"{path}.present", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        except BaseException:
            os.close(fd)
            raise
        super().__init__(entry, cache.block_size, fd)
        n = len(self.verified)
        self.present = bytearray(os.pread(self._present_fd, n, 0).ljust(n, b"\0"))
        self._learned = None if entry.content_known else cache.learned(entry)
        os.utime(self._present_fd)  # the LRU clock: last opened
        self._path = path

    def _serve(self, pos: int, length: int) -> Buffer:
        """From the blocks in memory where they are, else from the mapping."""
        parts: list[Buffer] = []
        end = pos + length
        while pos < end:
            i = pos // self.block_size
            start = i * self.block_size
            stop = min(end, start + self.block_size)
            data = self._cache.recall(self.entry.hash, i)
            part = (
                super()._serve(pos, stop - pos)
                if data is None
                else memoryview(data)[pos - start : stop - start]
            )
            parts.append(part)
            pos = stop
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def local(self, index: int) -> bool:
        return bool(self.present[index])

    def load_local(self, index: int) -> Buffer | None:
        remembered = self._cache.recall(self.entry.hash, index)
        if remembered is not None:  # verified when it was remembered
            if self.present[index]:  # else it may not stay in memory, and is not on disk (yet)
                self.verified[index] = 1
            return remembered
        if not self.present[index]:
            return None
        start, length, _ = self.entry.block(index, self.block_size)
        os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_WILLNEED)  # one read, not a fault a page
        data = self._serve(start, length)
        try:
            if self._learned is None:
                check_block(self.entry, index, self.block_size, data, f"cache {self._cache.root}")
            elif not self._learned.matches(index, data):
                raise CorruptDataError(f"{self.entry.path}: cached block {index} is corrupt")
        except CorruptDataError:
            log.warning(
                "cached block %d of blob %s was torn or damaged; fetching it again", index, self.entry.hash
            )
            self._cache.count("cache_blocks_dropped")
            self.present[index] = 0
            return None
        self.verified[index] = 1
        self._cache.count("cache_blocks_reverified")
        return data

    def take(self, index: int, data: Buffer) -> None:
        if self._learned is not None:  # fetched: what the store could not check, this does
            self._learned.check(index, data)
        self._cache.count("blocks_fetched", bytes_fetched=len(data))
        self._cache.remember(self.entry.hash, index, data)

    def keep(self, index: int, data: Buffer) -> None:
        def write() -> None:
            self._write(data, index * self.block_size)
            os.pwrite(self._present_fd, b"\1", index)  # after the data: never marks a hole

        # A record's first byte takes a filesystem block of its own: account for it with the data.
        record = 0 if any(self.present) else RECORD_BYTES
        if self._cache.keep(self.entry.hash, len(data) + record, self._pinned, write):
            self.present[index] = 1
            self.verified[index] = 1  # served from the file once out of memory

    def _write(self, data: Buffer, start: int) -> None:
        """Write a block around the page cache where the filesystem allows (O_DIRECT): the
        reader's pages of the FUSE file hold these bytes already, and a second copy in the
        cache file's pages would double the memory a cold read takes (and allocating fresh
        pages is what a buffered write spends most of its time on). Blocks just written are
        served from memory (`recall`) meanwhile."""
        if self._cache.direct and len(data) % DIRECT_ALIGN == 0:
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._cache.direct = False  # tmpfs and some others: buffered writes
            else:
                try:
                    buffer = _aligned(len(data))
                    buffer[: len(data)] = data
                    os.pwrite(fd, memoryview(buffer)[: len(data)], start)
                    return
                finally:
                    os.close(fd)
        os.pwrite(self.fd, data, start)

    def close(self) -> None:
        os.close(self._present_fd)
        if self._learned is not None:
            self._learned.close()
        super().close()  # drops the shared lock: evictable again


class SmallBlob(BlobFile):
    """A blob of at most MAP_MIN bytes (one block), cached as a whole file and held in memory
    once read, so that opening one costs a single read of the cache, or nothing when it was
    fetched or read a moment ago (the cache remembers those: a walk opens files just fetched
    ahead of it)."""

    def __init__(self, cache: BlockCache, entry: Entry, fetch: Callable[[int], bytes], pinned: bool) -> None:
        super().__init__(entry, cache.block_size)
        self._cache = cache
        self._fetch = fetch
        self._pinned = pinned
        self._data = cache.recall(entry.hash, 0)  # verified when it was remembered
        self.verified[0] = self._data is not None

    @functools.cached_property
    def _path(self) -> Path:
        return self._cache.path(self.entry.hash)

    def _serve(self, pos: int, length: int) -> Buffer:
        return memoryview(self._data or b"")[pos : pos + length]

    def local(self, index: int) -> bool:
        return bool(self.verified[0]) or self._path.exists()

    def load_local(self, index: int) -> Buffer | None:
        try:
            with open(self._path, "rb", buffering=0) as f:
                data = f.read()
            check_block(self.entry, 0, self.block_size, data, f"cache {self._cache.root}")
        except FileNotFoundError:
            return None
        except CorruptDataError:  # written before a crash, never flushed: fetch it again
            log.warning("cached blob %s was torn or damaged; fetching it again", self.entry.hash)
            self._cache.count("cache_blocks_dropped")
            _try_remove(self._path)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._path)  # the LRU clock: last opened
        self._data = data
        self.verified[0] = 1
        self._cache.remember(self.entry.hash, 0, data)
        self._cache.count("cache_blocks_reverified")
        return data

    def take(self, index: int, data: Buffer) -> None:
        self._cache.count("blocks_fetched", bytes_fetched=len(data))
        self._data = data
        self.verified[0] = 1
        self._cache.remember(self.entry.hash, 0, data)

    def keep(self, index: int, data: Buffer) -> None:
        def write() -> None:
            self._cache.subdir(self._path)
            _write_atomic(self._path, data, durable=False)  # a torn file fails its hash

        self._cache.keep(self.entry.hash, len(data), self._pinned, write)

    def close(self) -> None:
        self._data = None


_buffers = threading.local()


def _aligned(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer of at least `size` bytes (for O_DIRECT writes)."""
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.buffer = mmap.mmap(-1, size)
    return buffer


def _open_shared(path: Path) -> int:
    """Open (creating) a cache file and hold a shared lock on it, making sure it is still the
    file at `path` once locked (an evictor may have unlinked it while we waited)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@dataclass(frozen=True)
class CachedBlobInfo:
    hash: str
    bytes: int
    last_used: float


@dataclass(frozen=True)
class Pin:
    store: str
    version: str
    blobs: tuple[str, ...]
    path: Path


class BlockCache:
    """A cache directory with a size budget. Thread-safe; several processes may share it."""

    def __init__(self, root: Path, block_size: int, budget: int | None = None) -> None:
        self.root = root
        self.block_size = block_size
        self.dir = root / "blocks" / str(block_size)
        self.pins_dir = root / "pins"
        private_dir(root)
        for d in (root / "blocks", self.dir):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=PRIVATE_DIR)
        self.budget = budget if budget is not None else int(shutil.disk_usage(root).free * DEFAULT_SHARE)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._usage: int | None = None
        self._recent: OrderedDict[tuple[str, int], Buffer] = OrderedDict()
        self._recent_bytes = 0
        self.direct = True  # write blocks with O_DIRECT (off where the filesystem refuses it)

    def path(self, content_hash: str) -> Path:
        return self.dir / content_hash[:2] / content_hash

    @staticmethod
    def subdir(path: Path) -> None:
        """Make sure the directory `path` goes in exists, private like the cache."""
        with contextlib.suppress(FileExistsError):
            path.parent.mkdir(mode=PRIVATE_DIR)

    def remember(self, content_hash: str, index: int, data: Buffer) -> None:
        """Keep a verified block in memory (the least recently used go past RECENT_BYTES)."""
        key = (content_hash, index)
        with self._lock:
            if key not in self._recent:
                self._recent[key] = data
                self._recent_bytes += len(data)
            while self._recent_bytes > RECENT_BYTES:
                self._recent_bytes -= len(self._recent.popitem(last=False)[1])

    def memory(self) -> int:
        """Bytes of blocks held in memory (see `remember`)."""
        with self._lock:
            return self._recent_bytes

    def forget(self, content_hash: str, index: int) -> None:
        with self._lock:
            data = self._recent.pop((content_hash, index), None)
            if data is not None:
                self._recent_bytes -= len(data)

    def recall(self, content_hash: str, index: int) -> Buffer | None:
        key = (content_hash, index)
        with self._lock:
            data = self._recent.get(key)
            if data is not None:
                self._recent.move_to_end(key)
            return data

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)

    def count(self, what: str, n: int = 1, **more: int) -> None:
        with self._lock:
            self.stats[what] += n
            self.stats.update(more)

    def learned(self, entry: Entry) -> Learned:
        """The record of what a reference never hashed held when first read (see Learned)."""
        path = self.root / "learned" / str(self.block_size) / entry.hash[:2] / entry.hash
        return Learned(path, entry.block_count(self.block_size), entry.source)

    def open(self, entry: Entry, fetch: Callable[[int], bytes], pinned: bool = False) -> BlobFile:
        if entry.size <= min(MAP_MIN, self.block_size) and entry.content_known:
            return SmallBlob(self, entry, fetch, pinned)
        return CachedBlob(self, entry, fetch, pinned)

    # -- space -------------------------------------------------------------------------------
    def scan(self) -> list[CachedBlobInfo]:
        """Every blob in the cache with the disk space it takes, least recently used first.
        Temporary files a crash left behind are removed on the way."""
        out = []
        for sub in _listdir(self.dir):
            for name in _listdir(self.dir / sub):
                path = self.dir / sub / name
                if name.startswith("."):  # a temporary file, left behind if it is old
                    with contextlib.suppress(FileNotFoundError):
                        if time.time() - path.stat().st_mtime > STALE_TMP:
                            path.unlink()
                    continue
                if name.endswith(".present"):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                try:  # the record's disk space counts too: the budget is what `du` says
                    record = os.stat(f"{path}.present")
                    last, size = record.st_mtime, (st.st_blocks + record.st_blocks) * 512
                except FileNotFoundError:
                    last, size = st.st_mtime, st.st_blocks * 512  # a small blob: its own clock
                out.append(CachedBlobInfo(name, size, last))
        out.sort(key=lambda b: b.last_used)
        return out

    def usage(self) -> int:
        with self._lock:
            if self._usage is None:
                self._usage = sum(b.bytes for b in self.scan())
            return self._usage

    def reserve(self, n: int) -> bool:
        """Account for `n` new bytes, evicting least recently used blobs if needed; False when
        they do not fit because everything left is in use or pinned."""
        with self._lock:
            if self._usage is None:
                self._usage = sum(b.bytes for b in self.scan())
            if self._usage + n <= self.budget:
                self._usage += n
                return True
            self._evict_locked(int(self.budget * EVICT_TO) - n)
            if self._usage + n <= self.budget:
                self._usage += n
                return True
            self.stats["blocks_not_cached"] += 1
            return False

    def keep(self, blob_hash: str, size: int, pinned: bool, write: Callable[[], None]) -> bool:
        """Put `size` new bytes of a blob in the cache with `write` if the budget has room (a
        pinned blob always has). False when they were not kept: no room, or the disk is full."""
        if not (pinned or self.reserve(size)):
            return False
        try:
            write()
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("cache disk is full; serving blob %s without caching it", blob_hash)
            return False
        self.count("blocks_cached")
        return True

    def prune(self, target: int = 0) -> tuple[int, int]:
        """Evict unused, unpinned blobs until the cache holds at most `target` bytes.
        Returns (blobs, bytes) evicted."""
        with self._lock:
            return self._evict_locked(target)

    def _evict_locked(self, target: int) -> tuple[int, int]:
        blobs = self.scan()  # the truth on disk: other processes add blocks too
        usage = sum(b.bytes for b in blobs)
        keep = self.pinned()
        evicted = freed = 0
        for b in blobs:
            if usage <= target:
                break
            if b.hash in keep or not _try_remove(self.path(b.hash)):
                continue
            usage -= b.bytes
            evicted += 1
            freed += b.bytes
        self._usage = usage
        self.stats["blobs_evicted"] += evicted
        if evicted:
            log.info("cache: evicted %d blobs (%d bytes)", evicted, freed)
        return evicted, freed

    # -- pins --------------------------------------------------------------------------------
    def _pin_path(self, store_url: str, label: str) -> Path:
        return self.pins_dir / f"{xxhash.xxh3_64_hexdigest(store_url.encode())}-{label}.json"

    def pins(self) -> list[Pin]:
        out = []
        for name in _listdir(self.pins_dir):
            path = self.pins_dir / name
            if not name.endswith(".json"):
                continue
            try:
                doc = json.loads(path.read_bytes())
                out.append(Pin(doc["store"], doc["version"], tuple(doc["blobs"]), path))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable pin record %s", path)
        return out

    def pinned(self) -> set[str]:
        return {h for p in self.pins() for h in p.blobs}

    def pin(
        self,
        store_url: str,
        label: str,
        entries: Iterable[Entry],
        blobs: BlobStore,
        progress: ProgressFactory = silent,
    ) -> int:
        """Record a pin, then fetch every block the version lacks, neighbours in one GET per
        span (a big file's blocks, a pack's small files). Returns bytes fetched."""
        files = {e.hash: e for e in entries if e.is_file and e.size}
        record = {"store": store_url, "version": label, "blobs": sorted(files)}
        pin_path = self._pin_path(store_url, label)
        self.subdir(pin_path)
        _write_atomic(pin_path, json.dumps(record, indent=1).encode())
        before = self.stats["bytes_fetched"]
        total = sum(e.size for e in files.values())
        pieces = [(e, i) for e in files.values() for i in range(e.block_count(self.block_size))]
        with progress(total=total, desc=f"pin {label}") as bar:

            def fill(span: list[tuple[Entry, int]]) -> None:
                opened = {
                    e.hash: self.open(e, functools.partial(blobs.read_block, e), pinned=True) for e, _ in span
                }
                try:
                    checkpoint()
                    missing = [(e, i) for e, i in span if opened[e.hash].load_local(i) is None]
                    got = blobs.read_pieces(missing)
                    for e, i in missing:
                        data = got[e.hash, i]
                        if isinstance(data, Exception):
                            raise data
                        opened[e.hash].accept(i, data)
                    bar.update(sum(e.block(i, self.block_size)[1] for e, i in span))
                finally:
                    for blob in opened.values():
                        blob.close()

            with Pool(8) as pool:  # Ctrl-C stops it after the spans under way
                pool.run(fill, blobs.spans(pieces))
        return self.stats["bytes_fetched"] - before

    def unpin(self, store_url: str, label: str) -> bool:
        path = self._pin_path(store_url, label)
        if not path.exists():
            return False
        path.unlink()
        return True


def _listdir(path: Path) -> Iterator[str]:
    try:
        return iter(sorted(os.listdir(path)))
    except FileNotFoundError:
        return iter(())


def _try_remove(path: Path) -> bool:
    """Remove a cached blob unless some process has it open (holds its shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # The .present record goes first: a reader that opens the blob between the two unlinks
        # finds no record and starts empty, never trusting blocks of a file about to vanish.
        for gone in (f"{path}.present", path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(gone)
        return True
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: Buffer, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE), "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_size(text: str) -> int:
    """`10G`, `512M`, `1.5T`, `4096` → bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(number)
    except ValueError:
        raise InvalidInputError(f"size {text!r}: use a number with K, M, G or T, e.g. 20G") from None
    if value < 0:
        raise InvalidInputError(f"size {text!r} is negative")
    return int(value * units[unit])
