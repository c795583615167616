"""The read-only view of a store, with no FUSE in sight (`fuse_ops` serves it):

    /                         a directory per version (`name:vN`) and per alias (`name:latest`)
    /name:ref/…               the version's tree, loaded a directory at a time
    /.artfs/mount.json        this mount: store, cache, pid          (generated on each stat
    /.artfs/stats.json        fetch and cache counters                 and open, with their size)
    /.artfs/name:ref.json     a version's record

Inodes (namespace.py): space 0 is the top (ROOT_INO, META_INO and the two files below it).
Every directory that names a version is an *instance* with a space of its own: node 0 is its
root, INFO_NODE its `.artfs/<name>.json`, the rest are the tree's nodes (tree.Nodes). `name:v3`
and `name:latest` are different instances of one version (they share its tree objects): a
directory may have one name only, and a file opened through `name:latest` keeps its inode, and
so its version, when the alias moves.

Memory follows what the kernel holds: an instance keeps its tree loaded while the kernel refers
to anything in it (lookup counts; `forget`), then lets it go, keeping only its record.

Version trees are immutable, so their attributes may be cached by the kernel for long
(`TREE_TIMEOUT`); top entries can change (new versions, moved aliases) and live `ROOT_TIMEOUT`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._version import __version__
from .blobs import BlobStore
from .cache import BlockCache
from .catalog import Catalog, VersionRecord
from .errors import InvalidInputError, InvalidPathError, NotFoundError, StoreError
from .manifest import Entry
from .names import Ref
from .namespace import DIR, FILE, LINK, NODE_MASK, ROOT_INO, Attr, Buffer, Opened, inode, split
from .reader import BlockReader, Stream
from .tree import Nodes, Tree, version_tree

log = logging.getLogger(__name__)

ROOT_TIMEOUT = 1.0
TREE_TIMEOUT = 24 * 3600.0
SIBLINGS = 64  # small files fetched along with one that is opened (refilled when half are read)
META_INO, MOUNT_JSON_INO, STATS_JSON_INO = 2, 3, 4
META_DIR = ".artfs"
INFO_NODE = NODE_MASK  # the node of an instance that is its `.artfs/<dir>.json`


@dataclass
class Instance:
    """A top directory naming a version: `name:v3`, or `name:latest` while it named v3."""

    space: int
    dirname: str
    name: str
    number: int
    mtime_ns: int  # when the version was made, as first known (every directory carries it)
    record: VersionRecord | None = None  # read when first needed (a listing reads none)
    nodes: Nodes | None = None  # the tree, while anything in it is referenced
    refs: int = 0  # the kernel's references to its root directory
    info_refs: int = 0  # … and to its .artfs file
    siblings_upto: dict[int, int] = field(default_factory=dict)  # dir node → last node prefetched


@dataclass
class _Handle:
    stream: Stream | None = None
    data: bytes | None = None
    space: int = 0  # the instance it was opened in (kept while it is open)


def _ns(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1e9)
    except ValueError:
        return 0


class VersionsView:
    """The store as a read-only tree (see the module docstring). Raises domain errors."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        cache: BlockCache,
        reader: BlockReader,
        invalidate: Callable[[int, str], None],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.cache = cache
        self.reader = reader
        self.invalidate = invalidate  # (parent inode, name) the kernel may have cached wrongly now
        self.info = dict(info or {})
        self.started_ns = time.time_ns()
        self._instances: list[Instance | None] = [None]
        self._instance_of: dict[tuple[str, int], Instance] = {}
        self._named: dict[str, int] = {}  # top name → the instance space it last resolved to
        self._listing: tuple[float, list[Instance]] = (-1.0, [])
        self._trees: weakref.WeakValueDictionary[str, Tree] = weakref.WeakValueDictionary()
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1

    # -- the top -----------------------------------------------------------------------------
    def _instance(
        self, dirname: str, name: str, number: int, mtime_ns: int, record: VersionRecord | None = None
    ) -> Instance:
        inst = self._instance_of.get((dirname, number))
        if inst is None:
            inst = Instance(len(self._instances), dirname, name, number, mtime_ns, record)
            self._instances.append(inst)
            self._instance_of[(dirname, number)] = inst
        elif record is not None:
            inst.record = record  # metadata may have been edited; the tree cannot change
        if self._named.setdefault(dirname, inst.space) != inst.space:
            self._named[dirname] = inst.space
            self._forget_name(dirname)
        return inst

    def _forget_name(self, dirname: str) -> None:
        """`dirname` names something else now (or nothing): drop what the kernel cached."""
        self.reader.counters["entries_invalidated"] += 1
        self.invalidate(ROOT_INO, dirname)
        self.invalidate(META_INO, f"{dirname}.json")

    async def _top(self) -> list[Instance]:
        stamp, entries = self._listing
        if time.monotonic() - stamp > ROOT_TIMEOUT:
            try:
                listing = await self.reader.ask("listing", self.catalog.listing)
            except StoreError as e:
                known = [i for i in (self._instances[n] for n in self._named.values()) if i is not None]
                if not known:
                    raise
                log.warning("store unreachable; listing the %d names known so far: %s", len(known), e)
                self._listing = (time.monotonic(), known)  # ask again after ROOT_TIMEOUT, not now
                return known
            entries = [self._instance(t.dirname, t.name, t.number, int(t.modified * 1e9)) for t in listing]
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
            record = await self.reader.ask(("resolve", dirname), lambda: self._resolve(dirname))
        except StoreError as e:
            known = self._named.get(dirname)
            if known is None:
                raise
            log.warning("store unreachable; %s still names what it last did: %s", dirname, e)
            return self._instances[known]
        if record is None:
            return None
        return self._instance(dirname, record.name, record.number, _ns(record.created_at), record)

    async def _record(self, inst: Instance) -> VersionRecord:
        if inst.record is None:
            read = functools.partial(self.catalog.read, inst.name, inst.number)
            inst.record = (await self.reader.ask(("record", inst.name, inst.number), read))[0]
        return inst.record

    # -- trees -------------------------------------------------------------------------------
    def _split(self, ino: int) -> tuple[Instance, int]:
        space, node = split(ino)
        inst = self._instances[space] if 0 < space < len(self._instances) else None
        if inst is None:
            raise NotFoundError(f"no inode {ino}")
        return inst, node

    async def _nodes(self, inst: Instance) -> Nodes:
        if inst.nodes is None:
            rec = await self._record(inst)
            key = rec.tree or rec.manifest
            tree = self._trees.get(key)
            if tree is None:
                load = functools.partial(version_tree, self.blobs, rec, self.blobs.block_size)
                # a format-2 tree starts from its record alone; a format-1 one reads its manifest
                tree = load() if rec.tree else await self.reader.ask(("version", key), load)
                self._trees[key] = tree
            inst.nodes = inst.nodes or Nodes(tree)  # another task may have made it meanwhile
        return inst.nodes

    async def _ready(self, nodes: Nodes, node: int, name: str | None = None) -> None:
        """Fetch the tree objects an answer about `node` needs (in worker threads, once)."""
        while keys := nodes.needs(node, name):
            for key in keys:
                await self.reader.ask(("tree", key), functools.partial(self.blobs.get_tree, key))

    def _node_known(self, inst: Instance, node: int) -> Nodes:
        if inst.nodes is None or not inst.nodes.known(node):
            raise NotFoundError(f"no inode {inode(inst.space, node)} (forgotten)")
        return inst.nodes

    def _drop_if_idle(self, inst: Instance) -> None:
        """Let an instance's tree go once the kernel refers to nothing in it."""
        idle = inst.nodes is not None and not inst.refs and inst.nodes.idle
        if idle and not any(h.space == inst.space for h in self._handles.values()):
            inst.nodes = None
            inst.siblings_upto.clear()

    # -- attributes --------------------------------------------------------------------------
    def _top_attr(self, ino: int) -> Attr:
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
        if ino >> 32:
            await self._record(self._split(ino)[0])
        # counters are copied here, on the loop that changes them; the rest may block
        return await self.reader.threads.run(self._meta_content, ino, dict(self.reader.counters))

    @staticmethod
    def _is_meta_file(ino: int) -> bool:
        return ino in (MOUNT_JSON_INO, STATS_JSON_INO) or bool(ino >> 32 and ino & NODE_MASK == INFO_NODE)

    def _attr(self, inst: Instance, node: int, e: Entry) -> Attr:
        ino = inode(inst.space, node)
        if e.kind == DIR:
            return Attr(ino, DIR, 0o755, 0, inst.mtime_ns, TREE_TIMEOUT)
        if e.kind == LINK:
            return Attr(ino, LINK, 0o777, len(os.fsencode(e.target)), inst.mtime_ns, TREE_TIMEOUT)
        return Attr(ino, FILE, e.mode, e.size, e.mtime, TREE_TIMEOUT)

    def _root_attr(self, inst: Instance, timeout: float = TREE_TIMEOUT) -> Attr:
        return Attr(inode(inst.space, 0), DIR, 0o755, 0, inst.mtime_ns, timeout)

    async def getattr(self, ino: int) -> Attr:
        if ino in (ROOT_INO, META_INO):
            return self._top_attr(ino)
        if self._is_meta_file(ino):
            return await self._meta_attr(ino)
        inst, node = self._split(ino)
        if node == 0:
            return self._root_attr(inst)
        nodes = self._node_known(inst, node)
        return self._attr(inst, node, nodes.entry(node))

    def negative_timeout(self, parent: int) -> float:
        """How long the kernel may remember that a name does not exist in `parent`."""
        return 0.0 if parent in (ROOT_INO, META_INO) else TREE_TIMEOUT

    async def lookup(self, parent: int, name: str) -> Attr | None:
        if parent == ROOT_INO:
            if name == META_DIR:
                return self._top_attr(META_INO)
            inst = await self._lookup_instance(name)
            if inst is None:
                return None
            inst.refs += 1
            return self._root_attr(inst, ROOT_TIMEOUT)
        if parent == META_INO:
            if name in ("mount.json", "stats.json"):
                return await self._meta_attr(MOUNT_JSON_INO if name == "mount.json" else STATS_JSON_INO)
            if not name.endswith(".json"):
                return None
            inst = await self._lookup_instance(name.removesuffix(".json"))
            if inst is None:
                return None
            inst.info_refs += 1
            return await self._meta_attr(inode(inst.space, INFO_NODE))
        inst, node = self._split(parent)
        if name == "..":
            return self._top_attr(ROOT_INO) if node == 0 else await self.getattr(parent)
        nodes = await self._nodes(inst)
        try:
            await self._ready(nodes, node, name)
            found = nodes.lookup(node, name)
        except InvalidPathError:  # not a directory (the kernel does not ask that; a bug would)
            return None
        if found is None:
            return None
        child, entry = found
        nodes.ref(child)
        return self._attr(inst, child, entry)

    async def listdir(self, ino: int) -> Sequence[tuple[str, Attr]]:
        """Every entry of a directory with its attributes (taken once per opendir)."""
        if ino == ROOT_INO:
            top = [(META_DIR, self._top_attr(META_INO))]
            return top + [(i.dirname, self._root_attr(i, ROOT_TIMEOUT)) for i in await self._top()]
        if ino == META_INO:
            files = [
                ("mount.json", self._meta_file_attr(MOUNT_JSON_INO)),
                ("stats.json", self._meta_file_attr(STATS_JSON_INO)),
            ]
            return files + [
                (f"{i.dirname}.json", self._meta_file_attr(inode(i.space, INFO_NODE)))
                for i in await self._top()
            ]
        inst, node = self._split(ino)
        nodes = await self._nodes(inst)
        await self._ready(nodes, node)
        try:
            children = nodes.children(node)
        except InvalidPathError:
            raise InvalidInputError("not a directory") from None
        return [(e.name, self._attr(inst, child, e)) for child, e in children]

    def referenced(self, ino: int) -> None:
        space, node = split(ino)
        if space == 0:
            return
        inst = self._instances[space]
        assert inst is not None
        if node == 0:
            inst.refs += 1
        elif node == INFO_NODE:
            inst.info_refs += 1
        elif inst.nodes is not None:
            inst.nodes.ref(node)

    def forget(self, ino: int, count: int) -> None:
        space, node = split(ino)
        inst = self._instances[space] if 0 < space < len(self._instances) else None
        if inst is None:
            return
        if node == 0:
            inst.refs = max(0, inst.refs - count)
        elif node == INFO_NODE:
            inst.info_refs = max(0, inst.info_refs - count)
        elif inst.nodes is not None:
            inst.nodes.forget(node, count)
        self._drop_if_idle(inst)

    async def readlink(self, ino: int) -> str:
        inst, node = self._split(ino)
        return self._node_known(inst, node).entry(node).target

    # -- xattrs ------------------------------------------------------------------------------
    async def xattrs(self, ino: int) -> dict[str, bytes]:
        if ino >> 32 == 0:
            return {}
        inst, node = self._split(ino)
        if node == 0:
            record = await self._record(inst)
            return {"user.artfs.version": record.label.encode(), "user.artfs.digest": record.digest.encode()}
        if node == INFO_NODE:
            return {}
        entry = self._node_known(inst, node).entry(node)
        if entry.kind != FILE:
            return {}
        attrs = {"user.artfs.hash": entry.hash.encode()}
        if entry.source:  # a reference: where its bytes are, and what pins them
            attrs["user.artfs.source"], attrs["user.artfs.pin"] = entry.source.encode(), entry.pin.encode()
            attrs["user.artfs.weak"] = b"1" if entry.weak else b"0"
        return attrs

    # -- files -------------------------------------------------------------------------------
    def _add_handle(self, handle: _Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    async def open(self, ino: int, flags: int = os.O_RDONLY) -> Opened:
        if self._is_meta_file(ino):
            data = await self._meta_snapshot(ino)
            return Opened(self._add_handle(_Handle(data=data)), keep_cache=False, direct_io=True)
        inst, node = self._split(ino)
        nodes = self._node_known(inst, node)
        entry = nodes.entry(node)
        if entry.kind != FILE:
            raise InvalidInputError(f"inode {ino} is not a file")
        if not entry.size:
            return Opened(self._add_handle(_Handle(space=inst.space)), keep_cache=True, direct_io=False)
        if entry.size <= self.blobs.block_size:
            self._fetch_siblings(inst, nodes, node, entry)
        stream = self.reader.open(entry)
        return Opened(self._add_handle(_Handle(stream, space=inst.space)), keep_cache=True, direct_io=False)

    def _fetch_siblings(self, inst: Instance, nodes: Nodes, node: int, entry: Entry) -> None:
        """A small file is opened: fetch it and the next small files of its directory along,
        since whoever walks a directory (cp -r, tar, a data loader) reads them next. The window
        is refilled once the reader is half way through it."""
        parent = nodes.parent(node)
        upto = inst.siblings_upto.get(parent, -1)
        if node + SIBLINGS // 2 <= upto:
            return
        after = [e for e in nodes.after(node, SIBLINGS - 1) if e.kind == FILE]
        inst.siblings_upto[parent] = node + SIBLINGS - 1
        self.reader.prefetch_small(entry, [entry, *after])

    async def read(self, fh: int, offset: int, size: int) -> Buffer:
        handle = self._handles[fh]
        if handle.data is not None:
            return handle.data[offset : offset + size]
        if handle.stream is None:
            return b""
        return await self.reader.read(handle.stream, offset, size)

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.stream is not None:
            self.reader.close(handle.stream)
        inst = self._instances[handle.space] if handle.space else None
        if inst is not None:
            self._drop_if_idle(inst)

    def close(self) -> None:
        self.reader.close_all()
        self._handles.clear()

    # -- generated files ---------------------------------------------------------------------
    def stats(self, counters: dict[str, int]) -> dict[str, Any]:
        loaded = [i.nodes for i in self._instances if i is not None and i.nodes is not None]
        return {
            **self.cache.counters(),
            **counters,
            "open_files": len(self._handles),
            "open_blobs": self.reader.open_blobs(),
            "versions_loaded": len(loaded),
            "directories_loaded": sum(n.loaded_dirs() for n in loaded),
            "tree_bytes_loaded": sum(n.loaded_bytes() for n in loaded),
            "tree_objects_read": self.blobs.objects_read,
            "tree_bytes_read": self.blobs.object_bytes_read,
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
            assert inst.record is not None, "read by _meta_snapshot"
            doc = {**inst.record.to_dict(), "dir": inst.dirname}
        return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
