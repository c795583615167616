"""What a store looks like as a read-only filesystem, with no FUSE in sight.

    /                         one directory per version (`name:vN`) and per alias (`name:latest`)
    /name:ref/…               the version's tree, built from its manifest on first access
    /.artfs/mount.json        this mount: store, cache, pid          (generated on each stat
    /.artfs/stats.json        fetch and cache counters                 and open, with their size)
    /.artfs/name:ref.json     a version's record and manifest

Inodes: the root area is instance 0 (1 = root, 2 = .artfs, 3–4 its files). Every directory
that names a version is an *instance* with its own id, and the node at index k of its tree has
inode `id << 32 | k`, so a version tree needs no inode table. `name:v3` and `name:latest` are
different instances of the same (shared) tree: a directory may have one name only, and a file
opened through `name:latest` keeps its inode, and so its version, when the alias moves.

Version trees are immutable, so their attributes may be cached by the kernel for long
(`TREE_TIMEOUT`); root entries can change (new versions, moved aliases) and live `ROOT_TIMEOUT`.

Concurrency: everything runs on one trio loop. Blocking work (catalog and manifest reads, cold
blocks) goes through `Threads`; verified cache hits are served inline. Where an `await` sits
between two state changes, a comment says why that is safe.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import trio

from ._version import __version__
from .blobs import SPAN_BYTES, BlobStore
from .cache import BlobFile, BlockCache, Buffer, InPlaceBlob
from .catalog import Catalog, VersionRecord
from .errors import InvalidInputError, NotFoundError, StoreError, StoreUnavailableError
from .manifest import Entry, Manifest
from .names import Ref
from .prefetch import ReadAhead
from .storage.aio import Threads
from .tree import version_tree

log = logging.getLogger(__name__)

ROOT_TIMEOUT = 1.0
TREE_TIMEOUT = 24 * 3600.0
FAIL_FAST = 10.0  # seconds after a fetch found the store unreachable
SIBLINGS = 64  # small files fetched along with one that is opened (refilled when half are read)
ROOT_INO, META_INO, MOUNT_JSON_INO, STATS_JSON_INO = 1, 2, 3, 4
META_DIR = ".artfs"
INFO_NODE = 0xFFFFFFFF  # the node of an instance that is its `.artfs/<dir>.json`
DIR, FILE, LINK = "dir", "file", "link"


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    kind: str
    perm: int
    size: int
    mtime_ns: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Opened:
    fh: int
    keep_cache: bool  # immutable content: the kernel may keep its pages across opens
    direct_io: bool  # generated content whose size is not known up front


class VersionTree:
    """The directory structure of one manifest: node 0 is the root, directories map names to
    nodes, file and link nodes point at their manifest entry."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.entries: list[Entry | None] = [None]
        self.children: dict[int, dict[str, int]] = {0: {}}
        self.parents: list[int] = [0]
        dirs = {"": 0}
        for e in manifest:
            if e.kind == DIR:
                self._dir(dirs, e.path)
                continue
            parent_path, _, name = e.path.rpartition("/")
            parent = self._dir(dirs, parent_path)
            node = len(self.entries)
            self.entries.append(e)
            self.parents.append(parent)
            self.children[parent][name] = node

    def files_from(self, node: int, n: int) -> list[tuple[int, Entry]]:
        """Up to `n` files of `node`'s directory, from `node` on, with their nodes (nodes are
        in path order, so they are the next nodes with the same parent)."""
        out: list[tuple[int, Entry]] = []
        parent = self.parents[node]
        for sibling in range(node, min(len(self.entries), node + 4 * n)):
            e = self.entries[sibling]
            if self.parents[sibling] == parent and e is not None and e.kind == FILE:
                out.append((sibling, e))
                if len(out) == n:
                    break
        return out

    def _dir(self, dirs: dict[str, int], path: str) -> int:
        node = dirs.get(path)
        if node is None:
            parent_path, _, name = path.rpartition("/")
            parent = self._dir(dirs, parent_path)
            node = len(self.entries)
            self.entries.append(None)
            self.parents.append(parent)
            self.children[node] = {}
            self.children[parent][name] = node
            dirs[path] = node
        return node

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class Instance:
    """A root directory naming a version: `name:v3`, or `name:latest` while it named v3."""

    id: int
    dirname: str
    record: VersionRecord
    tree: VersionTree | None = None

    @functools.cached_property
    def mtime_ns(self) -> int:
        """When the version was made (parsed once: every directory's attributes carry it)."""
        return _ns(self.record.created_at)


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    data: Any = None
    error: Exception | None = None


@dataclass
class _Handle:
    blob: BlobFile | None = None
    data: bytes | None = None
    ahead: ReadAhead | None = None


def _ns(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1e9)
    except ValueError:
        return 0


class Filesystem:
    """The store as a tree. Raises domain errors; NotFoundError means ENOENT."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        cache: BlockCache,
        threads: Threads,
        *,
        in_place: bool = True,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.cache = cache
        self.threads = threads
        self.in_place = in_place
        self._local = in_place and blobs.on_this_machine  # blobs read where they lie: none to fetch
        self.info = dict(info or {})
        self.started_ns = time.time_ns()
        self._instances: list[Instance | None] = [None]
        self._instance_of: dict[tuple[str, int], Instance] = {}
        self._trees: dict[str, VersionTree] = {}
        self._flights: dict[Any, _Flight] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._open_blobs: dict[str, tuple[BlobFile, int]] = {}
        self._verified_in_place: dict[str, bytearray] = {}
        self._listing: tuple[float, list[Instance]] = (-1.0, [])
        self._ahead: set[tuple[str, int]] = set()
        self._spans_loading = trio.CapacityLimiter(threads.background.total_tokens)  # see `_load_ahead`
        self._passed: dict[str, int] = {}  # open blob → the block a stream of it has read up to
        self._siblings_upto: dict[tuple[VersionTree, int], int] = {}  # (tree, dir) → last node fetched
        self.background: trio.Nursery | None = None  # where read-ahead runs; none: no read-ahead
        # Told (parent inode, name) when a root name stops meaning what the kernel may have
        # cached: an alias moved, a version was deleted (FUSE: invalidate_entry_async).
        self.invalidate: Callable[[int, str], None] | None = None
        self._named: dict[str, int] = {}  # root name → the instance it last resolved to
        self._down_until = 0.0  # until then, fetches fail without asking the store
        self.counters: Counter[str] = Counter()  # loop-thread only; the cache counts its own

    # -- single-flight -----------------------------------------------------------------------
    async def _once(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Run `fn` in a worker thread once per key however many tasks ask at the same time;
        they all get its result or its error."""
        flight = self._flights.get(key)
        if flight is None:
            flight = (await self._fly([key], lambda: {key: fn()}, background=False))[key]
        else:
            await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return flight.data

    async def _fly(
        self, keys: list[Any], fn: Callable[[], dict[Any, Any]], background: bool
    ) -> dict[Any, _Flight]:
        """Run `fn` in a worker thread as the flight of each of `keys` (none in flight yet): it
        returns each key's result, or the exception that key's askers get."""
        flights = {k: _Flight() for k in keys}
        self._flights.update(flights)
        try:
            got = await self.threads.run(fn, background=background)
            for k, f in flights.items():
                f.data = got[k]
                if isinstance(f.data, Exception):
                    f.error = f.data
        except Exception as e:
            for f in flights.values():
                f.error = e
        finally:
            for k, f in flights.items():
                del self._flights[k]
                f.done.set()
        return flights

    async def _ask(self, key: Any, fn: Callable[[], Any]) -> Any:
        """`_once` for anything that asks the store. Once the store was found unreachable (after
        the retries), fail fast for a while: every request would otherwise wait them out again
        (and the kernel repeats a failed read)."""
        if key not in self._flights and time.monotonic() < self._down_until:  # joining one asks nothing
            raise StoreUnavailableError(f"{self.blobs.backend.url} is unreachable (asking again shortly)")
        try:
            return await self._once(key, fn)
        except StoreUnavailableError:
            self._down_until = time.monotonic() + FAIL_FAST
            raise

    # -- the root ----------------------------------------------------------------------------
    def _instance(self, dirname: str, record: VersionRecord) -> Instance:
        inst = self._instance_of.get((dirname, record.number))
        if inst is None:
            inst = Instance(len(self._instances), dirname, record)
            self._instances.append(inst)
            self._instance_of[(dirname, record.number)] = inst
        else:
            inst.record = record  # metadata may have been edited; the manifest cannot change
        if self._named.setdefault(dirname, inst.id) != inst.id:
            self._named[dirname] = inst.id
            self._forget_name(dirname)
        return inst

    def _forget_name(self, dirname: str) -> None:
        """`dirname` names something else now (or nothing): drop what the kernel cached."""
        self.counters["entries_invalidated"] += 1
        if self.invalidate is not None:
            self.invalidate(ROOT_INO, dirname)
            self.invalidate(META_INO, f"{dirname}.json")

    def _read_listing(self) -> list[tuple[str, VersionRecord]]:
        out = []
        for name in self.catalog.artifact_names():
            live = {r.number: r for r in self.catalog.versions(name)}
            out += [(f"{name}:v{n}", r) for n, r in live.items()]
            out += [
                (f"{name}:{a}", live[n]) for a, n in sorted(self.catalog.aliases(name).items()) if n in live
            ]
        return out

    async def _root_entries(self) -> list[Instance]:
        stamp, entries = self._listing
        if time.monotonic() - stamp > ROOT_TIMEOUT:
            try:
                listing = await self._ask("listing", self._read_listing)
            except StoreError as e:
                known = [i for i in (self._instances[n] for n in self._named.values()) if i is not None]
                if not known:
                    raise
                log.warning("store unreachable; listing the %d names known so far: %s", len(known), e)
                self._listing = (time.monotonic(), known)  # ask again after ROOT_TIMEOUT, not now
                return known
            entries = [self._instance(d, r) for d, r in listing]
            for gone in {i.dirname for i in self._listing[1]} - {i.dirname for i in entries}:
                self._named.pop(gone, None)
                self._forget_name(gone)
            self._listing = (time.monotonic(), entries)
        return entries

    def _resolve(self, dirname: str) -> VersionRecord | None:
        if ":" not in dirname:
            return None
        try:
            return self.catalog.resolve(Ref.parse(dirname))
        except (NotFoundError, InvalidInputError):
            return None

    async def _lookup_instance(self, dirname: str) -> Instance | None:
        try:
            record = await self._ask(("resolve", dirname), lambda: self._resolve(dirname))
        except StoreError as e:
            known = self._named.get(dirname)
            if known is None:
                raise
            log.warning("store unreachable; %s still names what it last did: %s", dirname, e)
            return self._instances[known]
        return None if record is None else self._instance(dirname, record)

    # -- inodes ------------------------------------------------------------------------------
    def _split(self, ino: int) -> tuple[Instance, int]:
        inst_id, node = ino >> 32, ino & 0xFFFFFFFF
        inst = self._instances[inst_id] if 0 < inst_id < len(self._instances) else None
        if inst is None:
            raise NotFoundError(f"no inode {ino}")
        return inst, node

    async def _tree(self, inst: Instance) -> VersionTree:
        if inst.tree is None:
            rec = inst.record
            key = rec.tree or rec.manifest
            tree = self._trees.get(key)
            if tree is None:
                load = lambda: VersionTree(version_tree(self.blobs, rec, self.blobs.block_size).manifest())  # noqa: E731
                tree = await self._ask(("tree", key), load)
                self._trees[key] = tree
            inst.tree = tree
        return inst.tree

    def _root_attr(self, ino: int) -> Attr:
        return Attr(ino, DIR, 0o755, 0, self.started_ns, ROOT_TIMEOUT)

    def _meta_file_attr(self, ino: int, size: int = 0) -> Attr:
        """A generated file's attributes; never cached by the kernel, since its content may
        change. Listings carry size 0 (generating every version's JSON for a listing costs too
        much); a stat, which tools such as rsync and tar trust, generates it and has its true
        size. Its mtime is when its content last changed as far as we know (tar checks it)."""
        if ino == MOUNT_JSON_INO:
            mtime = self.started_ns
        elif ino == STATS_JSON_INO:
            mtime = time.time_ns()
        else:
            mtime = self._split(ino)[0].mtime_ns
        return Attr(ino, FILE, 0o444, size, mtime, 0.0)

    async def _meta_attr(self, ino: int) -> Attr:
        return self._meta_file_attr(ino, len(await self._meta_snapshot(ino)))

    async def _meta_snapshot(self, ino: int) -> bytes:
        # counters are copied here, on the loop that changes them; the rest may block
        return await self.threads.run(self._meta_content, ino, dict(self.counters))

    def _node_attr(self, inst: Instance, node: int) -> Attr:
        ino = inst.id << 32 | node
        if node == 0:
            return Attr(ino, DIR, 0o755, 0, inst.mtime_ns, TREE_TIMEOUT)
        assert inst.tree is not None
        e = inst.tree.entries[node]
        if e is None:
            return Attr(ino, DIR, 0o755, 0, inst.mtime_ns, TREE_TIMEOUT)
        if e.kind == LINK:
            return Attr(ino, LINK, 0o777, len(os.fsencode(e.target)), inst.mtime_ns, TREE_TIMEOUT)
        return Attr(ino, FILE, e.mode, e.size, e.mtime, TREE_TIMEOUT)

    async def getattr(self, ino: int) -> Attr:
        if ino in (ROOT_INO, META_INO):
            return self._root_attr(ino)
        if self._is_meta_file(ino):
            return await self._meta_attr(ino)
        inst, node = self._split(ino)
        if node != 0:
            await self._tree(inst)
        return self._node_attr(inst, node)

    @staticmethod
    def _is_meta_file(ino: int) -> bool:
        return ino in (MOUNT_JSON_INO, STATS_JSON_INO) or bool(ino >> 32 and ino & 0xFFFFFFFF == INFO_NODE)

    def negative_timeout(self, parent: int) -> float:
        """How long the kernel may remember that a name does not exist in `parent`."""
        return 0.0 if parent in (ROOT_INO, META_INO) else TREE_TIMEOUT

    async def lookup(self, parent: int, name: str) -> Attr | None:
        if parent == ROOT_INO:
            if name == META_DIR:
                return self._root_attr(META_INO)
            inst = await self._lookup_instance(name)
            return None if inst is None else replace(self._node_attr(inst, 0), timeout=ROOT_TIMEOUT)
        if parent == META_INO:
            if name in ("mount.json", "stats.json"):
                return await self._meta_attr(MOUNT_JSON_INO if name == "mount.json" else STATS_JSON_INO)
            if not name.endswith(".json"):
                return None
            inst = await self._lookup_instance(name.removesuffix(".json"))
            return None if inst is None else await self._meta_attr(inst.id << 32 | INFO_NODE)
        inst, node = self._split(parent)
        tree = await self._tree(inst)
        if name == "..":
            return await self.getattr(ROOT_INO if node == 0 else inst.id << 32 | tree.parents[node])
        child = tree.children.get(node, {}).get(name)
        return None if child is None else self._node_attr(inst, child)

    async def listdir(self, ino: int) -> list[tuple[str, Attr]]:
        """Every entry of a directory with its attributes (taken once per opendir)."""
        if ino == ROOT_INO:
            out = [(META_DIR, self._root_attr(META_INO))]
            return out + [
                (i.dirname, replace(self._node_attr(i, 0), timeout=ROOT_TIMEOUT))
                for i in await self._root_entries()
            ]
        if ino == META_INO:
            files = [
                ("mount.json", self._meta_file_attr(MOUNT_JSON_INO)),
                ("stats.json", self._meta_file_attr(STATS_JSON_INO)),
            ]
            return files + [
                (f"{i.dirname}.json", self._meta_file_attr(i.id << 32 | INFO_NODE))
                for i in await self._root_entries()
            ]
        inst, node = self._split(ino)
        tree = await self._tree(inst)
        children = tree.children.get(node)
        if children is None:
            raise InvalidInputError("not a directory")
        return [(name, self._node_attr(inst, child)) for name, child in children.items()]

    def _entry(self, ino: int) -> Entry:
        inst, node = self._split(ino)
        entry = inst.tree.entries[node] if inst.tree is not None and node != INFO_NODE else None
        if entry is None:
            raise InvalidInputError(f"inode {ino} is not a file or link")
        return entry

    async def readlink(self, ino: int) -> str:
        await self.getattr(ino)
        return self._entry(ino).target

    # -- xattrs ------------------------------------------------------------------------------
    async def xattrs(self, ino: int) -> dict[str, bytes]:
        if ino >> 32 == 0:
            return {}
        inst, node = self._split(ino)
        if node == 0:
            return {
                "user.artfs.version": inst.record.label.encode(),
                "user.artfs.digest": inst.record.digest.encode(),
            }
        if node == INFO_NODE:
            return {}
        tree = await self._tree(inst)
        entry = tree.entries[node]
        if entry is None or entry.kind != FILE:
            return {}
        return {"user.artfs.hash": entry.hash.encode()}

    # -- files -------------------------------------------------------------------------------
    def _add_handle(self, handle: _Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    async def open(self, ino: int) -> Opened:
        if self._is_meta_file(ino):
            data = await self._meta_snapshot(ino)
            return Opened(self._add_handle(_Handle(data=data)), keep_cache=False, direct_io=True)
        inst, node = self._split(ino)
        tree = inst.tree or await self._tree(inst)  # the kernel may open an inode known from before
        entry = self._entry(ino)
        if not entry.size:
            return Opened(self._add_handle(_Handle()), keep_cache=True, direct_io=False)
        if entry.size <= self.blobs.block_size and self.background is not None and not self._local:
            self._fetch_siblings(tree, node)
        blob = self._open_blob(entry)
        ahead = ReadAhead(blob.block_size) if len(blob.verified) > 1 else None  # streams need blocks
        return Opened(self._add_handle(_Handle(blob, ahead=ahead)), keep_cache=True, direct_io=False)

    def _fetch_siblings(self, tree: VersionTree, node: int) -> None:
        """A small file is opened: fetch it and the next small files in its directory that are
        not cached, at the same time, since whoever walks a directory (cp -r, tar, a data
        loader) reads them next. Files side by side in a pack come in one GET per run. The
        window is refilled once the reader is half way through it."""
        key = (tree, tree.parents[node])
        upto = self._siblings_upto.get(key, -1)
        if node + SIBLINGS // 2 <= upto:
            return
        files = [(k, e) for k, e in tree.files_from(node, SIBLINGS) if k > upto]
        if not files:
            return
        self._siblings_upto[key] = files[-1][0]
        todo = []
        for _, e in files:
            if 0 < e.size <= self.blobs.block_size and not self._fetching(e.hash, 0):
                blob = self._open_blob(e)
                if not blob.verified[0] and not blob.local(0):
                    todo.append(e)
                self._close_blob(e.hash)
        opened = tree.entries[node]
        for span in self.blobs.spans((e, 0) for e in todo):
            self.counters["pack_runs_fetched"] += len(span) > 1
            self.counters["files_fetched_ahead"] += sum(e is not opened for e, _ in span)
            self._fetch_ahead([(self._open_blob(e), 0) for e, _ in span])

    def _open_blob(self, entry: Entry) -> BlobFile:
        """The shared BlobFile of `entry`'s content, with one more user (see `_close_blob`)."""
        held = self._open_blobs.get(entry.hash)
        if held is not None:
            blob, users = held
        else:
            path = self.blobs.local_path(entry) if self.in_place else None
            if path is not None:
                verified = self._verified_in_place.get(entry.hash)
                blob = InPlaceBlob(entry, self.blobs.block_size, path, verified)
                self._verified_in_place[entry.hash] = blob.verified
            else:
                blob = self.cache.open(entry, functools.partial(self.blobs.read_block, entry))
            users = 0
        self._open_blobs[entry.hash] = (blob, users + 1)
        return blob

    async def read(self, fh: int, offset: int, size: int) -> Buffer:
        """Verified bytes only. Blocks verified before are served inline; a block on local disk is
        verified inline (hashing a block in the page cache costs less than a thread hop); a block
        that must be fetched is, once however many readers wait, in a worker thread."""
        handle = self._handles[fh]
        if handle.data is not None:
            return handle.data[offset : offset + size]
        self.counters["read_requests"] += 1
        blob = handle.blob
        if blob is None:
            return b""
        if handle.ahead is not None and self.background is not None and size:
            self._read_ahead(handle, blob, offset, size)
        loaded: dict[int, Buffer] = {}
        for i in blob.blocks_of(offset, size):
            if blob.verified[i]:
                continue
            # being fetched or verified ahead: wait for that; else it may be on disk
            data = None if (blob.entry.hash, i) in self._flights else blob.load_local(i)
            if data is None:
                if handle.ahead is not None and handle.ahead.random_miss():
                    self._fetch_whole(blob, but=i)
                data = await self._fetch(blob, i)
            self.counters["blocks_verified"] += 1
            self.counters["bytes_verified"] += len(data)
            loaded[i] = data
        served = blob.read(offset, size, loaded)
        if handle.ahead is not None and handle.ahead.window:
            self._stream_read(blob, offset, offset + size)
        return served

    def _stream_read(self, blob: BlobFile, offset: int, end: int) -> None:
        """A stream has read `offset`..`end`. Blocks it has read past leave the daemon's memory
        once they are on disk (the kernel keeps what was read): here if they are, else when
        they get there (`_keep`). Memory is then left to the blocks on their way to a reader,
        and a long stream reuses its buffers (fresh pages are what a cold read would otherwise
        spend much time on)."""
        h, bs = blob.entry.hash, blob.block_size
        self._passed[h] = max(self._passed.get(h, 0), end // bs)
        for i in range(offset // bs, end // bs):
            if blob.local(i):
                self.cache.forget(h, i)

    async def _fetch(self, blob: BlobFile, index: int) -> Buffer:
        """A block from the store. The reader gets it before it is written to the cache, which
        happens in the background (meanwhile the block is served from memory)."""
        key = (blob.entry.hash, index)
        if self.background is None:
            data: Buffer = await self._ask(key, functools.partial(blob.fetch, index))
            return data
        starts = key not in self._flights  # else it joins the flight of a reader or of read-ahead
        fetched: Buffer = await self._ask(key, functools.partial(blob.fetch_to_memory, index))
        if starts:
            self._ahead.add(key)  # on its way to disk: not to be fetched again
            self._open_blob(blob.entry)
            self.background.start_soon(self._keep_behind, blob, index, fetched)
        return fetched

    async def _keep_behind(self, blob: BlobFile, index: int, data: Buffer) -> None:
        try:
            await self._keep([(blob, index, data)])
        finally:
            self._ahead.discard((blob.entry.hash, index))
            self._close_blob(blob.entry.hash)

    async def _keep(self, blocks: list[tuple[BlobFile, int, Buffer]]) -> None:
        """Write blocks fetched to memory (`fetch_to_memory`, `take`) to the cache, in a worker
        thread, after their readers got them. A block that cannot be written stays served from
        memory for a while, then is fetched again."""
        if not blocks:
            return

        def keep() -> None:
            for blob, i, data in blocks:
                try:
                    blob.keep(i, data)
                except Exception as e:
                    log.warning("cannot write block %d of blob %s to the cache: %s", i, blob.entry.hash, e)

        with trio.CancelScope(shield=True):  # unmounting waits for blocks on their way to disk
            await self.threads.run(keep, background=True)
        for blob, i, _ in blocks:
            if i < self._passed.get(blob.entry.hash, 0) and blob.local(i):
                self.cache.forget(blob.entry.hash, i)  # a stream has read past it (`_stream_read`)

    def _read_ahead(self, handle: _Handle, blob: BlobFile, offset: int, size: int) -> None:
        """Fetch the blocks the read-ahead window holds and nobody fetches yet, to the end of
        the aligned span (see `BlobStore.spans`) the window ends in: a stream then costs one
        GET per span, each on the store's part boundaries, however its reads fall."""
        assert self.background is not None and handle.ahead is not None
        bs = blob.block_size
        last = (min(offset + size, blob.entry.size) - 1) // bs
        window = handle.ahead.advise(offset // bs, last, len(blob.verified))
        span = SPAN_BYTES // bs
        if window:
            end = min(len(blob.verified), -(-window.stop // span) * span)
            self._fetch_blocks(blob, self._missing(blob, range(window.start, end)), "blocks_read_ahead")
        h = blob.entry.hash
        on_disk = [i for i in window if not blob.verified[i] and blob.local(i) and (h, i) not in self._ahead]
        for k in range(0, len(on_disk), span):
            self._verify_ahead(blob, on_disk[k : k + span])

    def _verify_ahead(self, blob: BlobFile, indices: list[int]) -> None:
        """Read and verify blocks that are on local disk in a worker thread, ahead of a reader:
        it then finds them in the page cache instead of waiting for the disk on the loop."""
        assert self.background is not None
        self._ahead.update((blob.entry.hash, i) for i in indices)
        self._open_blob(blob.entry)
        self.background.start_soon(self._load_verified, blob, indices)

    async def _load_verified(self, blob: BlobFile, indices: list[int]) -> None:
        h = blob.entry.hash
        todo = [i for i in indices if (h, i) not in self._flights]

        def verify() -> dict[tuple[str, int], Any]:
            out: dict[tuple[str, int], Any] = {}
            for i in todo:  # a block that fails its check is dropped, and fetched again here
                try:
                    data = blob.load_local(i)
                    out[h, i] = data if data is not None else blob.fetch(i)
                except Exception as e:
                    out[h, i] = e
            return out

        try:
            await self._fly([(h, i) for i in todo], verify, background=True)
            self.counters["blocks_verified_ahead"] += len(todo)
        finally:
            self._ahead.difference_update((h, i) for i in indices)
            self._close_blob(h)

    def _fetch_whole(self, blob: BlobFile, but: int) -> None:
        """A random reader: fetch every other block of the blob it lacks, in parallel, if the
        blob takes at most a quarter of the cache (else it would only push out other blobs)."""
        if self.background is not None and blob.entry.size <= self.cache.budget // 4:
            others = (i for i in range(len(blob.verified)) if i != but)
            self._fetch_blocks(blob, self._missing(blob, others), "blocks_fetched_whole")

    def _missing(self, blob: BlobFile, indices: Iterable[int]) -> list[int]:
        """Those of these blocks that are nowhere yet, nor on their way (see `_still_missing`)."""
        h = blob.entry.hash
        return [i for i in indices if (h, i) not in self._ahead and self._still_missing(blob, i)]

    def _fetch_blocks(self, blob: BlobFile, indices: list[int], counter: str) -> None:
        """Fetch these blocks in the background, a span of neighbours per GET."""
        for span in self.blobs.spans([(blob.entry, i) for i in indices]):
            self.counters[counter] += len(span)
            self._fetch_ahead([(self._open_blob(blob.entry), i) for _, i in span])

    def _fetching(self, content_hash: str, index: int) -> bool:
        key = (content_hash, index)
        return key in self._flights or key in self._ahead

    def _fetch_ahead(self, pieces: list[tuple[BlobFile, int]]) -> None:
        """Fetch blocks in the background with one GET (`pieces` make a span). Each piece comes
        with a user of its blob (from `_open_blob`), released when the load ends."""
        assert self.background is not None
        self._ahead.update((b.entry.hash, i) for b, i in pieces)
        self.background.start_soon(self._load_ahead, pieces)

    async def _load_ahead(self, pieces: list[tuple[BlobFile, int]]) -> None:
        """Blocks become flights (which readers wait for) only once their GET can start: a
        reader that needs a block still queued behind other spans (a whole blob coming for a
        random reader, say) fetches it on its own instead of waiting for the queue."""
        try:
            async with self._spans_loading:
                # A reader may have fetched some of them meanwhile, or be fetching them: left out.
                todo = [(b, i) for b, i in pieces if self._still_missing(b, i)]
                blob_of = {(b.entry.hash, i): b for b, i in todo}
                for span in self.blobs.spans([(b.entry, i) for b, i in todo]):
                    part = [(blob_of[e.hash, i], i) for e, i in span]
                    part = [(b, i) for b, i in part if self._still_missing(b, i)]  # again, after an await
                    if part and time.monotonic() >= self._down_until:
                        await self._load_span(part)
        finally:
            for b, i in pieces:
                self._ahead.discard((b.entry.hash, i))
                self._close_blob(b.entry.hash)

    async def _load_span(self, part: list[tuple[BlobFile, int]]) -> None:
        self.counters["gets_ahead"] += 1
        keys = [(b.entry.hash, i) for b, i in part]
        flights = await self._fly(keys, functools.partial(self._fetch_span, part), background=True)
        for k, f in flights.items():  # the reader gets the error if it reaches this block
            if f.error is not None:
                log.debug("fetching block %d of blob %s ahead: %s", k[1], k[0], f.error)
                if isinstance(f.error, StoreUnavailableError):
                    self._down_until = time.monotonic() + FAIL_FAST
        await self._keep(
            [(b, i, flights[b.entry.hash, i].data) for b, i in part if flights[b.entry.hash, i].error is None]
        )

    def _still_missing(self, blob: BlobFile, index: int) -> bool:
        """Neither verified, on disk, in memory nor being fetched (a block queued to be fetched
        ahead is still missing: see `_load_ahead`)."""
        h = blob.entry.hash
        return (
            (h, index) not in self._flights
            and not blob.verified[index]
            and not blob.local(index)
            and self.cache.recall(h, index) is None
        )

    def _fetch_span(self, pieces: list[tuple[BlobFile, int]]) -> dict[tuple[str, int], Any]:
        """In a worker thread: one GET for the span, each block verified and taken by its blob
        (the caller keeps them). A block that failed its check is fetched on its own, which
        reports the error."""
        got = self.blobs.read_span([(b.entry, i) for b, i in pieces])
        out: dict[tuple[str, int], Any] = {}
        for blob, i in pieces:
            key = (blob.entry.hash, i)
            try:
                data = got.get(key)
                if data is None:
                    out[key] = blob.fetch_to_memory(i)
                else:
                    blob.take(i, data)
                    out[key] = data
            except Exception as e:
                out[key] = e
        return out

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.blob is not None:
            self._close_blob(handle.blob.entry.hash)

    def _close_blob(self, h: str) -> None:
        blob, users = self._open_blobs[h]
        if users > 1:
            self._open_blobs[h] = (blob, users - 1)
        else:
            del self._open_blobs[h]
            self._passed.pop(h, None)
            blob.close()

    def close(self) -> None:
        for blob, _ in self._open_blobs.values():
            blob.close()
        self._open_blobs.clear()
        self._handles.clear()

    # -- generated files ---------------------------------------------------------------------
    def stats(self, counters: dict[str, int]) -> dict[str, Any]:
        return {
            **self.cache.counters(),
            **counters,
            "open_files": len(self._handles),
            "open_blobs": len(self._open_blobs),
            "versions_loaded": len(self._trees),
            "cache_usage": self.cache.usage(),
            "cache_memory": self.cache.memory(),
            "cache_budget": self.cache.budget,
        }

    def _meta_content(self, ino: int, counters: dict[str, int]) -> bytes:
        if ino == MOUNT_JSON_INO:
            doc: Any = {**self.info, "pid": os.getpid(), "artfs": __version__}
        elif ino == STATS_JSON_INO:
            doc = self.stats(counters)
        else:
            inst, _ = self._split(ino)
            doc = {**inst.record.to_dict(), "dir": inst.dirname}
            tree = inst.tree or self._trees.get(inst.record.tree or inst.record.manifest)
            rec = inst.record
            manifest = (
                tree.manifest if tree else version_tree(self.blobs, rec, self.blobs.block_size).manifest()
            )
            doc["entries"] = [e.to_dict() for e in manifest]
        return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
