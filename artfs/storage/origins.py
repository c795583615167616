"""Where references' bytes stay (DESIGN §2b): `file://` (and plain paths), `s3://`, `gs://` and
`http(s)://` objects, found, pinned and read by range with the pin enforced.

An origin answers three questions about a URI: which objects are there (`find`: the object
itself, or those under it as a prefix or folder, from listings only, at most `limit` + 1 so a
caller can tell it was over), what is there now (`stat`), and the bytes of a range *as pinned*
(`read`). A read never returns other bytes than the pinned ones: S3 reads the pinned VersionId
or sends If-Match with the ETag; GCS reads the pinned generation; HTTP sends If-Match (or
If-Unmodified-Since) and checks the answer's validators itself, since a server may ignore them;
a local file's size and mtime are checked before and after the read. An object whose pinned
bytes are no longer there raises StaleReferenceError (ESTALE) when something else is at the URI,
ReferenceGoneError (EIO) when nothing is; both name the URI (its query left out) and say what
was expected and found.

S3 and GCS objects are reached through the stores' own backends (one per bucket, with their
credentials from the standard chains and `$S3_ENDPOINT_URL`), so requests, retries and error
mapping are those of a store. A pin is a dict; a weak one (tracked without a checksum) holds
`weak` and is checked by size and modification time only.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import os
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..errors import (
    FsError,
    InvalidInputError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ReferenceGoneError,
    StaleReferenceError,
    StoreError,
    StoreUnavailableError,
    UnsupportedSchemeError,
)
from ..logs import redact
from . import retry

HTTP_TIMEOUT = 30


@dataclass(frozen=True)
class Found:
    """An object at or under a tracked URI: its path below that URI ("" for the URI itself)."""

    rel: str
    uri: str
    size: int
    modified: float  # seconds since the epoch
    pin: dict[str, Any]


class Origin(ABC):
    @abstractmethod
    def find(self, uri: str, limit: int) -> list[Found]:
        """The object at `uri`, or the objects under it (at most `limit` + 1); [] if none."""

    @abstractmethod
    def stat(self, uri: str) -> Found | None:
        """The object at `uri` as it is now (its pin made as `find` makes one), None if gone."""

    @abstractmethod
    def read(self, uri: str, pin: dict[str, Any], start: int, length: int) -> bytes:
        """`length` bytes at `start` of the pinned object (fewer at its end)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def stale(self, uri: str, pin: dict[str, Any], block: int | None = None) -> Exception:
        """The error for a read that found the pinned bytes gone (`block`: that block's hash did
        not match): what is there now, if anything."""
        now = self.stat(uri)
        if now is None:
            return ReferenceGoneError(f"{redact(uri)}: the referenced object is gone")
        which = "" if block is None else f"block {block} differs; "
        return StaleReferenceError(
            f"{redact(uri)}: the referenced object changed since it was tracked ({which}pinned "
            f"{_show(pin)}, found {_show(now.pin)})"
        )


def _show(pin: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(pin.items()) if k not in ("weak",))


# -- local files ---------------------------------------------------------------------------------
class FileOrigin(Origin):
    """Files on this machine (an NFS share, a mounted volume). The pin is size and mtime, plus
    the content's hash when checksummed (refs.py hashes: `find` only looks)."""

    def find(self, uri: str, limit: int) -> list[Found]:
        root = file_path(uri)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise InvalidInputError(f"{root}: {e.strerror}") from None
        if not os.path.isdir(root):
            return [_file_found("", uri, st)]
        out: list[Found] = []
        for top, dirs, files in os.walk(root, onerror=_raise):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(top, name)
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(path)
                    if stat.S_ISREG(st.st_mode):  # one stat per file, not two
                        rel = os.path.relpath(path, root)
                        out.append(_file_found(rel, file_uri(path), st))
                if len(out) > limit:
                    return out
        return out

    def stat(self, uri: str) -> Found | None:
        try:
            return _file_found("", uri, os.stat(file_path(uri)))
        except FileNotFoundError:
            return None

    def read(self, uri: str, pin: dict[str, Any], start: int, length: int) -> bytes:
        try:
            fd = os.open(file_path(uri), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self.stale(uri, pin) from None
        try:
            before = os.fstat(fd)
            if os.geteuid() == 0 and not before.st_mode & stat.S_IROTH:
                # a version from a shared store must not make root read this machine's private files
                raise FsError(
                    errno.EACCES, f"{uri}: not readable by all; as root, artfs reads only such files"
                )
            data = os.pread(fd, length, start)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        # A checksummed file's blocks are verified by hash (a touch changes nothing); else
        # the mtime is all there is to go by.
        for st in (before, after):
            if st.st_size != pin["size"] or ("xxh3" not in pin and st.st_mtime_ns != pin["mtime_ns"]):
                raise self.stale(uri, pin)
        return data


def _raise(e: OSError) -> None:
    raise InvalidInputError(f"{e.filename}: {e.strerror}")


def _file_found(rel: str, uri: str, st: os.stat_result) -> Found:
    return Found(rel, uri, st.st_size, st.st_mtime_ns / 1e9, {"size": st.st_size, "mtime_ns": st.st_mtime_ns})


def file_path(uri: str) -> str:
    return urllib.parse.unquote(uri.removeprefix("file://"))


def file_uri(path: str) -> str:
    return "file://" + urllib.parse.quote(os.path.abspath(path))


# -- HTTP(S) -------------------------------------------------------------------------------------
class HTTPOrigin(Origin):
    """A URL is one object (HTTP has no listing). Pinned by ETag or, when the server sends none,
    Last-Modified, with Content-Length; where a server sends neither, refs.py hashes the
    content when it is tracked."""

    def find(self, uri: str, limit: int) -> list[Found]:
        found = self.stat(uri)
        return [found] if found is not None else []

    def stat(self, uri: str) -> Found | None:
        try:
            _, headers, _ = self._request(uri, "HEAD", {})
        except ObjectNotFoundError:
            return None
        if "Content-Length" not in headers:
            raise StoreError(f"{redact(uri)}: the server sends no Content-Length; it cannot be tracked")
        size = int(headers["Content-Length"])
        last = headers.get("Last-Modified")
        modified = email.utils.parsedate_to_datetime(last).timestamp() if last else 0.0
        etag = headers.get("ETag")
        pin: dict[str, Any] = {"size": size, "modified": modified}
        if etag:
            pin["etag"] = etag
        return Found("", uri, size, modified, pin)

    def read(self, uri: str, pin: dict[str, Any], start: int, length: int) -> bytes:
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        if pin.get("etag") and not pin["etag"].startswith("W/"):
            headers["If-Match"] = pin["etag"]
        elif pin.get("modified"):
            headers["If-Unmodified-Since"] = email.utils.formatdate(pin["modified"], usegmt=True)
        try:
            status, got, data = self._request(uri, "GET", headers)
        except (PreconditionFailedError, ObjectNotFoundError):
            raise self.stale(uri, pin) from None
        # the server may have ignored the condition: check what it says these bytes are
        total = got.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(got.get("Content-Length", -1)) if status == 200 else -1
        last = got.get("Last-Modified")
        modified = email.utils.parsedate_to_datetime(last).timestamp() if last else 0.0
        if (
            (pin.get("etag") and got.get("ETag") != pin["etag"])
            or (size >= 0 and size != pin["size"])
            or ("etag" not in pin and pin.get("modified") and modified != pin["modified"])
        ):
            raise self.stale(uri, pin)
        return data if status == 206 else data[start : start + length]

    def _request(self, uri: str, method: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        def attempt() -> tuple[int, Any, bytes]:
            request = urllib.request.Request(uri, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                e.close()
                if e.code in (404, 410):
                    raise ObjectNotFoundError(redact(uri)) from None
                if e.code == 412:
                    raise PreconditionFailedError(redact(uri)) from None
                if e.code == 416:
                    return 206, e.headers, b""
                if e.code >= 500 or e.code in (408, 429):
                    raise StoreUnavailableError(f"{redact(uri)}: HTTP {e.code}") from None
                raise StoreError(f"{redact(uri)}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise StoreUnavailableError(f"{redact(uri)}: {redact(str(reason))}") from None

        return retry.call(f"{method} {redact(uri)}", attempt)


# -- S3 and GCS ----------------------------------------------------------------------------------
class BucketOrigin(Origin):
    """Objects of one S3 or GCS bucket, through that store kind's backend (its `pins`, `pin_of`
    and `read_pinned`). A key that is an object is that object; else a prefix (as a folder:
    `images` lists `images/…`)."""

    def __init__(self, scheme: str, bucket: str) -> None:
        from . import open_backend

        self.scheme, self.bucket = scheme, bucket
        self.backend: Any = open_backend(f"{scheme}://{bucket}")

    def _key(self, uri: str) -> str:
        return uri.split("/", 3)[3] if uri.count("/") >= 3 else ""

    def find(self, uri: str, limit: int) -> list[Found]:
        key = self._key(uri)
        if key and not key.endswith("/"):
            found = self.stat(uri)
            if found is not None:
                return [found]
        prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
        out = []
        for name, size, modified, pin in self.backend.pins(prefix, limit):
            if name.endswith("/"):
                continue  # a "folder" marker some tools create
            out.append(Found(name[len(prefix) :], self._uri(name), size, modified, pin))
        return out

    def stat(self, uri: str) -> Found | None:
        key = self._key(uri)
        try:
            size, modified, pin = self.backend.pin_of(key)
        except ObjectNotFoundError:
            return None
        return Found("", self._uri(key), size, modified, pin)

    def _uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def read(self, uri: str, pin: dict[str, Any], start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            data: bytes = self.backend.read_pinned(self._key(uri), pin, start, start + length - 1)
        except (PreconditionFailedError, ObjectNotFoundError):
            raise self.stale(uri, pin) from None
        return data

    def close(self) -> None:
        self.backend.close()


class Origins:
    """One origin per scheme and bucket, opened when first needed, shared by threads."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], Origin] = {}
        self._lock = threading.Lock()

    def of(self, uri: str) -> Origin:
        scheme, _, rest = uri.partition("://")
        bucket = rest.split("/", 1)[0] if scheme in ("s3", "gs") else ""
        with self._lock:
            origin = self._open.get((scheme, bucket))
            if origin is None:
                origin = self._open[scheme, bucket] = _origin(scheme, bucket, uri)
            return origin

    def close(self) -> None:
        with self._lock:
            for origin in self._open.values():
                origin.close()
            self._open.clear()


def _origin(scheme: str, bucket: str, uri: str) -> Origin:
    if scheme == "file":
        return FileOrigin()
    if scheme in ("http", "https"):
        return HTTPOrigin()
    if scheme in ("s3", "gs"):
        if not bucket:
            raise InvalidInputError(f"{uri}: no bucket")
        return BucketOrigin(scheme, bucket)
    raise UnsupportedSchemeError(f"{redact(uri)}: references are file://, s3://, gs:// or http(s):// URIs")
