"""Store backends by URL scheme. SDK-backed backends are imported only when used."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..errors import UnsupportedSchemeError
from .base import Backend, ObjectInfo, Payload

__all__ = ["Backend", "ObjectInfo", "Payload", "normalize_url", "open_backend"]

SCHEMES = ("file", "s3", "gs")


def normalize_url(url: str) -> str:
    """`/some/dir` and `file:///some/dir` name the same store; other schemes pass through."""
    if "://" not in url:
        return f"file://{os.path.abspath(os.path.expanduser(url))}"
    return url


def open_backend(url: str) -> Backend:
    url = normalize_url(url)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedSchemeError(f"{url}: file URLs take an absolute path: file:///path")
        from .local import LocalBackend

        return LocalBackend(parsed.path)
    if parsed.scheme == "s3":
        if len(parsed.netloc) < 3:
            raise UnsupportedSchemeError(f"{url}: an S3 URL names a bucket: s3://bucket/prefix")
        from .s3 import S3Backend

        return S3Backend(parsed.netloc, parsed.path)
    if parsed.scheme == "gs":
        if len(parsed.netloc) < 3:
            raise UnsupportedSchemeError(f"{url}: a GCS URL names a bucket: gs://bucket/prefix")
        from .gcs import GCSBackend

        return GCSBackend(parsed.netloc, parsed.path)
    raise UnsupportedSchemeError(
        f"{url}: unsupported store scheme {parsed.scheme!r} (supported: {', '.join(SCHEMES)})"
    )
