"""What artfs knows about files on this machine's disks, kept per user in one SQLite database
(`$XDG_STATE_HOME/artfs/local.db`, private to the user):

- files: the content hash of a file as artfs last saw it whole, keyed by (device, inode), with
  the size, mtime and ctime it had then. artfs records a file when it writes one (checkout,
  download) or hashes one (push, verify). A later look trusts the record, instead of reading the
  file, only if all of inode, size, mtime and ctime still match and the record is not *racy*.
  ctime cannot be set by anyone (any write, chmod or utime moves it), so a file whose bytes
  changed while its size and mtime were put back is still caught. Racy, as in git's index: a
  file written in the same clock tick as its record could change again within that tick
  without moving its ctime, so a record made less than RACY_NS after the file's ctime is not
  trusted; the file is hashed next time and recorded again, then trusted.
- places: which directories were filled from which artifact (checkout and download), so a
  checkout can tell a previous checkout of the same artifact (whose files it may replace and
  remove) from someone's project (which it refuses to touch unless forced).

A database that cannot be opened (a read-only home, NFS without locks) costs only speed: artfs
then hashes what it would have trusted, and says so once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .config import PRIVATE_FILE, private_dir, state_dir
from .digest import FileDigest

log = logging.getLogger(__name__)

RACY_NS = 50_000_000  # longer than any clock tick a filesystem stamps ctime with
_SCHEMA = """
create table if not exists files (
    dev integer, ino integer, size integer, mtime_ns integer, ctime_ns integer,
    recorded_ns integer, hash text, blocks blob, primary key (dev, ino)) without rowid;
create table if not exists places (
    dev integer, ino integer, path text, name text, version integer, recorded_ns integer,
    primary key (dev, ino)) without rowid;
"""
_BATCH = 500  # inodes per query


class StatCache:
    """Thread-safe; several processes may share the database."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "local.db"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            private_dir(self.path.parent)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")
            db.executescript(_SCHEMA)
            self._db = db
        except (OSError, sqlite3.Error) as e:
            log.warning("cannot use %s (%s): files will be hashed instead of trusted", self.path, e)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files -------------------------------------------------------------------------------
    def known(self, stats: Iterable[os.stat_result]) -> dict[tuple[int, int], FileDigest]:
        """The recorded content of each of these files that can be trusted, by (dev, ino)."""
        wanted = {(st.st_dev, st.st_ino): st for st in stats}
        by_dev: dict[int, list[int]] = {}
        for dev, ino in wanted:
            by_dev.setdefault(dev, []).append(ino)
        out: dict[tuple[int, int], FileDigest] = {}
        for dev, inodes in by_dev.items():
            for i in range(0, len(inodes), _BATCH):
                for ino, size, mtime, ctime, recorded, h, blocks in self._rows(dev, inodes[i : i + _BATCH]):
                    st = wanted[dev, ino]
                    if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (
                        size,
                        mtime,
                        ctime,
                    ) and ctime + RACY_NS <= recorded:
                        out[dev, ino] = FileDigest(h, size, _split(blocks))
        return out

    def _rows(self, dev: int, inodes: list[int]) -> list[tuple[int, int, int, int, int, str, bytes]]:
        if self._db is None or not inodes:
            return []
        marks = ",".join("?" * len(inodes))
        with self._lock, _quiet():
            columns = "ino, size, mtime_ns, ctime_ns, recorded_ns, hash, blocks"
            return self._db.execute(
                f"select {columns} from files where dev = ? and ino in ({marks})", [dev, *inodes]
            ).fetchall()
        return []

    def record(self, files: Iterable[tuple[os.stat_result, FileDigest]]) -> None:
        """Remember what these files held when they had these attributes (stat them after
        the last write; a stat taken before the content was read is also fine)."""
        now = time.time_ns()
        rows = [
            (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, now, d.hash, "".join(d.blocks))
            for st, d in files
        ]
        if self._db is None or not rows:
            return
        with self._lock, _quiet():
            self._db.execute("begin")
            try:
                self._db.executemany("insert or replace into files values (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    # -- places ------------------------------------------------------------------------------
    def place(self, root: Path) -> tuple[str, int] | None:
        """(artifact name, version) a directory was last filled from by artfs, or None."""
        if self._db is None:
            return None
        try:
            st = os.stat(root)
        except FileNotFoundError:
            return None
        with self._lock, _quiet():
            row = self._db.execute(
                "select name, version from places where dev = ? and ino = ?", (st.st_dev, st.st_ino)
            ).fetchone()
            return (str(row[0]), int(row[1])) if row else None
        return None

    def set_place(self, root: Path, name: str, version: int) -> None:
        if self._db is None:
            return
        st = os.stat(root)
        with self._lock, _quiet():
            self._db.execute(
                "insert or replace into places values (?, ?, ?, ?, ?, ?)",
                (st.st_dev, st.st_ino, str(root), name, version, time.time_ns()),
            )


def _split(blocks: str | bytes) -> tuple[str, ...]:
    text = blocks.decode() if isinstance(blocks, bytes) else blocks
    return tuple(text[i : i + 32] for i in range(0, len(text), 32))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """A database error (locked too long, disk full) costs a record, never the operation."""
    try:
        yield
    except sqlite3.Error as e:
        log.warning("local records: %s", e)
