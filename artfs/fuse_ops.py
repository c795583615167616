"""The pyfuse3 adapter: translates kernel requests to calls of a view (namespace.View) and domain
errors to errnos, counts the references the kernel takes from listings, and keeps the open
directory listings. Nothing else lives here.

Writes never reach a read-only view: it is mounted with the `ro` option, so the kernel answers
EROFS itself, with exactly the errno precedence of any read-only mount (EEXIST for `mkdir` on an
existing name, ENOENT for opening a missing file, and so on). A writable view (the staging mount)
is served by `WritableOperations`, mounted read-write with `default_permissions`: the kernel
checks permissions, the view keeps the tree's rules. A name longer than NAME_MAX is
ENAMETOOLONG here, before the view sees it, as Linux filesystems answer.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from .errors import ArtfsError, FsError, NotFoundError, StoreError
from .names import MAX_NAME
from .namespace import KIND_BITS, SPECIAL, Attr, Opened, View, WritableView

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


def _errors(handler: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Domain errors become their errno; anything else is a bug: log it once, answer EIO."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (NotFoundError, FsError) as e:  # answers, not failures
            log.debug("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except StoreError as e:
            log.warning("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except ArtfsError as e:
            log.error("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception:
            log.exception("bug in %s%r; answering EIO", handler.__name__, args[1:])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _name(name: bytes) -> str:
    if len(name) > MAX_NAME:  # before any other errno, as Linux filesystems answer
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    return os.fsdecode(name)


def _info(opened: Opened) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(fh=opened.fh, keep_cache=opened.keep_cache, direct_io=opened.direct_io)


def invalidate(parent: int, name: str) -> None:
    """Tell the kernel to drop a cached name (what a view's `invalidate` calls). The async form:
    called while answering a request, the synchronous one could deadlock."""
    pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)


class Operations(pyfuse3.Operations):
    def __init__(self, view: View) -> None:
        super().__init__()
        self.view = view
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._dirs: dict[int, Sequence[tuple[str, Attr]]] = {}
        self._next_dir = 1

    def _attrs(self, a: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.st_mode = KIND_BITS[a.kind] | a.perm
        e.st_rdev = a.rdev
        e.st_nlink = a.nlink
        e.st_uid = self._uid if a.uid < 0 else a.uid
        e.st_gid = self._gid if a.gid < 0 else a.gid
        e.st_size = a.size
        e.st_blksize = 128 * 1024
        e.st_blocks = -(-a.size // 512)
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns or a.mtime_ns
        e.st_atime_ns = a.atime_ns or a.mtime_ns
        e.entry_timeout = e.attr_timeout = a.timeout
        return e

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        attr = await self.view.lookup(parent_inode, _name(name))
        if attr is not None:
            return self._attrs(attr)
        timeout = self.view.negative_timeout(parent_inode)
        if not timeout:
            raise pyfuse3.FUSEError(errno.ENOENT)
        negative = pyfuse3.EntryAttributes()  # st_ino 0: the kernel remembers the name is absent
        negative.entry_timeout = timeout
        return negative

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            try:
                self.view.forget(ino, count)
            except Exception:  # forget must not raise: the kernel does not wait for an answer
                log.exception("bug in forget(%d, %d)", ino, count)

    @_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.view.getattr(inode))

    @_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(await self.view.readlink(inode))

    @_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = await self.view.listdir(inode)
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs[fh]
        for i in range(start_id, len(entries)):
            name, attr = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(attr), i + 1):
                break
            self.view.referenced(attr.ino)  # the kernel took it: one more reference (readdirplus)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return _info(await self.view.open(inode, flags))

    @_errors
    # pyfuse3's stub says bytes; its handler takes any contiguous buffer (PyObject_GetBuffer),
    # so a range of a block just loaded is served as a view of it, without a copy.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        return await self.view.read(fh, off, size)

    async def release(self, fh: int) -> None:
        self.view.release(fh)

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(b"user."):
            # No SELinux labels, ACLs or trusted attributes here: saying the namespace is not
            # supported (rather than "no such attribute") lets `ls -l` stop asking for
            # security.selinux after the first file of the mount, a round trip per file saved.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        value = (await self.view.xattrs(inode)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_errors
    async def listxattr(self, inode: int, ctx: Any) -> Sequence[bytes]:
        return [os.fsencode(n) for n in await self.view.xattrs(inode)]

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = MAX_NAME
        return s


class WritableOperations(Operations):
    """The requests of a read-write mount, passed to a WritableView."""

    def __init__(self, view: WritableView) -> None:
        super().__init__(view)
        self.wview = view

    @staticmethod
    def _mode(mode: int, ctx: Any) -> int:
        return stat.S_IMODE(mode) & ~ctx.umask

    @_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, attr = await self.wview.create(
            parent_inode, _name(name), self._mode(mode, ctx), flags, ctx.uid, ctx.gid
        )
        return _info(opened), self._attrs(attr)

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            kind = next((k for k, bits in SPECIAL.items() if stat.S_IFMT(mode) == bits), None)
            if kind is None:
                raise pyfuse3.FUSEError(errno.EINVAL)
            return self._attrs(
                await self.wview.mknod(
                    parent_inode, _name(name), kind, self._mode(mode, ctx), rdev, ctx.uid, ctx.gid
                )
            )
        opened, attr = await self.wview.create(
            parent_inode, _name(name), self._mode(mode, ctx), os.O_WRONLY, ctx.uid, ctx.gid
        )
        self.wview.release(opened.fh)
        return self._attrs(attr)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(
            await self.wview.mkdir(parent_inode, _name(name), self._mode(mode, ctx), ctx.uid, ctx.gid)
        )

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(
            await self.wview.symlink(parent_inode, _name(name), os.fsdecode(target), ctx.uid, ctx.gid)
        )

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.wview.link(inode, new_parent_inode, _name(new_name)))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.wview.unlink(parent_inode, _name(name))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.wview.rmdir(parent_inode, _name(name))

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.wview.rename(parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags)

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(
            await self.wview.setattr(
                inode,
                size=attr.st_size if fields.update_size else None,
                mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
                uid=attr.st_uid if fields.update_uid else None,
                gid=attr.st_gid if fields.update_gid else None,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
            )
        )

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.wview.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        pass  # writes reach the upper file as they come; fsync makes them durable

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.wview.fsync(fh, datasync)

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.wview.fsyncdir()

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.wview.setxattr(inode, os.fsdecode(name), value)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = await super().statfs(ctx)
        local = os.statvfs(self.wview.upper_root())  # written contents land there
        s.f_bsize, s.f_frsize = local.f_bsize, local.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = local.f_blocks, local.f_bfree, local.f_bavail
        s.f_files, s.f_ffree, s.f_favail = local.f_files, local.f_ffree, local.f_favail
        return s
