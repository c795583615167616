"""Store backends by URL scheme. SDK-backed backends are imported only when used."""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from ..errors import InvalidInputError, UnsupportedSchemeError
from .base import Backend, ObjectInfo, Payload

__all__ = ["Backend", "ObjectInfo", "Payload", "normalize_url", "open_backend"]

SCHEMES = ("file", "s3", "gs")
_LOOKS_LIKE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# S3's rules for new buckets; GCS's are the same but for `_` and dotted names up to 222.
_BUCKET = {
    "s3": re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    "gs": re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]|[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"),
}


def normalize_url(url: str) -> str:
    """`/some/dir` and `file:///some/dir` name the same store; other schemes pass through. Text
    that looks like a URL but is not one (`s3:/bucket`, `s3:bucket`) is an error, never a
    directory of that name."""
    if "://" in url:
        return url
    if _LOOKS_LIKE_URL.match(url):
        scheme = url.partition(":")[0]
        raise UnsupportedSchemeError(
            f"store {url!r} looks like a URL but is not one: write {scheme}://… "
            "(s3://bucket/prefix, gs://bucket/prefix, file:///path), or ./path for a directory"
        )
    return f"file://{os.path.abspath(os.path.expanduser(url))}"


def _bucket(url: str, scheme: str, bucket: str) -> str:
    if not _BUCKET[scheme].fullmatch(bucket) or ".." in bucket:
        raise InvalidInputError(
            f"{url}: {bucket!r} is not a valid bucket name "
            "(3-63 characters: lowercase letters, digits, '.' and '-'; a letter or digit at each end)"
        )
    return bucket


def open_backend(url: str) -> Backend:
    url = normalize_url(url)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedSchemeError(f"{url}: file URLs take an absolute path: file:///path")
        from .local import LocalBackend

        return LocalBackend(parsed.path)
    if parsed.scheme == "s3":
        from .s3 import S3Backend

        return S3Backend(_bucket(url, "s3", parsed.netloc), parsed.path)
    if parsed.scheme == "gs":
        from .gcs import GCSBackend

        return GCSBackend(_bucket(url, "gs", parsed.netloc), parsed.path)
    raise UnsupportedSchemeError(
        f"{url}: unsupported store scheme {parsed.scheme!r} (supported: {', '.join(SCHEMES)})"
    )
