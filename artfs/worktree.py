"""A directory on local disk and how it relates to a version: scan it, fill it, compare it.

- `materialize` writes a version into a directory: missing or different files are written through
  a temp file and renamed into place, so an interrupted download never leaves a half file;
  `prune` then removes what the version does not have (checkout).
- `compare` lists every difference between a directory and a version (verify).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .blobs import BlobStore
from .digest import DEFAULT_BLOCK_SIZE
from .manifest import Difference, Entry, Manifest, normal_mode
from .progress import Bar, ProgressFactory, silent
from .sources import ScanOptions, Source, hash_sources, scan

WORKERS = min(16, (os.cpu_count() or 2) * 2)


# -- writing a version into a directory --------------------------------------------------------
def _ensure_dir(root: Path, rel: str) -> Path:
    """mkdir -p that replaces anything non-directory on the way, so a symlink in the destination
    can never redirect a write outside it."""
    here = root
    for part in rel.split("/") if rel else []:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            here.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            here.unlink()
            here.mkdir()
    return here


def _is_current(local: Path, entry: Entry) -> bool:
    """rsync's quick check: same type, size and mtime (and mode) means the file is already there."""
    try:
        st = local.lstat()
    except FileNotFoundError:
        return False
    if entry.kind == "link":
        return stat.S_ISLNK(st.st_mode) and os.readlink(local) == entry.target
    if entry.kind == "dir":
        return stat.S_ISDIR(st.st_mode)
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == entry.size
        and st.st_mtime_ns == entry.mtime
        and normal_mode(st.st_mode) == entry.mode
    )


def _remove(local: Path) -> None:
    if local.is_dir() and not local.is_symlink():
        shutil.rmtree(local)
    elif local.exists() or local.is_symlink():
        local.unlink()


def _write_span(blobs: BlobStore, span: list[tuple[Entry, int]], root: Path, bar: Bar) -> None:
    """Files side by side in a pack, fetched with one GET and written one by one (a content
    that failed its check is fetched on its own, which reports it)."""
    got = blobs.read_span(span)
    for e, _ in span:
        data = got.get((e.hash, 0))
        _write_file(blobs, e, root / e.path, bar, [data] if data is not None else None)


def _write_file(
    blobs: BlobStore, entry: Entry, local: Path, bar: Bar, blocks: Iterable[bytes | memoryview] | None = None
) -> None:
    tmp = local.parent / f".{local.name}.artfs-tmp"
    try:
        with open(tmp, "wb") as f:
            for block in blocks if blocks is not None else blobs.iter_blocks(entry):
                f.write(block)
                bar.update(len(block))
        os.chmod(tmp, entry.mode)
        os.utime(tmp, ns=(entry.mtime, entry.mtime))
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)


def materialize(blobs: BlobStore, manifest: Manifest, root: Path, progress: ProgressFactory = silent) -> int:
    """Make every entry of `manifest` present in `root`; return how many were written."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [e for e in manifest if not _is_current(root / e.path, e)]
    for e in todo:
        parent = _ensure_dir(root, e.path.rpartition("/")[0])
        local = parent / e.path.rpartition("/")[2]
        if e.kind == "dir":
            _ensure_dir(root, e.path)
        elif e.kind == "link":
            _remove(local)
            os.symlink(e.target, local)
    files = [e for e in todo if e.is_file]
    spans = blobs.spans((e, 0) for e in files if e.pack)  # packed files are one block each
    with (
        progress(total=sum(e.size for e in files), desc="downloading") as bar,
        ThreadPoolExecutor(WORKERS) as pool,
    ):
        for _ in pool.map(
            lambda e: _write_file(blobs, e, root / e.path, bar), [e for e in files if not e.pack]
        ):
            pass
        for _ in pool.map(lambda span: _write_span(blobs, span, root, bar), spans):
            pass
    return len(todo)


def prune(manifest: Manifest, root: Path) -> int:
    """Remove everything below `root` that `manifest` does not have; return how many."""
    keep_dirs = {p for e in manifest for p in _parents(e.path)} | {
        e.path for e in manifest if e.kind == "dir"
    }
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + dirnames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            local = Path(dirpath) / name
            if rel in manifest or (rel in keep_dirs and local.is_dir() and not local.is_symlink()):
                continue
            _remove(local)
            removed += 1
    return removed


def _parents(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


# -- comparing ---------------------------------------------------------------------------------
def compare(manifest: Manifest, root: Path, progress: ProgressFactory = silent) -> list[Difference]:
    """Every difference between `root` and `manifest`, hashing each local file in full."""
    local = {s.path: s for s in scan(root, options=ScanOptions(links_as_found=True))}
    diffs = [Difference(e.path, "missing") for e in manifest if e.path not in local]
    diffs += [Difference(p, "extra") for p in local if p not in manifest]
    files: list[tuple[Entry, Source]] = []
    for want in manifest:
        have = local.get(want.path)
        if have is None:
            continue
        if want.kind != have.kind:
            diffs.append(Difference(want.path, "type"))
        elif want.kind == "link" and want.target != have.target:
            diffs.append(Difference(want.path, "target"))
        elif want.is_file:
            files.append((want, have))
    hashed = hash_sources([have for _, have in files], manifest.block_size or DEFAULT_BLOCK_SIZE, progress)
    for (want, _), got in zip(files, hashed, strict=True):
        if want.hash != got.hash:
            diffs.append(Difference(want.path, "modified"))
        elif want.mode != got.mode:
            diffs.append(Difference(want.path, "mode"))
    return sorted(diffs, key=lambda d: d.path)
