"""Content-addressed data in a store: blobs (file contents), packs, tree objects and manifests.

All are write-once and named by the xxh3-128 of their bytes, so whatever is read back is checked
against its name: a blob block whose hash differs from the manifest's is never returned.

A pack holds many small files' contents end to end, in path order; the manifest says where each
one starts. A remote store charges per request (≈1 ms of server CPU per GET on SeaweedFS, more
on a real network), so a directory of thousands of small files goes up in a few PUTs and comes
back in a few ranged GETs (`read_span`), where a blob per file would cost one request each.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Protocol

from . import keys
from .digest import FileDigest, StreamHasher, hash_bytes
from .errors import (
    ContentChangedError,
    CorruptDataError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from .manifest import Entry, Manifest
from .storage import Backend
from .storage.origins import Origins
from .workers import checkpoint

log = logging.getLogger(__name__)

Piece = tuple[Entry, int]  # block `index` of a file's content
SPAN_BYTES = 8 * 1024 * 1024  # at most this much in one GET: a blob's blocks, or a pack's files
SPAN_GAP = 256 * 1024  # bytes a GET may fetch for nothing to save a request (see `spans`)
VIEW_MIN = 64 * 1024  # pieces of a span this big are served as views of it (see `read_span`)
OBJECT_CACHE = 32 * 1024 * 1024  # bytes of recently used tree objects kept in memory


class LocalFile(Protocol):
    """A local file to upload (sources.LocalFile): opened on demand, named in messages."""

    def open(self) -> int: ...


class _VerifyingReader(io.RawIOBase):
    """Reads a source file for upload and raises at EOF if it is not the content that was hashed,
    so a file changed between hashing and uploading can never be stored under the wrong name.
    Every read is reported to `on_bytes` (progress) and is a checkpoint: an interrupted push
    stops uploading within a chunk."""

    def __init__(
        self, fd: int, path: str, expected: FileDigest, block_size: int, on_bytes: Callable[[int], object]
    ) -> None:
        self._f = io.FileIO(fd, "rb", closefd=False)
        self._path = path
        self._expected = expected
        self._hasher = StreamHasher(block_size)
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        checkpoint()
        data = self._f.read(size) or b""
        self._hasher.update(data)
        self._on_bytes(len(data))
        if self._hasher.size > self._expected.size or (not data and self._hasher.digest() != self._expected):
            raise ContentChangedError(f"{self._path} changed while it was being pushed; push again")
        return data


def check_block(entry: Entry, index: int, block_size: int, data: bytes | memoryview, where: str) -> None:
    """Raise CorruptDataError (and log an error naming the blob) unless `data` is block `index`."""
    _, length, expected = entry.block(index, block_size)
    if len(data) != length or hash_bytes(data) != expected:
        log.error("blob %s block %d of %r is corrupt in %s", entry.hash, index, entry.path, where)
        raise CorruptDataError(f"{entry.path}: blob {entry.hash} block {index} is corrupt")


class BlobStore:
    def __init__(self, backend: Backend, block_size: int) -> None:
        self.backend = backend
        self.block_size = block_size
        self.packs = not self.on_this_machine  # small files go into packs (see the docstring)
        self.origins = Origins()  # where references' bytes are read from
        self._objects = _Objects(OBJECT_CACHE)
        self.objects_read = 0  # tree objects read from the store, and their bytes (for stats)
        self.object_bytes_read = 0

    # -- blobs ------------------------------------------------------------------------------
    def has(self, content_hash: str) -> bool:
        return self.backend.exists(keys.blob(content_hash))

    def upload(self, local: LocalFile, digest: FileDigest, on_bytes: Callable[[int], object] = int) -> None:
        """Store a file as the blob `digest.hash`, verifying its content on the way."""
        fd = local.open()
        try:
            reader = _VerifyingReader(fd, str(local), digest, self.block_size, on_bytes)
            # PreconditionFailed: another committer stored the same content first (same bytes).
            with contextlib.suppress(PreconditionFailedError):
                self.backend.put_stream(keys.blob(digest.hash), reader, digest.size, if_absent=True)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def upload_bytes(self, data: bytes, content_hash: str) -> None:
        """Store `data` (hashed by the caller) as the blob `content_hash`."""
        with contextlib.suppress(PreconditionFailedError):  # the same content went up first
            self.backend.put_stream(keys.blob(content_hash), io.BytesIO(data), len(data), if_absent=True)

    def upload_pack(
        self, entries: list[Entry], sources: Mapping[str, LocalFile], on_bytes: Callable[[int], object] = int
    ) -> list[Entry]:
        """Store these files (read from `sources[path]`) as one pack; return the entries saying
        where each one is in it. A file that is not the content that was hashed raises."""
        contents = []
        for e in entries:
            checkpoint()
            fd = sources[e.path].open()
            try:
                data = os.pread(fd, e.size + 1, 0)
            finally:
                os.close(fd)
            if hash_bytes(data) != e.hash:
                raise ContentChangedError(f"{sources[e.path]} changed while it was being pushed; push again")
            contents.append(data)
            on_bytes(len(data))
        pack = b"".join(contents)
        name = hash_bytes(pack)
        with contextlib.suppress(PreconditionFailedError):  # the same pack went up before
            self.backend.put(keys.pack(name), pack, if_absent=True)
        offsets = itertools.accumulate((len(c) for c in contents), initial=0)
        return [replace(e, pack=name, offset=o) for e, o in zip(entries, offsets, strict=False)]

    def read_block(self, entry: Entry, index: int) -> bytes:
        """Block `index` of a file's content, verified against the manifest (a reference whose
        content was not hashed: read as pinned, see storage/origins.py)."""
        key, offset, length = self.location(entry, index)
        if length <= 0:
            return b""
        data = self._get(key, offset, length, entry)
        if not entry.source:
            check_block(entry, index, self.block_size, data, self.backend.url)
        elif not self._intact(entry, index, data):  # hashed when tracked: the bytes tell
            raise self.origins.of(entry.source).stale(entry.source, entry.pins, index)
        return data

    def _intact(self, entry: Entry, index: int, data: bytes | memoryview) -> bool:
        _, length, expected = entry.block(index, self.block_size)
        return len(data) == length and (not entry.content_known or hash_bytes(data) == expected)

    def location(self, entry: Entry, index: int) -> tuple[str, int, int]:
        """Where block `index` of a file's content is: store key (a reference's: its own key,
        never one of the store's), offset, length."""
        start, length, _ = entry.block(index, self.block_size)
        if entry.source:
            return f"ref:{entry.hash}", start, length
        if entry.pack:
            return keys.pack(entry.pack), entry.offset + start, length
        return keys.blob(entry.hash), start, length

    def read_span(self, pieces: list[Piece]) -> dict[tuple[str, int], bytes | memoryview]:
        """Blocks that lie in one object, in order (see `spans`), with one ranged GET. Only
        verified ones are returned, by (content hash, index): a caller fetches any other on its
        own, which reports what is wrong with it."""
        where = [self.location(e, i) for e, i in pieces]
        key, first, _ = where[0]
        _, last, length = where[-1]
        span = memoryview(self._get(key, first, last + length - first, pieces[0][0]))
        out: dict[tuple[str, int], bytes | memoryview] = {}
        for (e, i), (_, start, length) in zip(pieces, where, strict=True):
            data = span[start - first : start - first + length]
            if self._intact(e, i, data):
                # blocks are views of the span (no copy); small files are copied, so that one
                # kept in memory does not keep a whole pack's span alive
                out[e.hash, i] = data if length >= VIEW_MIN else bytes(data)
        return out

    def read_pieces(self, pieces: Iterable[Piece]) -> dict[tuple[str, int], bytes | memoryview | Exception]:
        """These blocks, verified, with one GET per span (`spans`): each is its bytes, or the
        error that fetching it gave. A block that failed its check in a span is fetched again
        on its own, which says what is wrong with it; a span whose GET failed gives its error
        to each of its blocks (asking again, block by block, would only wait out the same
        retries again)."""
        out: dict[tuple[str, int], bytes | memoryview | Exception] = {}
        for span in self.spans(pieces):
            try:
                got = self.read_span(span)
            except Exception as e:
                out.update(((entry.hash, i), e) for entry, i in span)
                continue
            for entry, i in span:
                data = got.get((entry.hash, i))
                if data is None:
                    try:
                        data = self.read_block(entry, i)
                    except Exception as e:
                        out[entry.hash, i] = e
                        continue
                out[entry.hash, i] = data
        return out

    def spans(self, pieces: Iterable[Piece]) -> list[list[Piece]]:
        """Group blocks into spans that one GET fetches: blocks of one object, in order, with at
        most SPAN_GAP bytes between two (small files of a pack that are cached already, say:
        cheaper to fetch again than to ask for separately), within one SPAN_BYTES-aligned
        stretch of the object. Stores keep objects in parts (SeaweedFS in chunks, S3 in upload
        parts); a GET that straddles a boundary makes the server read both sides of it. Read a
        512 MiB blob from SeaweedFS in 8 MiB GETs 1 MiB off the boundaries and its CPU time goes
        up 40%, the download's down 30%."""
        out: list[list[Piece]] = []
        key, first, end = "", 0, 0  # of the current span: object, first offset, end of the last
        for piece in pieces:
            k, start, length = self.location(*piece)
            joins = (
                k == key
                and end <= start <= end + SPAN_GAP
                and start + length <= (first // SPAN_BYTES + 1) * SPAN_BYTES
            )
            if out and joins:
                out[-1].append(piece)
            else:
                out.append([piece])
                key, first = k, start
            end = start + length
        return out

    def _get(self, key: str, start: int, length: int, entry: Entry) -> bytes:
        if entry.source:
            return self.origins.of(entry.source).read(entry.source, entry.pins, start, length)
        try:
            return self.backend.get_range(key, start, length)
        except ObjectNotFoundError:
            log.error("%s of %r is missing from %s", key, entry.path, self.backend.url)
            raise CorruptDataError(f"{entry.path}: {key} is missing from the store") from None

    def local_path(self, entry: Entry) -> str | None:
        """Where a file's content can be read in place (a blob of a file:// store), else None."""
        return None if entry.pack or entry.source else self.backend.local_path(keys.blob(entry.hash))

    @property
    def on_this_machine(self) -> bool:
        """A store on local disk: its blobs are read in place, never copied into a cache."""
        return self.backend.local_path(keys.CONFIG) is not None

    def iter_blocks(self, entry: Entry) -> Iterator[bytes]:
        for i in range(entry.block_count(self.block_size)):
            yield self.read_block(entry, i)

    # -- tree objects (format 2) and manifests (format 1) ------------------------------------
    def put_objects(self, objects: Iterable[tuple[str, bytes]]) -> int:
        """Store tree, index and block-list objects (write-once, by key); returns how many were
        new. Each is kept in memory too: what was just written is often read next."""
        written = 0
        for key, data in objects:
            try:
                self.backend.put(keys.tree(key), data, if_absent=True)
                written += 1
            except PreconditionFailedError:  # the same object is there already
                pass
            self._objects.keep(key, data)
        return written

    def get_tree(self, key: str) -> bytes:
        """A tree, index or block-list object, checked against its key; the recently used ones
        come from memory."""
        data = self._objects.get(key)
        if data is not None:
            return data
        try:
            data = self.backend.get(keys.tree(key)).data
        except ObjectNotFoundError:
            log.error("tree object %s is missing from %s", key, self.backend.url)
            raise CorruptDataError(f"tree object {key} is missing from the store") from None
        if hash_bytes(data) != key:
            log.error("tree object %s is corrupt in %s", key, self.backend.url)
            raise CorruptDataError(f"tree object {key} is corrupt")
        self.objects_read += 1
        self.object_bytes_read += len(data)
        self._objects.keep(key, data)
        return data

    def has_tree(self, key: str) -> bool:
        return self._objects.get(key) is not None

    get_chunk = get_tree  # block-list chunks are objects of the same kind
    has_chunk = has_tree

    def get_manifest(self, object_hash: str) -> Manifest:
        try:
            data = self.backend.get(keys.manifest(object_hash)).data
        except ObjectNotFoundError:
            raise CorruptDataError(f"manifest {object_hash} is missing from the store") from None
        if hash_bytes(data) != object_hash:
            log.error("manifest %s is corrupt in %s", object_hash, self.backend.url)
            raise CorruptDataError(f"manifest {object_hash} is corrupt")
        return Manifest.from_bytes(data)


class _Objects:
    """Recently used tree objects by key, up to a byte budget (least recently used go)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def keep(self, key: str, data: bytes) -> None:
        with self._lock:
            if key in self._items or len(data) > self._budget // 4:
                return
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self._budget:
                self._bytes -= len(self._items.popitem(last=False)[1])
