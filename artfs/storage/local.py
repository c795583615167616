"""A store on a local (or locally mounted) filesystem: `file:///path`.

Atomicity: every write goes to a hidden temp file in the target directory, is fsynced, then
linked (put-if-absent: `link` fails on an existing name) or renamed (replace) into place, and the
directory is fsynced. Compare-and-swap holds an exclusive `flock` on the key's directory while
it compares and renames, so it is atomic across processes. Etags are content hashes, so a
compare-and-swap succeeds exactly when the value is the one the caller read.
Temp files live in `.tmp/ab/` at the root (hidden, never listed, on the same filesystem as
every key, so a rename publishes them); what a crash or a kill leaves there is garbage, removed by the
first batch (push) once a day old.

Within `batch()`, blobs skip the per-file fsyncs (≈0.23 ms each here; 10,000 small files paid
more for fsync than for anything but creating the files): data goes to temp files, one syncfs
makes it all durable, then the names are linked in and a second syncfs makes them durable (in
rounds of ROUND files, so a push of millions holds a bounded list). A name never appears before
its data is safe. One batch per backend object at a time; a batch entered
while another is open joins it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import xxhash

from ..errors import ObjectNotFoundError, PreconditionFailedError, StoreError
from ..names import validate_path
from .base import Backend, ObjectInfo, Payload

CHUNK = 4 * 1024 * 1024
HOLE = 64 * 1024  # a run of zeros this long and aligned is left a hole
ZEROS = bytes(HOLE)
STALE_TMP = 24 * 3600  # seconds
ROUND = 50_000  # files a batch publishes at once
log = logging.getLogger(__name__)


def _write_sparse(fd: int, chunk: bytes | memoryview, at: int) -> bool:
    """Write `chunk` at `at`, leaving its aligned HOLE-long runs of zeros holes, as cp does (a
    staged file written at scattered offsets of a 100 GB size stays small); True if any was."""
    view, start, holes = memoryview(chunk), 0, False
    if isinstance(chunk, bytes):  # comparing a memoryview is slow; a bytes slice is a memcmp
        for pos in range(0, len(chunk) - HOLE + 1, HOLE):
            if chunk[pos : pos + HOLE] == ZEROS:
                _pwrite_all(fd, view[start:pos], at + start)
                start, holes = pos + HOLE, True
    _pwrite_all(fd, view[start:], at + start)
    return holes


def _pwrite_all(fd: int, view: memoryview, at: int) -> None:
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def _etag(data: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_64_hexdigest(data)


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: Path) -> None:
    """Flush the whole filesystem holding `path` (one call instead of one fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class LocalBackend(Backend):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = f"file://{self.root}"
        self._tmp = self.root / ".tmp"
        self._token = secrets.token_hex(6)  # this process's temp files: `<key>.<token>-<n>.tmp`
        self._written = 0
        self._dirs: set[Path] = set()  # made already
        self._batch: list[tuple[Path, Path]] | None = None
        self._batch_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / validate_path(key)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn OS errors into domain errors that name the store and the key."""
        try:
            yield
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None
        except NotADirectoryError:
            raise ObjectNotFoundError(key) from None
        except OSError as e:
            hint = " (disk full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise StoreError(f"{self.url}: {key}: {e.strerror}{hint}") from None

    def get(self, key: str) -> Payload:
        with self._errors(key):
            data = self._path(key).read_bytes()
        return Payload(data, _etag(data))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with self._errors(key):
            fd = os.open(self._path(key), os.O_RDONLY)
            try:
                return os.pread(fd, length, start)
            finally:
                os.close(fd)

    def _write_tmp(
        self, path: Path, chunks: Iterator[bytes | memoryview], durable: bool = True
    ) -> tuple[Path, str]:
        sub = self._tmp / path.name[:2]
        self._make_dir(path.parent)
        self._make_dir(sub)
        with self._batch_lock:
            self._written += 1
            # spread over 256 directories, as blobs are: one directory taking every create of
            # a push serialises its writers on that directory's lock
            tmp = sub / f"{path.name}.{self._token}-{self._written}.tmp"
        hasher = xxhash.xxh3_64()
        # os calls, not a buffered file: a push writes a million small blobs through here
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                end, holes = 0, False
                for chunk in chunks:
                    hasher.update(chunk)
                    holes |= _write_sparse(fd, chunk, end)
                    end += len(chunk)
                if holes:
                    os.ftruncate(fd, end)  # a hole at the end
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, hasher.hexdigest()

    def _make_dir(self, path: Path) -> None:
        """mkdir -p, once per directory per backend (a million blobs share 256 of them)."""
        if path not in self._dirs:
            path.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path)

    def _commit(self, key: str, path: Path, tmp: Path, if_absent: bool, if_match: str | None) -> None:
        try:
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailedError(key) from None
            elif if_match is not None:
                with _dir_lock(path.parent):
                    if self._current_etag(path) != if_match:
                        raise PreconditionFailedError(key)
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def _current_etag(self, path: Path) -> str | None:
        try:
            return _etag(path.read_bytes())
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        with self._errors(key):
            tmp, etag = self._write_tmp(path, iter([data]))
            self._commit(key, path, tmp, if_absent, if_match)
        return etag

    def put_stream(self, key: str, stream: BinaryIO, size: int, *, if_absent: bool = False) -> str:
        path = self._path(key)

        def chunks() -> Iterator[bytes]:
            done = 0
            # Ask for what is left (+1 to see the end): a 4 MiB read of a 4 KiB file costs an
            # allocation that dominates pushing many small files.
            while chunk := stream.read(min(CHUNK, size - done + 1)):
                done += len(chunk)
                yield chunk

        with self._errors(key):
            deferred = self._batch is not None and if_absent
            tmp, etag = self._write_tmp(path, chunks(), durable=not deferred)
            if deferred:
                with self._batch_lock:
                    assert self._batch is not None
                    self._batch.append((tmp, path))
                    ready = self._batch[:] if len(self._batch) >= ROUND else []
                    del self._batch[: len(ready)]
                self._publish(ready)  # a round, so a million files' names are not held at once
            else:
                self._commit(key, path, tmp, if_absent, None)
        return etag

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        if self._batch is not None:  # joins the open batch, which publishes
            yield
            return
        self._sweep()
        pending: list[tuple[Path, Path]] = []
        self._batch = pending
        try:
            yield
            self._batch = None
            self._publish(pending)
        finally:
            self._batch = None
            for tmp, _ in pending:
                tmp.unlink(missing_ok=True)  # left only when the batch failed

    def _publish(self, written: list[tuple[Path, Path]]) -> None:
        """Make these temp files durable, then give them their names (durably): a name never
        appears before its data is safe. Two syncfs calls, whatever the number of files."""
        if written:
            with self._errors("blobs/"):
                _syncfs(self.root)
                for tmp, path in written:  # a rename over the same bytes is harmless
                    os.replace(tmp, path)
                _syncfs(self.root)

    def _sweep(self) -> None:
        """Remove temp files a killed writer left, once they are STALE_TMP old (a live writer's
        are younger)."""
        try:
            entries = [e for d in os.scandir(self._tmp) if d.is_dir() for e in os.scandir(d.path)]
        except FileNotFoundError:
            return
        cutoff = time.time() - STALE_TMP
        for e in entries:
            with contextlib.suppress(FileNotFoundError):
                if e.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(e.path)
                    log.info("removed %s, left by an interrupted write", e.path)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._errors(key):
            data = path.read_bytes()
        return ObjectInfo(key, len(data), _etag(data))

    def may_create_store(self) -> bool:
        """A directory that does not exist yet, or is empty: `--store ./typo` or a store URL
        pointing at someone's project must never sprinkle a store over their files."""
        try:
            with os.scandir(self.root) as entries:  # temp files (a creator's config) aside
                return all(e.name.startswith(".") for e in entries)
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            return False

    def local_path(self, key: str) -> str | None:
        return f"{self.root}/{validate_path(key)}"  # a string join: called on every open

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = self.root / prefix.rpartition("/")[0]
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(os.path.join(dirpath, name))
                        found.append(ObjectInfo(key, st.st_size, modified=st.st_mtime_ns / 1e9))
        return iter(sorted(found, key=lambda o: o.key))

    def list_dirs(self, prefix: str) -> Iterator[str]:
        try:
            names = os.listdir(self.root / prefix)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        return iter(sorted(n for n in names if not n.startswith(".")))

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._path(key).unlink(missing_ok=True)
