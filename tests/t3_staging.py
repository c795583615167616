"""The staging tree with no FUSE: random sequences of file operations run against StagingView
(through a small stand-in for the kernel's path walk) and against a local directory, the model;
after every step both trees and every errno must agree. Then the journal is replayed into a new
overlay (a daemon killed and resumed) and the session committed: both must equal the model."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import artfs
from artfs.cache import BlockCache
from artfs.errors import ConflictError, FsError, InvalidPathError, NotFoundError
from artfs.names import validate_link_target
from artfs.namespace import DIR, FILE, LINK, ROOT_INO
from artfs.reader import BlockReader
from artfs.staging.fs import StagingView
from artfs.staging.journal import Journal
from artfs.staging.session import RECEIPT_DAYS, Session, SessionInfo, sessions_dir
from artfs.storage.aio import Threads

NAMES = ["a", "b", "c"]
Path_ = tuple[str, ...]
# half the time a path the base has or could have, so that most operations get somewhere
likely = [("a",), ("b",), ("c",), ("b", "a"), ("b", "b"), ("b", "c"), ("b", "c", "b"), ("c", "a"), ("c", "b")]
paths = st.one_of(
    st.sampled_from(likely), st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)
)
data = st.binary(min_size=0, max_size=300)

ops = st.one_of(
    st.tuples(st.just("create"), paths),
    st.tuples(st.just("mkdir"), paths),
    st.tuples(st.just("symlink"), paths, st.sampled_from(["x", "../y", "z/x"])),
    st.tuples(st.just("write"), paths, st.integers(0, 2000), data),
    st.tuples(st.just("truncate"), paths, st.integers(0, 3000)),
    st.tuples(st.just("rename"), paths, paths, st.sampled_from([0, 1])),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("rmdir"), paths),
    st.tuples(st.just("link"), paths, paths),
    st.tuples(st.just("chmod"), paths, st.sampled_from([0o600, 0o755, 0o640])),
    st.tuples(st.just("hold"), paths),
    st.tuples(st.just("held_write"), st.integers(0, 3), st.integers(0, 500), data),
    st.tuples(st.just("fsync"), st.integers(0, 3)),
)

BASE = {"a": b"base a" * 100, "b/a": b"x" * 5000, "b/c/b": b"deep", "c": None}  # None: a directory


def _build_base(root: Path) -> None:
    for rel, content in BASE.items():
        p = root / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            p.chmod(0o644)


@dataclass
class Kernel:
    """What the kernel does before it asks a file system: walk the path a name at a time."""

    view: StagingView
    held: list[tuple[int, int]] = field(default_factory=list)  # (fh, local fd)

    async def walk(self, path: Path_) -> tuple[int, str]:
        ino, kind = ROOT_INO, DIR
        for name in path:
            if kind == LINK:
                raise FsError(errno.ENOENT)  # the links made here all dangle (x, y, z never exist)
            if kind != DIR:
                raise FsError(errno.ENOTDIR)
            attr = await self.view.lookup(ino, name)
            if attr is None:
                raise FsError(errno.ENOENT)
            ino, kind = attr.ino, attr.kind
        return ino, kind

    async def parent(self, path: Path_) -> int:
        ino, kind = await self.walk(path[:-1])
        if kind == LINK:
            raise FsError(errno.ENOENT)
        if kind != DIR:
            raise FsError(errno.ENOTDIR)
        return ino

    async def open_file(self, path: Path_, flags: int) -> int:
        ino, kind = await self.walk(path)
        if kind == LINK:
            raise FsError(errno.ELOOP)  # O_NOFOLLOW
        if kind == DIR and flags & (os.O_WRONLY | os.O_RDWR):
            raise FsError(errno.EISDIR)
        return (await self.view.open(ino, flags)).fh


async def _view_op(k: Kernel, op: tuple[Any, ...]) -> Any:
    v, uid, gid = k.view, os.getuid(), os.getgid()
    umask = os.umask(0)
    os.umask(umask)
    name = op[0]
    if name == "create":
        opened, _ = await v.create(await k.parent(op[1]), op[1][-1], 0o644 & ~umask, os.O_WRONLY, uid, gid)
        v.release(opened.fh)
    elif name == "mkdir":
        await v.mkdir(await k.parent(op[1]), op[1][-1], 0o755 & ~umask, uid, gid)
    elif name == "symlink":
        await v.symlink(await k.parent(op[1]), op[1][-1], op[2], uid, gid)
    elif name in ("write", "truncate"):
        fh = await k.open_file(op[1], os.O_WRONLY)
        try:
            if name == "write":
                await v.write(fh, op[2], op[3])
            else:
                await v.setattr(v._handles[fh].ino, size=op[2])
        finally:
            v.release(fh)
    elif name == "rename":
        src_parent, dst_parent = await k.parent(op[1]), await k.parent(op[2])
        await k.walk(op[1])
        if op[3] and op[2] != op[1] and await _exists(k, op[2]):
            raise FsError(errno.EEXIST)  # the kernel checks RENAME_NOREPLACE... so does the view
        await v.rename(src_parent, op[1][-1], dst_parent, op[2][-1], op[3])
    elif name == "unlink":
        await v.unlink(await k.parent(op[1]), op[1][-1])
    elif name == "rmdir":
        await v.rmdir(await k.parent(op[1]), op[1][-1])
    elif name == "link":
        ino, kind = await k.walk(op[1])
        parent = await k.parent(op[2])
        if await _exists(k, op[2]):
            raise FsError(errno.EEXIST)
        if kind == DIR:
            raise FsError(errno.EPERM)
        await v.link(ino, parent, op[2][-1])
    elif name == "chmod":
        ino, kind = await k.walk(op[1])
        if kind != LINK:
            await v.setattr(ino, mode=op[2])
    elif name == "hold":
        return await k.open_file(op[1], os.O_RDWR)
    elif name == "held_write" and op[1] < len(k.held):
        await v.write(k.held[op[1]][0], op[2], op[3])
    elif name == "fsync" and op[1] < len(k.held):
        await v.fsync(k.held[op[1]][0], False)
    return None


async def _exists(k: Kernel, path: Path_) -> bool:
    try:
        await k.walk(path)
    except FsError:
        return False
    return True


def _local_op(root: Path, held: list[int], op: tuple[Any, ...]) -> Any:
    p = lambda t: str(root.joinpath(*t))  # noqa: E731
    name = op[0]
    if name == "create":
        os.close(os.open(p(op[1]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif name == "mkdir":
        os.mkdir(p(op[1]), 0o755)
    elif name == "symlink":
        os.symlink(op[2], p(op[1]))
    elif name in ("write", "truncate"):
        fd = os.open(p(op[1]), os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if name == "write":
                os.pwrite(fd, op[3], op[2])
            else:
                os.ftruncate(fd, op[2])
        finally:
            os.close(fd)
    elif name == "rename":
        if op[3]:
            _renameat2_noreplace(p(op[1]), p(op[2]))
        else:
            os.rename(p(op[1]), p(op[2]))
    elif name == "unlink":
        os.unlink(p(op[1]))
    elif name == "rmdir":
        os.rmdir(p(op[1]))
    elif name == "link":
        os.link(p(op[1]), p(op[2]), follow_symlinks=False)
    elif name == "chmod":
        if not os.path.islink(p(op[1])):
            os.chmod(p(op[1]), op[2])
    elif name == "hold":
        return os.open(p(op[1]), os.O_RDWR | os.O_NOFOLLOW)
    elif name == "held_write" and op[1] < len(held):
        os.pwrite(held[op[1]], op[3], op[2])
    elif name == "fsync" and op[1] < len(held):
        os.fsync(held[op[1]])
    return None


def _renameat2_noreplace(src: str, dst: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, src.encode(), at_fdcwd, dst.encode(), 1) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _errno_of(fn: Callable[[], Any]) -> tuple[int, Any]:
    try:
        return 0, fn()
    except OSError as e:
        return e.errno or -1, None


async def _view_errno(k: Kernel, op: tuple[Any, ...]) -> tuple[int, Any]:
    try:
        return 0, await _view_op(k, op)
    except FsError as e:
        return e.errno, None


def _local_tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = Path(dirpath, n)
            rel = str(full.relative_to(root))
            st_ = full.lstat()
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = (LINK, os.readlink(full))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = (DIR, stat.S_IMODE(st_.st_mode))
            else:
                out[rel] = (FILE, stat.S_IMODE(st_.st_mode), full.read_bytes(), st_.st_nlink)
    return out


async def _view_tree(v: StagingView) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stack = [("", ROOT_INO)]
    while stack:
        path, ino = stack.pop()
        for name, attr in await v.listdir(ino):
            rel = f"{path}/{name}".lstrip("/")
            if attr.kind == LINK:
                out[rel] = (LINK, await v.readlink(attr.ino))
            elif attr.kind == DIR:
                out[rel] = (DIR, attr.perm)
                stack.append((rel, attr.ino))
            else:
                opened = await v.open(attr.ino)
                content = bytes(await v.read(opened.fh, 0, attr.size + 1))
                v.release(opened.fh)
                out[rel] = (FILE, attr.perm, content, attr.nlink)
    return out


async def _with_view(store: artfs.Store, session: Session, cache_dir: Path, body: Callable[..., Any]) -> Any:
    blobs = store.blobs
    async with trio.open_nursery() as nursery:
        reader = BlockReader(blobs, BlockCache(cache_dir, blobs.block_size), Threads(4), nursery)
        view = StagingView(session.overlay(store.catalog, blobs), blobs, reader.cache, reader)
        try:
            return await body(view)
        finally:
            view.close()
            view.overlay.close()
            nursery.cancel_scope.cancel()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(script=st.lists(ops, min_size=1, max_size=25))
def test_the_staging_tree_behaves_like_a_local_directory_and_commits_what_it_shows(
    store: artfs.Store, tmp_path_factory: pytest.TempPathFactory, script: list[tuple[Any, ...]]
) -> None:
    tmp = tmp_path_factory.mktemp("stage")
    _build_base(tmp / "src")
    art = artfs.Artifact("t", type="dataset")
    art.add_dir(tmp / "src")
    store.log_artifact(art)  # v0 once; the same content again is no new version
    model = tmp / "model"
    shutil.copytree(tmp / "src", model, symlinks=True)
    session = Session.create(SessionInfo("", store.url, "t", 0))

    async def run(view: StagingView) -> None:
        k = Kernel(view)
        held_local: list[int] = []
        for step, op in enumerate(script):
            local_err, local_out = _errno_of(partial(_local_op, model, held_local, op))
            view_err, view_out = await _view_errno(k, op)
            assert view_err == local_err, (
                step,
                op,
                errno.errorcode.get(view_err),
                errno.errorcode.get(local_err),
            )
            event(f"{op[0]} {errno.errorcode.get(local_err, 'ok')}")
            if op[0] == "hold" and not local_err:
                held_local.append(local_out)
                k.held.append((view_out, local_out))
            assert await _view_tree(view) == _local_tree(model), (step, op)
        for i, (fh, fd) in enumerate(k.held):  # open files, unlinked or not, read what was written
            opened_size = os.fstat(fd).st_size
            assert bytes(await view.read(fh, 0, opened_size + 1)) == os.pread(fd, opened_size + 1, 0), i
            view.release(fh)
            os.close(fd)

    try:
        trio.run(_with_view, store, session, tmp / "cache", run)
        # a daemon killed now: its journal and upper files give the same tree
        replayed = trio.run(_with_view, store, Session.load(session.info.id), tmp / "cache", _view_tree)
        assert replayed == _local_tree(model)

        async def commit(view: StagingView) -> Any:
            return session.commit(view.overlay, store.catalog, store.blobs)

        done = trio.run(_with_view, store, session, tmp / "cache", commit)
        assert done.result is not None
        # what a version cannot carry is left out and said: here, links that leave the tree
        expected = tmp / "expected"
        shutil.copytree(model, expected, symlinks=True)
        for rel, item in _local_tree(model).items():
            if item[0] == LINK:
                try:
                    validate_link_target(rel, item[1])
                except InvalidPathError:
                    (expected / rel).unlink()
                    assert any(rel in note for note in done.notes), (rel, done.notes)
        store.artifact(done.result.record.label).verify(expected)  # raises with the differences
        changed = _local_tree(tmp / "src") != _local_tree(expected)
        assert done.result.created == (done.result.record.digest != store.artifact("t:v0").digest)
        if not changed:
            assert not done.result.created
    finally:
        session.remove()
        for v in store.catalog.versions("t")[1:]:
            store.catalog.delete_version(v, delete_aliases=True)


def test_sessions_on_disk_keep_what_is_due_and_sweep_what_is_over() -> None:
    live = Session.create(SessionInfo("", "file:///nowhere", "live", None))
    done = Session.create(SessionInfo("", "file:///nowhere", "done", None))
    (done.root / "upper").mkdir()  # as a final commit's save leaves it, if cut short there
    done.info.outcome, done.info.finished = {"version": "done:v0", "created": True}, True
    done.save()
    old = Session.create(SessionInfo("", "file:///nowhere", "old", None))
    old.info.finished = True
    old.save()
    long_ago = time.time() - (RECEIPT_DAYS + 1) * 86400
    os.utime(old.root / "session.json", (long_ago, long_ago))
    half = sessions_dir() / f".removed-{live.info.id}-0000"  # a removal a crash cut short
    (half / "upper").mkdir(parents=True)

    listed = {s.info.id: s.state() for s in Session.all()}
    assert listed == {live.info.id: "stopped", done.info.id: "committed"}
    assert not old.root.exists() and not half.exists() and not (done.root / "upper").exists()
    assert Session.load(done.info.id).info.outcome["version"] == "done:v0"
    with pytest.raises(ConflictError, match="was committed as done:v0"):
        Session.load(done.info.id).check_resumable()

    live.remove()
    assert sorted(p.name for p in sessions_dir().iterdir()) == [done.info.id]
    with pytest.raises(NotFoundError):
        Session.load(live.info.id)
    with pytest.raises(NotFoundError):  # a removal's leftover is never a session
        Session.load(f".removed-{live.info.id}-0000")


def test_a_journal_that_runs_out_of_room_mid_record_keeps_every_record_after_it(small_disk: Path) -> None:
    journal = Journal(small_disk / "journal")
    journal.append({"op": "first", "n": 0})
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):  # the disk full: only the journal's own page has room left,
        while os.write(fd, b"\0" * 4096):  # so the next line tears
            pass
    os.close(fd)
    with pytest.raises(FsError) as full:
        journal.append({"op": "torn", "pad": "x" * 8000})
    assert full.value.errno == errno.ENOSPC
    filler.unlink()
    journal.append({"op": "after", "n": 1})
    journal.close()
    assert [r["op"] for r in Journal.read(small_disk / "journal")] == ["first", "after"]
