"""What a push reads: local files and directories turned into sources, and their hashes.

- `scan` walks a directory relative to directory descriptors, never by absolute path, so a tree
  whose absolute paths exceed PATH_MAX pushes exactly as `cd dir && artfs push NAME .` does; its
  files are later opened relative to the directory it was given (a `Root`, held open).
- Symlinks: one that resolves inside the pushed directory is stored as a link. One that leaves
  it (relative or absolute) is refused, naming it, unless `dereference`: then every link is
  replaced by what it points to, as `cp -L` does (a link to a directory is walked; cycles are
  refused).
- Mounts: a directory on an artfs mount is never entered (that would read the store through
  itself), and with `one_file_system` no other filesystem either (as `find -xdev`). Each skipped
  one is logged as a warning.
- Excludes: gitignore-style patterns (`--exclude`, and the lines of a `.artfsignore` at the top
  of the directory): `*.tmp`, `.git/`, `__pycache__/`, `/build` (from the top only), `!keep.tmp`.
- `add_file`'s single file is its content: a symlink given by name is followed.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pathspec

from .digest import DEFAULT_BLOCK_SIZE, hash_fd
from .errors import InvalidPathError, SourceNotFoundError
from .manifest import Entry, normal_mode
from .mounttable import artfs_devices
from .names import join_path, validate_link_target
from .progress import ProgressFactory, silent
from .workers import Pool, checkpoint

log = logging.getLogger(__name__)

IGNORE_FILE = ".artfsignore"
WORKERS = min(16, (os.cpu_count() or 2) * 2)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Root:
    """A directory held open for as long as anything refers to it; files below it are opened
    relative to its descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to read: `rel` below `root`, or a path of its own when root is None."""

    rel: str
    root: Root | None = None

    def open(self) -> int:
        return os.open(self.rel, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.root.fd if self.root else None)

    def size(self) -> int:
        """Its size now, or 0 if it cannot be seen (the read that follows will say why)."""
        try:
            return os.stat(self.rel, dir_fd=self.root.fd if self.root else None).st_size
        except OSError:
            return 0

    def __str__(self) -> str:
        return os.path.join(self.root.path, self.rel) if self.root else self.rel


@dataclass(frozen=True, slots=True)
class Source:
    """One path of an artifact being built, and where its content comes from."""

    path: str
    kind: str = "file"  # file | link | dir; `other` (a FIFO, socket, device) only when scanned as_found
    local: LocalFile | None = None
    target: str = ""
    stat: os.stat_result | None = None  # as the scan saw it (of what a link points to, when followed)


@dataclass(frozen=True)
class ScanOptions:
    exclude: tuple[str, ...] = ()
    dereference: bool = False
    one_file_system: bool = False
    as_found: bool = False  # report links and special files as they are (what is in a checkout)
    ignore_file: bool = True  # apply the .artfsignore at the top (a checkout must see everything)


def _ignore_spec(root: Root, options: ScanOptions) -> pathspec.PathSpec | None:
    lines = list(options.exclude)
    try:
        if not options.ignore_file:
            raise FileNotFoundError
        fd = os.open(IGNORE_FILE, os.O_RDONLY | os.O_CLOEXEC, dir_fd=root.fd)
    except FileNotFoundError:
        pass
    else:
        with open(fd, encoding="utf-8", errors="surrogateescape") as f:
            lines += f.read().splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


@dataclass(frozen=True)
class OpenDir:
    """A directory of a walk, open: its descriptor, its path from the top, and the ids of the
    directories above it (a link leading back to one of them is a loop)."""

    fd: int
    rel: str
    ancestors: frozenset[tuple[int, int]]


class Walk:
    """A directory tree being read, one directory at a time (see the module docstring): `top()`
    opens the top, `list(d)` gives a directory's sources and its subdirectories, open, and
    closes it. Nothing is ever opened by a path longer than one name."""

    def __init__(self, root_path: Path, options: ScanOptions = ScanOptions()) -> None:
        try:
            self.root = Root(root_path)
        except FileNotFoundError:
            raise SourceNotFoundError(f"{root_path}: no such directory") from None
        except NotADirectoryError:
            raise InvalidPathError(f"{root_path} is not a directory") from None
        self.options = options
        top = os.fstat(self.root.fd)
        self._device = top.st_dev
        self._top_id = (top.st_dev, top.st_ino)
        self._mounts = artfs_devices()
        if top.st_dev in self._mounts and not options.as_found:
            raise InvalidPathError(
                f"{root_path} is on an artfs mount: its content is in the store already "
                "(give it another name with `artfs alias`, or push from the original files)"
            )
        self._ignore = _ignore_spec(self.root, options)

    def top(self) -> OpenDir:
        return OpenDir(os.open(".", _DIR_FLAGS, dir_fd=self.root.fd), "", frozenset({self._top_id}))

    def list(self, d: OpenDir) -> tuple[list[Source], list[OpenDir]]:
        """A directory's files, links and (when it holds nothing else) itself as an empty "dir"
        source, in name order; and its subdirectories, open. Closes `d`."""
        try:
            return _list(self.root, d, self._ignore, self.options, self._device, self._mounts)
        finally:
            os.close(d.fd)

    def sources(self, prefix: str | None = None) -> Iterator[Source]:
        """Every source, directories before what is in them, with paths below `prefix`."""
        stack = [self.top()]
        try:
            while stack:
                found, subdirs = self.list(stack.pop())
                for source in found:
                    yield replace(source, path=join_path(prefix, source.path)) if prefix else source
                stack.extend(reversed(subdirs))
        finally:
            for d in stack:
                os.close(d.fd)


def scan(
    root_path: Path, prefix: str | None = None, options: ScanOptions = ScanOptions()
) -> Iterator[Source]:
    """Sources for every file, symlink and empty directory below `root_path`. Raises
    InvalidPathError for what cannot be stored (naming it)."""
    return Walk(root_path, options).sources(prefix)


def _list(
    root: Root,
    d: OpenDir,
    ignore: pathspec.PathSpec | None,
    options: ScanOptions,
    device: int,
    mounts: set[int],
) -> tuple[list[Source], list[OpenDir]]:
    with os.scandir(d.fd) as it:
        names = sorted(e.name for e in it)
    found: list[Source] = []
    subdirs: list[OpenDir] = []
    dir_fd, rel_dir = d.fd, d.rel
    try:
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if not options.dereference:
                    if not (ignore and ignore.match_file(rel)):
                        found.append(_link(root, dir_fd, name, rel, st, options))
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    raise InvalidPathError(f"{os.path.join(root.path, rel)}: a symlink to nothing") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignore and ignore.match_file(f"{rel}/" if is_dir else rel):
                continue
            if is_dir:
                where = os.path.join(root.path, rel)
                if st.st_dev in mounts:
                    log.warning(
                        "not pushing %s: it is an artfs mount (artfs never reads the store through itself)",
                        where,
                    )
                elif options.one_file_system and st.st_dev != device:
                    log.warning("not pushing %s: another filesystem (--one-file-system)", where)
                elif (st.st_dev, st.st_ino) in d.ancestors:
                    raise InvalidPathError(f"{where}: a symlink loop (it leads back to a directory above it)")
                else:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)  # follows the link when dereferencing
                    subdirs.append(OpenDir(fd, rel, d.ancestors | {(st.st_dev, st.st_ino)}))
            elif stat.S_ISREG(st.st_mode):
                found.append(Source(rel, "file", LocalFile(rel, root), stat=st))
            elif options.as_found:
                found.append(Source(rel, "other", stat=st))
            else:
                raise InvalidPathError(
                    f"{os.path.join(root.path, rel)}: not a regular file, directory or symlink "
                    "(leave it out with --exclude)"
                )
    except BaseException:
        for sub in subdirs:
            os.close(sub.fd)
        raise
    if rel_dir and not found and not subdirs:
        found.append(Source(rel_dir, "dir"))
    return found, subdirs


def _link(root: Root, dir_fd: int, name: str, rel: str, st: os.stat_result, options: ScanOptions) -> Source:
    target = os.readlink(name, dir_fd=dir_fd)
    if options.as_found:
        return Source(rel, "link", target=target, stat=st)
    try:
        return Source(rel, "link", target=validate_link_target(rel, target), stat=st)
    except InvalidPathError:
        raise InvalidPathError(
            f"{os.path.join(root.path, rel)} -> {target}: the symlink leaves the directory; "
            "push what it points to with --dereference, or leave it out with --exclude"
        ) from None


def source_for(local: Path, name: str | None = None) -> Source:
    """A single local file added under `name` (default: its basename); a symlink is followed."""
    try:
        st = os.stat(local)
    except FileNotFoundError:
        raise SourceNotFoundError(f"{local}: no such file") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidPathError(f"{local} is a directory; add it as a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidPathError(f"{local}: not a regular file")
    path = join_path(None, name) if name and not name.endswith("/") else join_path(name, local.name)
    return Source(path, "file", LocalFile(os.path.abspath(local)))


def hash_sources(
    sources: Iterable[Source],
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: ProgressFactory = silent,
    desc: str = "hashing",
) -> list[Entry]:
    """Manifest entries for sources, files hashed on a pool of threads; the progress bar counts
    bytes as they are read. Interrupting the caller stops the hashing within a chunk."""
    sources = list(sources)
    total = sum(s.local.size() for s in sources if s.local is not None)

    def entry(src: Source) -> Entry:
        if src.local is None:
            return Entry(src.path, src.kind, target=src.target)
        try:
            fd = src.local.open()
        except FileNotFoundError:
            raise SourceNotFoundError(f"{src.local}: vanished while it was being pushed") from None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise InvalidPathError(f"{src.local}: path too long") from None
            raise
        try:
            st = os.fstat(fd)
            digest = hash_fd(fd, block_size, read)
        finally:
            os.close(fd)
        return Entry(
            src.path, "file", digest.size, normal_mode(st.st_mode), digest.hash, digest.blocks, st.st_mtime_ns
        )

    def read(n: int) -> None:
        bar.update(n)
        checkpoint()

    with progress(total=total, desc=desc) as bar, Pool(WORKERS) as pool:
        return list(pool.map(entry, sources))
