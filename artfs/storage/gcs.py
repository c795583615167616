"""Google Cloud Storage: `gs://bucket/prefix`, through google-cloud-storage.

Credentials are application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, the
metadata server); with `$STORAGE_EMULATOR_HOST` set (fake-gcs-server) requests go there,
anonymously. Etags are object generations: `if_generation_match=0` claims a key once,
`if_generation_match=<generation>` replaces exactly the value that was read. The library's own
retries are off; every request goes through `retry.call`, the one policy for all stores.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from ..errors import ObjectNotFoundError, PreconditionFailedError, StoreError, StoreUnavailableError
from ..logs import redact
from . import retry
from .base import ObjectInfo, Payload, RemoteBackend, read_all

CHUNK = 16 * 1024 * 1024  # resumable uploads above this size, in chunks of it (a multiple of 256 KiB)


class GCSBackend(RemoteBackend):
    def __init__(self, bucket: str, prefix: str) -> None:
        from google.cloud import storage

        super().__init__("gs", bucket, prefix)
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "artfs")
        with self._errors(""):
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                import google.auth

                credentials, found = google.auth.default()
                self._client = storage.Client(project=found or project, credentials=credentials)
        self._bucket = self._client.bucket(bucket)
        self._bucket_seen = False  # a 404 means a missing key once the bucket is known to exist

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """The library's exceptions become domain errors naming the store and the key."""
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth
        from google.cloud.storage.exceptions import DataCorruption

        try:
            yield
        except api.NotFound:
            self._check_bucket()
            raise ObjectNotFoundError(key) from None
        except api.PreconditionFailed:
            raise PreconditionFailedError(key) from None
        except (api.Forbidden, api.Unauthorized) as e:
            raise StoreError(f"{self.url}: access denied ({e.message}); check the credentials") from None
        except (api.TooManyRequests, api.ServerError) as e:
            raise StoreUnavailableError(f"{self.url}: {key}: {e.message}") from None
        except DataCorruption:  # bytes that do not match the object's CRC32C: read them again
            raise StoreUnavailableError(f"{self.url}: {key}: a download failed its checksum") from None
        except api.GoogleAPICallError as e:
            raise StoreError(f"{self.url}: {key}: {e.message}") from None
        except auth.DefaultCredentialsError:
            hint = "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
            raise StoreError(f"{self.url}: no Google credentials ({hint})") from None
        except (requests.exceptions.RequestException, auth.TransportError, OSError) as e:
            raise StoreUnavailableError(f"{self.url}: {key}: {redact(str(e))}") from None

    def _check_bucket(self) -> None:
        """A download answers 404 for a missing bucket as for a missing key: tell them apart
        (once; a bucket that exists is remembered)."""
        if not self._bucket_seen:
            with self._errors(""):  # exists() answers False, never NotFound: no recursion
                found = self._bucket.exists(retry=None)
            if not found:
                raise StoreError(f"{self.url}: bucket {self.bucket!r} does not exist")
            self._bucket_seen = True

    # -- reading -----------------------------------------------------------------------------
    def get(self, key: str) -> Payload:
        def fn() -> Payload:
            blob = self._bucket.blob(self._key(key))
            data = blob.download_as_bytes(retry=None)
            return Payload(data, str(blob.generation))

        return self._call("GET", key, fn)

    def _read_range(self, name: str, first: int, last: int) -> bytes:
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        try:
            data: bytes = self._bucket.blob(name).download_as_bytes(start=first, end=last, retry=None)
        except RequestRangeNotSatisfiable:
            return b""  # starts at or past the end
        return data

    def stat(self, key: str) -> ObjectInfo:
        def fn() -> ObjectInfo:
            blob = self._bucket.get_blob(self._key(key), retry=None)
            if blob is None:
                raise ObjectNotFoundError(key)
            return ObjectInfo(key, int(blob.size or 0), str(blob.generation))

        return self._call("HEAD", key, fn)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        def fn() -> list[ObjectInfo]:
            blobs = self._client.list_blobs(self.bucket, prefix=self._key(prefix), retry=None)
            return [
                ObjectInfo(
                    b.name[len(self.prefix) :],
                    int(b.size or 0),
                    str(b.generation),
                    b.updated.timestamp() if b.updated else 0.0,
                )
                for b in blobs
            ]

        return iter(sorted(self._call("LIST", prefix, fn), key=lambda o: o.key))

    def list_dirs(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)

        def fn() -> list[str]:
            pages = self._client.list_blobs(self.bucket, prefix=full, delimiter="/", retry=None)
            for _ in pages:  # the prefixes are known once every page has been read
                pass
            return [p[len(full) :].rstrip("/") for p in pages.prefixes]

        return iter(sorted(self._call("LIST", prefix, fn)))

    # -- objects referenced in place (refs.py) ----------------------------------------------
    def pins(self, prefix: str, limit: int) -> Sequence[tuple[str, int, float, dict[str, Any]]]:
        """(key, size, modified, pin) of the objects under `prefix`, at most `limit`, from the
        listing only. The generation pins the bytes: a bucket that keeps versions serves it
        after the object is replaced."""

        def fn() -> Sequence[tuple[str, int, float, dict[str, Any]]]:
            out = []
            for b in self._client.list_blobs(self.bucket, prefix=self._key(prefix), retry=None):
                out.append((b.name[len(self.prefix) :], *_pin(b)))
                if len(out) > limit:
                    break
            return out

        return self._call("LIST", prefix, fn)

    def pin_of(self, key: str) -> tuple[int, float, dict[str, Any]]:
        def fn() -> tuple[int, float, dict[str, Any]]:
            blob = self._bucket.get_blob(self._key(key), retry=None)
            if blob is None:
                raise ObjectNotFoundError(key)
            return _pin(blob)

        return self._call("HEAD", key, fn)

    def read_pinned(self, key: str, pin: dict[str, Any], first: int, last: int) -> bytes:
        """Bytes `first`..`last` of the pinned generation (a weak pin: of the object while its
        update time is the pinned one). ObjectNotFoundError when that generation is gone."""
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        def fn() -> bytes:
            if pin.get("weak"):
                _, modified, _ = self.pin_of(key)
                if modified != pin["modified"]:
                    raise PreconditionFailedError(key)
            blob = self._bucket.blob(self._key(key), generation=pin.get("generation"))
            try:
                data: bytes = blob.download_as_bytes(start=first, end=last, retry=None)
            except RequestRangeNotSatisfiable:
                return b""
            return data

        return self._call("GET range", key, fn)

    # -- writing -----------------------------------------------------------------------------
    def _precondition(self, if_absent: bool, if_match: str | None) -> dict[str, Any]:
        if if_absent:
            return {"if_generation_match": 0}
        if if_match is not None:
            if not if_match.isdigit():
                raise PreconditionFailedError("?")
            return {"if_generation_match": int(if_match)}
        return {}

    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        conditions = self._precondition(if_absent, if_match)

        def send() -> str:
            with self._errors(key):
                blob = self._bucket.blob(self._key(key))
                blob.upload_from_string(data, retry=None, **conditions)
            return str(blob.generation)

        return retry.put_once("PUT", send, lambda: self.holds(key, data), bool(conditions))

    def put_stream(self, key: str, stream: BinaryIO, size: int, *, if_absent: bool = False) -> str:
        # Uploads above 8 MiB are resumable; GCS checks their precondition, fake-gcs-server does
        # not. Streams carry content-addressed blobs, so a key that exists already holds these
        # bytes: looking first keeps the contract everywhere and sends nothing twice.
        if if_absent and self.exists(key):
            raise PreconditionFailedError(key)
        if size <= CHUNK:
            return self.put(key, read_all(stream), if_absent=if_absent)
        conditions = self._precondition(if_absent, None)

        def send() -> str:  # a resumable upload: nothing is visible unless every chunk arrives
            blob = self._bucket.blob(self._key(key), chunk_size=CHUNK)
            blob.upload_from_file(_Checked(stream, size), size=size, retry=None, **conditions)
            return str(blob.generation)

        with self._errors(key):  # not retried: the stream cannot be read twice
            return send()

    def delete(self, key: str) -> None:
        def fn() -> None:
            from google.api_core.exceptions import NotFound

            with contextlib.suppress(NotFound):
                self._bucket.blob(self._key(key)).delete(retry=None)

        self._call("DELETE", key, fn)

    def close(self) -> None:
        self._client.close()


class _Checked(io.RawIOBase):
    """Hands an upload exactly `size` bytes, and reads on to the end of the stream before the
    last of them, so a verifying reader can fail the upload before it is finalized."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = self._left = size

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size - self._left

    def read(self, n: int | None = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read(want) if want else b""
        self._left -= len(data)
        if self._left == 0 and self._stream.read(1):
            raise StoreError("the source grew while it was being uploaded")
        return data


def _pin(blob: Any) -> tuple[int, float, dict[str, Any]]:
    """(size, modified, pin) of an object: generation, metageneration, CRC32C, and MD5 where
    GCS has one (a composite object has none)."""
    size = int(blob.size or 0)
    modified = blob.updated.timestamp() if blob.updated else 0.0
    pin = {"generation": str(blob.generation), "metageneration": str(blob.metageneration), "size": size,
           "modified": modified, "crc32c": blob.crc32c}  # fmt: skip
    if blob.md5_hash:
        pin["md5"] = blob.md5_hash
    return size, modified, pin
