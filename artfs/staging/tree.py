"""The staging tree: the base version's tree (read through tree.Nodes, a directory at a time)
with the changes made to it, addressed by inode and never by path.

Inodes: ROOT_INO is the root; `inode(BASE, n)` is node n of the base tree (as Nodes numbers it
in this daemon's life); `inode(NEW, k)` a node made in the session (k counts up and is never
reused, so a resumed session keeps them). A node changed in any way is *bound*: it gets a Node
here, keeps its inode, and every directory above it is bound too, holding it in `added` (a name
that shadows the base's) — which is what makes a commit O(change): a directory that is not bound
is the base's, as it is. A bound directory lists its base directory's children (unless in
`removed` or shadowed by `added`) and its `added` ones. A file's content is its base entry's
(`lower`) until it is copied up into its upper file (upper.py); a new file has one from the
start.

Every change is a journal record (journal.py) applied by `_apply`, live and on replay alike;
records name inodes, and a base node enters as a `bind` record naming its path in the base tree
(Nodes numbers differ from one daemon's life to the next: replay maps them). The file system
rules (errnos as a local file system answers) are checked before a record is written; applying
one never fails.

Directories of the base report one link (st_nlink 1, "not counted", as btrfs does); directories
made in the session count theirs.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import FsError
from ..manifest import Entry
from ..names import MAX_NAME
from ..namespace import DIR, FILE, LINK, ROOT_INO, Attr, inode, split
from ..tree import Nodes
from .journal import Journal, Record
from .upper import Upper

BASE, NEW = 1, 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # the flags of renameat2
PERM_BITS = 0o7777
PATH_MAX = 4096


@dataclass
class Node:
    ino: int
    kind: str
    mode: int  # permission bits with set-id and sticky
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    nlink: int = 1  # 0: no name left (kept while open); a base directory's is 1 ("not counted")
    atime_ns: int = 0
    target: str = ""  # of a link
    rdev: int = 0  # of a device node
    lower: Entry | None = None  # its entry in the base (a file's content, unless `upper`)
    base_node: int | None = None  # its node in the base tree (pinned there while bound)
    upper: bool = False  # a file whose content is its upper file
    parent: int = ROOT_INO  # a directory's parent (rename loops, `..`)
    added: dict[str, int] = field(default_factory=dict)  # a directory's names made or moved here
    removed: set[str] = field(default_factory=set)  # … and base names gone from it


@dataclass(frozen=True)
class Change:
    """One line of `status`: what happened at `path` (A added, M modified, D deleted, R renamed
    from `old`), as `git status --short` says it."""

    code: str
    path: str
    old: str = ""


class Overlay:
    def __init__(
        self,
        base: Nodes | None,
        upper: Upper,
        journal: Journal | None,
        owner: tuple[int, int],
        created_ns: int,
    ) -> None:
        self.base = base
        self.upper = upper
        self.journal = journal
        self.owner = owner
        self.created_ns = created_ns  # the base version's time: its directories' and links' mtime
        self.nodes: dict[int, Node] = {}
        self._next = 1
        self._remap: dict[int, int] = {}  # replay: an inode of the journal's life → this life's
        self.changed = False  # anything applied since the base (or the last commit)
        self.replaying = False
        uid, gid = owner
        root = Node(ROOT_INO, DIR, 0o755, uid, gid, created_ns, created_ns, nlink=1 if base else 2)
        if base is not None:
            root.lower, root.base_node = base.tree.root, 0
        self.nodes[ROOT_INO] = root

    # -- inodes ------------------------------------------------------------------------------
    @staticmethod
    def _ino(n: int) -> int:
        return ROOT_INO if n == 0 else inode(BASE, n)

    def _base_of(self, ino: int) -> int | None:
        if ino == ROOT_INO:
            return 0 if self.base is not None else None
        space, n = split(ino)
        return n if space == BASE and self.base is not None and self.base.known(n) else None

    def exists(self, ino: int) -> bool:
        return ino in self.nodes or self._base_of(ino) is not None

    def _entry(self, ino: int) -> Entry:
        n = self._base_of(ino)
        if n is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        assert self.base is not None
        return self.base.entry(n)

    def kind(self, ino: int) -> str:
        node = self.nodes.get(ino)
        return node.kind if node is not None else self._entry(ino).kind

    # -- reading -----------------------------------------------------------------------------
    def needs(self, ino: int, name: str | None = None) -> list[str]:
        """Tree objects of the base that answering about directory `ino` (its child `name`, or
        all its children) would read: fetch them first, and ask again until none is left."""
        node = self.nodes.get(ino)
        n = node.base_node if node is not None else self._base_of(ino)
        if n is None or self.base is None or (node is not None and name is not None and name in node.added):
            return []
        return self.base.needs(n, name)

    def lookup(self, parent: int, name: str) -> int | None:
        if len(os.fsencode(name)) > MAX_NAME:
            raise FsError(errno.ENAMETOOLONG)
        if self.kind(parent) != DIR:
            raise FsError(errno.ENOTDIR)
        node = self.nodes.get(parent)
        if node is not None:
            if name in node.added:
                return node.added[name]
            if name in node.removed or node.base_node is None:
                return None
            base_node: int | None = node.base_node
        else:
            base_node = self._base_of(parent)
        assert self.base is not None and base_node is not None
        found = self.base.lookup(base_node, name)
        return None if found is None else self._ino(found[0])

    def children(self, ino: int) -> list[tuple[str, int]]:
        if self.kind(ino) != DIR:
            raise FsError(errno.ENOTDIR)
        node = self.nodes.get(ino)
        n = node.base_node if node is not None else self._base_of(ino)
        out: list[tuple[str, int]] = []
        if n is not None and self.base is not None:
            for child, e in self.base.children(n):
                if node is None or (e.name not in node.removed and e.name not in node.added):
                    out.append((e.name, self._ino(child)))
        if node is not None:
            out += sorted(node.added.items())
        return out

    def attr(self, ino: int, timeout: float = 0.0) -> Attr:
        node = self.nodes.get(ino)
        if node is None:
            e = self._entry(ino)
            uid, gid = self.owner
            if e.kind == FILE:
                return Attr(ino, FILE, e.mode, e.size, e.mtime, timeout, uid, gid)
            size = len(os.fsencode(e.target)) if e.kind == LINK else 0
            return Attr(
                ino, e.kind, 0o777 if e.kind == LINK else 0o755, size, self.created_ns, timeout, uid, gid
            )
        size, mtime = 0, node.mtime_ns
        if node.kind == FILE:
            if node.upper:
                st = self.upper.stat(ino)
                size, mtime = st.st_size, st.st_mtime_ns
            elif node.lower is not None:
                size = node.lower.size
        elif node.kind == LINK:
            size = len(os.fsencode(node.target))
        return Attr(ino, node.kind, node.mode, size, mtime, timeout, node.uid, node.gid, node.nlink,
                    node.ctime_ns, node.atime_ns, node.rdev)  # fmt: skip

    def readlink(self, ino: int) -> str:
        node = self.nodes.get(ino)
        target = node.target if node is not None else self._entry(ino).target
        if self.kind(ino) != LINK:
            raise FsError(errno.EINVAL)
        return target

    def lower(self, ino: int) -> Entry | None:
        """The base content a file reads from, or None when its upper file has it."""
        node = self.nodes.get(ino)
        if node is None:
            e = self._entry(ino)
            return e if e.kind == FILE else None
        return None if node.upper else node.lower

    # -- checks ------------------------------------------------------------------------------
    def _dir(self, ino: int) -> None:
        if not self.exists(ino):
            raise FsError(errno.ENOENT)
        if self.kind(ino) != DIR:
            raise FsError(errno.ENOTDIR)
        node = self.nodes.get(ino)
        if node is not None and node.nlink == 0:
            raise FsError(errno.ENOENT, "the directory was removed")

    @staticmethod
    def _name(name: str) -> None:
        if len(os.fsencode(name)) > MAX_NAME:
            raise FsError(errno.ENAMETOOLONG)
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise FsError(errno.EINVAL, f"invalid name {name!r}")

    def _new_name(self, parent: int, name: str) -> None:
        self._name(name)
        self._dir(parent)
        if self.lookup(parent, name) is not None:
            raise FsError(errno.EEXIST)

    def _existing(self, parent: int, name: str) -> int:
        self._name(name)
        self._dir(parent)
        child = self.lookup(parent, name)
        if child is None:
            raise FsError(errno.ENOENT)
        return child

    def _empty(self, ino: int) -> bool:
        return not self.children(ino)

    def _is_below(self, ino: int, top: int) -> bool:
        """Is directory `ino` `top` or inside it?"""
        while True:
            if ino == top:
                return True
            if ino == ROOT_INO:
                return False
            node = self.nodes.get(ino)
            if node is not None:
                ino = node.parent
            else:
                n = self._base_of(ino)
                assert n is not None and self.base is not None
                ino = self._ino(self.base.parent(n))

    # -- changes (checked here, applied by `_apply`) -------------------------------------------
    def _do(self, record: Record) -> Any:
        if self.journal is not None:
            self.journal.append(record)
        return self._apply(record)

    def create(
        self,
        parent: int,
        name: str,
        kind: str,
        mode: int,
        uid: int,
        gid: int,
        target: str = "",
        rdev: int = 0,
    ) -> int:
        """A new file, directory, link or special file (namespace.SPECIAL); its inode."""
        self._new_name(parent, name)
        if kind == LINK and (not target or len(os.fsencode(target)) >= PATH_MAX):
            raise FsError(errno.ENAMETOOLONG if target else errno.ENOENT)
        above = self.attr(parent)
        if above.perm & stat.S_ISGID:  # a set-group-ID directory: its group, and to a directory its bit
            gid = above.gid
            mode |= stat.S_ISGID if kind == DIR else 0
        self._bind(parent)
        ino = inode(NEW, self._next)
        if kind == FILE:
            self.upper.create(ino)
        self._do({"op": "new", "ino": ino, "kind": kind, "mode": mode & PERM_BITS, "uid": uid, "gid": gid,
                  "target": target, "rdev": rdev, "parent": parent, "name": name,
                  "t": time.time_ns()})  # fmt: skip
        return ino

    def link(self, ino: int, parent: int, name: str) -> None:
        if not self.exists(ino):
            raise FsError(errno.ENOENT)
        self._new_name(parent, name)
        if self.kind(ino) == DIR:
            raise FsError(errno.EPERM, "hard links to directories are not allowed")
        self._bind(parent)
        self._bind(ino)
        self._do({"op": "link", "ino": ino, "parent": parent, "name": name, "t": time.time_ns()})

    def unlink(self, parent: int, name: str, *, directory: bool = False) -> int:
        """Remove a name (`directory`: rmdir's rules); the inode it named."""
        child = self._existing(parent, name)
        if directory:
            if self.kind(child) != DIR:
                raise FsError(errno.ENOTDIR)
            if child == ROOT_INO:
                raise FsError(errno.EBUSY)
            if not self._empty(child):
                raise FsError(errno.ENOTEMPTY)
        elif self.kind(child) == DIR:
            raise FsError(errno.EISDIR)
        self._bind(parent)
        self._bind(child)
        self._do({"op": "unlink", "parent": parent, "name": name, "t": time.time_ns()})
        return child

    def rename(self, parent: int, name: str, new_parent: int, new_name: str, flags: int = 0) -> int | None:
        """Move a name; the inode it replaced, if any."""
        src = self._existing(parent, name)
        self._name(new_name)
        self._dir(new_parent)
        src_dir = self.kind(src) == DIR
        if src_dir and self._is_below(new_parent, src):
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        dst = self.lookup(new_parent, new_name)
        exchange = bool(flags & RENAME_EXCHANGE)
        if flags & RENAME_NOREPLACE and dst is not None:
            raise FsError(errno.EEXIST)
        if exchange and dst is None:
            raise FsError(errno.ENOENT)
        if dst is not None and dst != src and self.kind(dst) == DIR and self._is_below(parent, dst):
            # the target holds the source: the kernel's "trap"
            raise FsError(errno.EINVAL if exchange else errno.ENOTEMPTY)
        if not exchange and dst is not None:
            if dst == src:
                return None  # two names of one file: nothing to do (POSIX)
            dst_dir = self.kind(dst) == DIR
            if src_dir and not dst_dir:
                raise FsError(errno.ENOTDIR)
            if dst_dir and not src_dir:
                raise FsError(errno.EISDIR)
            if dst_dir and not self._empty(dst):
                raise FsError(errno.ENOTEMPTY)
        for ino in (parent, new_parent, src, *([dst] if dst is not None else [])):
            self._bind(ino)
        self._do({"op": "rename", "parent": parent, "name": name, "new_parent": new_parent,
                  "new_name": new_name, "exchange": exchange, "t": time.time_ns()})  # fmt: skip
        return None if exchange else dst

    def set_attr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
    ) -> None:
        if not self.exists(ino):
            raise FsError(errno.ENOENT)
        self._bind(ino)
        record: Record = {"op": "attr", "ino": ino, "t": time.time_ns()}
        if mode is not None:
            record["mode"] = mode & PERM_BITS
        if uid is not None:
            record["uid"] = uid
        if gid is not None:
            record["gid"] = gid
        if mtime_ns is not None:
            record["mtime"] = mtime_ns
        if atime_ns is not None:
            record["atime"] = atime_ns
        self._do(record)

    def copy_up(self, ino: int, filled: str | None) -> None:
        """Give a file its upper file: `filled`, a file holding its base content, moved into
        place (None: an empty one, for a truncation to 0). From then on that is its content."""
        self._bind(ino)
        if filled is None:
            self.upper.create(ino)
        else:
            self.upper.close(ino)
            os.replace(filled, self.upper.path(ino))
        self._do({"op": "upper", "ino": ino})

    def written(self, ino: int) -> None:
        """Its upper file was written (its size and mtime are the upper file's)."""
        node = self.nodes[ino]
        node.ctime_ns = time.time_ns()
        self.changed = True

    # -- applying records (live and on replay) -----------------------------------------------
    def _node(self, ino: int) -> Node:
        return self.nodes[self._remap.get(ino, ino)]

    def _bind(self, ino: int) -> Node:
        """The Node of `ino`, binding it (and the directories above it) first if it is the base's."""
        node = self.nodes.get(ino)
        if node is not None:
            return node
        e = self._entry(ino)
        self._do({"op": "bind", "ino": ino, "path": e.path})
        return self.nodes[ino]

    def _bind_base(self, n: int) -> Node:
        assert self.base is not None
        ino = self._ino(n)
        if ino in self.nodes:
            return self.nodes[ino]
        e = self.base.entry(n)
        uid, gid = self.owner
        mode = e.mode if e.kind == FILE else 0o777 if e.kind == LINK else 0o755
        mtime = e.mtime if e.kind == FILE else self.created_ns
        node = Node(ino, e.kind, mode, uid, gid, mtime, mtime, 1, target=e.target, lower=e, base_node=n)
        parent_n = self.base.parent(n)
        parent = self.nodes.get(self._ino(parent_n))
        if parent is None and self._attached(parent_n):
            parent = self._bind_base(parent_n)
        if parent is not None and parent.base_node == parent_n and e.name not in parent.added and \
                e.name not in parent.removed and parent.nlink:  # fmt: skip
            parent.added[e.name] = ino
            node.parent = parent.ino
        else:
            node.nlink = 0  # a name replaced or removed since: only an open file still has it
        self.base.ref(n)  # keeps its directory loaded while bound
        self.nodes[ino] = node
        return node

    def _attached(self, n: int) -> bool:
        """Is base node `n` still where the base has it (nothing above it bound elsewhere)?"""
        assert self.base is not None
        while n:
            parent_n = self.base.parent(n)
            parent = self.nodes.get(self._ino(parent_n))
            if parent is not None:
                name = self.base.entry(n).name
                return parent.base_node == parent_n and parent.nlink > 0 and \
                    name not in parent.added and name not in parent.removed  # fmt: skip
            n = parent_n
        return True

    def _resolve(self, path: str) -> int:
        """The base node at `path` (replaying a bind of an earlier life)."""
        assert self.base is not None
        n = 0
        for name in path.split("/") if path else []:
            while keys := self.base.needs(n, name):
                for key in keys:
                    self.base.tree.source.get_tree(key)
            found = self.base.lookup(n, name)
            if found is None:
                raise FsError(errno.EIO, f"journal names {path!r}, which the base does not have")
            n = found[0]
        return n

    def _detach(self, parent: Node, name: str) -> None:
        parent.added.pop(name, None)
        if parent.base_node is not None:
            parent.removed.add(name)

    def _unlinked(self, ino: int, t: int) -> None:
        node = self._node(ino)
        node.nlink = 0 if node.kind == DIR else max(0, node.nlink - 1)
        node.ctime_ns = t
        if node.kind == DIR and node.parent in self.nodes:
            _count(self.nodes[node.parent], -1)

    def _apply(self, r: Record) -> Any:
        op, t = r["op"], r.get("t", 0)
        self.changed = True
        if op == "bind":
            if self.replaying:  # base nodes are numbered anew in each life
                self._remap[r["ino"]] = self._bind_base(self._resolve(r["path"])).ino
            else:
                n = self._base_of(r["ino"])
                assert n
                self._bind_base(n)
            return None
        if op == "new":
            ino = r["ino"]
            self._next = max(self._next, split(ino)[1] + 1)
            parent = self._node(r["parent"])
            kind = r["kind"]
            node = Node(ino, kind, r["mode"], r["uid"], r["gid"], t, t, 2 if kind == DIR else 1,
                        target=r["target"], rdev=r.get("rdev", 0), upper=kind == FILE,
                        parent=parent.ino)  # fmt: skip
            self.nodes[ino] = node
            parent.added[r["name"]] = ino
            parent.mtime_ns = parent.ctime_ns = t
            if kind == DIR:
                _count(parent, 1)
            return ino
        if op == "link":
            node, parent = self._node(r["ino"]), self._node(r["parent"])
            parent.added[r["name"]] = node.ino
            node.nlink += 1
            node.ctime_ns = parent.mtime_ns = parent.ctime_ns = t
            return None
        if op == "unlink":
            parent = self._node(r["parent"])
            child = self.lookup(parent.ino, r["name"])
            assert child is not None
            self._detach(parent, r["name"])
            self._unlinked(child, t)
            parent.mtime_ns = parent.ctime_ns = t
            return None
        if op == "rename":
            return self._apply_rename(r, t)
        if op == "attr":
            node = self._node(r["ino"])
            node.mode = r.get("mode", node.mode)
            node.uid = r.get("uid", node.uid)
            node.gid = r.get("gid", node.gid)
            node.ctime_ns = t
            node.atime_ns = r.get("atime", node.atime_ns)
            if "mtime" in r:
                node.mtime_ns = r["mtime"]
                if node.upper:  # whose mtime is its upper file's
                    os.utime(self.upper.path(node.ino), ns=(r["mtime"], r["mtime"]))
            return None
        if op == "upper":
            self._node(r["ino"]).upper = True
            return None
        raise FsError(errno.EIO, f"unknown journal record {op!r}")

    def _apply_rename(self, r: Record, t: int) -> None:
        parent, new_parent = self._node(r["parent"]), self._node(r["new_parent"])
        name, new_name = r["name"], r["new_name"]
        src = self.lookup(parent.ino, name)
        dst = self.lookup(new_parent.ino, new_name)
        assert src is not None
        src_node = self.nodes[src]
        if r["exchange"]:
            assert dst is not None
            dst_node = self.nodes[dst]
            parent.added[name], new_parent.added[new_name] = dst, src
            for moved, to in ((src_node, new_parent), (dst_node, parent)):
                if moved.kind == DIR and moved.parent != to.ino:
                    _count(self.nodes[moved.parent], -1)
                    _count(to, 1)
                    moved.parent = to.ino
                moved.ctime_ns = t
        else:
            if dst is not None:
                self._unlinked(dst, t)
            self._detach(parent, name)
            new_parent.added[new_name] = src
            if src_node.kind == DIR and src_node.parent != new_parent.ino:
                _count(parent, -1)
                _count(new_parent, 1)
                src_node.parent = new_parent.ino
            src_node.ctime_ns = t
        for p in (parent, new_parent):
            p.mtime_ns = p.ctime_ns = t

    # -- life of nodes -----------------------------------------------------------------------
    def orphan(self, ino: int) -> bool:
        """A node no name refers to any more (kept while a file is open)."""
        node = self.nodes.get(ino)
        return node is not None and node.nlink == 0

    def drop(self, ino: int) -> None:
        """Forget an orphan nothing has open: its upper file goes."""
        node = self.nodes.pop(ino, None)
        if node is None:
            return
        self.upper.remove(ino)
        if node.base_node and self.base is not None:
            self.base.forget(node.base_node, 1)

    def replay(self, records: Iterator[Record]) -> int:
        """Apply the records of an earlier life (before the journal is attached); drop orphans."""
        assert self.journal is None
        count = 0
        self.replaying = True
        try:
            for r in records:
                self._apply(r)
                count += 1
        finally:
            self.replaying = False
        for ino in [i for i, n in self.nodes.items() if n.nlink == 0]:
            self.drop(ino)
        for node in self.nodes.values():
            if node.kind == FILE and node.upper and not self.upper.exists(node.ino):
                self.upper.create(node.ino)  # made, never written, then the machine stopped
                self.upper.close(node.ino)
        self._remap.clear()
        return count

    def close(self) -> None:
        self.upper.close_all()
        if self.journal is not None:
            self.journal.close()

    # -- what changed ------------------------------------------------------------------------
    def walk_changes(self) -> Iterator[tuple[str, Node]]:
        """Every bound node still in the tree, with its path now, parents first."""
        stack = [("", self.nodes[ROOT_INO])]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.kind == DIR:
                for name, child in sorted(node.added.items(), reverse=True):
                    stack.append((f"{path}/{name}".lstrip("/"), self.nodes[child]))

    def status(self) -> list[Change]:
        """Pending changes against the base, in path order. A file written is "M" whatever its
        bytes now are (the commit hashes it; status does not)."""
        paths: dict[int, list[str]] = {}
        replaced: set[str] = set()  # base names that name another node now: "M", as git says
        for path, node in self.walk_changes():
            if path:
                paths.setdefault(node.ino, []).append(path)
            if node.kind == DIR and node.base_node is not None:
                names = {e.name for _, e in self._base_children(node.base_node)}
                replaced.update(f"{path}/{name}".lstrip("/") for name in names & node.added.keys())
        out: list[Change] = []
        moved_from: set[str] = set()
        for ino, where in paths.items():
            node = self.nodes[ino]
            slash = "/" if node.kind == DIR else ""
            origin = node.lower.path if node.lower is not None and node.base_node else None
            if origin is None:
                out += [Change("M" if p in replaced and not slash else "A", p + slash) for p in where]
                continue
            if origin in where:
                where.remove(origin)
                if _modified(node):
                    out.append(Change("M", origin))
            else:
                moved_from.add(origin)
                out.append(Change("R", where.pop(0) + slash, origin + slash))
            out += [Change("A", p + slash) for p in where]
        for path, node in self.walk_changes():
            if node.kind == DIR and node.base_node is not None:
                for _, e in self._base_children(node.base_node):
                    if e.name in node.removed and e.name not in node.added and e.path not in moved_from:
                        slash = "/" if e.kind == DIR else ""
                        out.append(Change("D", f"{path}/{e.name}".lstrip("/") + slash))
        return sorted(out, key=lambda c: c.path)

    def _base_children(self, n: int) -> list[tuple[int, Entry]]:
        """Base directory `n`'s children, its tree objects read here if need be (status runs in
        a worker thread, or in a command)."""
        assert self.base is not None
        while keys := self.base.needs(n):
            for key in keys:
                self.base.tree.source.get_tree(key)
        return self.base.children(n)


def _modified(node: Node) -> bool:
    e = node.lower
    return node.kind == FILE and (node.upper or e is None or node.mode != e.mode or node.mtime_ns != e.mtime)


def _count(directory: Node, delta: int) -> None:
    """A subdirectory came or went: a directory made in the session counts its links."""
    if directory.base_node is None:
        directory.nlink += delta
