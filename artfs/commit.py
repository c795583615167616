"""Turning sources into a version: hash, upload what the store lacks, write the manifest, claim
the next number, move aliases. Also the conflict policies of `push --on-conflict`.

Order makes it crash-safe: blobs and the manifest are written (write-once) before the version
record that names them, and the record before any alias moves. A committer killed at any point
leaves either no new version or a complete one; stray blobs are garbage for `gc`.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .blobs import BlobStore
from .catalog import Catalog, VersionRecord
from .digest import FileDigest
from .errors import ArtifactExistsError, InvalidInputError, TypeMismatchError
from .manifest import Entry, Manifest
from .names import LATEST, validate_alias, validate_name
from .progress import ProgressFactory, silent
from .worktree import Source, hash_sources

ON_CONFLICT = ("new", "skip", "error", "replace")
UPLOAD_WORKERS = 8


@dataclass(frozen=True)
class CommitResult:
    record: VersionRecord
    created: bool  # False: nothing new was written (unchanged content, or --on-conflict skip)


def producer() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "user": user, "pid": os.getpid(), "artfs": __version__}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def upload_missing(
    blobs: BlobStore, entries: Iterable[Entry], sources: dict[str, Source], progress: ProgressFactory
) -> int:
    """Upload the blobs the store does not have yet; return how many were uploaded."""
    unique: dict[str, Entry] = {}
    for e in entries:
        if e.is_file and e.hash not in unique:
            unique[e.hash] = e
    with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
        present = dict(zip(unique, pool.map(blobs.has, unique), strict=True))
        missing = [e for h, e in unique.items() if not present[h]]
        with progress(total=sum(e.size for e in missing), desc="uploading") as bar:

            def upload(e: Entry) -> None:
                local = sources[e.path].local
                assert local is not None
                blobs.upload(local, FileDigest(e.hash, e.size, e.blocks))
                bar.update(e.size)

            with blobs.backend.batch():
                list(pool.map(upload, missing))
    return len(missing)


def commit(
    catalog: Catalog,
    blobs: BlobStore,
    name: str,
    sources: Iterable[Source],
    *,
    type: str | None = None,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    aliases: Iterable[str] = (),
    on_conflict: str = "new",
    progress: ProgressFactory = silent,
) -> CommitResult:
    """Commit `sources` as the next version of `name` (see the module docstring)."""
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
        return CommitResult(latest, created=False)
    if latest is not None and on_conflict == "error":
        raise ArtifactExistsError(f"{name} already exists (newest: {latest.label})")

    source_list = list(sources)
    by_path = {s.path: s for s in source_list}
    manifest = Manifest.build(hash_sources(source_list, blobs.block_size, progress), blobs.block_size)
    if latest is not None and latest.digest == manifest.digest and on_conflict != "replace":
        for alias in aliases:
            catalog.set_alias(name, alias, latest.number)
        return CommitResult(latest, created=False)

    upload_missing(blobs, manifest, by_path, progress)
    manifest_hash = blobs.put_manifest(manifest)

    def record(number: int) -> VersionRecord:
        return VersionRecord(
            name=name,
            number=number,
            type=type or "dataset",
            digest=manifest.digest,
            manifest=manifest_hash,
            size=manifest.size,
            files=sum(1 for _ in manifest.files()),
            description=description,
            metadata=dict(metadata or {}),
            created_at=now(),
            producer=producer(),
        )

    rec = catalog.claim(name, record)
    catalog.set_alias(name, LATEST, rec.number, forward_only=True)
    for alias in aliases:
        catalog.set_alias(name, alias, rec.number)
    if on_conflict == "replace":
        for old in catalog.versions(name):
            if old.number < rec.number:
                catalog.delete_version(old, delete_aliases=True)
    return CommitResult(rec, created=True)
