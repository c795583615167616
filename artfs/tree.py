"""A version's tree, loaded a directory (a page of a big one) at a time.

`Tree` answers `lookup(path)`, `listdir(path)` and `walk()` and loads only the tree objects they
touch: a stat in a flat directory of 100,000 files loads its index and one page, a walk holds
one directory per level. A format-1 version (one manifest) is presented as the same tree, its
directories' digests computed as format 2 would, so versions of either format compare by
subtree.

A `Listing` is one page of a directory's children in name order. A page read from a store is
kept as its raw lines, about a hundred bytes per child, parsed when a child is asked for: the
mount keeps what the kernel knows of millions of entries in a few hundred MB (see `Nodes`).

Loading reads the store (blocking): the mount asks `ready(...)` first and loads in a worker
thread when it must.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import xxhash

from .catalog import VersionRecord
from .errors import CorruptDataError, InvalidPathError
from .manifest import (
    EMPTY_DIGEST,
    ChunkSource,
    Difference,
    Entry,
    Manifest,
    Page,
    decode_line,
    line_name,
    parse_tree,
)


class TreeSource(ChunkSource, Protocol):
    """Where tree objects come from (BlobStore): read and checked against their key."""

    def get_tree(self, key: str) -> bytes: ...
    def has_tree(self, key: str) -> bool: ...


class Listing:
    """One page of a directory's children, in name order."""

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def entry(self, i: int) -> Entry:
        raise NotImplementedError

    def find(self, name: str) -> int | None:
        """The index of `name`, or None (a binary search: names are sorted)."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.name(mid) < name:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self) and self.name(lo) == name else None

    def entries(self) -> list[Entry]:
        return [self.entry(i) for i in range(len(self))]


class RawListing(Listing):
    """A tree object's lines, kept raw (`offsets` says where each starts)."""

    __slots__ = ("block_size", "chunks", "data", "offsets", "parent")

    def __init__(self, parent: str, lines: Sequence[bytes], chunks: ChunkSource, block_size: int) -> None:
        self.parent = parent
        self.chunks = chunks
        self.block_size = block_size
        self.data = b"\n".join(lines)
        self.offsets = array("I")
        at = 0
        for line in lines:
            self.offsets.append(at)
            at += len(line) + 1
        names = [self.name(i) for i in range(len(self))]
        if any(a >= b for a, b in itertools.pairwise(names)):
            raise CorruptDataError(f"tree object of {self.parent or '/'!r}: names out of order or repeated")

    def __len__(self) -> int:
        return len(self.offsets)

    def _line(self, i: int) -> bytes:
        end = self.offsets[i + 1] - 1 if i + 1 < len(self.offsets) else len(self.data)
        return self.data[self.offsets[i] : end]

    def name(self, i: int) -> str:
        return line_name(self._line(i))

    def entry(self, i: int) -> Entry:
        return decode_line(self._line(i), self.parent, self.chunks, self.block_size)


class EntryListing(Listing):
    """Children held as entries (a format-1 version's, built from its manifest)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Entry]) -> None:
        self.items = sorted(items, key=lambda e: e.name)

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        return self.items[i].name

    def entry(self, i: int) -> Entry:
        return self.items[i]


@dataclass
class _Slot:
    page: Page
    start: int  # index of its first child in the directory
    listing: Listing | None = None


class Directory:
    """A directory's children over one or more pages, each loaded when first needed."""

    def __init__(self, tree: Tree, path: str, slots: list[_Slot]) -> None:
        self.tree = tree
        self.path = path
        self.slots = slots
        self.starts = [s.start for s in slots]

    def __len__(self) -> int:
        last = self.slots[-1] if self.slots else None
        return last.start + last.page.count if last else 0

    def _slot_of_name(self, name: str) -> _Slot | None:
        i = bisect.bisect_right([s.page.first for s in self.slots], name) - 1
        return self.slots[i] if i >= 0 else None

    def needs(self, name: str | None = None) -> list[str]:
        """The pages `find(name)` (`children()`, for None) would read from the store."""
        slots = self.slots if name is None else [s for s in [self._slot_of_name(name)] if s is not None]
        return [s.page.key for s in slots if s.listing is None and not self.tree.source.has_tree(s.page.key)]

    def _listing(self, slot: _Slot) -> Listing:
        if slot.listing is None:
            listing = self.tree.page_listing(self.path, slot.page.key)
            if len(listing) != slot.page.count or (len(listing) and listing.name(0) != slot.page.first):
                raise CorruptDataError(
                    f"page {slot.page.key} of {self.path or '/'!r} is not what its index says"
                )
            slot.listing = listing
        return slot.listing

    def find(self, name: str) -> int | None:
        """The index of child `name` in the directory, or None (loads its page)."""
        slot = self._slot_of_name(name)
        if slot is None:
            return None
        i = self._listing(slot).find(name)
        return None if i is None else slot.start + i

    def ready_at(self, index: int) -> bool:
        """Whether child `index`'s page is in memory."""
        return self.slots[bisect.bisect_right(self.starts, index) - 1].listing is not None

    def entry(self, index: int) -> Entry:
        """Child `index` (its page must have been loaded: by `find` or `children`)."""
        slot = self.slots[bisect.bisect_right(self.starts, index) - 1]
        return self._listing(slot).entry(index - slot.start)

    def children(self) -> list[Entry]:
        return [e for s in self.slots for e in self._listing(s).entries()]

    def loaded_bytes(self) -> int:
        return sum(len(s.listing.data) for s in self.slots if isinstance(s.listing, RawListing))


class Tree:
    """A version's tree (see the module docstring). Thread-safe for loading."""

    def __init__(self, source: TreeSource, root: Entry, block_size: int) -> None:
        self.source = source
        self.root = root  # the root directory: path ""
        self.block_size = block_size
        self._format1: dict[str, EntryListing] | None = None

    @classmethod
    def of_version(
        cls, source: TreeSource, key: str, digest: str, size: int, files: int, block_size: int
    ) -> Tree:
        return cls(source, _root_entry(key, digest, size, files), block_size)

    @classmethod
    def of_manifest(cls, source: TreeSource, manifest: Manifest) -> Tree:
        """A format-1 version as a tree; its directories get the digests format 2 gives them."""
        by_dir: dict[str, list[Entry]] = {"": []}
        for e in manifest:
            if e.kind == "dir":
                by_dir.setdefault(e.path, [])
            parent = e.path.rpartition("/")[0]
            while parent not in by_dir:
                by_dir[parent] = []
                parent = parent.rpartition("/")[0]
        for e in manifest:
            if e.kind != "dir":
                by_dir[e.path.rpartition("/")[0]].append(e)
        totals: dict[str, tuple[str, int, int]] = {}
        for path in sorted(by_dir, key=lambda p: p.count("/") if p else -1, reverse=True):
            children = by_dir[path]
            digest = xxhash.xxh3_128()
            for child in sorted(children, key=lambda e: e.name):
                digest.update(child.tree_identity())
            size = sum(c.size for c in children)
            files = sum(c.files if c.kind == "dir" else c.kind == "file" for c in children)
            totals[path] = (digest.hexdigest(), size, files)
            if path:
                d, s, f = totals[path]
                by_dir[path.rpartition("/")[0]].append(Entry(path, "dir", s, 0o755, digest=d, files=f))
        tree = cls(source, _root_entry("", *totals[""]), manifest.block_size)
        tree._format1 = {path: EntryListing(children) for path, children in by_dir.items()}
        return tree

    # -- directories -------------------------------------------------------------------------
    def directory(self, entry: Entry) -> Directory:
        """The directory a "dir" entry (or `root`) names. Loads its object (an index, or its one
        page): blocking, unless the object is in memory."""
        path = entry.path
        if self._format1 is not None:
            held = self._format1.get(path)
            if held is None:
                raise CorruptDataError(f"{path!r} is not a directory of this version")
            return self._single(path, "", held)
        if not entry.tree:
            return Directory(self, path, [])  # a format-2 directory always has a tree: this is the empty one
        pages, lines = parse_tree(self.source.get_tree(entry.tree))
        if pages is None:
            return self._single(path, entry.tree, RawListing(path, lines, self.source, self.block_size))
        slots: list[_Slot] = []
        start = 0
        for page in pages:
            if slots and page.first <= slots[-1].page.first:
                raise CorruptDataError(f"index of {path or '/'!r}: pages out of order")
            slots.append(_Slot(page, start))
            start += page.count
        return Directory(self, path, slots)

    def _single(self, path: str, key: str, listing: Listing) -> Directory:
        page = Page(listing.name(0) if len(listing) else "", key, len(listing))
        return Directory(self, path, [_Slot(page, 0, listing)])

    def page_listing(self, path: str, key: str) -> Listing:
        pages, lines = parse_tree(self.source.get_tree(key))
        if pages is not None:
            raise CorruptDataError(f"page {key} of {path or '/'!r} is an index")
        return RawListing(path, lines, self.source, self.block_size)

    # -- paths -------------------------------------------------------------------------------
    def lookup(self, path: str) -> Entry | None:
        """The entry at `path` ("" is the root), loading the directories on the way; None if
        there is none (or something on the way is not a directory)."""
        entry = self.root
        for name in path.split("/") if path else []:
            if entry.kind != "dir":
                return None
            d = self.directory(entry)
            i = d.find(name)
            if i is None:
                return None
            entry = d.entry(i)
        return entry

    def listdir(self, path: str = "") -> list[Entry]:
        entry = self.lookup(path)
        if entry is None:
            raise InvalidPathError(f"no directory {path!r} in this version")
        if entry.kind != "dir":
            raise InvalidPathError(f"{path!r} is not a directory")
        return self.directory(entry).children()

    def walk(self, top: Entry | None = None) -> Iterator[Entry]:
        """Every entry below `top` (default the root), depth first, children in name order;
        directories come before what is in them. Holds one directory per level."""
        stack = [iter(self.directory(top or self.root).children())]
        while stack:
            for e in stack[-1]:
                yield e
                if e.kind == "dir":
                    stack.append(iter(self.directory(e).children()))
                    break
            else:
                stack.pop()

    def manifest(self) -> Manifest:
        """The whole version as a flat list (what download and checkout need)."""
        return Manifest.build((e for e in self.walk() if e.kind != "dir" or _empty(e)), self.block_size)

    @property
    def digest(self) -> str:
        return self.root.digest


def _root_entry(key: str, digest: str, size: int, files: int) -> Entry:
    return Entry("", "dir", size, 0o755, tree=key, digest=digest or EMPTY_DIGEST, files=files)


def _empty(entry: Entry) -> bool:
    return entry.digest in ("", EMPTY_DIGEST)


def diff(a: Tree, b: Tree) -> list[Difference]:
    """What changes from version a to version b (added, removed, modified, mode, type, target),
    descending only into directories whose digests differ."""
    out: list[Difference] = []
    stack: list[tuple[Entry, Entry]] = [(a.root, b.root)]
    while stack:
        da, db = stack.pop()
        if da.digest == db.digest:
            continue
        old = {e.name: e for e in a.directory(da).children()}
        new = {e.name: e for e in b.directory(db).children()}
        for name in sorted(old.keys() | new.keys()):
            x, y = old.get(name), new.get(name)
            if x is None or y is None:
                change, tree, top = ("removed", a, x) if y is None else ("added", b, y)
                assert top is not None
                below = [top] if top.kind != "dir" or _empty(top) else tree.walk(top)
                out += [Difference(e.path, change) for e in below if e.kind != "dir" or _empty(e)]
            elif x.kind != y.kind:
                out.append(Difference(x.path, "type"))
            elif x.kind == "dir":
                stack.append((x, y))
            elif x.kind == "link":
                if x.target != y.target:
                    out.append(Difference(x.path, "target"))
            elif x.hash != y.hash:
                out.append(Difference(x.path, "modified"))
            elif x.mode != y.mode:
                out.append(Difference(x.path, "mode"))
    return sorted(out, key=lambda d: d.path)


class VersionSource(TreeSource, Protocol):
    def get_manifest(self, object_hash: str) -> Manifest: ...


def version_tree(source: VersionSource, rec: VersionRecord, block_size: int) -> Tree:
    """The tree of a version of either format."""
    if rec.tree:
        return Tree.of_version(source, rec.tree, rec.digest, rec.size, rec.files, block_size)
    return Tree.of_manifest(source, source.get_manifest(rec.manifest))


class _Loaded:
    """A directory whose children have node ids: base + index in the directory."""

    __slots__ = ("base", "counts", "directory", "live", "node")

    def __init__(self, node: int, directory: Directory, base: int) -> None:
        self.node = node
        self.directory = directory
        self.base = base
        self.counts = array("I", bytes(4 * len(directory)))  # the kernel's references, per child
        self.live = 0  # children referenced or loaded: while any is, this stays loaded


class Nodes:
    """The node ids of one version tree, as a mount hands them out (node 0 is the root).

    A directory is loaded when it is first looked into; its children get consecutive ids, so
    what the kernel knows of a million files costs their directories' raw lines (about a hundred
    bytes each) and four bytes of reference count each. A directory is unloaded once the kernel
    holds no reference to it nor to anything in it: its children's ids are then never handed out
    again, and looking into it anew gives new ones (node ids only grow).

    `needs` names the tree objects an answer would read from the store: a caller on an event
    loop fetches them in a worker thread first; everything here then runs from memory.
    """

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._loaded: dict[int, _Loaded] = {}  # by the directory's own node
        self._bases: list[int] = []  # of loaded directories, ascending (to find a node's directory)
        self._by_base: list[_Loaded] = []
        self._next = 1

    # -- finding nodes -----------------------------------------------------------------------
    def _holder(self, node: int) -> tuple[_Loaded, int]:
        """The loaded directory `node` is a child of, and its index there."""
        i = bisect.bisect_right(self._bases, node) - 1
        if i >= 0:
            d = self._by_base[i]
            if node - d.base < len(d.counts):
                return d, node - d.base
        raise KeyError(node)

    def known(self, node: int) -> bool:
        if node == 0:
            return True
        try:
            self._holder(node)
        except KeyError:
            return False
        return True

    def entry(self, node: int) -> Entry:
        if node == 0:
            return self.tree.root
        d, i = self._holder(node)
        return d.directory.entry(i)

    def parent(self, node: int) -> int:
        return 0 if node == 0 else self._holder(node)[0].node

    # -- loading -----------------------------------------------------------------------------
    def needs(self, node: int, name: str | None = None) -> list[str]:
        """Tree objects `lookup(node, name)` (`children(node)` for None) would read from the
        store: fetch them (into the source's memory) first, and ask again, until none is left."""
        d = self._loaded.get(node)
        if d is not None:
            return d.directory.needs(name)
        entry = self.entry(node)
        if entry.kind != "dir":
            raise InvalidPathError(f"{entry.path!r} is not a directory")
        key = entry.tree
        return [key] if key and self.tree._format1 is None and not self.tree.source.has_tree(key) else []

    def _open(self, node: int) -> _Loaded:
        entry = self.entry(node)
        if entry.kind != "dir":
            raise InvalidPathError(f"{entry.path!r} is not a directory")
        directory = self.tree.directory(entry)
        d = self._loaded.get(node)  # loaded by another task meanwhile
        if d is None:
            d = _Loaded(node, directory, self._next)
            self._next += len(directory)
            self._loaded[node] = d
            at = bisect.bisect(self._bases, d.base)
            self._bases.insert(at, d.base)
            self._by_base.insert(at, d)
            if node:
                self._holder(node)[0].live += 1
        return d

    # -- answering (needs `ready`) -----------------------------------------------------------
    def lookup(self, node: int, name: str) -> tuple[int, Entry] | None:
        d = self._loaded.get(node) or self._open(node)
        i = d.directory.find(name)
        return None if i is None else (d.base + i, d.directory.entry(i))

    def children(self, node: int) -> list[tuple[int, Entry]]:
        d = self._loaded.get(node) or self._open(node)
        return [(d.base + i, e) for i, e in enumerate(d.directory.children())]

    # -- references --------------------------------------------------------------------------
    def ref(self, node: int, count: int = 1) -> None:
        """The kernel took `count` references to `node` (not the root: the view counts those,
        since a tree is listed before it is loaded)."""
        d, i = self._holder(node)
        if d.counts[i] == 0:
            d.live += 1
        d.counts[i] += count

    def forget(self, node: int, count: int) -> None:
        """The kernel let go of `count` references; unload what nothing refers to any more."""
        try:
            d, i = self._holder(node)
        except KeyError:
            return  # unloaded already (the kernel forgot more than we knew): nothing to do
        had = d.counts[i]
        d.counts[i] = max(0, had - count)
        if had and not d.counts[i]:
            d.live -= 1
            self._unload_if_unused(node)
            self._unload_if_unused(d.node)

    def _unload_if_unused(self, node: int) -> None:
        while node:  # the root stays while the tree does
            d = self._loaded.get(node)
            if d is None or d.live:
                return
            holder, i = self._holder(node)
            if holder.counts[i]:
                return
            del self._loaded[node]
            at = bisect.bisect_left(self._bases, d.base)
            del self._bases[at]
            del self._by_base[at]
            holder.live -= 1
            node = holder.node

    @property
    def idle(self) -> bool:
        """Nothing below the root is referenced."""
        return all(not d.live for d in self._loaded.values())

    def after(self, node: int, n: int) -> list[Entry]:
        """Up to `n` entries that follow `node` in its directory (from pages in memory)."""
        d, i = self._holder(node)
        out = []
        for k in range(i + 1, min(len(d.counts), i + 1 + n)):
            if not d.directory.ready_at(k):
                break
            out.append(d.directory.entry(k))
        return out

    def loaded_dirs(self) -> int:
        return len(self._loaded)

    def loaded_bytes(self) -> int:
        return sum(d.directory.loaded_bytes() + 4 * len(d.counts) for d in self._loaded.values())
