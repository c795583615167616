"""Versions and aliases, kept in the store itself: the bucket is the catalog.

Concurrency without a server:
- a version number is claimed with put-if-absent; a committer that loses the race takes N+1, so
  no version is ever overwritten and numbers are never reused (deleting leaves a tombstone);
- aliases move with compare-and-swap and retry on conflict, so no move is silently lost; an
  alias is removed the same way, by swapping in `{"version": null}`, so removal needs no
  conditional delete (the precondition S3-compatible servers and GCS emulators support least);
- `latest` is the newest live version, as the listing of version keys says (the claim is the
  commit point: a committer killed right after it has committed). Its alias record, for stores
  and readers of format 1, only moves forward when versions are committed and back only when
  the version it names is deleted.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import keys
from .errors import (
    ArtifactNotFoundError,
    CorruptDataError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    VersionInUseError,
    VersionNotFoundError,
)
from .names import LATEST, NAME_RE, Ref, validate_alias, validate_name
from .storage import Backend

COMMITTED = "COMMITTED"
DELETED = "DELETED"
CAS_ATTEMPTS = 200
DELETED_MARK = keys.DELETED_MARK
SUMMARY_READERS = 16


@dataclass(frozen=True)
class VersionRecord:
    name: str
    number: int
    type: str
    digest: str = ""
    manifest: str = ""  # format 1: the key of its manifest
    tree: str = ""  # format 2: the key of its root tree object
    size: int = 0
    files: int = 0
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    producer: dict[str, Any] = field(default_factory=dict)
    state: str = COMMITTED
    base: int | None = None  # a staged version: the version it was staged on, when it was not the newest

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str, number: int) -> VersionRecord:
        try:
            rec = cls(**d)
        except TypeError as e:
            raise CorruptDataError(f"malformed version record {name}:v{number}: {e}") from None
        if rec.name != name or rec.number != number:
            raise CorruptDataError(f"version record {name}:v{number} names {rec.label}")
        validate_name(rec.type, "type")
        return rec


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 10))))


@dataclass
class ArtifactKeys:
    """What one listing of the store's keys says of an artifact, without reading a record."""

    versions: dict[int, float] = field(default_factory=dict)  # number → when its key was written
    deleted: set[int] = field(default_factory=set)  # numbers with a deletion marker
    aliases: dict[str, str] = field(default_factory=dict)  # alias → its record's change token

    @property
    def live(self) -> list[int]:
        return sorted(n for n in self.versions if n not in self.deleted)

    def add(self, kind: str, leaf: str, modified: float, change: str) -> None:
        """One listed key: `kind` "versions" or "aliases", `leaf` its last part."""
        if kind == "versions" and leaf.isdigit():
            self.versions[int(leaf)] = modified
        elif kind == "versions" and leaf.endswith(DELETED_MARK) and leaf[: -len(DELETED_MARK)].isdigit():
            self.deleted.add(int(leaf[: -len(DELETED_MARK)]))
        elif kind == "aliases":
            self.aliases[leaf] = change


@dataclass(frozen=True)
class TopEntry:
    """A version or alias as a mount's top directory lists it."""

    dirname: str  # name:vN or name:alias
    name: str
    number: int
    modified: float  # when the version's key was written (seconds)


class Catalog:
    """See the module docstring. `markers`: the store marks deleted versions in key names
    (format-2 stores): listings then need no version record at all."""

    def __init__(self, backend: Backend, markers: bool = True) -> None:
        self.backend = backend
        self.markers = markers
        self._aliases: dict[str, tuple[str, int | None]] = {}  # alias key → (change, target) read

    # -- reading -----------------------------------------------------------------------------
    def artifact_names(self) -> list[str]:
        """Names with at least one claimed version (foreign keys in the prefix are ignored)."""
        return [n for n in self.backend.list_dirs(keys.ARTIFACTS) if NAME_RE.fullmatch(n)]

    def numbers(self, name: str) -> list[int]:
        """Every claimed version number, deleted ones included, ascending."""
        return sorted(self._version_keys(name).versions)

    def _version_keys(self, name: str) -> ArtifactKeys:
        """What the listing of an artifact's version keys says (one request per thousand)."""
        found = ArtifactKeys()
        prefix = keys.versions(name)
        for o in self.backend.list(prefix):
            found.add("versions", o.key[len(prefix) :], o.modified, o.change)
        return found

    def read(self, name: str, number: int) -> tuple[VersionRecord, str]:
        try:
            doc, etag = self.backend.get_json(keys.version(name, number))
        except ObjectNotFoundError:
            raise VersionNotFoundError(f"{name}:v{number} does not exist") from None
        except ValueError:
            raise CorruptDataError(f"version record {name}:v{number} is not valid JSON") from None
        return VersionRecord.from_dict(doc, name, number), etag

    def versions(self, name: str) -> list[VersionRecord]:
        """Live versions, oldest first."""
        recs = (self.read(name, n)[0] for n in self.numbers(name))
        return [r for r in recs if r.state == COMMITTED]

    def scan(self) -> dict[str, ArtifactKeys]:
        """Every artifact's versions, deletion markers and aliases, from one listing of keys
        (a request per thousand keys, whatever the number of artifacts)."""
        out: dict[str, ArtifactKeys] = {}
        for o in self.backend.list(keys.ARTIFACTS):
            name, _, rest = o.key[len(keys.ARTIFACTS) :].partition("/")
            kind, _, leaf = rest.partition("/")
            if not NAME_RE.fullmatch(name) or not leaf or "/" in leaf:
                continue
            out.setdefault(name, ArtifactKeys()).add(kind, leaf, o.modified, o.change)
        return out

    def listing(self) -> list[TopEntry]:
        """Every live version and alias as a mount's top directory names it: `name:vN`, and
        `name:alias` for each alias naming a live version. `latest` names the newest live
        version (catalog invariant); other aliases are read, once per change of their record."""
        out = []
        for name, found in sorted(self.scan().items()):
            live = found.live if self.markers else [r.number for r in self.versions(name)]
            if not live:
                continue
            out += [TopEntry(f"{name}:v{n}", name, n, found.versions[n]) for n in live]
            for alias, change in sorted(found.aliases.items()):
                target = live[-1] if alias == LATEST else self._alias_read(name, alias, change)
                if target in live:
                    out.append(TopEntry(f"{name}:{alias}", name, target, found.versions[target]))
        return out

    def _alias_read(self, name: str, alias: str, change: str) -> int | None:
        key = keys.alias(name, alias)
        known = self._aliases.get(key)
        if known is None or known[0] != change:
            known = (change, self._alias_target(name, alias))
            self._aliases[key] = known
        return known[1]

    def summaries(self) -> list[tuple[VersionRecord, int]]:
        """Every artifact's newest live version (read with one GET each, in parallel) and how
        many live versions it has."""
        newest = []
        for name, found in sorted(self.scan().items()):
            live = found.live if self.markers else [r.number for r in self.versions(name)]
            if live:
                newest.append((name, live[-1], len(live)))
        with ThreadPoolExecutor(SUMMARY_READERS) as pool:
            records = list(pool.map(lambda t: self.read(t[0], t[1])[0], newest))
        return [(r, count) for r, (_, _, count) in zip(records, newest, strict=True)]

    def aliases(self, name: str) -> dict[str, int]:
        prefix = keys.aliases(name)
        out: dict[str, int] = {}
        for o in self.backend.list(prefix):
            alias = o.key[len(prefix) :]
            number = self._alias_target(name, alias)
            if number is not None:
                out[alias] = number
        if self.markers:  # `latest` by the listing: its record may lag (the module docstring)
            live = self._version_keys(name).live
            out.pop(LATEST, None)
            if live:
                out[LATEST] = live[-1]
        return out

    def _alias_target(self, name: str, alias: str) -> int | None:
        try:
            return self._read_alias(name, alias)[0]
        except ObjectNotFoundError:
            return None

    def _read_alias(self, name: str, alias: str) -> tuple[int | None, str]:
        """The version an alias record names (None: removed) and its etag."""
        doc, etag = self.backend.get_json(keys.alias(name, alias))
        try:
            return (None if doc["version"] is None else int(doc["version"])), etag
        except (KeyError, TypeError, ValueError):
            raise CorruptDataError(f"alias record {name}:{alias} is malformed") from None

    def latest(self, name: str) -> VersionRecord | None:
        try:
            return self.resolve(Ref(name, alias=LATEST))
        except (ArtifactNotFoundError, VersionNotFoundError):
            return None

    def resolve(self, ref: Ref) -> VersionRecord:
        """The live version a ref names, or ArtifactNotFoundError / VersionNotFoundError."""
        return self.resolve_with_etag(ref)[0]

    def resolve_with_etag(self, ref: Ref) -> tuple[VersionRecord, str]:
        """`resolve`, plus the etag to update the record with (`update`)."""
        name = ref.name
        number = ref.number
        if ref.alias == LATEST and self.markers:
            return self._newest(name)
        if number is None:
            assert ref.alias is not None
            number = self._alias_target(name, ref.alias)
            if number is None and ref.alias == LATEST:
                # `latest` is missing only while no version was ever committed (or all deleted).
                live = self.versions(name)
                number = live[-1].number if live else None
        if number is None:
            self._require_artifact(name)
            raise VersionNotFoundError(f"{name} has no alias {ref.alias!r}")
        try:
            rec, etag = self.read(name, number)
        except VersionNotFoundError:
            self._require_artifact(name)
            raise
        if rec.state != COMMITTED:
            raise VersionNotFoundError(f"{rec.label} was deleted")
        return rec, etag

    def _newest(self, name: str) -> tuple[VersionRecord, str]:
        """The newest live version by the listing (a record tombstoned by a deleter that was
        cut short before its marker is passed over)."""
        found = self._version_keys(name)
        for number in reversed(found.live):
            rec, etag = self.read(name, number)
            if rec.state == COMMITTED:
                return rec, etag
        if not found.versions:
            raise ArtifactNotFoundError(f"no artifact named {name!r}")
        raise VersionNotFoundError(f"{name} has no versions left (all deleted)")

    def _require_artifact(self, name: str) -> None:
        if not self.numbers(name):
            raise ArtifactNotFoundError(f"no artifact named {name!r}")

    # -- writing -----------------------------------------------------------------------------
    def claim(self, name: str, make: Callable[[int], VersionRecord]) -> VersionRecord:
        """Create the next version with put-if-absent; a lost race moves on to the next number."""
        existing = self.numbers(name)
        number = existing[-1] + 1 if existing else 0
        for _ in range(100_000):
            rec = make(number)
            try:
                self.backend.put_json(keys.version(name, number), rec.to_dict(), if_absent=True)
                return rec
            except PreconditionFailedError:
                number += 1
        raise StoreError(f"could not claim a version number for {name}")  # pragma: no cover

    def update(self, rec: VersionRecord, etag: str) -> str:
        """Replace a version record if nobody changed it since it was read (etag)."""
        return self.backend.put_json(keys.version(rec.name, rec.number), rec.to_dict(), if_match=etag)

    def amend(
        self, name: str, number: int, change: Callable[[VersionRecord], VersionRecord]
    ) -> VersionRecord:
        """Apply `change` to a version record with compare-and-swap, reading it again and
        re-applying on conflict, so concurrent amendments of different fields all land."""
        for attempt in range(CAS_ATTEMPTS):
            rec, etag = self.read(name, number)
            if rec.state != COMMITTED:
                raise VersionNotFoundError(f"{rec.label} was deleted")
            new = change(rec)
            if new == rec:
                return rec
            try:
                self.update(new, etag)
                return new
            except PreconditionFailedError:
                _backoff(attempt)
        raise StoreError(f"{name}:v{number} keeps changing; gave up after {CAS_ATTEMPTS} tries")

    def set_alias(self, name: str, alias: str, number: int, *, forward_only: bool = False) -> bool:
        """Point `alias` at `number` with compare-and-swap, retrying on conflict.

        forward_only: leave the alias alone if it already names `number` or a newer version
        (how `latest` moves). Returns True if this call changed the alias.
        """
        validate_alias(alias)
        key = keys.alias(name, alias)
        for attempt in range(CAS_ATTEMPTS):
            try:
                try:
                    current, etag = self._read_alias(name, alias)
                except ObjectNotFoundError:
                    self.backend.put_json(key, {"version": number}, if_absent=True)
                    return True
                if current == number or (forward_only and current is not None and current > number):
                    return False
                self.backend.put_json(key, {"version": number}, if_match=etag)
                return True
            except PreconditionFailedError:
                _backoff(attempt)
        raise StoreError(f"alias {name}:{alias} keeps changing; gave up after {CAS_ATTEMPTS} tries")

    def delete_alias(self, name: str, alias: str, *, expected: int | None = None) -> bool:
        """Remove an alias (only if it still names `expected`, when given)."""
        key = keys.alias(name, alias)
        for attempt in range(CAS_ATTEMPTS):
            try:
                current, etag = self._read_alias(name, alias)
            except ObjectNotFoundError:
                return False
            if current is None or (expected is not None and current != expected):
                return False
            try:
                self.backend.put_json(key, {"version": None}, if_match=etag)
                return True
            except PreconditionFailedError:
                _backoff(attempt)
        raise StoreError(f"alias {name}:{alias} keeps changing; gave up after {CAS_ATTEMPTS} tries")

    def delete_version(self, rec: VersionRecord, *, delete_aliases: bool = False) -> list[str]:
        """Delete a version; refuse while aliases other than `latest` name it unless asked.

        Returns the aliases removed. `latest` moves back to the newest remaining version.
        """
        held = sorted(a for a, n in self.aliases(rec.name).items() if n == rec.number and a != LATEST)
        if held and not delete_aliases:
            raise VersionInUseError(
                f"{rec.label} has aliases {', '.join(held)}; delete them too with --delete-aliases"
            )
        for alias in held:
            self.delete_alias(rec.name, alias, expected=rec.number)
        self.tombstone(rec.name, rec.number)
        return held

    def tombstone(self, name: str, number: int) -> None:
        """Mark a version deleted: its record says so (its number stays claimed so it is never
        reused), then a marker key does, for listings that read no records."""
        for attempt in range(CAS_ATTEMPTS):
            rec, etag = self.read(name, number)
            if rec.state == DELETED:
                break
            try:
                self.update(replace(rec, state=DELETED), etag)
                break
            except PreconditionFailedError:
                _backoff(attempt)
        self.mark_deleted(name, number)
        # If `latest` named it, move `latest` back to the newest live version (only if it still
        # names the deleted one: a commit racing with us may have moved it forward already).
        if self._alias_target(name, LATEST) == number:
            live = self.versions(name)
            if live:
                self._move_latest_back(name, number, live[-1].number)
            else:
                self.delete_alias(name, LATEST, expected=number)

    def mark_all_deleted(self) -> None:
        """Give every deleted version its marker (a format-1 store's tombstones have none;
        format-2 stores promise them): once, before a store becomes format 2."""
        for name in self.artifact_names():
            for n in self.numbers(name):
                if self.read(name, n)[0].state == DELETED:
                    self.mark_deleted(name, n)

    def mark_deleted(self, name: str, number: int) -> None:
        with contextlib.suppress(PreconditionFailedError):
            self.backend.put(keys.deleted(name, number), b"", if_absent=True)

    def _move_latest_back(self, name: str, deleted: int, newest: int) -> None:
        key = keys.alias(name, LATEST)
        for attempt in range(CAS_ATTEMPTS):
            try:
                current, etag = self._read_alias(name, LATEST)
                if current != deleted:
                    return
                self.backend.put_json(key, {"version": newest}, if_match=etag)
                return
            except ObjectNotFoundError:
                return
            except PreconditionFailedError:
                _backoff(attempt)
