"""Content-addressed data in a store: blobs (file contents) and manifests.

Both are write-once and named by the xxh3-128 of their bytes, so whatever is read back is checked
against its name: a blob block whose hash differs from the manifest's is never returned.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from typing import BinaryIO

from . import keys
from .digest import FileDigest, StreamHasher, hash_bytes
from .errors import ContentChangedError, CorruptDataError, ObjectNotFoundError, PreconditionFailedError
from .manifest import Entry, Manifest
from .storage import Backend

log = logging.getLogger(__name__)


class _VerifyingReader(io.RawIOBase):
    """Reads a source file for upload and raises at EOF if it is not the content that was hashed,
    so a file changed between hashing and uploading can never be stored under the wrong name."""

    def __init__(self, f: BinaryIO, path: str, expected: FileDigest, block_size: int) -> None:
        self._f = f
        self._path = path
        self._expected = expected
        self._hasher = StreamHasher(block_size)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._hasher.update(data)
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

    # -- blobs ------------------------------------------------------------------------------
    def has(self, content_hash: str) -> bool:
        return self.backend.exists(keys.blob(content_hash))

    def upload(self, path: str | os.PathLike[str], digest: FileDigest) -> None:
        """Store a file as the blob `digest.hash`, verifying its content on the way."""
        with open(path, "rb") as f:
            reader = _VerifyingReader(f, os.fspath(path), digest, self.block_size)
            # PreconditionFailed: another committer stored the same content first (same bytes).
            with contextlib.suppress(PreconditionFailedError):
                self.backend.put_stream(keys.blob(digest.hash), reader, digest.size, if_absent=True)  # type: ignore[arg-type]

    def read_block(self, entry: Entry, index: int) -> bytes:
        """Block `index` of a file's content, verified against the manifest."""
        start, length, _ = entry.block(index, self.block_size)
        if length <= 0:
            return b""
        try:
            data = self.backend.get_range(keys.blob(entry.hash), start, length)
        except ObjectNotFoundError:
            log.error("blob %s of %r is missing from %s", entry.hash, entry.path, self.backend.url)
            raise CorruptDataError(f"{entry.path}: blob {entry.hash} is missing from the store") from None
        check_block(entry, index, self.block_size, data, self.backend.url)
        return data

    def local_path(self, content_hash: str) -> str | None:
        """Where the blob can be read in place (a file:// store), else None."""
        return self.backend.local_path(keys.blob(content_hash))

    def iter_blocks(self, entry: Entry) -> Iterator[bytes]:
        for i in range(entry.block_count(self.block_size)):
            yield self.read_block(entry, i)

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        end = min(entry.size, offset + size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        data = b"".join(self.read_block(entry, i) for i in range(first, last + 1))
        skip = offset - first * self.block_size
        return data[skip : skip + end - offset]

    def open(self, entry: Entry) -> io.BufferedReader:
        return io.BufferedReader(_BlobReader(self, entry), buffer_size=self.block_size)

    # -- manifests --------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> str:
        data = manifest.to_bytes()
        object_hash = hash_bytes(data)
        with contextlib.suppress(PreconditionFailedError):
            self.backend.put(keys.manifest(object_hash), data, if_absent=True)
        return object_hash

    def get_manifest(self, object_hash: str) -> Manifest:
        try:
            data = self.backend.get(keys.manifest(object_hash)).data
        except ObjectNotFoundError:
            raise CorruptDataError(f"manifest {object_hash} is missing from the store") from None
        if hash_bytes(data) != object_hash:
            log.error("manifest %s is corrupt in %s", object_hash, self.backend.url)
            raise CorruptDataError(f"manifest {object_hash} is corrupt")
        return Manifest.from_bytes(data)


class _BlobReader(io.RawIOBase):
    """A seekable, verified, lazily fetched view of one file of a version."""

    def __init__(self, blobs: BlobStore, entry: Entry) -> None:
        self._blobs = blobs
        self._entry = entry
        self._pos = 0

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
        data = self._blobs.read(self._entry, self._pos, len(buf))
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)
