"""The ceiling for bench/read.py: the smallest useful pyfuse3 filesystem, serving a directory
read-only with an inline `os.pread`, `keep_cache` and long timeouts — what any pyfuse3 mount of
immutable data can do at best on this machine. With `--writable` it also creates, writes (an
inline `os.pwrite`), makes directories and fsyncs: the ceiling for bench/commit.py's writes.

    python bench/passthrough.py [--writable] SOURCE MOUNTPOINT     (foreground; unmount to stop)
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 24 * 3600.0


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str, writable: bool) -> None:
        super().__init__()
        self.writable = writable
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.inodes: dict[str, int] = {source: pyfuse3.ROOT_INODE}
        self.dirs: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self.fds: dict[int, int] = {}

    def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            s = os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        ino = self.inodes.setdefault(path, len(self.inodes) + 1)
        self.paths[ino] = path
        a = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime_ns", "st_ctime_ns"):
            setattr(a, name, getattr(s, name))
        a.st_atime_ns = s.st_mtime_ns
        a.st_blksize, a.st_blocks = 128 * 1024, s.st_blocks
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    async def lookup(self, parent_inode: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self._attr(os.path.join(self.paths[parent_inode], os.fsdecode(name)))

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self._attr(self.paths[inode])

    async def opendir(self, inode: int, ctx: object) -> int:
        path = self.paths[inode]
        self.dirs[inode] = [
            (os.fsencode(n), self._attr(os.path.join(path, n))) for n in sorted(os.listdir(path))
        ]
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            if not pyfuse3.readdir_reply(token, entries[i][0], entries[i][1], i + 1):
                break

    async def readlink(self, inode: int, ctx: object) -> bytes:
        return os.fsencode(os.readlink(self.paths[inode]))

    async def getxattr(self, inode: int, name: bytes, ctx: object) -> bytes:
        try:
            return os.getxattr(self.paths[inode], name, follow_symlinks=False)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR) and not self.writable:
            raise pyfuse3.FUSEError(errno.EROFS)
        fd = os.open(self.paths[inode], flags & ~os.O_CREAT)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = os.path.join(self.paths[parent_inode], os.fsdecode(name))
        fd = os.open(path, flags | os.O_CREAT, mode & ~ctx.umask)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=fd), self._attr(path)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self.paths[parent_inode], os.fsdecode(name))
        os.mkdir(path, mode & ~ctx.umask)
        return self._attr(path)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: object,
    ) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            os.truncate(self.paths[inode], attr.st_size)
        return self._attr(self.paths[inode])

    async def fsync(self, fh: int, datasync: bool) -> None:
        os.fsync(fh)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        os.close(self.fds.pop(fh))


def main() -> None:
    writable = sys.argv[1] == "--writable"
    source, mountpoint = os.path.abspath(sys.argv[1 + writable]), sys.argv[2 + writable]
    assert stat.S_ISDIR(os.stat(source).st_mode)
    options = {"fsname=passthrough", "default_permissions", "rw" if writable else "ro"}
    pyfuse3.init(Passthrough(source, writable), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
