"""Turning sources into a version: walk and hash, upload what the store lacks, write the tree
objects, claim the next number, move aliases. Also the conflict policies of `push --on-conflict`.

A push streams (a version of 1,000,000 files is pushed holding one directory per level): each
directory of a source is read, its files hashed on worker threads, and it is written as soon as
everything in it is, post-order. A file's content is placed where the parent version (the newest)
has it when the same name there has the same hash; else the store gets it (a blob, unless it has
that blob already; on a remote store a small file goes into a pack, in path order). A file whose
size, mtime and ctime match artfs's record of it (statcache) is not read at all, so an unchanged
push reads no content. A directory whose object is the parent version's is not written again, so
a one-file change writes the objects on its path, O(depth).

Packs are named by a random id, not by a hash of their bytes: a file's place in a pack is then
known the moment it is added, and the directory naming it can be written at once. Each file in a
pack is still checked against its own hash on every read.

Order makes it crash-safe: blobs, packs and tree objects are written (write-once) before the
version record that names them, and the record before any alias moves. A committer killed at any
point leaves either no new version or a complete one; what it wrote is garbage for `gc`.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import keys, refs
from ._version import __version__
from .blobs import BlobStore
from .catalog import COMMITTED, Catalog, VersionRecord
from .config import StoreConfig
from .digest import FileDigest, hash_bytes, hash_fd
from .errors import (
    ArtifactExistsError,
    ContentChangedError,
    InvalidInputError,
    InvalidPathError,
    SourceNotFoundError,
    TypeMismatchError,
    VersionInUseError,
)
from .manifest import BlockHashes, Entry, chunk_objects, encode_dir, normal_mode
from .names import LATEST, join_path, validate_alias, validate_name
from .progress import Bar, ProgressFactory, extend, silent
from .refs import Reference
from .sources import LocalFile, OpenDir, ScanOptions, Source, Walk
from .statcache import StatCache
from .tree import Tree, version_tree
from .workers import Pool, checkpoint

log = logging.getLogger(__name__)
T = TypeVar("T")

ON_CONFLICT = ("new", "skip", "error", "replace")
WORKERS = min(8, (os.cpu_count() or 2) * 2)
PACK_FILE = 256 * 1024  # files up to this size go into packs (on a remote store)
PACK_BYTES = 8 * 1024 * 1024  # about this much per pack
BATCH = 64  # small files hashed per task
RECENT = 100_000  # contents a push remembers the place of (see TreeWriter)


@dataclass(frozen=True)
class DirSource:
    """A local directory whose contents go below `prefix` ("" = the root) of the version."""

    local: Path
    prefix: str = ""
    options: ScanOptions = field(default_factory=ScanOptions)


Part = DirSource | Source | Reference  # a directory to walk, one file (or link, or empty dir), a URI


@dataclass(frozen=True)
class CommitResult:
    record: VersionRecord
    created: bool  # False: nothing new was written (unchanged content, or --on-conflict skip)
    skipped: bool = False  # --on-conflict skip found the name taken: nothing was even compared
    aliases_moved: tuple[str, ...] = ()  # aliases this commit pointed at `record`
    amended: tuple[str, ...] = ()  # fields of an unchanged `record` this commit updated
    deleted: tuple[str, ...] = ()  # versions --on-conflict replace deleted
    written: int = 0  # tree objects written


def producer() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "user": user, "pid": os.getpid(), "artfs": __version__}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Packer:
    """Small files of a remote store, end to end in packs of about PACK_BYTES (see the module
    docstring). Sealed packs go up on the pool while the push goes on."""

    def __init__(self, blobs: BlobStore, pool: Pool, bar: Bar) -> None:
        self._blobs = blobs
        self._pool = pool
        self._bar = bar
        self._parts: list[bytes] = []
        self._size = 0
        self._id = secrets.token_hex(16)
        self._uploads: list[Future[None]] = []

    def add(self, entry: Entry, local: LocalFile) -> Entry:
        """Put a file's content in the open pack (checked against its hash); return its entry
        saying where."""
        checkpoint()
        fd = local.open()
        try:
            data = os.pread(fd, entry.size + 1, 0)
        finally:
            os.close(fd)
        if hash_bytes(data) != entry.hash:
            raise ContentChangedError(f"{local} changed while it was being pushed; push again")
        placed = replace(entry, pack=self._id, offset=self._size)
        self._parts.append(data)
        self._size += len(data)
        if self._size >= PACK_BYTES:
            self.seal()
        return placed

    def seal(self) -> None:
        if not self._parts:
            return
        data, key = b"".join(self._parts), keys.pack(self._id)
        self._parts, self._size, self._id = [], 0, secrets.token_hex(16)
        extend(self._bar, len(data))

        def upload() -> None:
            self._blobs.backend.put(key, data, if_absent=True)
            self._bar.update(len(data))

        self._uploads.append(self._pool.submit(upload))

    def close(self) -> None:
        self.seal()
        for upload in self._uploads:
            upload.result()


@dataclass
class _Frame:
    """A directory being written: where it goes, what the parent version has there (read when
    first needed: an unchanged directory is never read), and its children as they get ready."""

    path: str
    old: Entry | None  # the parent version's entry at this path
    subdirs: list[OpenDir]
    files: list[tuple[Source, FileDigest | None]] = field(default_factory=list)  # None: being hashed
    hashing: list[tuple[list[Source], Future[list[FileDigest]]]] = field(default_factory=list)
    children: list[Entry] = field(default_factory=list)
    _old_children: dict[str, Entry] | None = None


class TreeWriter:
    """Writes parts as a version's tree (see the module docstring); `write` returns the root.

    Files are hashed on the pool, BATCH small ones per task (a task per file costs more than
    hashing a small file), and a content the store lacks is written there by the same task:
    a small file from the bytes just read. A directory whose object is the parent version's
    names only what the store has, so nothing in it is asked about; any other is checked."""

    def __init__(
        self,
        blobs: BlobStore,
        parent: Tree | None,
        records: StatCache,
        pool: Pool,
        hashing: Bar,
        uploading: Bar,
    ) -> None:
        self.blobs = blobs
        self.parent = parent
        self.records = records
        self.pool = pool
        self.hashing = hashing
        self.uploading = uploading
        self.packer = Packer(blobs, pool, uploading) if blobs.packs else None
        self.written = 0  # tree objects written (not there already)
        # Within a push, the same content found again is placed where it went the first time, and
        # not asked about again: remembered for the last RECENT contents (a million files' worth
        # would cost more memory than a duplicate costs bytes).
        self._placed: _Recent[Entry] = _Recent(RECENT)  # content hash → where it went (packs, chunks)
        self._stored: _Recent[bool] = _Recent(RECENT)  # contents the store has
        self._lock = threading.Lock()

    def write(self, parts: Iterable[Part]) -> Entry:
        items: list[Entry] = []
        for part in parts:
            if isinstance(part, DirSource):
                items.append(self._walk(part))
            elif isinstance(part, Reference):
                found = refs.entries(part, self.blobs.origins, self.blobs.block_size, self.hashing)
                items += [self._place(e) for e in found]
            else:
                items.append(self._single(part))
        root = self._assemble(items)
        self.close()
        return root

    def close(self) -> None:
        """Seal the open pack and wait for the uploads of packs."""
        if self.packer is not None:
            self.packer.close()

    # -- a directory tree, post-order ----------------------------------------------------------
    def _walk(self, part: DirSource) -> Entry:
        walk = Walk(part.local, part.options)
        top_old = self.parent.lookup(part.prefix) if self.parent is not None else None
        frames = [self._open(walk, walk.top(), part.prefix, top_old)]
        try:
            while True:
                frame = frames[-1]
                if frame.subdirs:
                    d = frame.subdirs.pop(0)
                    old = self._old_children(frame).get(d.rel.rpartition("/")[2])
                    frames.append(self._open(walk, d, join_path(part.prefix, d.rel), old))
                    continue
                frames.pop()
                done = self._close(frame)
                if not frames:
                    return done
                frames[-1].children.append(done)
        finally:
            for frame in frames:
                for d in frame.subdirs:
                    os.close(d.fd)

    def _old_children(self, frame: _Frame) -> dict[str, Entry]:
        """The parent version's children of this directory (read once, when first needed)."""
        if frame._old_children is None:
            old = frame.old
            listed = (
                self.parent.directory(old).children() if self.parent and old and old.kind == "dir" else []
            )
            frame._old_children = {e.name: e for e in listed}
        return frame._old_children

    def _open(self, walk: Walk, d: OpenDir, path: str, old: Entry | None) -> _Frame:
        """List a directory and set the hashing of the files the stat cache does not know
        going (see the class docstring)."""
        sources, subdirs = walk.list(d)
        frame = _Frame(path, old, subdirs)
        trusted = self.records.known(s.stat for s in sources if s.kind == "file" and s.stat is not None)
        batch: list[Source] = []
        for s in sources:
            if s.kind == "link":
                frame.children.append(Entry(join_path(path, _name(s)), "link", target=s.target))
            elif s.kind == "file":
                assert s.stat is not None
                known = trusted.get((s.stat.st_dev, s.stat.st_ino))
                frame.files.append((s, known))
                if known is None:
                    extend(self.hashing, s.stat.st_size)
                    if s.stat.st_size > PACK_FILE:
                        frame.hashing.append(([s], self.pool.submit(self._hash_batch, [s])))
                    else:
                        batch.append(s)
                        if len(batch) == BATCH:
                            frame.hashing.append((batch, self.pool.submit(self._hash_batch, batch)))
                            batch = []
        if batch:
            frame.hashing.append((batch, self.pool.submit(self._hash_batch, batch)))
        return frame

    def _close(self, frame: _Frame) -> Entry:
        """Everything in the directory is ready: place its files, write it."""
        hashed: dict[str, FileDigest] = {}
        for batch, future in frame.hashing:
            hashed.update(zip((s.path for s in batch), future.result(), strict=True))
        self.records.record((s.stat, hashed[s.path]) for s, _ in frame.files if s.stat and s.path in hashed)
        files = []
        for src, known in frame.files:
            assert src.stat is not None and src.local is not None
            digest = known or hashed[src.path]
            e = Entry(join_path(frame.path, _name(src)), "file", digest.size, normal_mode(src.stat.st_mode),
                      digest.hash, digest.blocks, src.stat.st_mtime_ns)  # fmt: skip
            files.append((src.local, e))
        return self._finish(frame, frame.children, files)

    def write_dir(
        self, path: str, old: Entry | None, children: list[Entry], files: list[tuple[LocalFile, Entry]]
    ) -> Entry:
        """Write a directory at `path` (the parent version had `old` there) of `children`, entries
        as they are, and `files`, local contents hashed (`hash_files`) whose entries say no place."""
        return self._finish(_Frame(path, old, []), children, files)

    def hash_files(self, sources: list[Source]) -> list[FileDigest]:
        """Hash local files on the pool (storing, as a push does, what the store lacks)."""
        for src in sources:
            extend(self.hashing, src.local.size() if src.local is not None else 0)
        batches = [sources[i : i + BATCH] for i in range(0, len(sources), BATCH)]
        futures = [self.pool.submit(self._hash_batch, batch) for batch in batches]
        return [d for future in futures for d in future.result()]

    def _finish(self, frame: _Frame, children: list[Entry], files: list[tuple[LocalFile, Entry]]) -> Entry:
        """Place a directory's files (packs) and write it."""
        if self.packer is None:  # every content is a blob of its own: where is known at once
            return self._write_dir(frame.path, children, files, frame)
        placed = []
        for local, e in files:
            old = self._old_children(frame).get(e.name)
            if old is not None and old.kind == "file" and old.hash == e.hash:
                placed.append(self._place(replace(e, blocks=old.blocks, pack=old.pack, offset=old.offset)))
            elif e.size <= PACK_FILE:
                placed.append(self._pack(e, local))
            else:
                placed.append(self._place(e))
        return self._write_dir(frame.path, children + placed, [], frame)

    def _write_dir(
        self,
        path: str,
        children: list[Entry],
        blobs: list[tuple[LocalFile, Entry]],
        frame: _Frame | None = None,
    ) -> Entry:
        """Write a directory whose children are `children` and files stored as blobs of their
        own (`blobs`), unless the parent version has exactly this directory."""
        checkpoint()
        chunks: list[tuple[str, bytes]] = []
        children = list(children)
        for _, e in blobs:
            if e.blocks and not isinstance(e.blocks, BlockHashes):
                made = chunk_objects(e.blocks)
                chunks += made
                e = replace(e, blocks=BlockHashes(tuple(k for k, _ in made), len(e.blocks), self.blobs))
            children.append(e)
        objects = encode_dir(children)
        old = frame.old if frame is not None else None
        if old is None or old.kind != "dir" or objects.key != old.tree:
            # Not the parent version's directory: the store must have everything it names (the
            # files hashed now were stored by `_hash_batch`; ones the stat cache knew were not)
            old_files = self._old_children(frame) if frame is not None else {}
            unsure = [
                (local, e)
                for local, e in blobs
                if self._stored.get(e.hash) is None and getattr(old_files.get(e.name), "hash", "") != e.hash
            ]
            checks = [
                self.pool.submit(self._store_all, unsure[i : i + BATCH]) for i in range(0, len(unsure), BATCH)
            ]
            for check in checks:
                check.result()
            self.blobs.put_objects(chunks)
            self.written += self.blobs.put_objects(objects.objects)
        files = sum(c.files if c.kind == "dir" else c.kind == "file" for c in children)
        size = sum(c.size for c in children if c.kind != "link")
        return Entry(path, "dir", size, 0o755, tree=objects.key, digest=objects.digest, files=files)

    # -- contents (`_hash_batch` and `_store` run on worker threads too) ------------------------
    def _hash_batch(self, sources: list[Source]) -> list[FileDigest]:
        """Hash files; store the contents the store lacks that are not for packs (a small file
        from the bytes just read)."""
        out = []
        for src in sources:
            assert src.local is not None
            fd = src.local.open()
            try:
                size = os.fstat(fd).st_size
                if size <= PACK_FILE:
                    data = os.pread(fd, size + 1, 0)
                    digest = FileDigest(hash_bytes(data), len(data))
                    self._hashed(len(data))
                    if len(data) > self.blobs.block_size:  # a small file in a store of small blocks
                        digest = hash_fd(fd, self.blobs.block_size)
                else:
                    data = None
                    digest = hash_fd(fd, self.blobs.block_size, self._hashed)
            finally:
                os.close(fd)
            if self.packer is None or digest.size > PACK_FILE:
                entry = Entry(src.path, "file", digest.size, hash=digest.hash, blocks=digest.blocks)
                self._store(src.local, entry, data)
            out.append(digest)
        return out

    def _store(self, local: LocalFile, entry: Entry, data: bytes | None = None) -> None:
        """Make sure the store has this content as a blob (uploading it from `data`, if given,
        or the file, checked against its hash either way)."""
        with self._lock:
            if self._stored.get(entry.hash):
                return
        if not self.blobs.has(entry.hash):
            extend(self.uploading, entry.size)
            if data is not None and hash_bytes(data) == entry.hash:
                self.blobs.upload_bytes(data, entry.hash)
                self.uploading.update(len(data))
            else:
                digest = FileDigest(entry.hash, entry.size, tuple(entry.blocks))
                self.blobs.upload(local, digest, self.uploading.update)
        with self._lock:
            self._stored.put(entry.hash, True)

    def _store_all(self, files: list[tuple[LocalFile, Entry]]) -> None:
        for local, e in files:
            self._store(local, e)

    def _hashed(self, n: int) -> None:
        self.hashing.update(n)
        checkpoint()

    def _where(self, entry: Entry) -> Entry | None:
        """`entry` where this push has put the same content already, or None."""
        with self._lock:
            placed = self._placed.get(entry.hash)
        if placed is None:
            return None
        return replace(entry, blocks=placed.blocks, pack=placed.pack, offset=placed.offset)

    def _pack(self, entry: Entry, local: LocalFile) -> Entry:
        assert self.packer is not None
        return self._where(entry) or self._place(self.packer.add(entry, local))

    def _place(self, entry: Entry) -> Entry:
        """Store the block list of a big file as chunk objects; remember where the content is."""
        if entry.blocks and not isinstance(entry.blocks, BlockHashes):
            chunks = chunk_objects(entry.blocks)
            self.blobs.put_objects(chunks)
            entry = replace(
                entry, blocks=BlockHashes(tuple(k for k, _ in chunks), len(entry.blocks), self.blobs)
            )
        if entry.pack or isinstance(entry.blocks, BlockHashes):  # a blob of its own: its place is its hash
            with self._lock:
                self._placed.put(entry.hash, entry)
        return entry

    # -- single files and putting parts together ---------------------------------------------
    def _single(self, src: Source) -> Entry:
        if src.kind == "link":
            return Entry(src.path, "link", target=src.target)
        if src.kind == "dir":
            return self._write_dir(src.path, [], [])
        assert src.local is not None
        try:
            fd = src.local.open()
            st = os.fstat(fd)
            os.close(fd)
        except FileNotFoundError:
            raise SourceNotFoundError(f"{src.local}: no such file") from None
        local = src.local
        src = replace(src, stat=st)
        known = self.records.known([st]).get((st.st_dev, st.st_ino))
        if known is None:
            extend(self.hashing, st.st_size)
            known = self._hash_batch([src])[0]
            self.records.record([(st, known)])
        e = Entry(
            src.path, "file", known.size, normal_mode(st.st_mode), known.hash, known.blocks, st.st_mtime_ns
        )
        old = self.parent.lookup(src.path) if self.parent is not None else None
        if old is not None and old.kind == "file" and old.hash == e.hash:
            return self._place(replace(e, blocks=old.blocks, pack=old.pack, offset=old.offset))
        if self.packer is not None and e.size <= PACK_FILE:
            return self._pack(e, local)
        self._store(local, e)
        return self._place(e)

    def _assemble(self, items: list[Entry]) -> Entry:
        """The root holding every part at its path: parts at the root merge their contents,
        directories that meet merge, anything else that meets is an error."""
        below: dict[str, list[Entry]] = {"": []}
        for e in items:
            if e.path == "":
                below[""] += self._children(e)
                continue
            parent = e.path.rpartition("/")[0]
            below.setdefault(parent, []).append(e)
            while parent and parent.rpartition("/")[0] not in below:
                below.setdefault(parent.rpartition("/")[0], [])
                parent = parent.rpartition("/")[0]
        for path in sorted(below, key=lambda p: p.count("/") + bool(p), reverse=True):
            if path:
                parent_path = path.rpartition("/")[0]
                below.setdefault(parent_path, []).append(self._write_dir(path, self._merged(below[path]), []))
        return self._write_dir("", self._merged(below[""]), [])

    def _merged(self, children: list[Entry]) -> list[Entry]:
        by_name: dict[str, Entry] = {}
        for e in children:
            other = by_name.get(e.name)
            if other is None:
                by_name[e.name] = e
            elif other.kind == e.kind == "dir":
                by_name[e.name] = self._write_dir(
                    e.path, self._merged(self._children(other) + self._children(e)), []
                )
            else:
                raise InvalidPathError(f"two entries for {e.path!r}: it was added twice")
        return list(by_name.values())

    def _children(self, d: Entry) -> list[Entry]:
        return Tree(self.blobs, d, self.blobs.block_size).directory(d).children()


def _name(src: Source) -> str:
    return src.path.rpartition("/")[2]


class _Recent(Generic[T]):
    """A dict of at most `size` keys; the least recently put go first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def put(self, key: str, value: T) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


def commit(
    catalog: Catalog,
    blobs: BlobStore,
    name: str,
    parts: Iterable[Part],
    *,
    type: str | None = None,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    aliases: Iterable[str] = (),
    on_conflict: str = "new",
    delete_aliases: bool = False,
    progress: ProgressFactory = silent,
) -> CommitResult:
    """Commit `parts` as the next version of `name` (see the module docstring)."""
    validate_name(name)
    aliases = [validate_alias(a) for a in aliases if a != LATEST]
    if on_conflict not in ON_CONFLICT:
        raise InvalidInputError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    latest = catalog.latest(name)
    if type is not None:
        validate_name(type, "type")
        if latest is not None and latest.type != type and on_conflict != "replace":
            raise TypeMismatchError(f"{name} is a {latest.type!r} artifact, not {type!r}")
    elif latest is not None:
        type = latest.type
    if latest is not None and on_conflict == "skip":
        return CommitResult(latest, created=False, skipped=True)
    if latest is not None and on_conflict == "error":
        raise ArtifactExistsError(f"{name} already exists (newest: {latest.label})")
    doomed = catalog.versions(name) if on_conflict == "replace" else []
    if doomed and not delete_aliases:  # the rule `delete` follows, checked before any upload
        held = sorted(f"{name}:{a}" for a, n in catalog.aliases(name).items() if a != LATEST)
        if held:
            raise VersionInUseError(
                f"--on-conflict replace would delete versions that {', '.join(held)} name; "
                "add --delete-aliases to delete them too"
            )

    parent = version_tree(blobs, latest, blobs.block_size) if latest is not None else None
    with (
        StatCache() as records,
        progress(total=0, desc="hashing") as hashing,
        progress(total=0, desc="uploading") as uploading,
        blobs.backend.batch(),
        Pool(WORKERS) as pool,  # ends (its tasks stopped, their temp files gone) before the batch
    ):
        writer = TreeWriter(blobs, parent, records, pool, hashing, uploading)
        root = writer.write(parts)
    log.info("%s: %d files, %d bytes; digest %s; %d tree objects written", name, root.files, root.size,
             root.digest, writer.written)  # fmt: skip
    if (
        latest is not None
        and parent is not None
        and root.digest == parent.digest
        and on_conflict != "replace"
    ):
        moved = tuple(a for a in aliases if catalog.set_alias(name, a, latest.number))
        amended: list[str] = []

        def amend(rec: VersionRecord) -> VersionRecord:
            amended.clear()
            if description and description != rec.description:
                amended.append("description")
                rec = replace(rec, description=description)
            if metadata and {**rec.metadata, **metadata} != rec.metadata:
                amended.append("metadata")
                rec = replace(rec, metadata={**rec.metadata, **metadata})
            return rec

        latest = catalog.amend(name, latest.number, amend)
        return CommitResult(latest, created=False, aliases_moved=moved, amended=tuple(amended))

    rec, moved = _claim(catalog, name, root, aliases, type=type or "dataset", description=description,
                        metadata=dict(metadata or {}))  # fmt: skip
    deleted = []
    for old in doomed:
        catalog.delete_version(old, delete_aliases=True)
        deleted.append(old.label)
    return CommitResult(
        rec, created=True, aliases_moved=moved, deleted=tuple(deleted), written=writer.written
    )


def _claim(
    catalog: Catalog, name: str, root: Entry, aliases: Iterable[str], **fields: Any
) -> tuple[VersionRecord, tuple[str, ...]]:
    """Claim the next number for a version whose tree is `root`; move `latest` and `aliases`."""

    def record(number: int) -> VersionRecord:
        fields.setdefault("producer", producer())
        return VersionRecord(name=name, number=number, digest=root.digest, tree=root.tree, size=root.size,
                             files=root.files, created_at=now(), **fields)  # fmt: skip

    if not catalog.markers:  # a format-1 store gets its first format-2 version: see `upgrade`
        catalog.mark_all_deleted()
        StoreConfig.upgrade(catalog.backend)
    rec = catalog.claim(name, record)
    log.info("claimed %s", rec.label)
    catalog.set_alias(name, LATEST, rec.number, forward_only=True)
    return rec, tuple(a for a in aliases if catalog.set_alias(name, a, rec.number))


def publish(
    catalog: Catalog,
    name: str,
    root: Entry,
    *,
    base: VersionRecord | None,
    session: str,
    type: str,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    aliases: Iterable[str] = (),
    on_conflict: str = "new",
) -> CommitResult:
    """Publish a staged tree as the next version of `name`, staged on `base` (None: a new
    artifact) by `session`. Nothing changed → no version. Idempotent: a version this session
    claimed already (a commit killed after its claim, finished again) is the answer, not a second
    one. Someone committed after `base`: a new version all the same, recording its base
    (`on_conflict` "error": refused, before anything is claimed)."""
    aliases = [validate_alias(a) for a in aliases if a != LATEST]
    # Every number claimed after the base, by the listing: `latest` moves only after a claim,
    # so a commit killed in between left a version that `latest` does not name yet.
    newer: list[VersionRecord] = []
    for number in reversed(catalog.numbers(name)):
        if base is not None and number <= base.number:
            break
        rec = catalog.read(name, number)[0]
        if rec.producer.get("session") == session:
            catalog.set_alias(name, LATEST, rec.number, forward_only=True)
            moved = tuple(a for a in aliases if catalog.set_alias(name, a, rec.number))
            return CommitResult(rec, created=True, aliases_moved=moved)
        if rec.state == COMMITTED:
            newer.append(rec)
    if base is not None and root.digest == base.digest:
        moved = tuple(a for a in aliases if catalog.set_alias(name, a, base.number))
        return CommitResult(base, created=False, aliases_moved=moved)
    since = f"{base.label} was staged" if base is not None else "this stage began"
    if newer and on_conflict == "error":
        raise ArtifactExistsError(f"{newer[0].label} was committed after {since}; the staged work is kept")
    if newer:
        log.warning("%s was committed after %s; committing the next version all the same",
                    newer[0].label, since)  # fmt: skip
    rec, moved = _claim(catalog, name, root, aliases, type=type, description=description,
                        metadata=dict(metadata or {}), base=base.number if base is not None else None,
                        producer={**producer(), "session": session})  # fmt: skip
    return CommitResult(rec, created=True, aliases_moved=moved)
