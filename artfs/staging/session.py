"""A staging session on disk, and committing it.

    $XDG_STATE_HOME/artfs/stage/ID/session.json   what is staged where: store, name, base, options
                                  journal        the tree operations (journal.py)
                                  upper/         the written contents (upper.py)

All of it private to the user (0700/0600), like the cache. A session outlives its daemon: killed,
it is resumed (`artfs stage --resume ID MNT`), committed (`artfs commit ID`) or aborted
(`artfs abort ID`). A commit is idempotent: each of a session's commits claims its version under
a token (`ID.N`, N the commits before it) that `commit.publish` finds again if a killed commit
had claimed already. Once committed for good (unmounted, or `artfs commit ID`), a session keeps
only its record, with the outcome, for RECEIPT_DAYS: a commit whose answer was lost (killed
after the work, before it said so) is asked again and answers the same version.

The committed tree is the base's with the bound directories written anew (staging/tree.py): one
object per changed directory, the unchanged ones named as they are. What a version cannot carry
is left out or normalized, and said (`Committed.notes`): hard links become files of their own,
owners and set-id bits are not kept, links that leave the tree and special files are left out.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..blobs import BlobStore
from ..catalog import Catalog, VersionRecord
from ..commit import WORKERS, CommitResult, TreeWriter, now, publish
from ..config import PRIVATE_FILE, private_dir, state_dir
from ..digest import FileDigest
from ..errors import ConflictError, InvalidPathError, NotFoundError
from ..manifest import Entry, normal_mode
from ..mounttable import running
from ..names import validate_link_target
from ..namespace import DIR, FILE, LINK, ROOT_INO, SPECIAL
from ..progress import ProgressFactory, silent
from ..sources import LocalFile, Source
from ..statcache import StatCache
from ..tree import Nodes, version_tree
from ..workers import Pool
from .journal import Journal
from .tree import Change, Node, Overlay
from .upper import Upper

log = logging.getLogger(__name__)

RECEIPT_DAYS = 7  # how long a committed session's record stays to answer for it


def sessions_dir() -> Path:
    return state_dir() / "stage"


@dataclass
class SessionInfo:
    id: str
    store: str
    name: str
    base: int | None  # the version staged on (None: a new artifact)
    type: str | None = None
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    on_conflict: str = "new"
    mountpoint: str = ""
    pid: int = 0  # of the daemon serving it, while it runs
    commits: int = 0  # versions this session committed
    committed: int | None = None  # the last of them
    created_at: str = ""
    outcome: dict[str, Any] = field(default_factory=dict)  # of the last commit: Committed.outcome, or error
    finished: bool = False  # committed on unmount: nothing left to do


@dataclass(frozen=True)
class Committed:
    result: CommitResult | None  # None: nothing was staged on a new name, nothing made
    notes: tuple[str, ...]  # what the version could not carry, and what was done instead

    def outcome(self) -> dict[str, Any]:
        r = self.result
        if r is None:
            return {"version": None, "created": False, "notes": list(self.notes)}
        return {"version": r.record.label, "created": r.created, "aliases_moved": list(r.aliases_moved),
                "notes": list(self.notes)}  # fmt: skip


class Session:
    def __init__(self, root: Path, info: SessionInfo) -> None:
        self.root = root
        self.info = info

    # -- on disk -----------------------------------------------------------------------------
    @classmethod
    def create(cls, info: SessionInfo) -> Session:
        info.id = info.id or f"{info.name}-{secrets.token_hex(4)}"
        info.created_at = info.created_at or now()
        root = private_dir(sessions_dir()) / info.id
        root.mkdir(mode=0o700)
        session = cls(root, info)
        session.save()
        return session

    @classmethod
    def load(cls, id: str) -> Session:
        root = sessions_dir() / id
        if "/" in id or id.startswith(".") or not (root / "session.json").exists():
            raise NotFoundError(f"no staging session {id!r} (artfs stage --list shows them)")
        return cls(root, SessionInfo(**json.loads((root / "session.json").read_text())))

    @classmethod
    def all(cls) -> list[Session]:
        """Every session, sweeping what is over: removals a crash interrupted, and the records
        of sessions committed more than RECEIPT_DAYS ago."""
        top = sessions_dir()
        out = []
        for d in sorted(top.iterdir()) if top.is_dir() else []:
            if d.name.startswith(".removed-"):
                shutil.rmtree(d, ignore_errors=True)
                continue
            try:
                session = cls.load(d.name)
                age = session.age()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            except (NotFoundError, ValueError, TypeError) as e:
                log.warning("%s: not a staging session (%s)", d, e)
                continue
            if session.info.finished and age > RECEIPT_DAYS * 86400:
                session.remove()
                continue
            if session.info.finished:
                session.drop_work()  # left if a crash cut the dropping short
            out.append(session)
        return out

    def age(self) -> float:
        """Seconds since the record was last written."""
        return time.time() - (self.root / "session.json").stat().st_mtime

    def save(self) -> None:
        tmp = self.root / "session.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
        with open(fd, "w") as f:
            json.dump(asdict(self.info), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / "session.json")

    def remove(self) -> None:
        """Gone at once: renamed out of the way first, so a removal cut short by a crash leaves
        no half session (the rest is swept by `all`)."""
        gone = self.root.with_name(f".removed-{self.root.name}-{secrets.token_hex(4)}")
        try:
            os.rename(self.root, gone)
        except FileNotFoundError:
            return
        shutil.rmtree(gone, ignore_errors=True)

    @property
    def journal_path(self) -> Path:
        return self.root / "journal"

    def state(self) -> str:
        """ "mounted" (its daemon runs), "stopped" (to resume, commit or abort), or "committed"
        (done: only the record is left)."""
        if self.info.pid and running(self.info.pid):
            return "mounted"
        return "committed" if self.info.finished else "stopped"

    def check_resumable(self) -> None:
        """Raise ConflictError unless the session can be mounted (again)."""
        if self.state() == "mounted":
            raise ConflictError(f"staging session {self.info.id} is mounted at {self.info.mountpoint} "
                                f"(pid {self.info.pid})")  # fmt: skip
        if self.info.finished:
            raise ConflictError(f"staging session {self.info.id} was committed as "
                                f"{self.info.outcome.get('version')}: stage that anew")  # fmt: skip

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    def write_status(self, changes: list[Change]) -> None:
        """The pending changes, for `artfs status` (which asked the daemon to write them)."""
        tmp = self.root / "status.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
        with open(fd, "w") as f:
            json.dump([asdict(c) for c in changes], f)
        os.replace(tmp, self.status_path)

    def read_status(self) -> list[Change]:
        return [Change(**c) for c in json.loads(self.status_path.read_text())]

    def drop_work(self) -> None:
        """A finished session's staged work goes: it is in the store, and the record (saved
        first: never the other way round) says so, for `artfs umount` and `artfs commit ID` to
        report and `stage --list` to show."""
        assert self.info.finished
        shutil.rmtree(self.root / "upper", ignore_errors=True)
        self.journal_path.unlink(missing_ok=True)

    # -- the tree ----------------------------------------------------------------------------
    def base_record(self, catalog: Catalog) -> VersionRecord | None:
        return catalog.read(self.info.name, self.info.base)[0] if self.info.base is not None else None

    def overlay(self, catalog: Catalog, blobs: BlobStore, *, attach: bool = True) -> Overlay:
        """The staged tree as the journal has it, with the journal attached for what follows
        (`attach` False: to look at only)."""
        base = self.base_record(catalog)
        nodes = Nodes(version_tree(blobs, base, blobs.block_size)) if base is not None else None
        created = _ns(base.created_at) if base is not None else _ns(self.info.created_at)
        overlay = Overlay(nodes, Upper(self.root / "upper"), None, (os.getuid(), os.getgid()), created)
        replayed = overlay.replay(Journal.read(self.journal_path))
        if replayed:
            log.info("%s: %d journal records replayed", self.info.id, replayed)
        if attach:
            overlay.journal = Journal(self.journal_path)
        return overlay

    # -- committing --------------------------------------------------------------------------
    def commit(
        self,
        overlay: Overlay,
        catalog: Catalog,
        blobs: BlobStore,
        progress: ProgressFactory = silent,
        *,
        final: bool = False,
    ) -> Committed:
        """Commit the staged tree as the next version (see the module docstring), its outcome
        saved in the record. `final`: the session ends with it (unmounted, or committed while
        stopped): the same save marks it finished, so that no moment exists at which a crash
        leaves a session that is neither finished nor able to commit its work again."""
        done = self._commit(overlay, catalog, blobs, progress)
        self.info.outcome = done.outcome()
        self.info.finished = final
        self.save()
        if final:
            self.drop_work()
        return done

    def _commit(
        self, overlay: Overlay, catalog: Catalog, blobs: BlobStore, progress: ProgressFactory
    ) -> Committed:
        info = self.info
        if overlay.journal is not None:
            overlay.journal.sync()
        if info.base is None and info.committed is None and not overlay.nodes[ROOT_INO].added:
            return Committed(None, ())
        base = self.base_record(catalog)
        previous = catalog.read(info.name, info.committed)[0] if info.committed is not None else base
        with (
            StatCache() as records,
            progress(total=0, desc="hashing") as hashing,
            progress(total=0, desc="uploading") as uploading,
            blobs.backend.batch(),
            Pool(WORKERS) as pool,
        ):
            parent = overlay.base.tree if overlay.base is not None else None
            writer = TreeWriter(blobs, parent, records, pool, hashing, uploading)
            root, notes = _write(overlay, writer)
            writer.close()
        kind = previous.type if previous is not None else info.type or "dataset"
        result = publish(catalog, info.name, root, base=previous, session=f"{info.id}.{info.commits}",
                         type=info.type or kind, description=info.description, metadata=info.metadata,
                         aliases=info.aliases, on_conflict=info.on_conflict)  # fmt: skip
        if result.created:
            if previous is not None and result.record.number > previous.number + 1:
                label = result.record.label
                notes.append(f"others committed after {previous.label} was staged: {label} records base "
                             f"{previous.number}")  # fmt: skip
            info.commits += 1
            info.committed = result.record.number
        return Committed(result, tuple(notes))


def _ns(iso: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1e9)
    except ValueError:
        return 0


def _write(overlay: Overlay, writer: TreeWriter) -> tuple[Entry, list[str]]:
    """The staged tree as tree objects (bound directories written, the rest named); notes."""
    notes: list[str] = []
    uppers = sorted({n.ino for _, n in overlay.walk_changes() if n.kind == FILE and n.upper})
    files = [Source(f"{ino:x}", local=LocalFile(overlay.upper.path(ino))) for ino in uppers]
    digests: dict[int, FileDigest] = dict(zip(uppers, writer.hash_files(files), strict=True))
    seen: dict[int, str] = {}

    def file_entry(path: str, node: Node) -> tuple[LocalFile | None, Entry]:
        mode = normal_mode(node.mode)
        if node.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) or (node.uid, node.gid) != overlay.owner:
            notes.append(f"{path}: owner and set-id/sticky bits are not kept (mode {mode:o})")
        if node.nlink > 1:
            first = seen.setdefault(node.ino, path)
            if first != path:
                notes.append(f"{path}: a hard link to {first}, stored as a file of its own")
        if not node.upper:
            assert node.lower is not None
            return None, replace(node.lower, path=path, mode=mode, mtime=node.mtime_ns)
        d = digests[node.ino]
        mtime = overlay.upper.stat(node.ino).st_mtime_ns
        return LocalFile(overlay.upper.path(node.ino)), Entry(
            path, FILE, d.size, mode, d.hash, d.blocks, mtime
        )

    def child_entry(at: str, child: Node) -> None:
        """A file or link of the directory on top of the stack, into its lists."""
        children, local = stack[-1][2], stack[-1][3]
        if child.kind in SPECIAL:
            notes.append(f"left out: {at}: a {child.kind} (a version holds files, directories and links)")
            return
        try:
            if child.kind == LINK:
                validate_link_target(at, child.target)
                children.append(Entry(at, LINK, target=child.target))
                return
            source, entry = file_entry(at, child)
        except InvalidPathError as e:
            notes.append(f"left out: {e}")
            return
        if source is None:
            children.append(entry)
        else:
            local.append((source, entry))

    def opened(path: str, node: Node) -> _Open:
        children: list[Entry] = []
        if node.base_node is not None and overlay.base is not None:
            gone = node.removed | node.added.keys()
            children = [e for _, e in overlay.base.children(node.base_node) if e.name not in gone]
        return (path, node, children, [], iter(sorted(node.added.items())))

    stack = [opened("", overlay.nodes[ROOT_INO])]  # post-order, without recursion (PATH_MAX deep)
    while True:
        path, node, children, local, todo = stack[-1]
        for name, ino in todo:
            child, at = overlay.nodes[ino], f"{path}/{name}".lstrip("/")
            if child.kind == DIR:
                stack.append(opened(at, child))
                break
            child_entry(at, child)
        else:
            stack.pop()
            done = writer.write_dir(path, node.lower if node.base_node is not None else None, children, local)
            if not stack:
                return done, notes
            stack[-1][2].append(done)


_Open = tuple[str, Node, list[Entry], list[tuple[LocalFile, Entry]], Iterator[tuple[str, int]]]
