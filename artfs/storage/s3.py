"""S3 and S3-compatible stores (MinIO, SeaweedFS, GCS's interoperability endpoint): `s3://bucket/prefix`.

Credentials and region come from boto3's standard chain (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, …);
`$S3_ENDPOINT_URL` (or `artfs --s3-endpoint`) points at a non-AWS server. Conditional writes are
S3's own: `If-None-Match: *` claims a key once, `If-Match: <etag>` replaces (or deletes) exactly
the value that was read. boto3's retries are off: every request goes through `retry.call`, the
one policy for all stores. A conditional write whose answer was lost and that is retried may
find its own write in place: it is recognised by its bytes and counts as done.

GETs (of blobs by range, the mount's hot path, and of catalog objects, which also keeps the
connection warm for a mount's first read) skip botocore's request pipeline: it costs ≈1.5 ms of
CPU per GET (event hooks, the user agent, parsing the response's headers into a model), which
made a mount of small files CPU-bound in the daemon rather than in the store. An object's URL is
presigned once per few minutes (the signature covers the host, not the Range header) and sent
through botocore's own HTTP session (same CA bundle, proxies and timeouts as the client), at
≈0.45 ms per GET. Its errors are turned into the `ClientError` botocore would have raised, so
`_errors` maps them like every other request's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from ..errors import (
    InvalidInputError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from ..logs import redact
from . import retry
from .base import ObjectInfo, Payload, RemoteBackend, read_all

PART = 16 * 1024 * 1024  # multipart above this size; parts grow for very large objects
MAX_PARTS = 9000
UNAVAILABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
                     "InternalError", "ConditionalRequestConflict"}  # fmt: skip
DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 60
POOL = 64
URL_TTL = 900  # seconds a presigned URL is valid for
URL_REUSE = 300  # seconds one is used for: well inside its life, and inside refreshed credentials'


class S3Backend(RemoteBackend):
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        import botocore.session
        from botocore.config import Config
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        super().__init__("s3", bucket, prefix)
        endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
        session = botocore.session.get_session()
        config = Config(
            retries={"max_attempts": 1, "mode": "standard"},  # retry.call retries, once
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=POOL,
            s3={"addressing_style": "path"} if endpoint else None,
        )
        region = session.get_config_variable("region") or ("us-east-1" if endpoint else None)
        try:
            self._client = session.create_client(
                "s3", endpoint_url=endpoint, region_name=region, config=config
            )
        except ValueError:  # botocore's "Invalid endpoint"
            raise InvalidInputError(
                f"S3 endpoint {endpoint!r} is not a URL (--s3-endpoint or $S3_ENDPOINT_URL, "
                "e.g. http://127.0.0.1:8333)"
            ) from None
        self.endpoint = str(self._client.meta.endpoint_url)
        # The client's settings, resolved the way botocore resolves them for its own session.
        self._http = URLLib3Session(
            verify=session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE", True),
            proxies=get_environ_proxies(self._client.meta.endpoint_url),
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            max_pool_connections=POOL,
        )
        self._presigned = functools.lru_cache(maxsize=4096)(self._presign)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """botocore's exceptions become domain errors naming the store and the key."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            message = e.response.get("Error", {}).get("Message", "") or code
            if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                raise ObjectNotFoundError(key) from None
            if code == "NoSuchBucket":
                raise StoreError(f"{self.url}: bucket {self.bucket!r} does not exist") from None
            if code == "PreconditionFailed" or status == 412:
                raise PreconditionFailedError(key) from None
            if code in DENIED_CODES or status in (401, 403):
                raise StoreError(f"{self.url}: access denied ({code}); check the credentials") from None
            if code in UNAVAILABLE_CODES or status >= 500 or status in (408, 409, 429):
                raise StoreUnavailableError(f"{self.url}: {key}: {message}") from None
            raise StoreError(f"{self.url}: {key}: {message}") from None
        except NoCredentialsError:
            hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            raise StoreError(f"{self.url}: no AWS credentials ({hint})") from None
        except (BotoCoreError, OSError) as e:  # connection refused or reset, timeouts, broken reads
            raise StoreUnavailableError(f"{self.url}: {key}: {self._reason(e)}") from None

    def _reason(self, e: Exception) -> str:
        """What went wrong with a request, without its URL (a presigned one carries the access
        key id and a signature)."""
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

        if isinstance(e, EndpointConnectionError | ConnectTimeoutError):
            cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e.kwargs.get("error", "")))
            detail = cause.group(1).strip().lower() if cause else type(e).__name__
            return f"cannot connect to {self.endpoint} ({detail})"
        return redact(str(e))

    # -- reading -----------------------------------------------------------------------------
    def get(self, key: str) -> Payload:
        def fn() -> Payload:
            _, headers, data = self._get(self._key(key), {})
            return Payload(data, headers.get("ETag", ""))

        return self._call("GET", key, fn)

    def _read_range(self, name: str, first: int, last: int) -> bytes:
        status, _, data = self._get(name, {"Range": f"bytes={first}-{last}"})
        if status == 416:
            return b""  # starts at or past the end
        return data if status == 206 else data[first : last + 1]  # a server may ignore Range

    def _get(self, name: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        """GET an object: status, headers and body (416 is the caller's)."""
        return self._send(self._presigned(name, int(time.monotonic() // URL_REUSE)), headers)

    def _send(self, url: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        """GET a presigned URL: status, headers and body (416 is the caller's)."""
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import IncompleteReadError

        r = self._http.send(AWSRequest("GET", url, headers=headers, stream_output=True).prepare())
        data: bytes = r.raw.read()  # in one piece (`r.content` joins 64 KiB chunks: 25% slower)
        if r.status_code not in (200, 206, 416):
            raise _client_error(r.status_code, data, "GetObject")
        expected = int(r.headers.get("Content-Length", len(data)))
        if len(data) != expected:  # the connection broke mid-body: worth another try
            raise IncompleteReadError(actual_bytes=len(data), expected_bytes=expected)
        return r.status_code, r.headers, data

    def _presign(self, name: str, epoch: int, version: str = "") -> str:
        """A GET URL for `name` (cached per `epoch`, a URL_REUSE-long slice of time)."""
        params = {"Bucket": self.bucket, "Key": name, **({"VersionId": version} if version else {})}
        return str(self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=URL_TTL))

    def stat(self, key: str) -> ObjectInfo:
        def fn() -> ObjectInfo:
            r = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return ObjectInfo(key, int(r["ContentLength"]), r["ETag"])

        return self._call("HEAD", key, fn)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        def fn() -> list[ObjectInfo]:
            out = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for o in page.get("Contents", []):
                    modified = o["LastModified"].timestamp() if "LastModified" in o else 0.0
                    out.append(
                        ObjectInfo(o["Key"][len(self.prefix) :], int(o["Size"]), o.get("ETag", ""), modified)
                    )
            return out

        return iter(sorted(self._call("LIST", prefix, fn), key=lambda o: o.key))

    def list_dirs(self, prefix: str) -> Iterator[str]:
        def fn() -> list[str]:
            out = []
            full = self._key(prefix)
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                out += [p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
            return out

        return iter(sorted(self._call("LIST", prefix, fn)))

    # -- objects referenced in place (refs.py) ----------------------------------------------
    def pins(self, prefix: str, limit: int) -> Sequence[tuple[str, int, float, dict[str, Any]]]:
        """(key, size, modified, pin) of the objects under `prefix`, at most `limit`, from
        listings only: list_object_versions where the bucket keeps versions (the pin then
        carries the VersionId, so old bytes stay readable), list_objects_v2 otherwise."""

        def fn() -> list[tuple[str, int, float, dict[str, Any]]]:
            versioned = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status") == "Enabled"
            method, field = (
                ("list_object_versions", "Versions") if versioned else ("list_objects_v2", "Contents")
            )
            out = []
            for page in self._client.get_paginator(method).paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                for o in page.get(field, []):
                    if versioned and not o.get("IsLatest"):
                        continue
                    modified = o["LastModified"].timestamp()
                    pin = {"etag": o["ETag"], "size": int(o["Size"]), "modified": modified}
                    if versioned and o.get("VersionId") not in (None, "null"):
                        pin["version"] = o["VersionId"]
                    out.append((o["Key"][len(self.prefix) :], int(o["Size"]), modified, pin))
                    if len(out) > limit:
                        return out
            return out

        return self._call("LIST", prefix, fn)

    def pin_of(self, key: str) -> tuple[int, float, dict[str, Any]]:
        """(size, modified, pin) of one object (HEAD)."""

        def fn() -> tuple[int, float, dict[str, Any]]:
            r = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            size, modified = int(r["ContentLength"]), r["LastModified"].timestamp()
            pin = {"etag": r["ETag"], "size": size, "modified": modified}
            if r.get("VersionId") not in (None, "null"):
                pin["version"] = r["VersionId"]
            return size, modified, pin

        return self._call("HEAD", key, fn)

    def read_pinned(self, key: str, pin: dict[str, Any], first: int, last: int) -> bytes:
        """Bytes `first`..`last` of the object as pinned: its VersionId if it has one, else
        If-Match on its ETag (a weak pin: If-Unmodified-Since). PreconditionFailedError when
        the object changed, ObjectNotFoundError when that version or object is gone."""
        from email.utils import formatdate

        headers = {"Range": f"bytes={first}-{last}"}
        if "etag" in pin and "version" not in pin:
            headers["If-Match"] = pin["etag"]
        elif pin.get("weak"):
            headers["If-Unmodified-Since"] = formatdate(pin["modified"], usegmt=True)

        def fn() -> bytes:
            url = self._presigned(self._key(key), int(time.monotonic() // URL_REUSE), pin.get("version", ""))
            status, got, data = self._send(url, headers)
            if "etag" in pin and got.get("ETag", pin["etag"]) != pin["etag"]:
                raise _client_error(412, b"", "GetObject")  # a server that ignored the condition
            if status == 416:
                return b""
            return data if status == 206 else data[first : last + 1]

        return self._call("GET range", key, fn)

    # -- writing -----------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        conditions: dict[str, Any] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match

        def send() -> str:
            with self._errors(key):
                r = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
            return str(r["ETag"])

        return retry.put_once("PUT", send, lambda: self.holds(key, data), bool(conditions))

    def put_stream(self, key: str, stream: BinaryIO, size: int, *, if_absent: bool = False) -> str:
        part = max(PART, -(-size // MAX_PARTS))
        if size <= part:
            return self.put(key, read_all(stream), if_absent=if_absent)
        return self._multipart(key, stream, part, if_absent)

    def _multipart(self, key: str, stream: BinaryIO, part: int, if_absent: bool) -> str:
        full = self._key(key)
        upload = self._call(
            "start upload", key, lambda: self._client.create_multipart_upload(Bucket=self.bucket, Key=full)
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            number = 1
            while chunk := _read_exactly(stream, part):
                send = functools.partial(
                    self._client.upload_part,
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                r = self._call(f"upload part {number}", key, send)
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
                number += 1
            if stream.read(1):  # the verifying reader raises here if the content changed
                raise StoreError(f"{key}: the source grew while it was being uploaded")
            extra = {"IfNoneMatch": "*"} if if_absent else {}
            r = self._call(
                "complete upload",
                key,
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                ),
            )
            return str(r["ETag"])
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise

    def delete(self, key: str) -> None:
        self._call("DELETE", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def close(self) -> None:
        self._http.close()
        self._client.close()


def _client_error(status: int, body: bytes, operation: str) -> Exception:
    """The ClientError botocore raises for an S3 error response (`<Error><Code>…</Code>`)."""
    from botocore.exceptions import ClientError

    code, message = "", ""
    with contextlib.suppress(ET.ParseError):
        doc = ET.fromstring(body)
        code, message = doc.findtext("Code") or "", doc.findtext("Message") or ""
    error = {"Code": code or str(status), "Message": message}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n and (chunk := stream.read(n - got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
