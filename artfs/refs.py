"""References: versions of files that stay where they are (W&B's `add_reference`, Neptune's
`track_files`), DESIGN §2b.

`artfs track NAME URI…` and `Artifact.add_reference` add a `Reference` part; when the version is
written, each is expanded (`entries`) into the objects at or under its URI, found from listings
(`storage/origins.py`), named as W&B names them:

    s3://bucket/model.h5                      → model.h5
    s3://bucket/checkpoints/model.h5          → model.h5
    s3://bucket/model.h5, name=models/m.h5    → models/m.h5
    s3://bucket/images                        → cat.png, dog.png (the objects under images/)
    s3://bucket/images, name=images           → images/cat.png, images/dog.png

A prefix or folder holding more than `max_objects` (default 10,000) objects is an error that
says so: a version never holds part of a prefix silently. Each entry keeps its pin; a local file
tracked with a checksum is hashed (block by block, as push hashes), so what is read of it later
is verified like a blob. Without a checksum (`--no-checksum`) the pin is the size and
modification time only, and the entry is *weak*.

`drift` tells whether a reference's origin still holds what it pinned (`artfs verify
--references`).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .digest import FileDigest, StreamHasher
from .errors import ContentChangedError, InvalidInputError, InvalidPathError, SourceNotFoundError
from .logs import redact
from .manifest import REFERENCE_SCHEMES, Entry, pin_text, ref_key
from .names import join_path
from .progress import Bar, extend, silent
from .storage.origins import Found, Origin, Origins, file_uri

MAX_OBJECTS = 10_000


@dataclass(frozen=True)
class Reference:
    """A URI to track, under `name` (see the module docstring)."""

    uri: str
    name: str | None = None
    checksum: bool = True
    max_objects: int | None = None


def reference(
    uri: str, name: str | None = None, checksum: bool = True, max_objects: int | None = None
) -> Reference:
    """A Reference to `uri` (a plain path becomes a file:// URI), checked."""
    if "://" not in uri:
        uri = file_uri(uri)
    elif not uri.startswith(REFERENCE_SCHEMES):
        raise InvalidInputError(f"{redact(uri)}: references are file://, s3://, gs:// or http(s):// URIs")
    if max_objects is not None and max_objects < 1:
        raise InvalidInputError(f"max_objects must be at least 1, not {max_objects}")
    if name is not None and name.strip("/"):
        join_path(None, name.rstrip("/"))  # a valid path, or InvalidPathError
    return Reference(uri, name, checksum, max_objects)


def entries(ref: Reference, origins: Origins, block_size: int, hashing: Bar) -> list[Entry]:
    """The version entries `ref` stands for (see the module docstring)."""
    limit = MAX_OBJECTS if ref.max_objects is None else ref.max_objects
    found = origins.of(ref.uri).find(ref.uri, limit)  # one origin per bucket: its objects' too
    if not found:
        raise SourceNotFoundError(f"{redact(ref.uri)}: no such object, prefix or folder")
    if len(found) > limit:
        raise InvalidInputError(
            f"{redact(ref.uri)} holds more than {limit:,} objects; pass --max-objects N "
            "(max_objects=N) to track up to N of them (a version never holds part of a prefix)"
        )
    single = len(found) == 1 and found[0].rel == ""
    origin = origins.of(ref.uri)
    return [_entry(origin, f, _path(ref, f, single), ref.checksum, block_size, hashing) for f in found]


def _path(ref: Reference, found: Found, single: bool) -> str:
    name = (ref.name or "").strip("/") if ref.name and ref.name.strip("/") else ""
    if not single:
        return join_path(None, f"{name}/{found.rel}" if name else found.rel)
    if name and not ref.name.endswith("/"):  # type: ignore[union-attr]
        return join_path(None, name)
    base = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(found.uri).path))
    if not base:
        raise InvalidPathError(f"{redact(found.uri)} names no file: give it a name (--name)")
    return join_path(None, f"{name}/{base}" if name else base)


def _entry(origin: Origin, found: Found, path: str, checksum: bool, block_size: int, hashing: Bar) -> Entry:
    pin, blocks = found.pin, tuple[str, ...]()
    if not checksum:
        time: dict[str, Any] = {k: pin[k] for k in ("mtime_ns", "modified") if k in pin}
        pin = {"size": found.size, **time, "weak": True}
    elif _hashed(found):
        digest = _hash_content(origin, found, block_size, hashing)
        pin, blocks = {**pin, "xxh3": digest.hash}, digest.blocks
    text = pin_text(pin)
    content = pin.get("xxh3") or ref_key(found.uri, text)
    mtime = pin.get("mtime_ns") or int(found.modified * 1e9)
    return Entry(path, "file", found.size, 0o644, content, blocks, mtime, source=found.uri, pin=text)


def _hashed(found: Found) -> bool:
    """Whether a reference's content is hashed when it is tracked: a local file's (cheap, and
    its mtime alone is a weak pin), and a URL's whose server sends no ETag or Last-Modified."""
    if found.uri.startswith("file://"):
        return True
    return found.uri.startswith("http") and "etag" not in found.pin and not found.pin.get("modified")


def _hash_content(origin: Origin, found: Found, block_size: int, hashing: Bar) -> FileDigest:
    """The content's digest, read as found (a change meanwhile fails the read)."""
    extend(hashing, found.size)
    hasher = StreamHasher(block_size)
    for start in range(0, found.size, block_size):
        data = origin.read(found.uri, found.pin, start, min(block_size, found.size - start))
        hasher.update(data)
        hashing.update(len(data))
    digest = hasher.digest()
    if digest.size != found.size:
        raise ContentChangedError(f"{redact(found.uri)} changed while it was being tracked; track again")
    return digest


def drift(entry: Entry, origins: Origins, block_size: int) -> str | None:
    """Why `entry`'s origin no longer holds what it pinned ("gone", "changed: …"), or None. A
    checksummed local file only touched (same bytes) has not drifted."""
    origin = origins.of(entry.source)
    now = origin.stat(entry.source)
    if now is None:
        return "gone"
    pin = entry.pins
    if "xxh3" in pin:  # hashed when tracked: the same bytes are no drift, whatever the times say
        if now.size == entry.size and "mtime_ns" in pin and now.pin.get("mtime_ns") == pin["mtime_ns"]:
            return None  # a local file not touched since (a URL with no validators is read again)
        same = (
            now.size == entry.size and _hash_content(origin, now, block_size, silent(total=0, desc="")).hash
        )
        return None if same == entry.hash else "changed: its content differs"
    keys = (
        ("size", "mtime_ns", "modified")
        if entry.weak
        else ("size", "etag", "version", "generation", "mtime_ns")
    )
    differ = [k for k in keys if k in pin and now.pin.get(k) != pin[k]]
    if "version" in differ and pin.get("etag") == now.pin.get("etag"):
        differ.remove("version")  # the same bytes written again
    if not differ:
        return None
    return "changed: " + ", ".join(f"{k} {pin[k]} → {now.pin.get(k)}" for k in differ)
