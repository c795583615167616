"""The Backend contract every store implements (local disk, S3, GCS).

A backend is a flat key → bytes map with two conditional writes, which are all the catalog needs
to be safe with many writers and no server: `put(if_absent=True)` claims a key exactly once, and
`put(if_match=etag)` replaces a value only if nobody changed it since it was read. Implementations
provide the abstract methods; conveniences are derived here. Keys are `/`-separated, never start
with `/` or `.`, and are listed in sorted order.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from ..errors import ObjectNotFoundError
from . import retry

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""  # from `stat`: what `put(if_match=…)` takes; from `list`, where a store gives it
    modified: float = 0.0  # seconds since the epoch, as the store says (from `list` too)

    @property
    def change(self) -> str:
        """Differs whenever the object does (to tell from a listing what changed)."""
        return self.etag or f"{self.modified!r}-{self.size}"


@dataclass(frozen=True)
class Payload:
    """A whole object and the etag to pass to `put(if_match=…)` to replace exactly this value."""

    data: bytes
    etag: str


class Backend(ABC):
    url: str

    @abstractmethod
    def get(self, key: str) -> Payload:
        """Whole object with its etag; ObjectNotFoundError if missing."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from `start` (fewer only at the end of the object)."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Store `data` atomically and return its etag.

        if_absent: fail with PreconditionFailedError if the key exists.
        if_match:  fail with PreconditionFailedError unless the key exists with this etag.
        """

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size: int, *, if_absent: bool = False) -> str:
        """Store a large object read from `stream` (which may raise to abort: nothing becomes
        visible then). Atomic like `put`."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and etag; ObjectNotFoundError if missing."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def list_dirs(self, prefix: str) -> Iterator[str]:
        """The next path component of every key below `prefix` (which ends in `/`), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key; a missing key is not an error. (Not conditional: the catalog never
        needs that, and many S3-compatible servers and the GCS emulator do not enforce it.)"""

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group many write-once `put_stream(if_absent=True)` calls (content-addressed blobs):
        they may become visible only when the block ends, and a key that already exists is kept
        without an error. Lets a backend pay for durability once per batch, not once per object."""
        return contextlib.nullcontext()

    def may_create_store(self) -> bool:
        """Whether a new store may be made here (where none is yet). A bucket prefix may hold
        other things; a local directory must be new or empty (see LocalBackend)."""
        return True

    def local_path(self, key: str) -> str | None:
        """A path where the object can be read in place on this machine, or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and file handles."""

    # -- conveniences derived from the contract ----------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def holds(self, key: str, data: bytes) -> str | None:
        """The etag of `key` if it holds exactly `data`, else None."""
        try:
            current = self.get(key)
        except ObjectNotFoundError:
            return None
        return current.etag if current.data == data else None

    def get_json(self, key: str) -> tuple[Any, str]:
        payload = self.get(key)
        return json.loads(payload.data), payload.etag

    def put_json(self, key: str, doc: Any, **conditions: Any) -> str:
        data = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode()
        return self.put(key, data, **conditions)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteBackend(Backend):
    """A store behind an SDK (S3, GCS): keys live under `scheme://bucket/prefix/`, and every
    request goes through `retry.call` with the SDK's exceptions translated by `_errors`."""

    def __init__(self, scheme: str, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"{scheme}://{bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    @abstractmethod
    def _errors(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Turn the SDK's exceptions into domain errors naming the store and `key`;
        StoreUnavailableError for the ones worth retrying."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._call(
            "GET range", key, lambda: self._read_range(self._key(key), start, start + length - 1)
        )

    @abstractmethod
    def _read_range(self, name: str, first: int, last: int) -> bytes:
        """Bytes `first`..`last` (inclusive) of object `name`, b"" if it ends before `first`."""

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            with self._errors(key):
                return fn()

        return retry.call(what, attempt)


def read_all(stream: BinaryIO, chunk: int = 16 * 1024 * 1024) -> bytes:
    """Read a stream to its end, so a verifying reader checks the content before any of it is
    sent anywhere."""
    chunks = []
    while data := stream.read(chunk):
        chunks.append(data)
    return b"".join(chunks)
