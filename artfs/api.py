"""The Python API: Store, Artifact (being built), Version (logged), ArtifactFile.

Reads need no FUSE: a Version reads its manifest and verified blobs straight from the store.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from .blobs import BlobStore
from .cache import BlockCache
from .catalog import Catalog, VersionRecord
from .commit import CommitResult, DirSource, Part, commit
from .config import StoreConfig, default_cache_dir, default_store_url
from .digest import StreamHasher
from .errors import (
    ArtifactNotFoundError,
    InvalidInputError,
    InvalidPathError,
    NotFoundError,
    SourceNotFoundError,
    VerificationError,
)
from .manifest import EMPTY_DIGEST, Difference, Entry, Manifest
from .names import LATEST, Ref, join_path, validate_alias, validate_name, validate_path
from .progress import ProgressFactory, silent
from .reader import FileReader
from .refs import drift, reference
from .sources import LocalFile, ScanOptions, Source, source_for
from .storage import normalize_url, open_backend
from .tree import Tree, diff, version_tree
from .worktree import Changes, differences, materialize


class Store:
    """A store of artifacts. `Store()` is the embedded local store, created on first use;
    `Store(url)` opens `file:///path` (created by the first write)."""

    def __init__(self, url: str | None = None) -> None:
        self._embedded = url is None and not os.environ.get("ARTFS_STORE")
        self.url = normalize_url(url or default_store_url())
        self.backend = open_backend(self.url)
        self._config: StoreConfig | None = None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, write: bool = False) -> StoreConfig:
        if self._config is None:
            self._config = StoreConfig.load(self.backend, create=write or self._embedded)
        return self._config

    def create(self) -> None:
        """Create the store where it does not exist yet (a first push or a first stage does)."""
        self._open(write=True)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.backend, markers=self._open().format >= 2)

    @cached_property
    def cache(self) -> BlockCache:
        """The block cache this machine's mounts share ($ARTFS_CACHE): API reads use it too."""
        return BlockCache(default_cache_dir(), self.blobs.block_size)

    @cached_property
    def blobs(self) -> BlobStore:
        """The store's contents (one per Store: it keeps recently read tree objects)."""
        return BlobStore(self.backend, self._open().block_size)

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every artifact name in the store."""
        return self.catalog.artifact_names()

    def versions(self, name: str) -> list[Version]:
        """Live versions of `name`, oldest first."""
        catalog = self.catalog
        records = catalog.versions(validate_name(name))
        if not records and not catalog.numbers(name):
            raise ArtifactNotFoundError(f"no artifact named {name!r}")
        held = _aliases_by_version(catalog.aliases(name))
        return [Version(self, r, "", held.get(r.number, [])) for r in records]

    def artifact(self, ref: str) -> Version:
        """The version `ref` names: `name:v3`, `name:3`, `name:alias`, or `name` (= latest)."""
        catalog = self.catalog
        rec, etag = catalog.resolve_with_etag(Ref.parse(ref))
        held = _aliases_by_version(catalog.aliases(rec.name))
        return Version(self, rec, etag, held.get(rec.number, []))

    def diff(self, a: str, b: str) -> list[Difference]:
        return self.artifact(a).diff(self.artifact(b))

    # -- writing -----------------------------------------------------------------------------
    def log_artifact(
        self,
        artifact: Artifact,
        aliases: Iterable[str] = (),
        *,
        on_conflict: str = "new",
        delete_aliases: bool = False,
        progress: ProgressFactory = silent,
    ) -> Version:
        """Commit `artifact` as the next version of its name and return that Version.

        Identical content to the newest version creates nothing and returns it, with `aliases`
        pointed at it and the artifact's description and metadata applied to it (metadata keys
        are added or replaced). on_conflict: new (default) | skip | error | replace (older
        versions are deleted; those that aliases name only with `delete_aliases`). The returned
        Version's `created` says whether it is new; `commit` holds what else happened.
        """
        self._open(write=True)
        result = commit(
            self.catalog,
            self.blobs,
            artifact.name,
            artifact.parts(),
            type=artifact.type,
            description=artifact.description,
            metadata=artifact.metadata,
            aliases=aliases,
            on_conflict=on_conflict,
            delete_aliases=delete_aliases,
            progress=progress,
        )
        version = self.artifact(result.record.label)
        version.created = result.created
        version.commit = result
        return version

    def use_artifact(self, ref_or_artifact: str | Artifact) -> Version:
        """W&B's use_artifact: a ref (`name:alias`) gives that version; an Artifact is logged
        unless its content is already the newest version (idempotent: call it every run)."""
        if isinstance(ref_or_artifact, Artifact):
            return self.log_artifact(ref_or_artifact)
        return self.artifact(ref_or_artifact)


def _aliases_by_version(aliases: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, number in sorted(aliases.items()):
        out.setdefault(number, []).append(alias)
    return out


class Artifact:
    """An artifact being assembled before `Store.log_artifact`.

    Path rules follow W&B: `add_file` without a name uses the basename, a name ending in `/` is a
    folder; `add_dir` without a name adds the directory's contents at the root.
    """

    def __init__(
        self,
        name: str,
        type: str | None = None,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.name = validate_name(name)
        self.type = validate_name(type, "type") if type is not None else None
        self.description = description
        self.metadata = dict(metadata or {})
        self._parts: list[Part] = []
        self._files: set[str] = set()  # paths added one by one (a directory's are known at push)
        self._tmp: Path | None = None

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, {len(self._parts)} parts)"

    def _add(self, src: Source) -> None:
        if src.path in self._files:
            raise InvalidPathError(f"{self.name}: {src.path!r} was already added")
        self._files.add(src.path)
        self._parts.append(src)

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None) -> str:
        src = source_for(Path(local_path), name)
        self._add(src)
        return src.path

    def add_dir(
        self,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        *,
        exclude: Iterable[str] = (),
        dereference: bool = False,
        one_file_system: bool = False,
    ) -> None:
        """Add a directory's contents (under `name`, default the root). It is read when the
        artifact is logged (so a million files cost no memory here), and what cannot be stored
        is reported then. `exclude`: gitignore-style patterns, added to those of a
        `.artfsignore` at its top. Symlinks that leave it are refused unless `dereference`
        (store what they point to). Never enters an artfs mount; with `one_file_system`, no
        other filesystem either."""
        local = Path(local_path)
        if not local.exists():
            raise SourceNotFoundError(f"{local}: no such directory")
        if not local.is_dir():
            raise InvalidPathError(f"{local} is not a directory; add it as a file")
        prefix = join_path(None, name) if name and name.strip("/") else ""
        self._parts.append(
            DirSource(local, prefix, ScanOptions(tuple(exclude), dereference, one_file_system))
        )

    def add_reference(
        self, uri: str, name: str | None = None, checksum: bool = True, max_objects: int | None = None
    ) -> None:
        """Add the file or the objects at `uri` (s3://, gs://, http(s)://, file:// or a path)
        as references: nothing is uploaded; each is pinned and read from where it is. Named as
        W&B's add_reference names them (refs.py); a prefix holding more than `max_objects`
        (default 10,000) objects is an error when the artifact is logged, when it is listed."""
        self._parts.append(reference(uri, name, checksum, max_objects))

    @contextlib.contextmanager
    def new_file(self, name: str, mode: str = "w", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a file that becomes part of the artifact when the `with` block ends."""
        path = validate_path(name)
        if path in self._files:
            raise InvalidPathError(f"{self.name}: {path!r} was already added")
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="artfs-new-"))
            weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        local = self._tmp / f"{len(self._parts)}-{posixpath.basename(path)}"
        with open(local, mode, encoding=encoding) as f:
            yield f
        self._add(Source(path, "file", LocalFile(str(local))))

    def parts(self) -> list[Part]:
        if not self._parts:
            raise InvalidInputError(f"{self.name}: nothing was added")
        return list(self._parts)


@dataclass(frozen=True)
class ArtifactFile:
    """One path of a logged version (what `Version.files()` and `get_path()` return)."""

    version: Version
    entry: Entry

    @property
    def path(self) -> str:
        return self.entry.path

    @property
    def size(self) -> int:
        return self.entry.size

    @property
    def hash(self) -> str:
        return self.entry.hash

    @property
    def mode(self) -> int:
        """0o755 or 0o644: a version records whether a file is executable, as git does."""
        return self.entry.mode

    @property
    def last_modified(self) -> datetime:
        return datetime.fromtimestamp(self.entry.mtime / 1e9, UTC)

    def ref(self) -> str | None:
        """The URI of a reference (W&B's Entry.ref()); None for a stored file."""
        return self.entry.source or None

    def open(self) -> io.BufferedReader:
        return self.version.open(self.path)

    def download(self, root: str | os.PathLike[str] | None = None) -> str:
        """Write this one file under `root` (default: the version's download dir); return its path."""
        root = Path(root or self.version.default_root())
        materialize(self.version.store.blobs, Manifest.build([self.entry]), root)
        return str(root / self.path)

    def to_dict(self) -> dict[str, Any]:
        return self.entry.to_dict()


@dataclass(frozen=True)
class FileData:
    """One file as Neptune's fetch_files_list describes it. `size` is in bytes (Neptune's is in
    kilobytes); `metadata` holds "file_path" (where the bytes are: the reference's URI, or None
    for a stored file) and "last_modified" (the file's mtime, as "YYYY-MM-DD HH:MM:SS" UTC)."""

    file_hash: str
    file_path: str
    size: int
    metadata: dict[str, Any]

    @classmethod
    def of(cls, entry: Entry) -> FileData:
        modified = datetime.fromtimestamp(entry.mtime / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        where = {"file_path": entry.source or None, "last_modified": modified}
        return cls(entry.hash, entry.path, entry.size, where)


class Version:
    """A logged version. Attributes mirror W&B's: change `aliases`, `metadata`, `description`,
    then `save()`."""

    def __init__(self, store: Store, record: VersionRecord, etag: str, aliases: list[str]) -> None:
        self.store = store
        self._record = record
        self._etag = etag
        self._saved_aliases = list(aliases)
        self.aliases: list[str] = list(aliases)
        self.metadata: dict[str, Any] = dict(record.metadata)
        self.description: str = record.description
        self.created = False  # set by log_artifact: did this call write a new version?
        self.commit: CommitResult | None = None  # set by log_artifact: what else it did

    def __repr__(self) -> str:
        return f"<Version {self.qualified_name}>"

    name = property(lambda self: self._record.name)
    number = property(lambda self: self._record.number)
    type = property(lambda self: self._record.type)
    digest = property(lambda self: self._record.digest)
    size = property(lambda self: self._record.size)
    file_count = property(lambda self: self._record.files)
    created_at = property(lambda self: self._record.created_at)
    producer = property(lambda self: dict(self._record.producer))
    state = property(lambda self: self._record.state)

    @property
    def version(self) -> str:
        return f"v{self.number}"

    @property
    def qualified_name(self) -> str:
        return self._record.label

    @cached_property
    def tree(self) -> Tree:
        """The version's tree, loaded a directory at a time as it is used."""
        return version_tree(self.store.blobs, self._record, self.store.blobs.block_size)

    @cached_property
    def manifest(self) -> Manifest:
        """Every entry at once, in path order (loads the whole tree: `files()` streams)."""
        return self.tree.manifest()

    def to_dict(self) -> dict[str, Any]:
        d = self._record.to_dict()
        d.update(
            version=self.version, aliases=self.aliases, metadata=self.metadata, description=self.description
        )
        return d

    def files(self) -> Iterator[ArtifactFile]:
        """Every file, link and empty directory, a directory of the tree at a time."""
        return (
            ArtifactFile(self, e) for e in self.tree.walk() if e.kind != "dir" or e.digest == EMPTY_DIGEST
        )

    def get_path(self, path: str) -> ArtifactFile:
        """One path of the version (loads only the directories on its way)."""
        entry = self.tree.lookup(validate_path(path))
        if entry is None or (entry.kind == "dir" and entry.digest != EMPTY_DIGEST):
            raise NotFoundError(f"{self.qualified_name} has no file {path!r}")
        return ArtifactFile(self, entry)

    def diff(self, other: Version) -> list[Difference]:
        """What changes from this version to `other`, comparing only subtrees that differ."""
        return diff(self.tree, other.tree)

    get_entry = get_path  # W&B's newer name

    def fetch_hash(self) -> str:
        """Neptune's fetch_hash: the version's digest (content and paths, never mtimes)."""
        return self.digest

    def fetch_files_list(self) -> list[FileData]:
        """Neptune's fetch_files_list: one FileData per file (hash, path, size, and the source
        URI and last-modified time in `metadata`)."""
        return [FileData.of(f.entry) for f in self.files() if f.entry.is_file]

    def open(self, path: str) -> io.BufferedReader:
        """A verified, lazily fetched binary reader for one file (symlinks are followed)."""
        entry = self.get_path(path).entry
        for _ in range(40):
            if entry.kind != "link":
                break
            target = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.target))
            entry = self.get_path(target).entry
        if not entry.is_file:
            raise InvalidInputError(f"{self.qualified_name}: {path!r} is not a file")
        blobs = self.store.blobs
        return io.BufferedReader(FileReader(blobs, self.store.cache, entry), buffer_size=blobs.block_size)

    def default_root(self) -> Path:
        return Path("artifacts") / f"{self.name}:{self.version}"

    def materialize(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        exact: bool = False,
        force: bool = False,
        dry_run: bool = False,
        path_prefix: str | None = None,
        progress: ProgressFactory = silent,
    ) -> Changes:
        """What `download` (exact=False) and `checkout` (exact=True) do, returning what changed
        (or would change, with dry_run): added, replaced and removed paths."""
        manifest = self.manifest
        if path_prefix:
            manifest = Manifest.build(
                (e for e in manifest if e.path.startswith(path_prefix)), manifest.block_size
            )
        return materialize(
            self.store.blobs,
            manifest,
            Path(root or self.default_root()),
            exact=exact,
            label=(self.name, self.number),
            force=force,
            dry_run=dry_run,
            progress=progress,
        )

    def download(
        self,
        root: str | os.PathLike[str] | None = None,
        progress: ProgressFactory = silent,
        *,
        path_prefix: str | None = None,
    ) -> str:
        """Add the version's files to `root` (default ./artifacts/NAME:vN), replacing ones that
        differ; everything else there stays. `path_prefix`: only paths starting with it.
        Returns the directory."""
        return str(self.materialize(root, path_prefix=path_prefix, progress=progress).root)

    def checkout(
        self,
        root: str | os.PathLike[str] | None = None,
        progress: ProgressFactory = silent,
        *,
        force: bool = False,
    ) -> str:
        """Make `root` exactly this version: what the version does not have is DELETED. Refuses
        to delete or replace anything in a directory artfs has not filled from this artifact
        before, unless `force`. Returns the directory."""
        return str(self.materialize(root, exact=True, force=force, progress=progress).root)

    def differences(
        self, root: str | os.PathLike[str], exclude: Iterable[str] = (), progress: ProgressFactory = silent
    ) -> list[Difference]:
        """Every difference between `root` and this version (empty when they match), hashing
        every file: missing, extra, modified, mode (executable or not), type, target; and the
        references whose origin drifted or vanished (`drifted`). What a push leaves out (a
        `.artfsignore` at the top, `exclude`) is left out here too. A reference whose content
        was not hashed when tracked is compared with its pinned bytes, read from the origin."""
        found = differences(self.manifest, Path(root), exclude, progress, self._pinned_content)
        return sorted(found + self.drifted(), key=lambda d: d.path)

    def drifted(self) -> list[Difference]:
        """The references whose origin no longer holds the bytes they pinned ("drifted": other
        bytes, even where a versioned bucket still serves the pinned ones; "vanished": none),
        found by asking each origin about its objects, without reading them."""
        blobs = self.store.blobs
        out = []
        for e in self.manifest:
            why = drift(e, blobs.origins, blobs.block_size) if e.source else None
            if why is not None:
                out.append(Difference(e.path, "vanished" if why == "gone" else "drifted", why))
        return out

    def _pinned_content(self, entry: Entry) -> str:
        hasher = StreamHasher(self.store.blobs.block_size)
        for block in self.store.blobs.iter_blocks(entry):
            hasher.update(block)
        return hasher.digest().hash

    def verify(self, root: str | os.PathLike[str] | None = None, progress: ProgressFactory = silent) -> None:
        """Raise VerificationError (a ValueError, as W&B's verify raises) listing the
        differences when `root` (default ./artifacts/NAME:vN) does not match this version."""
        root = Path(root or self.default_root())
        found = self.differences(root, progress=progress)
        if found:
            shown = "; ".join(f"{d.change} {d.path}" for d in found[:5]) + ("; …" if len(found) > 5 else "")
            paths = "1 path" if len(found) == 1 else f"{len(found)} paths"
            raise VerificationError(f"{root} differs from {self.qualified_name} in {paths}: {shown}", found)

    def save(self) -> None:
        """Persist changes to aliases, metadata and description (compare-and-swap: a concurrent
        change to the same version raises ConflictError instead of being overwritten)."""
        catalog = self.store.catalog
        wanted, had = set(self.aliases), set(self._saved_aliases)
        if LATEST in wanted ^ had:
            raise InvalidInputError("'latest' moves by itself and cannot be set or removed")
        for alias in sorted(wanted - had):
            catalog.set_alias(self.name, validate_alias(alias), self.number)
        for alias in sorted(had - wanted):
            catalog.delete_alias(self.name, alias, expected=self.number)
        if self.metadata != self._record.metadata or self.description != self._record.description:
            updated = replace(self._record, metadata=dict(self.metadata), description=self.description)
            self._etag = catalog.update(updated, self._etag)
            self._record = updated
        self._saved_aliases = list(self.aliases)

    def delete(self, delete_aliases: bool = False) -> None:
        """Delete this version; refuses while aliases (other than latest) point at it."""
        removed = self.store.catalog.delete_version(self._record, delete_aliases=delete_aliases)
        self.aliases = [a for a in self.aliases if a not in removed and a != LATEST]
        self._record = replace(self._record, state="DELETED")
