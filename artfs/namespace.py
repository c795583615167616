"""What a mount shows, with no FUSE in sight: attributes, open files, and the protocol a view
implements so that `fuse_ops` can serve it without knowing which view it is.

Inodes: the top of a mount is an inode space of its own (ROOT_INO = 1, a few more the view
names); below, inode `space << 32 | node` is node `node` of node space `space` (a version's tree,
say), where node 0 is that space's top directory. A view raises domain errors (NotFoundError is
ENOENT, …): `fuse_ops` turns them into errnos.

Lookup counts: every inode a view hands out by `lookup`, and every entry of a listing the
kernel accepts (`referenced`), is one reference the kernel holds until it `forget`s it. A view
may drop what it knows of an inode once nothing refers to it: that is how a daemon's memory
follows what the kernel holds.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DIR, FILE, LINK = "dir", "file", "link"
# Special files: a staging session holds them (tools and tests make FIFOs and sockets); a version
# cannot, so a commit leaves them out and says so.
FIFO, SOCKET, CHAR, BLOCK = "fifo", "socket", "char", "block"
SPECIAL = {FIFO: stat.S_IFIFO, SOCKET: stat.S_IFSOCK, CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK}
KIND_BITS = {DIR: stat.S_IFDIR, LINK: stat.S_IFLNK, FILE: stat.S_IFREG, **SPECIAL}
ROOT_INO = 1
NODE_BITS = 32
NODE_MASK = (1 << NODE_BITS) - 1

Buffer = bytes | memoryview


def inode(space: int, node: int) -> int:
    return space << NODE_BITS | node


def split(ino: int) -> tuple[int, int]:
    return ino >> NODE_BITS, ino & NODE_MASK


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    kind: str
    perm: int
    size: int
    mtime_ns: int
    timeout: float  # how long the kernel may keep this (and the name that led to it)
    uid: int = -1  # -1: the mounting user's (a read-only view owns nothing else)
    gid: int = -1
    nlink: int = 1
    ctime_ns: int = 0  # 0: mtime_ns
    atime_ns: int = 0  # 0: mtime_ns
    rdev: int = 0  # of a device node


@dataclass(frozen=True, slots=True)
class Opened:
    fh: int
    keep_cache: bool  # immutable content: the kernel may keep its pages across opens
    direct_io: bool  # generated content whose size is not known up front


class View(Protocol):
    async def lookup(self, parent: int, name: str) -> Attr | None:
        """The child `name` of directory `parent` (one more reference to it), or None."""

    def negative_timeout(self, parent: int) -> float:
        """How long the kernel may remember that a name is absent from `parent`."""

    async def getattr(self, ino: int) -> Attr: ...

    async def listdir(self, ino: int) -> Sequence[tuple[str, Attr]]:
        """Every child of a directory; each one the kernel takes is `referenced`."""

    def referenced(self, ino: int) -> None:
        """The kernel took an inode from a listing (a reference, as from `lookup`)."""

    def forget(self, ino: int, count: int) -> None:
        """The kernel let go of `count` references to `ino`."""

    async def readlink(self, ino: int) -> str: ...

    async def open(self, ino: int, flags: int = 0) -> Opened:
        """`flags` as open(2) got them (O_WRONLY, O_TRUNC, …; a read-only view sees no writes)."""

    async def read(self, fh: int, offset: int, size: int) -> Buffer: ...

    def release(self, fh: int) -> None: ...

    async def xattrs(self, ino: int) -> dict[str, bytes]: ...

    def close(self) -> None: ...


class WritableView(View, Protocol):
    """A view that can be changed (the staging mount): the requests of a read-write mount.
    `uid`/`gid` are the caller's; `mode` is the permission bits asked for, umask applied."""

    async def create(
        self, parent: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[Opened, Attr]: ...

    async def mkdir(self, parent: int, name: str, mode: int, uid: int, gid: int) -> Attr: ...

    async def symlink(self, parent: int, name: str, target: str, uid: int, gid: int) -> Attr: ...

    async def mknod(
        self, parent: int, name: str, kind: str, mode: int, rdev: int, uid: int, gid: int
    ) -> Attr:
        """A FIFO, socket or device node (`kind` one of SPECIAL)."""

    async def link(self, ino: int, parent: int, name: str) -> Attr: ...

    async def unlink(self, parent: int, name: str) -> None: ...

    async def rmdir(self, parent: int, name: str) -> None: ...

    async def rename(self, parent: int, name: str, new_parent: int, new_name: str, flags: int) -> None: ...

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
    ) -> Attr: ...

    async def write(self, fh: int, offset: int, data: bytes) -> int: ...

    async def fsync(self, fh: int, datasync: bool) -> None: ...

    async def fsyncdir(self) -> None: ...

    def upper_root(self) -> str:
        """Where written contents go (what `statfs` reports on)."""

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        """The one control request a mount takes (the staging root's `user.artfs.commit`)."""
