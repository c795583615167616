"""StagingView: the staging tree (tree.py) served through the view protocol (namespace.py), with
no FUSE in sight. The overlay keeps the tree and its rules; this class adds what needs the event
loop: reading base contents through the shared read path (reader.py), copying a file up before
its first write, open files (an unlinked one keeps working until its last close), fsync.

Base tree objects are fetched in worker threads before the overlay is asked (`_ready`), so the
overlay's answers come from memory; a copy-up reads the base content through the machine's
block cache in a worker thread, into a file the overlay then takes as the node's upper file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import trio

from ..blobs import BlobStore
from ..cache import BlockCache
from ..errors import FsError
from ..manifest import Entry
from ..namespace import DIR, FILE, LINK, ROOT_INO, Attr, Buffer, Opened, split
from ..reader import BlockReader, FileReader, Stream
from .tree import BASE, Overlay

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
CONTROL_PREFIX = "user.artfs."  # of the root's control attributes (setxattr)
TIMEOUT = 1.0  # the kernel may keep attributes and names this long (all changes go through us)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


# What the upper area's disk answers that the writer is to hear (the mount goes on).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _request(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A request that waits while a commit runs (the tree holds still while it is written); a
    full disk or a too large file is the caller's errno."""

    @functools.wraps(method)
    async def gated(*args: P.args, **kwargs: P.kwargs) -> T:
        view = args[0]
        assert isinstance(view, StagingView)
        while view._paused is not None:
            await view._paused.wait()
        view._busy += 1
        try:
            return await method(*args, **kwargs)
        except OSError as e:
            if e.errno not in DISK_ERRNOS:
                raise
            raise FsError(e.errno) from None
        finally:
            view._busy -= 1
            if not view._busy and view._idle is not None:
                view._idle.set()

    return gated


@dataclass
class _Handle:
    ino: int
    stream: Stream | None = None  # reading the base content, while the file has it


class StagingView:
    def __init__(
        self,
        overlay: Overlay,
        blobs: BlobStore,
        cache: BlockCache,
        reader: BlockReader,
        info: dict[str, Any] | None = None,
        controls: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.overlay = overlay
        self.blobs = blobs
        self.cache = cache
        self.reader = reader
        self.info = dict(info or {})
        self._handles: dict[int, _Handle] = {}
        self._open: dict[int, int] = {}  # inode → open handles
        self._next_fh = 1
        self._copying: dict[int, trio.Lock] = {}
        self.controls = dict(controls or {})
        self.aborted = False  # asked to drop the session: its unmount commits nothing
        self._paused: trio.Event | None = None  # while a commit runs: set when it is done
        self._busy = 0  # requests under way
        self._idle: trio.Event | None = None
        self._deferred: list[Callable[[], None]] = []  # what the kernel let go of meanwhile

    # -- commits while mounted -----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold the tree still (requests wait, the kernel's forgets are kept for later) once the
        requests under way are done: what a commit runs in."""
        done = self._paused = trio.Event()
        try:
            while self._busy:
                self._idle = trio.Event()
                await self._idle.wait()
            yield
        finally:
            self._paused, self._idle = None, None
            deferred, self._deferred = self._deferred, []
            for later in deferred:
                later()
            done.set()

    def _later(self, fn: Callable[[], None]) -> None:
        if self._paused is not None:
            self._deferred.append(fn)
        else:
            fn()

    def upper_root(self) -> str:
        return str(self.overlay.upper.root)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        """`user.artfs.commit` (`.status`, `.abort`) set on the root asks the daemon to do that
        (and returns when it is done): the commands' way to reach a running stage."""
        control = (
            self.controls.get(name.removeprefix(CONTROL_PREFIX)) if name.startswith(CONTROL_PREFIX) else None
        )
        if ino == ROOT_INO and control is not None:
            await control()
            return
        raise FsError(errno.ENOTSUP, "extended attributes are not kept in a version")

    # -- the base, loaded on the way -----------------------------------------------------------
    async def _ready(self, ino: int, name: str | None = None) -> None:
        while keys := self.overlay.needs(ino, name):
            for key in keys:
                await self.reader.ask(("tree", key), functools.partial(self.blobs.get_tree, key))

    def _ref(self, ino: int, count: int = 1) -> None:
        """The kernel took references to `ino`: a base node stays loaded while it has them."""
        space, n = split(ino)
        base = self.overlay.base
        if space == BASE and base is not None:
            base.ref(n, count)

    def _attr(self, ino: int) -> Attr:
        return self.overlay.attr(ino, TIMEOUT)

    # -- reading the tree ----------------------------------------------------------------------
    @_request
    async def lookup(self, parent: int, name: str) -> Attr | None:
        if name == "..":
            return None  # the kernel resolves `..` itself
        await self._ready(parent, name)
        ino = self.overlay.lookup(parent, name)
        if ino is None:
            return None
        self._ref(ino)
        return self._attr(ino)

    def negative_timeout(self, parent: int) -> float:
        return 0.0

    @_request
    async def getattr(self, ino: int) -> Attr:
        if not self.overlay.exists(ino):
            raise FsError(errno.ENOENT, f"no inode {ino}")
        return self._attr(ino)

    @_request
    async def listdir(self, ino: int) -> Sequence[tuple[str, Attr]]:
        await self._ready(ino)
        return [(name, self._attr(child)) for name, child in self.overlay.children(ino)]

    def referenced(self, ino: int) -> None:
        self._later(functools.partial(self._ref, ino))

    def forget(self, ino: int, count: int) -> None:
        space, n = split(ino)
        base = self.overlay.base
        if space == BASE and base is not None:
            self._later(functools.partial(base.forget, n, count))

    @_request
    async def readlink(self, ino: int) -> str:
        return self.overlay.readlink(ino)

    async def xattrs(self, ino: int) -> dict[str, bytes]:
        if ino != ROOT_INO:
            return {}
        return {f"user.artfs.{k}": str(v).encode() for k, v in self.info.items()} | {
            "user.artfs.pid": str(os.getpid()).encode()
        }

    # -- files ---------------------------------------------------------------------------------
    def _add_handle(self, ino: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(ino)
        self._open[ino] = self._open.get(ino, 0) + 1
        return fh

    @_request
    async def open(self, ino: int, flags: int = os.O_RDONLY) -> Opened:
        kind = self.overlay.kind(ino)
        if kind == DIR:
            raise FsError(errno.EISDIR)
        if kind != FILE:
            raise FsError(errno.ELOOP)
        if flags & WRITE_FLAGS:
            if flags & os.O_TRUNC:
                await self._truncate(ino, 0)
            else:
                await self._copy_up(ino)
        writable = bool(flags & WRITE_FLAGS) or self.overlay.lower(ino) is None
        return Opened(self._add_handle(ino), keep_cache=not writable, direct_io=False)

    async def _copy_up(self, ino: int, size: int | None = None) -> None:
        """Give a base file its upper file: its base content (or the first `size` bytes)."""
        lock = self._copying.setdefault(ino, trio.Lock())
        async with lock:
            entry = self.overlay.lower(ino)
            if entry is None:
                return
            path = f"{self.overlay.upper.path(ino)}.copy"
            if size == 0 or not entry.size:
                self.overlay.copy_up(ino, None)
            else:
                await self.reader.threads.run(self._fetch, entry, path, size)
                self.overlay.copy_up(ino, path)
        self._copying.pop(ino, None)

    def _fetch(self, entry: Entry, path: str, size: int | None) -> None:
        """The base content of a file into `path` (a worker thread; every block verified)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with FileReader(self.blobs, self.cache, entry) as source, open(fd, "wb", closefd=False) as out:
                if size is None:
                    shutil.copyfileobj(source, out, 8 * 1024 * 1024)
                else:
                    out.write(source.read(size))
            os.utime(fd, ns=(entry.mtime, entry.mtime))
        finally:
            os.close(fd)

    async def _truncate(self, ino: int, size: int) -> None:
        if self.overlay.lower(ino) is not None:
            await self._copy_up(ino, size)
        fd = self.overlay.upper.fd(ino)
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        self.overlay.written(ino)
        if not self._open.get(ino):  # truncate(2) of a file nobody has open
            self.overlay.upper.close(ino)

    @_request
    async def read(self, fh: int, offset: int, size: int) -> Buffer:
        handle = self._handles[fh]
        entry = self.overlay.lower(handle.ino)
        if entry is None:  # written in the session (or copied up since this handle opened)
            return os.pread(self.overlay.upper.fd(handle.ino), size, offset)
        if not entry.size:
            return b""
        if handle.stream is None:
            handle.stream = self.reader.open(entry)
        return await self.reader.read(handle.stream, offset, size)

    @_request
    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handles[fh]
        if self.overlay.lower(handle.ino) is not None:
            await self._copy_up(handle.ino)
        written = os.pwrite(self.overlay.upper.fd(handle.ino), data, offset)
        self.overlay.written(handle.ino)
        return written

    @_request
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles[fh]
        if self.overlay.lower(handle.ino) is None:
            fd = self.overlay.upper.fd(handle.ino)
            await self.reader.threads.run(os.fdatasync if datasync else os.fsync, fd)
        await self.fsyncdir()

    @_request
    async def fsyncdir(self) -> None:
        journal = self.overlay.journal
        if journal is not None:
            await self.reader.threads.run(journal.sync)

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.stream is not None:
            self.reader.close(handle.stream)
        left = self._open[handle.ino] - 1
        if left:
            self._open[handle.ino] = left
            return
        del self._open[handle.ino]
        self._later(functools.partial(self._closed, handle.ino))

    def _closed(self, ino: int) -> None:
        """The last handle of `ino` closed."""
        if ino in self._open:  # opened again meanwhile
            return
        self.overlay.upper.close(ino)
        if self.overlay.orphan(ino):
            self.overlay.drop(ino)

    # -- changing the tree ---------------------------------------------------------------------
    @_request
    async def create(
        self, parent: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[Opened, Attr]:
        await self._ready(parent, name)
        ino = self.overlay.create(parent, name, FILE, mode, uid, gid)
        return Opened(self._add_handle(ino), keep_cache=False, direct_io=False), self._new(ino)

    def _new(self, ino: int) -> Attr:
        """Attributes of a node just handed to the kernel by a create, mkdir, symlink or link."""
        self._ref(ino)
        return self._attr(ino)

    @_request
    async def mkdir(self, parent: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        await self._ready(parent, name)
        return self._new(self.overlay.create(parent, name, DIR, mode, uid, gid))

    @_request
    async def symlink(self, parent: int, name: str, target: str, uid: int, gid: int) -> Attr:
        await self._ready(parent, name)
        return self._new(self.overlay.create(parent, name, LINK, 0o777, uid, gid, target))

    @_request
    async def mknod(
        self, parent: int, name: str, kind: str, mode: int, rdev: int, uid: int, gid: int
    ) -> Attr:
        await self._ready(parent, name)
        return self._new(self.overlay.create(parent, name, kind, mode, uid, gid, rdev=rdev))

    @_request
    async def link(self, ino: int, parent: int, name: str) -> Attr:
        await self._ready(parent, name)
        self.overlay.link(ino, parent, name)
        return self._new(ino)

    @_request
    async def unlink(self, parent: int, name: str) -> None:
        await self._ready(parent, name)
        self._gone(self.overlay.unlink(parent, name))

    @_request
    async def rmdir(self, parent: int, name: str) -> None:
        await self._ready(parent, name)
        child = self.overlay.lookup(parent, name)
        if child is not None and self.overlay.kind(child) == DIR:
            await self._ready(child)  # is it empty?
        self._gone(self.overlay.unlink(parent, name, directory=True))

    @_request
    async def rename(self, parent: int, name: str, new_parent: int, new_name: str, flags: int) -> None:
        await self._ready(parent, name)
        await self._ready(new_parent, new_name)
        dst = self.overlay.lookup(new_parent, new_name)
        if dst is not None and self.overlay.kind(dst) == DIR:
            await self._ready(dst)  # is it empty?
        replaced = self.overlay.rename(parent, name, new_parent, new_name, flags)
        if replaced is not None:
            self._gone(replaced)

    def _gone(self, ino: int) -> None:
        """A name went: a node nothing names and nothing has open goes with it."""
        if self.overlay.orphan(ino) and not self._open.get(ino):
            self.overlay.drop(ino)

    @_request
    async def setattr(
        self,
        ino: int,
        *,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
    ) -> Attr:
        if not self.overlay.exists(ino):
            raise FsError(errno.ENOENT)
        if size is not None:
            if self.overlay.kind(ino) != FILE:
                raise FsError(errno.EISDIR if self.overlay.kind(ino) == DIR else errno.EINVAL)
            await self._truncate(ino, size)
        if (mode, uid, gid, mtime_ns, atime_ns) != (None,) * 5:
            self.overlay.set_attr(ino, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, atime_ns=atime_ns)
        return self._attr(ino)

    def close(self) -> None:
        self.reader.close_all()
        self._handles.clear()
        self.overlay.upper.close_all()
