"""Versions and aliases, kept in the store itself: the bucket is the catalog.

Concurrency without a server:
- a version number is claimed with put-if-absent; a committer that loses the race takes N+1, so
  no version is ever overwritten and numbers are never reused (deleting leaves a tombstone);
- aliases move with compare-and-swap and retry on conflict, so no move is silently lost; an
  alias is removed the same way, by swapping in `{"version": null}`, so removal needs no
  conditional delete (the precondition S3-compatible servers and GCS emulators support least);
- `latest` only moves forward when versions are committed; it moves back only when the version
  it names is deleted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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


class Catalog:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- reading -----------------------------------------------------------------------------
    def artifact_names(self) -> list[str]:
        """Names with at least one claimed version (foreign keys in the prefix are ignored)."""
        return [n for n in self.backend.list_dirs(keys.ARTIFACTS) if NAME_RE.fullmatch(n)]

    def numbers(self, name: str) -> list[int]:
        """Every claimed version number, deleted ones included, ascending."""
        prefix = keys.versions(name)
        out = [int(k) for o in self.backend.list(prefix) if (k := o.key[len(prefix) :]).isdigit()]
        return sorted(out)

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

    def listing(self) -> list[tuple[str, VersionRecord]]:
        """Every live version and alias as a mount's top directory names it: `name:vN`, and
        `name:alias` for each alias naming a live version."""
        out = []
        for name in self.artifact_names():
            live = {r.number: r for r in self.versions(name)}
            out += [(f"{name}:v{n}", r) for n, r in live.items()]
            out += [(f"{name}:{a}", live[n]) for a, n in sorted(self.aliases(name).items()) if n in live]
        return out

    def aliases(self, name: str) -> dict[str, int]:
        prefix = keys.aliases(name)
        out: dict[str, int] = {}
        for o in self.backend.list(prefix):
            alias = o.key[len(prefix) :]
            number = self._alias_target(name, alias)
            if number is not None:
                out[alias] = number
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
        """Mark a version deleted; its number stays claimed so it is never reused."""
        for attempt in range(CAS_ATTEMPTS):
            rec, etag = self.read(name, number)
            if rec.state == DELETED:
                return
            try:
                self.update(replace(rec, state=DELETED), etag)
                break
            except PreconditionFailedError:
                _backoff(attempt)
        # If `latest` named it, move `latest` back to the newest live version (only if it still
        # names the deleted one: a commit racing with us may have moved it forward already).
        if self._alias_target(name, LATEST) == number:
            live = self.versions(name)
            if live:
                self._move_latest_back(name, number, live[-1].number)
            else:
                self.delete_alias(name, LATEST, expected=number)

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
