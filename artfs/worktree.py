"""A directory on local disk and how it relates to a version: fill it, make it exactly the
version, compare it.

Every change is made in three steps, so a directory ends either as asked or as it was:
1. plan (reads only): what is at each path of the directory and of the version, and what has
   to change. A local file is the version's if artfs's record of it (statcache: it wrote or
   hashed it, and neither content nor ctime moved since) says so; any other is hashed.
2. fetch: everything to write is fetched into a staging directory inside the destination (same
   filesystem). A failure or an interrupt removes it: nothing has changed.
3. apply, with no network: removals, directories, then each file renamed into place.

- download adds the version's paths and replaces those that differ, and leaves the rest. Where
  the directory and the version disagree on what is a directory (a directory in the way of a
  file, a file in the way of a directory), it refuses: either way would delete something that
  is not the version's.
- checkout also removes what the version does not have. Into a directory artfs has not filled
  from this artifact before, it removes or replaces nothing unless forced (W&B's checkout deletes
  without a word); `dry_run` reports what it would do.
- differences (verify) lists missing, extra, modified, mode, type and target differences,
  hashing every file, and compares what a push would read (`.artfsignore`, excludes).

Modes: a version records whether a file is executable (755) or not (644), as git does; a
local file differs in mode only when that differs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blobs import BlobStore
from .digest import FileDigest
from .errors import (
    ArtfsError,
    ConflictError,
    InvalidInputError,
    ReferenceGoneError,
    StaleReferenceError,
)
from .manifest import Difference, Entry, Manifest, normal_mode
from .progress import Bar, ProgressFactory, silent
from .sources import ScanOptions, Source, hash_sources, scan
from .statcache import StatCache
from .workers import Pool, checkpoint

log = logging.getLogger(__name__)

WORKERS = min(16, (os.cpu_count() or 2) * 2)
STAGING = ".artfs-staging."  # + pid + token: what a checkout or download is fetching into


@dataclass
class Changes:
    """What a download or checkout did, or would do on a dry run (paths in the version)."""

    root: Path
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "added": self.added,
            "replaced": self.replaced,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "dry_run": self.dry_run,
        }


@dataclass
class _Plan:
    changes: Changes
    remove: list[str] = field(default_factory=list)  # top-most local paths, removed first
    dirs: list[str] = field(default_factory=list)  # to create, parents first
    write: list[Entry] = field(default_factory=list)  # files to fetch and rename into place
    links: list[Entry] = field(default_factory=list)
    fix: list[Entry] = field(default_factory=list)  # the content is right; mode or mtime is not
    current: list[tuple[Entry, os.stat_result, FileDigest]] = field(default_factory=list)


@dataclass
class _Local:
    """What is in a directory: non-directories by path, and every directory path."""

    paths: dict[str, Source]
    dirs: set[str]

    def extra_dirs(self, wanted: set[str]) -> tuple[list[str], list[str]]:
        """Local directories the version does not have: all of them, and the empty ones."""
        extra = [d for d in self.dirs if d not in wanted]
        parents = {p.rpartition("/")[0] for p in (*self.paths, *self.dirs)}
        return extra, [d for d in extra if d not in parents]

    def kind(self, path: str) -> str | None:
        if path in self.dirs:
            return "dir"
        found = self.paths.get(path)
        return found.kind if found is not None else None


def _survey(root: Path, options: ScanOptions) -> _Local:
    if not os.path.lexists(root):
        return _Local({}, set())
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a directory")
    paths: dict[str, Source] = {}
    dirs: set[str] = set()
    for s in scan(root, options=options):
        if s.kind == "dir":
            dirs.add(s.path)
        else:
            paths[s.path] = s
    return _Local(paths, _with_parents(dirs, paths))


def _version_dirs(manifest: Manifest) -> set[str]:
    return _with_parents({e.path for e in manifest if e.kind == "dir"}, (e.path for e in manifest))


def _with_parents(dirs: set[str], paths: Iterable[str]) -> set[str]:
    """`dirs` with every directory that `dirs` and `paths` lie in."""
    for path in [*dirs, *paths]:
        parent = path.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    return dirs


def _local_digests(
    manifest: Manifest, local: _Local, records: StatCache | None, progress: ProgressFactory
) -> tuple[dict[str, tuple[FileDigest, int, os.stat_result]], set[str]]:
    """For each version file with a local file at its path: the local content's digest, mode
    and stat, trusted from the records where they allow it; and the paths that were hashed."""
    stats = {
        e.path: st
        for e in manifest.files()
        if local.kind(e.path) == "file" and (st := local.paths[e.path].stat) is not None
    }
    trusted = records.known(stats.values()) if records is not None else {}
    out: dict[str, tuple[FileDigest, int, os.stat_result]] = {}
    to_hash: list[Source] = []
    for path, st in stats.items():
        digest = trusted.get((st.st_dev, st.st_ino))
        if digest is None:
            to_hash.append(local.paths[path])
        else:
            out[path] = (digest, normal_mode(st.st_mode), st)
    hashed = hash_sources(to_hash, manifest.block_size, progress, desc="checking") if to_hash else []
    for src, got in zip(to_hash, hashed, strict=True):
        assert src.stat is not None
        out[src.path] = (FileDigest(got.hash, got.size, tuple(got.blocks)), got.mode, src.stat)
    return out, {s.path for s in to_hash}


def _plan(
    manifest: Manifest,
    root: Path,
    *,
    exact: bool,
    records: StatCache | None,
    progress: ProgressFactory,
) -> _Plan:
    local = _survey(root, ScanOptions(exclude=(f"/{STAGING}*/",), as_found=True, ignore_file=False))
    digests, hashed = _local_digests(manifest, local, records, progress)
    vdirs = _version_dirs(manifest)
    plan = _Plan(Changes(root))
    changes = plan.changes
    conflicts: list[str] = []
    for path in sorted(vdirs | {e.path for e in manifest}):
        entry = manifest.get(path)
        want = entry.kind if entry is not None else "dir"
        have = local.kind(path)
        if have == want == "dir":
            continue
        if have is not None and have != want:  # a type change
            if not exact and "dir" in (have, want):
                conflicts.append(path)
                continue
            plan.remove.append(path)
            changes.replaced.append(path)
        elif have is None and entry is not None:
            changes.added.append(path)
        if want == "dir":
            if have != "dir":
                plan.dirs.append(path)
            continue
        assert entry is not None
        if want == "link":
            if have != "link":
                plan.links.append(entry)
            elif local.paths[path].target != entry.target:
                plan.remove.append(path)
                plan.links.append(entry)
                changes.replaced.append(path)
            else:
                changes.unchanged += 1
            continue
        found = digests.get(path) if have == "file" else None
        if found is None:
            plan.write.append(entry)
            continue
        digest, mode, st = found
        if digest.hash != entry.hash:
            plan.write.append(entry)
            changes.replaced.append(path)
            continue
        changes.unchanged += 1
        if mode != entry.mode or st.st_mtime_ns != entry.mtime:
            plan.fix.append(entry)
        elif path in hashed:  # worth recording: trusted next time
            plan.current.append((entry, st, digest))
    if conflicts:
        raise ConflictError(
            f"{root}: {_count(conflicts, 'path')} where the directory and the version disagree on "
            f"what is a directory ({_some(conflicts)}); download never deletes what is not the "
            "version's: use checkout"
        )
    if exact:
        extra_dirs, empty = local.extra_dirs(vdirs)
        gone = [p for p in local.paths if p not in manifest and p not in vdirs]
        changes.removed = sorted(gone + empty)
        plan.remove += gone + extra_dirs
    plan.remove = _topmost(plan.remove)
    return plan


def _topmost(paths: Iterable[str]) -> list[str]:
    """These paths without the ones inside another of them (sorted by component, a path's
    descendants follow it: `a`, `a/b`, `a-b`)."""
    out: list[str] = []
    for p in sorted(set(paths), key=lambda p: p.split("/")):
        if not out or not p.startswith(f"{out[-1]}/"):
            out.append(p)
    return out


# -- fetching and applying -------------------------------------------------------------------
def _fetch(
    blobs: BlobStore, entries: list[Entry], staging: Path, progress: ProgressFactory
) -> tuple[dict[str, Path], dict[str, ArtfsError]]:
    """Write these files' contents into `staging` (with their mode and mtime); return where each
    one is, and the references whose origin no longer has their bytes (left out: everything
    else is still written). Packed neighbours come in one GET per span."""
    where = {e.path: staging / str(i) for i, e in enumerate(entries)}
    spans = blobs.spans((e, 0) for e in entries if e.pack)  # grouped by where each file starts
    singles = [e for e in entries if not e.pack]
    failed: dict[str, ArtfsError] = {}

    def write_single(e: Entry) -> None:
        try:
            _write(blobs, e, where[e.path], bar)
        except (StaleReferenceError, ReferenceGoneError) as error:
            log.error("%s: %s", e.path, error)
            failed[e.path] = error
            where.pop(e.path).unlink(missing_ok=True)

    def write_span(span: list[tuple[Entry, int]]) -> None:
        # every block of each file (a packed file has several when the store's blocks are small)
        got = blobs.read_pieces([(e, i) for e, _ in span for i in range(e.block_count(blobs.block_size))])
        for e, _ in span:
            blocks: list[bytes | memoryview] = []
            for i in range(e.block_count(blobs.block_size)):
                block = got[e.hash, i]
                if isinstance(block, Exception):
                    raise block
                blocks.append(block)
            _write(blobs, e, where[e.path], bar, blocks)

    with progress(total=sum(e.size for e in entries), desc="downloading") as bar, Pool(WORKERS) as pool:
        pool.run(write_single, singles)
        pool.run(write_span, spans)
    return where, failed


def _write(
    blobs: BlobStore, entry: Entry, path: Path, bar: Bar, blocks: Iterable[bytes | memoryview] | None = None
) -> None:
    with open(path, "wb") as f:
        for block in blocks if blocks is not None else _blocks(blobs, entry):
            f.write(block)
            bar.update(len(block))
    os.chmod(path, entry.mode)
    os.utime(path, ns=(entry.mtime, entry.mtime))


def _blocks(blobs: BlobStore, entry: Entry) -> Iterator[bytes]:
    for block in blobs.iter_blocks(entry):
        checkpoint()
        yield block


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _sweep(root: Path) -> None:
    """Remove staging directories of downloads that were killed (their process is gone)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(root) as entries:
        for e in entries:
            if e.name.startswith(STAGING):
                pid = e.name[len(STAGING) :].partition(".")[0]
                if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                    shutil.rmtree(e.path, ignore_errors=True)


def _apply(
    plan: _Plan, blobs: BlobStore, root: Path, progress: ProgressFactory
) -> tuple[list[tuple[Entry, Path]], dict[str, ArtfsError]]:
    """Fetch, then change `root`; what was written, and the references that could not be."""
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    staging = root / f"{STAGING}{os.getpid()}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        fetched, failed = _fetch(blobs, plan.write, staging, progress)
        plan.write = [e for e in plan.write if e.path not in failed]
        # Nothing below asks the store: only local renames and removals from here on.
        for path in plan.remove:
            _remove(root / path)
        for path in plan.dirs:
            (root / path).mkdir()
        for e in plan.write:
            os.replace(fetched[e.path], root / e.path)
        for e in plan.links:
            os.symlink(e.target, root / e.path)
        for e in plan.fix:
            os.chmod(root / e.path, e.mode)
            os.utime(root / e.path, ns=(e.mtime, e.mtime))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [(e, root / e.path) for e in (*plan.write, *plan.fix)], failed


def materialize(
    blobs: BlobStore,
    manifest: Manifest,
    root: Path,
    *,
    exact: bool = False,
    label: tuple[str, int] | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: ProgressFactory = silent,
) -> Changes:
    """Make `root` hold the version (`exact`: only the version, as a checkout); see the module
    docstring. `label` is (artifact name, version number): a checkout may replace and remove
    in a directory last filled from the same artifact, elsewhere only when `force`d."""
    with StatCache() as records:
        plan = _plan(manifest, root, exact=exact, records=records, progress=progress)
        changes = plan.changes
        log.info(
            "%s: %d to add, %d to replace, %d to remove, %d unchanged; %d files to fetch",
            root,
            len(changes.added),
            len(changes.replaced),
            len(changes.removed),
            changes.unchanged,
            len(plan.write),
        )
        changes.dry_run = dry_run
        guarded = exact and not (force or dry_run)
        if guarded and label is not None and (changes.removed or changes.replaced):
            place = records.place(root)
            if place is None or place[0] != label[0]:
                lost = changes.removed + changes.replaced
                raise ConflictError(
                    f"{root} is not a checkout of {label[0]}: checkout would remove "
                    f"{len(changes.removed)} and replace {_count(changes.replaced, 'path')} there "
                    f"({_some(lost)}); --dry-run lists them, --force does it"
                )
        if dry_run:
            return changes
        written, failed = _apply(plan, blobs, root, progress)
        known = [(e, path) for e, path in written if e.content_known]  # a content hash to record
        records.record((os.stat(path), FileDigest(e.hash, e.size, tuple(e.blocks))) for e, path in known)
        records.record((st, digest) for _, st, digest in plan.current)
        if label is not None:
            records.set_place(root, *label)
    if failed:
        errors = [str(e) for _, e in sorted(failed.items())]
        listed = "; ".join(errors[:5]) + ("; …" if len(errors) > 5 else "")
        stale = any(isinstance(e, StaleReferenceError) for e in failed.values())
        what = _count(errors, "reference")
        raise (StaleReferenceError if stale else ReferenceGoneError)(
            f"{what} could not be read (the rest is in {root}): {listed}"
        )
    return changes


def _count(paths: list[str], word: str) -> str:
    return f"{len(paths)} {word}" if len(paths) == 1 else f"{len(paths)} {word}s"


def _some(paths: list[str], n: int = 3) -> str:
    return ", ".join(sorted(paths)[:n]) + (", …" if len(paths) > n else "")


# -- comparing ---------------------------------------------------------------------------------
def differences(
    manifest: Manifest,
    root: Path,
    exclude: Iterable[str] = (),
    progress: ProgressFactory = silent,
    content: Callable[[Entry], str] | None = None,
) -> list[Difference]:
    """Every difference between `root` and `manifest`, hashing each local file in full; what a
    push would leave out (`.artfsignore`, `exclude`) is left out here too. `content(entry)` is
    the content hash of a reference whose content was not hashed when it was tracked (read from
    its origin, as pinned; raising if it cannot be: then only the drift is reported)."""
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a directory")
    local = _survey(root, ScanOptions(exclude=tuple(exclude), as_found=True))
    digests, _ = _local_digests(manifest, local, None, progress)
    vdirs = _version_dirs(manifest)
    out: list[Difference] = []
    for path in sorted(vdirs | {e.path for e in manifest}):
        entry = manifest.get(path)
        want = entry.kind if entry is not None else "dir"
        have = local.kind(path)
        if have is None:
            if entry is not None:
                out.append(Difference(path, "missing"))
        elif have != want:
            out.append(Difference(path, "type"))
        elif entry is not None and want == "link" and local.paths[path].target != entry.target:
            out.append(Difference(path, "target"))
        elif entry is not None and want == "file":
            digest, mode, _ = digests[path]
            try:
                expected = entry.hash if entry.content_known or content is None else content(entry)
            except (StaleReferenceError, ReferenceGoneError):
                continue  # the caller reports the reference's drift
            if digest.hash != expected:
                out.append(Difference(path, "modified"))
            elif mode != entry.mode:
                out.append(Difference(path, "mode"))
    out += [Difference(p, "extra") for p in local.paths if p not in manifest and p not in vdirs]
    out += [Difference(d, "extra") for d in local.extra_dirs(vdirs)[1]]
    return sorted(out, key=lambda d: d.path)
