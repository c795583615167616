"""Manifests: what a version holds, as stored (two formats) and in memory, and its digest.

Format 2, every new version: a Merkle tree, as git and restic store one. A directory is a *tree
object*: JSON lines, a header and then one compact array per child, sorted by name:

    {"artfs":"tree","format":2}
    ["d","images","<tree key>","<digest>",<bytes below>,<files below>]
    ["f","a.csv",420,12,<mtime ns>,"<content hash>",["<chunk>",…],"<pack>",<offset>]
    ["l","latest","a.csv"]
    ["f","raw.csv",420,12,<mtime ns>,"<hash>",[…],"",0,"s3://bucket/raw.csv",{<pin>}]   a reference

A directory of more than PAGE_MIN children is split into pages, each a tree object, where the
name's xxh3-64 is 0 modulo PAGE_FACTOR (or after PAGE_MAX children): the boundaries depend on
the names alone, so adding one name rewrites one page. An *index* object lists the pages:
`{"artfs":"index","format":2}` then `["<first name>","<page key>",<children>]` per page. A big
file's block hashes (one per block beyond the first) are in *chunk* objects of PER_CHUNK raw
16-byte digests, loaded as a read needs them. Every object is named by the xxh3-128 of its
bytes, so what is read back is checked against its name.

A directory's *digest* is the xxh3-128 of its children's identity lines (kind, mode, content
hash, link target or the child directory's digest, and name), never mtimes, never where bytes
are kept, never how it is paged: the version's digest is the root's, so identical content is
identical digests (W&B's no-op rule), and two versions are compared by comparing digests of
subtrees, skipping equal ones.

A *reference* (DESIGN §2b) is a file whose bytes stay at its `source` URI, with the `pin` that
names the bytes it meant (S3 ETag and VersionId, GCS generation, HTTP ETag or Last-Modified, a
local file's size and mtime, and the content's xxh3 where it was read). Its `hash` is the content
hash where the content was read when it was tracked (a local file, checksummed: its blocks are
then verified like a blob's), else the *reference key*, xxh3-128 of source and pin, which the
cache keys its blocks by, so a changed object can never be served from blocks of the old one. Its
digest line covers source and pin but not the times in the pin (touching a file that was
checksummed changes no digest).

Format 1, stores written before: one JSON document per version, read as before:
    {"format": 1, "block_size": 4194304, "entries": [
        {"kind": "file", "path": "a/b.csv", "size": 12, "mode": 420, "hash": "…", "mtime": ns,
         "blocks": ["…", …], "pack": "…", "offset": n},
        {"kind": "link", "path": "c", "target": "a/b.csv"},
        {"kind": "dir", "path": "empty"}]}          # only directories with nothing inside
whose digest is over kind, mode, content hash or link target and path of every entry.

In memory, an `Entry` is one path of a version, whichever format it came from; a `Manifest` is
a whole version's entries in path order (what download and checkout walk).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import xxhash

from .digest import ALGORITHM, DEFAULT_BLOCK_SIZE, hash_bytes
from .errors import CorruptDataError, InvalidPathError
from .names import validate_link_target, validate_path

FORMAT = 1  # of the one-document manifests (format-2 versions have trees instead)
TREE_FORMAT = 2
HASH_RE = re.compile(r"[0-9a-f]{32}")
PER_CHUNK = 4096  # block hashes per chunk object: 64 KiB, 4 GiB of content at 1 MiB blocks
PAGE_MIN = 4096  # a directory of more children is paged
PAGE_FACTOR = 2048  # a page ends after a name whose xxh3-64 is 0 modulo this
PAGE_MAX = 16384  # … or after this many children
EMPTY_DIGEST = hash_bytes(b"")  # of a directory with nothing in it
_TREE_HEADER = b'{"artfs":"tree","format":2}'
_INDEX_HEADER = b'{"artfs":"index","format":2}'


def normal_mode(mode: int) -> int:
    """Files are 0o755 when anyone may execute them, else 0o644 (as git records them)."""
    return 0o755 if mode & 0o111 else 0o644


class ChunkSource(Protocol):
    """Where chunk objects come from (BlobStore): `get` reads and checks one; `has` says
    whether it is in memory already (a read can then verify without waiting)."""

    def get_chunk(self, key: str) -> bytes: ...
    def has_chunk(self, key: str) -> bool: ...


class BlockHashes(Sequence[str]):
    """The block hashes of a big file, kept in chunk objects and loaded a chunk at a time: a
    1 TB file's list is 16 MB, and a read of one of its blocks loads 64 KiB of it."""

    def __init__(self, chunks: tuple[str, ...], length: int, source: ChunkSource) -> None:
        self.chunks = chunks
        self.length = length
        self.source = source

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.length))]
        if not 0 <= i < self.length:
            raise IndexError(i)
        data = self.source.get_chunk(self.chunks[i // PER_CHUNK])
        at = (i % PER_CHUNK) * 16
        return data[at : at + 16].hex()

    def loaded(self, i: int) -> bool:
        return self.source.has_chunk(self.chunks[i // PER_CHUNK])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockHashes) and (self.chunks, self.length) == (other.chunks, other.length)

    def __hash__(self) -> int:
        return hash(self.chunks)

    def __repr__(self) -> str:
        return f"BlockHashes({len(self.chunks)} chunks, {self.length} blocks)"


def chunk_objects(blocks: Sequence[str]) -> list[tuple[str, bytes]]:
    """The chunk objects (key, bytes) that hold these block hashes, in order."""
    out = []
    for i in range(0, len(blocks), PER_CHUNK):
        data = bytes.fromhex("".join(blocks[i : i + PER_CHUNK]))
        out.append((hash_bytes(data), data))
    return out


REFERENCE_SCHEMES = ("file://", "s3://", "gs://", "http://", "https://")
_VOLATILE = ("modified", "mtime_ns", "metageneration")  # change when no byte does


def pin_text(pin: dict[str, Any]) -> str:
    """A pin as it is stored and hashed: compact JSON, keys sorted."""
    return json.dumps(pin, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pin_identity(pin: dict[str, Any]) -> str:
    """What a digest covers of a pin: all of it but the times, unless a time is all that says
    which bytes it meant (a file tracked without a checksum, a server that sends no ETag)."""
    strong = any(k in pin for k in ("xxh3", "etag", "generation"))
    return pin_text({k: v for k, v in pin.items() if not (strong and k in _VOLATILE)})


def ref_key(source: str, pin: str) -> str:
    """The cache key of a reference whose content is not known: its URI and pin."""
    return hash_bytes(f"ref\0{source}\0{pin}".encode("utf-8", "surrogateescape"))


@dataclass(frozen=True)
class Entry:
    """One path of a version: a file (content hash), a symlink (target) or a directory (in
    format 2 every directory, with its tree object, digest and totals; in format 1 only empty
    ones)."""

    path: str
    kind: str = "file"
    size: int = 0  # a file's bytes; a format-2 directory's, of every file below it
    mode: int = 0o644
    hash: str = ""
    blocks: Sequence[str] = ()  # one hash per block, when more than one (a tuple or BlockHashes)
    mtime: int = 0
    target: str = ""
    pack: str = ""  # the pack holding the content at `offset`; "" when it is a blob of its own
    offset: int = 0
    tree: str = ""  # a format-2 directory: the key of its tree object
    digest: str = ""  # a format-2 directory: the digest of what is in it
    files: int = 0  # a format-2 directory: how many files are below it
    source: str = ""  # a reference: the URI its bytes stay at
    pin: str = ""  # a reference: what identifies those bytes, canonical JSON (see `pin_text`)

    def __post_init__(self) -> None:
        if self.path or self.kind != "dir":  # "": a version's root directory, never in a manifest
            validate_path(self.path)
        if self.source:
            self._check_reference()
        if self.kind == "file":
            blocks = self.blocks.chunks if isinstance(self.blocks, BlockHashes) else self.blocks
            hashes = (self.hash, *blocks, *((self.pack,) if self.pack else ()))
            if not all(map(HASH_RE.fullmatch, hashes)):
                # hashes become store keys and local paths: nothing else may pass
                raise CorruptDataError(f"{self.path!r}: {self.hash!r} is not an {ALGORITHM} content hash")
            if self.offset < 0 or self.size < 0:
                raise CorruptDataError(f"{self.path!r}: negative size or pack offset")
        elif self.kind == "link":
            validate_link_target(self.path, self.target)
        elif self.kind == "dir":
            if not all(HASH_RE.fullmatch(h) for h in (self.tree, self.digest) if h):
                raise CorruptDataError(f"{self.path!r}: {self.tree!r} is not a tree object key")
        else:
            raise InvalidPathError(f"{self.path!r}: unknown entry kind {self.kind!r}")

    def _check_reference(self) -> None:
        """A hostile reference must not name a blob's cache key or an unknown scheme."""
        if not isinstance(self.pins, dict) or pin_text(self.pins) != self.pin:
            raise CorruptDataError(f"{self.path!r}: malformed pin {self.pin[:200]!r}")
        if self.kind != "file" or (self.blocks and not self.content_known) or self.pack:
            raise CorruptDataError(f"{self.path!r}: a reference is a file with no blocks stored")
        if (
            not self.source.startswith(REFERENCE_SCHEMES)
            or len(self.source) > 8192
            or any(c in self.source for c in "\0\n\r")
        ):
            raise CorruptDataError(f"{self.path!r}: {self.source[:200]!r} is not a reference URI")
        expected = self.pins["xxh3"] if self.content_known else ref_key(self.source, self.pin)
        if self.hash != expected:
            raise CorruptDataError(f"{self.path!r}: the reference's hash is not that of its pin")

    @functools.cached_property
    def pins(self) -> dict[str, Any]:
        """The pin, as a dict ({} for a stored file)."""
        try:
            pin = json.loads(self.pin) if self.pin else {}
        except ValueError:
            return None  # type: ignore[return-value]  # refused by _check_reference
        return pin if isinstance(pin, dict) else None  # type: ignore[return-value]

    @property
    def content_known(self) -> bool:
        """Stored, or a reference whose content was hashed when it was tracked (then its
        `hash` and `blocks` verify what is read, as a blob's do)."""
        return not self.source or "xxh3" in self.pins

    @property
    def weak(self) -> bool:
        """A reference pinned by size and modification time only (tracked --no-checksum)."""
        return bool(self.source) and bool(self.pins.get("weak"))

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def block(self, index: int, block_size: int) -> tuple[int, int, str]:
        """Offset, length and expected hash of block `index` of this file's content (a format-2
        entry may load a chunk of its block list for the hash: see BlockHashes.loaded)."""
        start = index * block_size
        length = max(0, min(block_size, self.size - start))
        return start, length, self.blocks[index] if self.blocks else self.hash

    def block_count(self, block_size: int) -> int:
        return -(-self.size // block_size)

    def identity(self) -> str:
        """What a format-1 digest covers: kind, mode, content, path (never mtime)."""
        what = self.target if self.kind == "link" else self.hash
        return f"{self.kind}\0{self.mode:o}\0{what}\0{self.path}\0"

    def tree_identity(self) -> bytes:
        """What a format-2 directory's digest covers of this child: kind, mode, content (a
        file's hash, a link's target, a directory's digest) and name, never mtimes."""
        if self.kind == "file" and self.source:
            line = f"ref\0{self.mode:o}\0{self.source}\0{pin_identity(self.pins)}\0{self.name}\0"
        elif self.kind == "file":
            line = f"file\0{self.mode:o}\0{self.hash}\0{self.name}\0"
        elif self.kind == "link":
            line = f"link\0\0{self.target}\0{self.name}\0"
        else:
            line = f"dir\0\0{self.digest or EMPTY_DIGEST}\0{self.name}\0"
        return line.encode("utf-8", "surrogateescape")

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "link":
            return {"kind": "link", "path": self.path, "target": self.target}
        if self.kind == "dir":
            return {"kind": "dir", "path": self.path}
        d: dict[str, Any] = {
            "kind": "file",
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "hash": self.hash,
            "mtime": self.mtime,
        }
        if self.blocks:
            d["blocks"] = list(self.blocks)
        if self.pack:
            d["pack"], d["offset"] = self.pack, self.offset
        if self.source:
            d["source"], d["pin"] = self.source, self.pins
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        try:
            kind = d.get("kind", "file")
            if kind == "file":
                return cls(
                    path=d["path"],
                    size=int(d["size"]),
                    mode=normal_mode(int(d["mode"])),
                    hash=str(d["hash"]),
                    blocks=tuple(d.get("blocks", ())),
                    mtime=int(d.get("mtime", 0)),
                    pack=str(d.get("pack", "")),
                    offset=int(d.get("offset", 0)),
                )
            if kind == "link":
                return cls(path=d["path"], kind="link", target=d["target"])
            return cls(path=d["path"], kind=kind)
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptDataError(f"malformed manifest entry {d!r}: {e}") from None


# -- format 2: tree objects ---------------------------------------------------------------------
def encode_line(e: Entry) -> bytes:
    """A child's line in its directory's tree object (a file's block list must be chunked:
    BlockHashes, see `chunk_objects`)."""
    if e.kind == "file":
        chunks = list(e.blocks.chunks) if isinstance(e.blocks, BlockHashes) else []
        if e.blocks and not chunks:
            raise ValueError(f"{e.path}: block hashes not stored as chunks")
        doc: list[Any] = ["f", e.name, e.mode, e.size, e.mtime, e.hash, chunks, e.pack, e.offset]
        if e.source:
            doc += [e.source, e.pins]
    elif e.kind == "link":
        doc = ["l", e.name, e.target]
    else:
        doc = ["d", e.name, e.tree, e.digest or EMPTY_DIGEST, e.size, e.files]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")


def decode_line(line: bytes | str, parent: str, chunks: ChunkSource, block_size: int) -> Entry:
    """The entry a tree object's line describes, below directory `parent` ("" for the root).
    Hostile lines (names with "/", "..", over 255 bytes; junk) raise InvalidPathError or
    CorruptDataError."""
    try:
        doc = json.loads(line)
        kind, name = doc[0], doc[1]
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise InvalidPathError(f"{parent!r}: invalid name {name!r} in a tree object")
        path = f"{parent}/{name}" if parent else name
        if kind == "f":
            _, _, mode, size, mtime, h, chunk_keys, pack, offset, *reference = doc
            source, pin = reference or ("", {})
            if not isinstance(source, str) or not isinstance(pin, dict):
                raise CorruptDataError(f"{path!r}: a malformed reference")
            size = int(size)
            count = -(-size // block_size)
            blocks: Sequence[str] = ()
            if chunk_keys:
                if len(chunk_keys) != -(-count // PER_CHUNK):
                    raise CorruptDataError(f"{path!r}: {len(chunk_keys)} block chunks for {count} blocks")
                blocks = BlockHashes(tuple(map(str, chunk_keys)), count, chunks)
            elif count > 1 and (not source or "xxh3" in pin):  # else a reference read as pinned
                raise CorruptDataError(f"{path!r}: {count} blocks and no block hashes")
            return Entry(
                path,
                "file",
                size,
                normal_mode(int(mode)),
                str(h),
                blocks,
                int(mtime),
                "",
                str(pack),
                int(offset),
                source=source,
                pin=pin_text(pin) if source else "",
            )
        if kind == "l":
            return Entry(path, "link", target=str(doc[2]))
        if kind == "d":
            _, _, tree, digest, size, files = doc
            return Entry(path, "dir", int(size), 0o755, tree=str(tree), digest=str(digest), files=int(files))
        raise CorruptDataError(f"{path!r}: unknown kind {kind!r} in a tree object")
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise CorruptDataError(f"malformed tree object line {line[:200]!r}: {e}") from None


def line_name(line: bytes | str) -> str:
    """The name a line is for, without decoding the rest of it."""
    try:
        name = json.loads(line)[1]
    except (ValueError, TypeError, IndexError) as e:
        raise CorruptDataError(f"malformed tree object line {line[:200]!r}: {e}") from None
    if not isinstance(name, str):
        raise CorruptDataError(f"malformed tree object line {line[:200]!r}")
    return name


@dataclass(frozen=True)
class DirObjects:
    """A directory as stored: the key of its object (a tree, or an index over pages), the
    digest of what is in it, and every object to store for it."""

    key: str
    digest: str
    objects: list[tuple[str, bytes]]


def _page_ends(name: str) -> bool:
    return xxhash.xxh3_64_intdigest(name.encode("utf-8", "surrogateescape")) % PAGE_FACTOR == 0


def encode_dir(children: Iterable[Entry]) -> DirObjects:
    """The tree objects of a directory whose children are `children` (any order; two with one
    name are an error)."""
    ordered = sorted(children, key=lambda e: e.name)
    digest = xxhash.xxh3_128()
    lines = []
    for i, e in enumerate(ordered):
        if i and ordered[i - 1].name == e.name:
            raise InvalidPathError(f"two entries for {e.path!r}")
        digest.update(e.tree_identity())
        lines.append(encode_line(e))
    if len(lines) <= PAGE_MIN:
        data = b"\n".join([_TREE_HEADER, *lines]) + b"\n"
        key = hash_bytes(data)
        return DirObjects(key, digest.hexdigest(), [(key, data)])
    objects: list[tuple[str, bytes]] = []
    index = [_INDEX_HEADER]
    start = 0
    for i, e in enumerate(ordered):
        if i + 1 == len(ordered) or i + 1 - start >= PAGE_MAX or _page_ends(e.name):
            data = b"\n".join([_TREE_HEADER, *lines[start : i + 1]]) + b"\n"
            key = hash_bytes(data)
            objects.append((key, data))
            first = json.dumps(ordered[start].name, ensure_ascii=False)
            index.append(f'[{first},"{key}",{i + 1 - start}]'.encode("utf-8", "surrogateescape"))
            start = i + 1
    data = b"\n".join(index) + b"\n"
    key = hash_bytes(data)
    return DirObjects(key, digest.hexdigest(), [*objects, (key, data)])


@dataclass(frozen=True)
class Page:
    """A page of an index: its first name, the key of its tree object, how many children."""

    first: str
    key: str
    count: int


def parse_tree(data: bytes) -> tuple[list[Page] | None, list[bytes]]:
    """A tree object's lines (index None), or an index's pages (lines empty)."""
    header, _, rest = data.partition(b"\n")
    lines = rest.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if header == _TREE_HEADER:
        return None, lines
    if header != _INDEX_HEADER:
        raise CorruptDataError(f"not a tree object (header {header[:100]!r})")
    pages = []
    try:
        for line in lines:
            first, key, count = json.loads(line)
            if not HASH_RE.fullmatch(key) or int(count) < 1:
                raise ValueError(f"bad page {line[:200]!r}")
            pages.append(Page(str(first), str(key), int(count)))
    except (ValueError, TypeError) as e:
        raise CorruptDataError(f"malformed index object: {e}") from None
    return pages, []


@dataclass(frozen=True)
class Difference:
    """One way a tree differs from a version."""

    path: str
    change: str  # missing | extra | modified | type | mode | target (added/removed in diffs);
    # drifted | vanished: a reference's origin holds other bytes than it pinned, or none
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.change:8} {self.path}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Manifest:
    """An immutable, path-sorted list of entries; files may not sit below files or links."""

    entries: tuple[Entry, ...]
    block_size: int = DEFAULT_BLOCK_SIZE
    _by_path: dict[str, Entry] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, entries: Iterable[Entry], block_size: int = DEFAULT_BLOCK_SIZE) -> Manifest:
        by_path: dict[str, Entry] = {}
        for e in entries:
            validate_path(e.path)
            if e.path in by_path:
                raise InvalidPathError(f"two entries for {e.path!r}")
            by_path[e.path] = e
        checked: set[str] = set()  # directories whose ancestors are known not to be files
        for path in by_path:
            parent = path.rpartition("/")[0]
            while parent and parent not in checked:
                if parent in by_path and by_path[parent].kind != "dir":
                    raise InvalidPathError(f"{path!r} lies below {parent!r}, which is not a directory")
                checked.add(parent)
                parent = parent.rpartition("/")[0]
        # A "dir" entry only records an empty directory: drop ones that have content.
        parents = {p.rpartition("/")[0] for p in by_path}
        kept = [e for p, e in by_path.items() if not (e.kind == "dir" and p in parents)]
        kept.sort(key=lambda e: e.path)
        return cls(tuple(kept), block_size, {e.path: e for e in kept})

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def get(self, path: str) -> Entry | None:
        return self._by_path.get(path)

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries if e.is_file)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files())

    @property
    def digest(self) -> str:
        return hash_bytes("".join(e.identity() for e in self.entries).encode("utf-8", "surrogateescape"))

    def diff(self, other: Manifest) -> list[Difference]:
        """What changes from self to other: added, removed, modified, type, mode, target."""
        out = [Difference(p, "removed") for p in self._by_path if p not in other]
        out += [Difference(p, "added") for p in other._by_path if p not in self]
        for e in self.entries:
            o = other.get(e.path)
            if o is None or o.identity() == e.identity():
                continue
            if o.kind != e.kind:
                out.append(Difference(e.path, "type"))
            elif e.kind == "link":
                out.append(Difference(e.path, "target"))
            elif o.hash != e.hash:
                out.append(Difference(e.path, "modified"))
            else:
                out.append(Difference(e.path, "mode"))
        return sorted(out, key=lambda d: d.path)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "block_size": self.block_size,
            "entries": [e.to_dict() for e in self.entries],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate; hostile paths raise InvalidPathError, junk raises CorruptDataError."""
        try:
            doc = json.loads(data.decode("utf-8", "surrogateescape"))
            if doc.get("format") != FORMAT:
                raise CorruptDataError(f"manifest format {doc.get('format')!r} is not {FORMAT}")
            entries = [Entry.from_dict(d) for d in doc["entries"]]
            return cls.build(entries, int(doc["block_size"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptDataError(f"malformed manifest: {e}") from None
