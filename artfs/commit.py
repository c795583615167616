"""Turning sources into a version: hash, upload what the store lacks, write the manifest, claim
the next number, move aliases. Also the conflict policies of `push --on-conflict`.

Order makes it crash-safe: blobs and the manifest are written (write-once) before the version
record that names them, and the record before any alias moves. A committer killed at any point
leaves either no new version or a complete one; stray blobs are garbage for `gc`.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ._version import __version__
from .blobs import BlobStore
from .catalog import Catalog, VersionRecord
from .digest import FileDigest
from .errors import ArtifactExistsError, InvalidInputError, TypeMismatchError, VersionInUseError
from .manifest import Entry, Manifest
from .names import LATEST, validate_alias, validate_name
from .progress import ProgressFactory, silent
from .sources import LocalFile, Source, hash_sources
from .workers import Pool

log = logging.getLogger(__name__)

ON_CONFLICT = ("new", "skip", "error", "replace")
UPLOAD_WORKERS = 8
PACK_FILE = 256 * 1024  # files up to this size go into packs (on a remote store)
PACK_BYTES = 8 * 1024 * 1024  # about this much per pack


@dataclass(frozen=True)
class CommitResult:
    record: VersionRecord
    created: bool  # False: nothing new was written (unchanged content, or --on-conflict skip)
    skipped: bool = False  # --on-conflict skip found the name taken: nothing was even compared
    aliases_moved: tuple[str, ...] = ()  # aliases this commit pointed at `record`
    amended: tuple[str, ...] = ()  # fields of an unchanged `record` this commit updated
    deleted: tuple[str, ...] = ()  # versions --on-conflict replace deleted


def producer() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "user": user, "pid": os.getpid(), "artfs": __version__}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def upload_missing(
    blobs: BlobStore,
    manifest: Manifest,
    sources: dict[str, Source],
    progress: ProgressFactory,
    parent: Manifest | None = None,
) -> Manifest:
    """Upload the contents the store does not have yet; return the manifest saying where each
    one is. Contents the parent version has are where the parent says. On a remote store,
    other files of at most PACK_FILE go up in packs of about PACK_BYTES, in path order, so a
    directory's files sit side by side; the rest are blobs, uploaded unless the store has them."""
    known = {e.hash: e for e in parent.files()} if parent is not None else {}
    placed = {h: e for h, e in known.items() if e.pack}
    singles: dict[str, Entry] = {}
    packed: dict[str, Entry] = {}
    for e in manifest.files():
        if e.hash in known or e.hash in singles or e.hash in packed:
            continue
        small = blobs.packs and e.size <= PACK_FILE
        (packed if small else singles)[e.hash] = e
    local: dict[str, LocalFile] = {}
    for e in (*singles.values(), *packed.values()):
        file = sources[e.path].local
        assert file is not None, "a file source has a local file"
        local[e.path] = file
    with Pool(UPLOAD_WORKERS) as pool:
        present = dict(zip(singles, pool.map(blobs.has, singles), strict=True))
    missing = [e for h, e in singles.items() if not present[h]]
    packs = _packs(list(packed.values()))
    log.info(
        "uploading %d blobs the store lacks and %d small files in %d packs (%d already stored)",
        len(missing),
        len(packed),
        len(packs),
        len(singles) - len(missing),
    )
    total = sum(e.size for e in missing) + sum(e.size for e in packed.values())
    # The pool ends (its tasks stopped and their temp files gone) before the batch does.
    with progress(total=total, desc="uploading") as bar, blobs.backend.batch(), Pool(UPLOAD_WORKERS) as pool:
        pool.run(
            lambda e: blobs.upload(local[e.path], FileDigest(e.hash, e.size, e.blocks), bar.update), missing
        )
        for done in pool.map(lambda entries: blobs.upload_pack(entries, local, bar.update), packs):
            placed.update((e.hash, e) for e in done)
    return Manifest.build(
        (replace(e, pack=placed[e.hash].pack, offset=placed[e.hash].offset) if e.hash in placed else e)
        for e in manifest
    )


def _packs(entries: list[Entry]) -> list[list[Entry]]:
    """Consecutive groups of about PACK_BYTES (a pack ends after the file that reaches it)."""
    out: list[list[Entry]] = [[]]
    size = 0
    for e in entries:  # in path order, as the manifest lists them
        if size >= PACK_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += e.size
    return [p for p in out if p]


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
    delete_aliases: bool = False,
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
        return CommitResult(latest, created=False, skipped=True)
    if latest is not None and on_conflict == "error":
        raise ArtifactExistsError(f"{name} already exists (newest: {latest.label})")
    doomed = catalog.versions(name) if on_conflict == "replace" else []
    if doomed and not delete_aliases:  # the rule `delete` follows, checked before any upload
        held = sorted(f"{name}:{a}" for a, n in catalog.aliases(name).items() if a != LATEST)
        if held:
            raise VersionInUseError(
                f"--on-conflict replace would delete versions that {', '.join(held)} name; "
                "add --delete-aliases to delete them too"
            )

    source_list = list(sources)
    by_path = {s.path: s for s in source_list}
    manifest = Manifest.build(hash_sources(source_list, blobs.block_size, progress), blobs.block_size)
    log.info("%s: hashed %d paths, %d bytes; digest %s", name, len(manifest), manifest.size, manifest.digest)
    if latest is not None and latest.digest == manifest.digest and on_conflict != "replace":
        moved = tuple(a for a in aliases if catalog.set_alias(name, a, latest.number))
        amended: list[str] = []

        def amend(rec: VersionRecord) -> VersionRecord:
            amended.clear()
            if description and description != rec.description:
                amended.append("description")
                rec = replace(rec, description=description)
            if metadata and {**rec.metadata, **metadata} != rec.metadata:
                amended.append("metadata")
                rec = replace(rec, metadata={**rec.metadata, **metadata})
            return rec

        latest = catalog.amend(name, latest.number, amend)
        return CommitResult(latest, created=False, aliases_moved=moved, amended=tuple(amended))

    parent = blobs.get_manifest(latest.manifest) if latest is not None else None
    manifest = upload_missing(blobs, manifest, by_path, progress, parent)
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
    log.info("claimed %s", rec.label)
    catalog.set_alias(name, LATEST, rec.number, forward_only=True)
    moved = tuple(a for a in aliases if catalog.set_alias(name, a, rec.number))
    deleted = []
    for old in doomed:
        catalog.delete_version(old, delete_aliases=True)
        deleted.append(old.label)
    return CommitResult(rec, created=True, aliases_moved=moved, deleted=tuple(deleted))
